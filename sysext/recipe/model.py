"""Recipes: the declarative TOML description of one extension (recipes/README.md).

The recipe format is declared once, here: each key is a field of a frozen pydantic model
below, with its value type (sysext.recipe.values), its default and its description. The
same models are the parser, the domain model the builder uses, and the source of the JSON
Schema and the README's key table (sysext.recipe.docs); adding a key is adding a field.

`load_recipe(path)` parses and checks a recipe completely before anything is fetched. Any
mistake becomes ONE error naming the file, the key and what was expected, e.g.
`recipe podman.toml: sources[0].sha256: expected 64 hex digits, got 'abc'`. Checks of one
value belong to its type; checks across keys (templates against `arch_map`, install rules
against source ids, which keys a source kind takes) are `Recipe`'s model validator. Values
that follow from other keys (a source's id, an install rule's source, the name from the
file name) are properties, so the fields stay what the file says.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.fields import FieldInfo

from sysext.recipe.values import (
    IMAGE_TOP_DIRS,
    Arches,
    ArchMap,
    DebNames,
    Filter,
    Fingerprints,
    Flag,
    Format,
    ImageDir,
    ImageFile,
    Keyring,
    Kind,
    MemberGlob,
    Mode,
    Name,
    Names,
    NonEmpty,
    OneLine,
    OsId,
    OsSpec,
    Pattern,
    Pins,
    Platforms,
    Prefixes,
    RecipeError,
    ReleaseFields,
    Sha256Pins,
    SourceId,
    Strings,
    Strip,
    Tables,
    Text,
    Version,
    VersionId,
    problem,
    show,
    wrong,
)
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease, name_problem

_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")
TEMPLATE_FIELDS = frozenset({"version", "arch", "systemd_arch", "name"})

__all__ = ["IMAGE_TOP_DIRS", "RecipeError", "Sha256Pins"]

# The version of recipes whose apt source decides it: the archive's newest candidates.
LATEST = "latest"


class Where:
    """Builds error messages that name the recipe file and the key path."""

    def __init__(self, file: str, key: str = "") -> None:
        self.file = file
        self.key = key

    def __truediv__(self, part: str | int) -> Where:
        if isinstance(part, int):
            return Where(self.file, f"{self.key}[{part}]")
        if "." in part:
            part = f'"{part}"'
        return Where(self.file, f"{self.key}.{part}" if self.key else part)

    def error(self, expected: str, hint: str | None = None) -> RecipeError:
        prefix = f"recipe {self.file}: {self.key}: " if self.key else f"recipe {self.file}: "
        return RecipeError(prefix + expected, hint)

    def wrong(self, expected: str, got: object, hint: str | None = None) -> RecipeError:
        return self.error(f"expected {expected}, got {show(got)}", hint)


# Strict: TOML's types are taken as written (no "3" for 3); frozen: the builder's model. A
# field whose Python name differs from its key (`declared_name` for `name`) is read only by
# its key, so the Python names are no recipe keys.
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


def _doc(
    text: str, kinds: str = "", *, required: bool = False, template: bool = False, **field: Any
) -> Any:
    """Field metadata: the description (schema and README table), the source kinds it
    applies to and whether it is a template (`{version}`…, checked when a recipe loads); an
    optional key without `default`/`default_factory` is None when absent."""
    extra: dict[str, Any] = {"x-kinds": kinds} if kinds else {}
    if template:
        extra["x-template"] = True
    if not required and "default" not in field and "default_factory" not in field:
        field["default"] = None
    return Field(description=text, json_schema_extra=extra or None, **field)


# -- the model ------------------------------------------------------------------------------


class SourceSpec(BaseModel):
    """One `[[sources]]` table: where a file comes from and how it is verified."""

    model_config = _STRICT

    kind: Kind = Field(
        "url",
        description="`url` (default), `file`, `pypi`, `deb`, `apt`; a `.rpm` download is a "
        "`url` source whose payload is extracted (scripts never run)",
    )
    declared_id: SourceId | None = _doc(
        "name used by `install.source` (default: the package name or `sourceN`); required in "
        "rules only when there are several sources",
        alias="id",
        default=None,
    )
    sha256: Pins = _doc(
        'pin: `"HEX"`, a table per architecture `{ x86-64 = "HEX" }`, or per version '
        '`sha256."1.0.3".x86-64 = "HEX"` (most specific wins)',
        default_factory=Sha256Pins,
    )
    format: Format | None = _doc("archive format (default: from the file name; `.whl` is zip)")
    strip_components: Strip = Field(0, description="leading path components to drop from members")
    allow_setuid: Strings = Field(
        (), description="member globs (after stripping) that may carry setuid/setgid bits"
    )
    architectures: Arches = _doc(
        "limit this source to some of the recipe's architectures", default=()
    )
    url: NonEmpty | None = _doc(
        "download URL template (`https://`, `http://`, `file://` or a local path)",
        "url",
        template=True,
    )
    checksum_url: NonEmpty | None = _doc(
        "upstream checksum file (sha256sum text or binary mode, aggregate, BSD, or a bare "
        "digest); used when no pin matches",
        "url",
        template=True,
    )
    signature_url: NonEmpty | None = _doc(
        "detached OpenPGP signature of the download (`.asc` armored or `.sig` binary), "
        "checked against `signing_keys`",
        "url",
        template=True,
    )
    signing_keys: Fingerprints = _doc(
        "fingerprints of the OpenPGP certificates allowed to sign (primary key fingerprints)",
        "url",
        default=(),
    )
    key_url: NonEmpty | None = _doc(
        "where the signing certificate is fetched from (URL, or a path relative to the "
        "recipe); only certificates whose fingerprint is in `signing_keys` are used",
        "url",
        template=True,
    )
    integrity: Literal["lock", "github-digest"] | None = _doc(
        'where upstream publishes no checksum or signature: `"lock"` makes builds need a '
        '`sysext lock` entry (`sysext build --locked`); `"github-digest"` takes the sha256 '
        "GitHub records for a release asset (uploads since June 2025), else needs the lock",
        "url",
    )
    file_name: NonEmpty | None = _doc(
        "the name a single-file download gets inside the image source tree",
        "url, file",
        template=True,
    )
    path: NonEmpty | None = _doc("a file relative to the recipe", "file", template=True)
    package: NonEmpty | None = _doc("project / package name", "pypi, deb")
    package_version: NonEmpty | None = _doc(
        "default `{version}` for pypi; for deb, unset means apt's candidate",
        "pypi, deb",
        template=True,
    )
    platforms: Platforms = _doc(
        "wheel platform tags per architecture (default: manylinux 2.17 / 2014, musllinux 1.1)",
        "pypi",
        default_factory=lambda: MappingProxyType({}),
    )
    python_version: NonEmpty | None = _doc(
        "`--python-version` for pip (default: the running interpreter's)", "pypi"
    )
    packages: DebNames = _doc(
        "Debian packages to add to the base with their dependencies, minus what the base "
        "has; the first names the image's version (see [base])",
        "apt",
        default=(),
    )
    skip_scripts: DebNames = _doc(
        "packages whose first-install maintainer scripts may stay unrun (checked by the "
        "recipe's author; every other package with such scripts is refused)",
        "apt",
        default=(),
    )

    # Its position in `sources`, for error messages; set by the recipe that holds it.
    _index: int = PrivateAttr(0)

    @property
    def index(self) -> int:
        return self._index

    @property
    def id(self) -> str:
        """What install rules call it: `id`, else the (first) package name, else `sourceN`."""
        if self.declared_id:
            return self.declared_id
        return self.package or (self.packages or (f"source{self._index}",))[0]

    @property
    def lock_required(self) -> bool:
        """Upstream publishes nothing to check against: only a lock entry is trusted."""
        return self.integrity in ("lock", "github-digest")

    @property
    def github_digest(self) -> bool:
        """GitHub's per-asset sha256 is trusted, else only a lock entry."""
        return self.integrity == "github-digest"

    def applies_to(self, arch: Architecture) -> bool:
        return not self.architectures or arch in self.architectures


class InstallRule(BaseModel):
    """One `[[install]]` rule: archive members → image paths."""

    model_config = _STRICT

    declared_source: NonEmpty | None = _doc(
        "the source id (may be left out when there is one source)", alias="source", default=None
    )
    match: MemberGlob = Field(
        alias="from",
        description="glob over the source's members after stripping (`*` within a segment, "
        "`**` across segments)",
    )
    to: ImageDir = _doc(
        "image path below `usr/` or `opt/`; a trailing `/` installs each match into that "
        "directory under its own name",
        required=True,
    )
    mode: Mode | None = _doc("octal string; default 0755 for executables and 0644 otherwise")
    exclude: Strings = Field(
        (),
        description="globs (matched against a member's base name) that `from` must skip, "
        'e.g. `["LICENSE*", "*.md"]`',
    )
    optional: Flag = Field(False, description="a glob matching nothing is an error unless true")

    # Set by the recipe that holds the rule: its position, and the source it names (which
    # may be implied when the recipe has one source).
    _index: int = PrivateAttr(0)
    _source: str = PrivateAttr("")

    @property
    def index(self) -> int:
        return self._index

    @property
    def source(self) -> str:
        return self._source

    @property
    def into_directory(self) -> bool:
        return self.to.endswith("/")


class InlineFile(BaseModel):
    """One `[[files]]` entry: a file written from the recipe itself."""

    model_config = _STRICT

    path: ImageFile = _doc("image path of the file", required=True)
    content: Text = _doc("the file's text", required=True)
    mode: Mode = Field("0644", validate_default=True, description='octal string (default `"0644"`)')


class Link(BaseModel):
    """One `[[links]]` entry: a symbolic link in the image."""

    model_config = _STRICT

    path: ImageFile = _doc("image path of the link", required=True)
    target: NonEmpty = _doc("what the link points to (relative or absolute)", required=True)
    optional: Flag = Field(
        False,
        description="create the link only when its target exists in the image (for files "
        "that some upstream versions lack)",
    )


class VersionFeed(BaseModel):
    """`[versions]`: where `sysext versions` and `--version latest` look."""

    model_config = _STRICT

    github: NonEmpty | None = _doc('"owner/repo": the GitHub releases API (all pages)')
    pypi: NonEmpty | None = _doc("project name: `pip index versions`")
    index_url: NonEmpty | None = _doc(
        "an HTML directory listing (e.g. download.docker.com); versions are taken from its "
        "links with `tag_pattern`"
    )
    tag_prefixes: Prefixes = Field(
        ("v",),
        alias="tag_prefix",
        description='prefix(es) removed from tags, first match wins (default "v"); tags with '
        "none of them are skipped",
    )
    tag_pattern: Pattern | None = _doc(
        "regular expression with a `(?P<version>…)` group, instead of `tag_prefix`"
    )
    include: Filter | None = _doc(
        "keep only versions matching this regular expression (e.g. even minors)"
    )
    prereleases: Literal["skip", "include", "by-version"] = Field(
        "skip",
        description="`skip` GitHub releases flagged prerelease (default), `include` them, or "
        "`by-version`: ignore the flag and skip versions with -rc/-alpha/-beta/-pre/-dev",
    )
    asset: NonEmpty | None = _doc(
        "GitHub feeds: a release counts only once it has an asset matching this glob "
        "(`{version}` is filled in); releases created before their uploads are not ready"
    )
    track_url: NonEmpty | None = _doc(
        "marker file template for `--version TRACK` (e.g. `…/stable-{track}.txt`); "
        "`--version latest` reads it with the track `latest`"
    )
    latest_url: NonEmpty | None = _doc("marker file holding the newest version")

    @model_validator(mode="after")
    def _one_feed(self) -> VersionFeed:
        feeds = [f for f in (self.github, self.pypi, self.index_url) if f is not None]
        if len(feeds) != 1:
            raise problem("expected exactly one of `github` or `pypi` (or `index_url`)")
        if self.github is not None and not re.fullmatch(
            r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", self.github
        ):
            raise wrong('"owner/repo"', self.github, "github")
        if self.index_url is not None and self.tag_pattern is None:
            raise problem("`index_url` needs `tag_pattern`", "tag_pattern")
        return self


class BaseSpec(BaseModel):
    """`[base]`: the OS an `apt` source's packages are resolved against (`--base` overrides)."""

    model_config = _STRICT

    id: OsId = _doc(
        "os-release ID of the base, e.g. `debian`; the image is bound to it", required=True
    )
    version_id: VersionId = _doc(
        "os-release VERSION_ID, e.g. `12`; the image is bound to it", required=True
    )
    suite: NonEmpty | None = _doc(
        "the release's codename (default for debian 10–14: buster … forky); its -updates "
        "and -security suites are read too"
    )
    components: DebNames = Field(("main",), description="archive components (default `main`)")
    keyring: Keyring | None = _doc(
        "OpenPGP keyring whose keys sign the archive's InRelease (default for debian: "
        "/usr/share/keyrings/debian-archive-keyring.gpg of debian-archive-keyring); "
        "relative to the recipe"
    )
    signing_keys: Fingerprints = _doc(
        "primary key fingerprints of the keyring that may sign (default: any key in it)",
        default=(),
    )


class Recipe(BaseModel):
    """A recipe file: one extension, built from upstream release files."""

    model_config = ConfigDict(
        **_STRICT,
        title="sysext recipe",
        json_schema_extra={"$id": "https://sysext.invalid/recipes/schema.json"},
    )

    declared_name: Name | None = _doc(
        "activation name: extension-release.NAME (default: the file name without .toml)",
        alias="name",
        default=None,
    )
    description: OneLine = Field("", description="one line; written as X_SYSEXT_DESCRIPTION")
    homepage: OneLine = Field("", description="upstream home page; X_SYSEXT_HOMEPAGE")
    license: OneLine = Field("", description="SPDX expression; X_SYSEXT_LICENSE")
    declared_version: Version | None = _doc(
        "default upstream version (only `[A-Za-z0-9.,_+-]`, what systemd-sysupdate accepts); "
        "`--version` overrides it; required unless an `apt` source decides it",
        alias="version",
        default=None,
    )
    architectures: Arches = _doc('systemd\'s names, e.g. `["x86-64", "arm64"]`', required=True)
    arch_map: ArchMap = Field(
        default_factory=lambda: MappingProxyType({}),
        description="`{arch}` in templates: the upstream spelling per architecture",
    )
    os: OsSpec | None = _doc("`ID[:SYSEXT_LEVEL]` the image is bound to (default `_any`)")
    reload_manager: Flag | None = _doc(
        "EXTENSION_RELOAD_MANAGER=1 (default: true exactly when units ship)"
    )
    replaces: Names = Field(
        (),
        description="OS-shipped extensions this one replaces (e.g. `docker-flatcar`); "
        "X_SYSEXT_REPLACES, masked by `sysext butane`",
    )
    allow_setuid: Strings = Field((), description="image paths that may keep a setuid/setgid bit")
    extension_release: ReleaseFields = Field(
        default_factory=lambda: MappingProxyType({}),
        description='extra `FIELD = "value"` lines for extension-release.NAME',
    )
    sources: Tables[SourceSpec] = Field(min_length=1, description="`[[sources]]`: at least one")
    install: Tables[InstallRule] = Field((), description="`[[install]]` rules")
    files: Tables[InlineFile] = Field((), description="`[[files]]` written inline")
    links: Tables[Link] = Field((), description="`[[links]]` symbolic links")
    versions: VersionFeed | None = _doc("`[versions]`: the upstream version feed")
    base: BaseSpec | None = _doc("`[base]`: the OS an `apt` source builds against")

    # The file it was read from: the validation context's "path" (see parse_recipe).
    _path: Path = PrivateAttr(Path("recipe.toml"))

    @property
    def path(self) -> Path:
        return self._path

    @property
    def file_label(self) -> str:
        return self._path.name

    @property
    def name(self) -> str:
        return self.declared_name or self._path.stem

    @property
    def version(self) -> str:
        """The default upstream version; LATEST when an apt source decides it."""
        return self.declared_version or LATEST

    @property
    def os_id(self) -> str:
        return self._os_binding[0]

    @property
    def sysext_level(self) -> str | None:
        return self._os_binding[1]

    @property
    def _os_binding(self) -> tuple[str, str | None]:
        # [base] binds the image to its ID (and VERSION_ID); else `os`, else any OS.
        if self.base is not None:
            return self.base.id, None
        if self.os is not None:
            return ExtensionRelease.parse_os_spec(self.os)
        return "_any", None

    @property
    def package_source(self) -> SourceSpec | None:
        """The apt source, whose closure decides the image's version and OS binding."""
        return next((s for s in self.sources if s.kind == "apt"), None)

    def expand(self, template: str, version: str, arch: Architecture, where: str) -> str:
        """Fill `{version}`, `{arch}` (upstream name), `{systemd_arch}`, `{name}`."""
        values = {"version": version, "systemd_arch": arch.systemd_name, "name": self.name}
        if "{arch}" in template:
            upstream = self.arch_map.get(arch)
            if upstream is None:
                raise RecipeError(
                    f"recipe {self.file_label}: {where}: uses {{arch}} but arch_map has no "
                    f"entry for {arch.systemd_name}",
                    f'add `{arch.systemd_name} = "…"` to [arch_map]',
                )
            values["arch"] = upstream
        return template.format_map(values)

    @model_validator(mode="after")
    def _across_keys(self, info: ValidationInfo) -> Recipe:
        """The checks that need more than one key, in the order a reader meets them. They
        raise RecipeError directly (pydantic passes it through): each names its key."""
        path = (info.context or {}).get("path")
        if isinstance(path, Path):
            self._path = path
        where = Where(self.file_label)
        if self.declared_name is None:
            found = name_problem(self.name)
            if found:
                raise (where / "name").error(found)
        _check_sources(self, where)
        apt = [s for s in self.sources if s.kind == "apt"]
        if len(apt) > 1:
            raise (where / "sources" / apt[1].index / "kind").error(
                "a recipe has at most one apt source", "list every package in its `packages`"
            )
        if self.declared_version is None and not apt:
            raise (where / "version").error("missing (required)")
        if self.base is not None:
            if not apt:
                raise (where / "base").error("only recipes with an apt source have a [base]")
            if self.os is not None and ExtensionRelease.parse_os_spec(self.os)[0] != self.base.id:
                raise (where / "os").error(
                    f"{self.os!r} contradicts [base] id {self.base.id!r}",
                    "drop `os`: the image is bound to its base's ID and VERSION_ID",
                )
        _check_install_rules(self, where)
        _check_inline_files(self, where)
        _check_templates(self, where)
        return self


# -- checks across keys ---------------------------------------------------------------------


def _toml_key(name: str, info: FieldInfo) -> str:
    return info.alias or name


def field_meta(info: FieldInfo, key: str) -> object:
    """A field's own metadata (`x-kinds`, `x-template`), as _doc declared it."""
    extra = info.json_schema_extra
    return extra.get(key) if isinstance(extra, dict) else None


def source_keys(kind: str) -> frozenset[str]:
    """The keys a source of `kind` takes: every key declared without `x-kinds` (all kinds
    take it) and those whose `x-kinds` name it; the README's "kinds" column says the same."""
    keys = set()
    for name, info in SourceSpec.model_fields.items():
        kinds = str(field_meta(info, "x-kinds") or "")
        if not kinds or kind in kinds.split(", "):
            keys.add(_toml_key(name, info))
    return frozenset(keys)


def _check_sources(recipe: Recipe, where: Where) -> None:
    # Imported here: the source kinds import this module's types.
    from sysext.build.sources import source_kind, source_kind_names

    seen: list[SourceSpec] = []
    for index, spec in enumerate(recipe.sources):
        spec._index = index
        here = where / "sources" / index
        if spec.kind not in source_kind_names():
            raise (here / "kind").wrong(f"one of {', '.join(source_kind_names())}", spec.kind)
        kind = source_kind(spec.kind)
        allowed = source_keys(spec.kind)
        for name, info in SourceSpec.model_fields.items():
            key = _toml_key(name, info)
            if name in spec.model_fields_set and key not in allowed:
                raise (here / key).error(
                    "unknown key", f"a {spec.kind} source takes: {', '.join(sorted(allowed))}"
                )
        for i, arch in enumerate(spec.architectures):
            if arch not in recipe.architectures:
                raise (here / "architectures" / i).error(
                    f"{arch.systemd_name} is not in the recipe's architectures"
                )
        if (spec.signature_url is None) != (not spec.signing_keys):
            raise here.error(
                "`signature_url` and `signing_keys` go together",
                "name the detached signature and the fingerprints of the keys allowed to make it",
            )
        if spec.signing_keys and spec.key_url is None:
            raise (here / "key_url").error(
                "missing (where the certificate of `signing_keys` is fetched from)"
            )
        kind.check(spec, here)
        if any(s.id == spec.id for s in seen):
            raise (here / "id").error(f"source id {spec.id!r} is used twice")
        seen.append(spec)


def _check_install_rules(recipe: Recipe, where: Where) -> None:
    sources = recipe.sources
    for index, rule in enumerate(recipe.install):
        rule._index = index
        here = where / "install" / index
        if rule.declared_source is not None:
            if rule.declared_source not in {s.id for s in sources}:
                raise (here / "source").wrong(
                    f"one of the source ids {', '.join(repr(s.id) for s in sources)}",
                    rule.declared_source,
                )
            rule._source = rule.declared_source
        elif len(sources) == 1:
            rule._source = sources[0].id
        else:
            raise (here / "source").error("missing (required when the recipe has several sources)")
        if ".." in rule.match.split("/"):
            raise (here / "from").wrong("a member pattern without '..'", rule.match)


def _check_inline_files(recipe: Recipe, where: Where) -> None:
    for index, item in enumerate(recipe.files):
        if any(f.path == item.path for f in recipe.files[:index]):
            raise (where / "files" / index / "path").error(f"{item.path} is defined twice")


def _check_templates(recipe: Recipe, where: Where) -> None:
    """Every `{…}` in a template is a known field, and {arch} has an arch_map entry."""
    fields = SourceSpec.model_fields.items()
    keys = [name for name, info in fields if field_meta(info, "x-template")]
    for spec in recipe.sources:
        for key in keys:
            template = getattr(spec, key)
            if template is None:
                continue
            here = where / "sources" / spec.index / key
            for match in _TEMPLATE_FIELD.finditer(template):
                if match.group(1) not in TEMPLATE_FIELDS:
                    raise here.error(
                        f"unknown placeholder {{{match.group(1)}}}",
                        f"known: {', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))}",
                    )
            for arch in recipe.architectures:
                if spec.applies_to(arch) and "{arch}" in template and arch not in recipe.arch_map:
                    raise here.error(
                        f"uses {{arch}} but arch_map has no entry for {arch.systemd_name}",
                        f'add `{arch.systemd_name} = "…"` to [arch_map]',
                    )


# -- the tables of the format, and pydantic's errors as one line naming file and key --------


def tables() -> tuple[tuple[str, type[BaseModel]], ...]:
    """Every table of the format as ("[[sources]]", SourceSpec)…, found by walking the
    model, so a new table needs no list kept elsewhere (docs and error hints use this)."""
    found: list[tuple[str, type[BaseModel]]] = [("top level", Recipe)]
    for name, info in Recipe.model_fields.items():
        key = _toml_key(name, info)
        args: tuple[object, ...] = getattr(info.annotation, "__args__", ())
        models = [arg for arg in args if isinstance(arg, type) and issubclass(arg, BaseModel)]
        if not models:
            continue
        # tuple[Model, ...] is an array of tables, Model | None a table.
        is_array = getattr(info.annotation, "__origin__", None) is tuple
        found.append((f"[[{key}]]" if is_array else f"[{key}]", models[0]))
    return tuple(found)


_TYPE_WORDS = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "an integer",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _known_keys(model: type[BaseModel]) -> list[str]:
    return sorted(_toml_key(name, f) for name, f in model.model_fields.items())


def _model_at(parts: list[str | int]) -> type[BaseModel]:
    nested = {label.strip("[]"): model for label, model in tables()[1:]}
    if parts and isinstance(parts[0], str) and parts[0] in nested:
        return nested[parts[0]]
    return Recipe


def translate(error: Mapping[str, Any], file: str) -> RecipeError:
    """One pydantic error → `recipe FILE: KEY.PATH: what was expected` (with a hint)."""
    loc: list[str | int] = [p for p in error["loc"] if not (isinstance(p, str) and "[" in p)]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    hint = None
    if kind == "recipe":
        loc += list(ctx.get("subpath") or [])
        message = str(ctx.get("message"))
        hint = ctx.get("hint")
    elif kind == "missing":
        message = "missing (required)"
    elif kind == "extra_forbidden":
        known = _known_keys(_model_at(loc[:-1]))
        key = str(loc[-1])
        close = [k for k in known if k.replace("_", "-") == key or k == key.lower()]
        message = "unknown key"
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    elif kind == "literal_error":
        message = f"expected {ctx.get('expected')}, got {show(error.get('input'))}"
    elif kind == "too_short":
        message = f"expected at least one entry, got {show(error.get('input'))}"
    elif kind in _TYPE_WORDS:
        message = f"expected {_TYPE_WORDS[kind]}, got {show(error.get('input'))}"
    else:
        message = str(error.get("msg"))
    where = Where(file)
    for part in loc:
        where = where / part
    return where.error(message, hint)


# -- parsing --------------------------------------------------------------------------------


def load_recipe(path: Path) -> Recipe:
    """Read and check a recipe file; raise RecipeError on the first problem."""
    where = Where(path.name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise where.error("file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error(f"cannot read it ({exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise where.error(f"invalid TOML: {exc}", "see recipes/README.md for the format") from exc
    return parse_recipe(data, path)


def parse_recipe(data: Mapping[str, object], path: Path) -> Recipe:
    """The document as a Recipe read from `path`, or its first problem as a RecipeError."""
    try:
        return Recipe.model_validate(dict(data), context={"path": path})
    except ValidationError as exc:
        raise translate(exc.errors()[0], path.name) from None


# -- lookup ---------------------------------------------------------------------------------


def bundled_recipes_dir() -> Path:
    """The shipped recipes: `$SYSEXT_RECIPES_DIR`, else the checkout's recipes/ directory
    (editable installs), else the copy a wheel installs under PREFIX/share/sysext/recipes."""
    override = os.environ.get("SYSEXT_RECIPES_DIR")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2] / "recipes"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "sysext" / "recipes"


def available_recipes(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.toml"))


def find_recipe(name_or_path: str, recipes_dir: Path | None = None) -> Path:
    """A recipe path from a name (looked up in recipes_dir or recipes/) or a path."""
    directory = recipes_dir or bundled_recipes_dir()
    candidate = Path(name_or_path)
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        if candidate.is_file():
            return candidate
        raise RecipeError(f"recipe {name_or_path}: file not found")
    in_dir = directory / f"{name_or_path}.toml"
    if in_dir.is_file():
        return in_dir
    names = available_recipes(directory)
    raise RecipeError(
        f"no recipe named {name_or_path!r} in {directory}",
        f"available: {', '.join(names)}" if names else "pass a path to a .toml file",
    )
