"""Recipes: the declarative TOML description of one extension (recipes/README.md).

`load_recipe(path)` parses and checks a recipe completely before anything is fetched. The
format is declared once in `sysext.recipe_schema` (pydantic), which also gives the JSON
Schema and the README's key table; this module turns a validated document into the
frozen dataclasses the builder uses, after the checks that span several keys. Any mistake
becomes ONE error naming the file, the key and what was expected, e.g.
`recipe podman.toml: sources[0].sha256: expected 64 hex digits, got 'abc'`.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from sysext.build.extract import ArchiveFormat
from sysext.recipe.schema import (
    IMAGE_TOP_DIRS,
    RecipeDoc,
    RecipeError,
    SourceDoc,
    VersionsDoc,
    show,
    validate_document,
)
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease, name_problem

_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")
TEMPLATE_FIELDS = frozenset({"version", "arch", "systemd_arch", "name"})

__all__ = ["IMAGE_TOP_DIRS", "RecipeError"]


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


# -- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sha256Pins:
    """Pinned hashes: one for everything, per architecture, and/or per version per arch.

    Pins keyed by version apply to that version; the unkeyed ones (`single`, `by_arch`)
    describe the recipe's default version only, so `--version` never checks a new download
    against an old hash (it needs its own pin or the upstream checksum file).
    """

    single: str | None = None
    by_arch: Mapping[Architecture, str] = field(default_factory=dict)
    by_version: Mapping[str, Mapping[Architecture | None, str]] = field(default_factory=dict)

    def lookup(self, version: str, arch: Architecture, *, default_version: str) -> str | None:
        per_version = self.by_version.get(version)
        if per_version is not None:
            return per_version.get(arch) or per_version.get(None)
        if version != default_version:
            return None
        return self.by_arch.get(arch) or self.single

    @property
    def empty(self) -> bool:
        return not (self.single or self.by_arch or self.by_version)


@dataclass(frozen=True)
class SourceSpec:
    """One `[[sources]]` entry. Which fields matter depends on `kind`."""

    index: int
    kind: str
    id: str
    url: str | None = None  # url: template
    path: str | None = None  # file: template, relative to the recipe
    package: str | None = None  # pypi / deb: package name
    package_version: str | None = None  # pypi / deb: template, default "{version}"
    sha256: Sha256Pins = field(default_factory=Sha256Pins)
    checksum_url: str | None = None
    signature_url: str | None = None  # detached OpenPGP signature (template)
    signing_keys: tuple[str, ...] = ()  # pinned certificate fingerprints, upper-case hex
    key_url: str | None = None  # where those certificates are fetched (template)
    lock_required: bool = False  # upstream publishes nothing: only a lock entry is trusted
    github_digest: bool = False  # GitHub's per-asset sha256, else only a lock entry
    format: ArchiveFormat | None = None
    strip_components: int = 0
    allow_setuid: tuple[str, ...] = ()
    architectures: tuple[Architecture, ...] = ()  # empty: every recipe architecture
    platforms: Mapping[Architecture, tuple[str, ...]] = field(default_factory=dict)
    python_version: str | None = None
    file_name: str | None = None
    packages: tuple[str, ...] = ()  # apt: packages to add to the base
    skip_scripts: tuple[str, ...] = ()  # apt: packages whose maintainer scripts may stay unrun

    def applies_to(self, arch: Architecture) -> bool:
        return not self.architectures or arch in self.architectures


@dataclass(frozen=True)
class InstallRule:
    """Copy members matching `match` from a source into the image at `to`."""

    index: int
    source: str
    match: str
    to: str
    mode: int | None = None
    optional: bool = False
    exclude: tuple[str, ...] = ()  # base-name globs the rule skips (LICENSE, README.md)

    @property
    def into_directory(self) -> bool:
        return self.to.endswith("/")


@dataclass(frozen=True)
class InlineFile:
    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Link:
    path: str
    target: str
    optional: bool = False  # only when the target exists in the image


@dataclass(frozen=True)
class VersionFeed:
    """Where `sysext versions` looks for upstream releases."""

    github: str | None = None  # "owner/repo": GitHub releases API
    pypi: str | None = None  # package name: `pip index versions`
    index_url: str | None = None  # an HTML directory listing, read with tag_pattern
    tag_prefixes: tuple[str, ...] = ("v",)
    tag_pattern: str | None = None  # regex with a (?P<version>…) group
    include: str | None = None  # keep only versions matching this regex
    prereleases: str = "skip"  # skip | include | by-version
    asset: str | None = None  # glob a GitHub release must have an asset for
    track_url: str | None = None  # marker template with {track}
    latest_url: str | None = None  # marker holding the newest version


@dataclass(frozen=True)
class BaseSpec:
    """`[base]`: the OS release an apt source builds against (sysext.build.debian)."""

    id: str
    version_id: str
    suite: str | None = None
    components: tuple[str, ...] = ("main",)
    keyring: Path | None = None  # absolute (relative paths are taken from the recipe's dir)
    signing_keys: tuple[str, ...] = ()


# The version of recipes whose apt source decides it: the archive's newest candidates.
LATEST = "latest"


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    version: str
    architectures: tuple[Architecture, ...]
    sources: tuple[SourceSpec, ...]
    install: tuple[InstallRule, ...] = ()
    files: tuple[InlineFile, ...] = ()
    links: tuple[Link, ...] = ()
    description: str = ""
    homepage: str = ""
    license: str = ""
    arch_map: Mapping[Architecture, str] = field(default_factory=dict)
    reload_manager: bool | None = None  # None: decided by whether units ship
    os_id: str = "_any"
    sysext_level: str | None = None
    extension_release: Mapping[str, str] = field(default_factory=dict)
    allow_setuid: tuple[str, ...] = ()
    versions: VersionFeed | None = None
    replaces: tuple[str, ...] = ()  # OS-shipped extensions this one replaces
    base: BaseSpec | None = None  # [base]: what an apt source resolves against

    @property
    def package_source(self) -> SourceSpec | None:
        """The apt source, whose closure decides the image's version and OS binding."""
        return next((s for s in self.sources if s.kind == "apt"), None)

    @property
    def file_label(self) -> str:
        return self.path.name

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


# -- parsing: the schema (sysext.recipe_schema) first, then checks across keys ---------------


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
    where = Where(path.name)
    doc = validate_document(data, path.name)
    name = doc.name or path.stem
    problem = name_problem(name)
    if problem:
        raise (where / "name").error(problem)
    architectures = tuple(doc.architectures)
    os_id, level = "_any", None
    if doc.os is not None:
        os_id, level = ExtensionRelease.parse_os_spec(doc.os)
    sources = _sources(doc, where, architectures)
    apt = [s for s in sources if s.kind == "apt"]
    if len(apt) > 1:
        raise (where / "sources" / apt[1].index / "kind").error(
            "a recipe has at most one apt source", "list every package in its `packages`"
        )
    if doc.version is None and not apt:
        raise (where / "version").error("missing (required)")
    base = _base(doc, where, path)
    if base is not None:
        if not apt:
            raise (where / "base").error("only recipes with an apt source have a [base]")
        if doc.os is not None and os_id != base.id:
            raise (where / "os").error(
                f"{doc.os!r} contradicts [base] id {base.id!r}",
                "drop `os`: the image is bound to its base's ID and VERSION_ID",
            )
        os_id, level = base.id, None
    arch_map = MappingProxyType(dict(doc.arch_map))
    recipe = Recipe(
        path=path,
        name=name,
        version=doc.version or LATEST,
        architectures=architectures,
        sources=sources,
        install=_install_rules(doc, where, sources),
        files=_inline_files(doc, where),
        links=tuple(Link(item.path, item.target, item.optional) for item in doc.links),
        description=doc.description,
        homepage=doc.homepage,
        license=doc.license,
        arch_map=arch_map,
        reload_manager=doc.reload_manager,
        os_id=os_id,
        sysext_level=level,
        extension_release=MappingProxyType(dict(doc.extension_release)),
        allow_setuid=tuple(doc.allow_setuid),
        versions=_versions(doc.versions),
        replaces=tuple(doc.replaces),
        base=base,
    )
    _check_templates(recipe, where)
    return recipe


def _base(doc: RecipeDoc, where: Where, path: Path) -> BaseSpec | None:
    if doc.base is None:
        return None
    keyring = None
    if doc.base.keyring is not None:
        keyring = Path(doc.base.keyring)
        if not keyring.is_absolute():
            keyring = path.resolve().parent / keyring
    return BaseSpec(
        id=doc.base.id,
        version_id=doc.base.version_id,
        suite=doc.base.suite,
        components=tuple(doc.base.components),
        keyring=keyring,
        signing_keys=tuple(doc.base.signing_keys or ()),
    )


def _pins(raw: Mapping[str, object] | None) -> Sha256Pins:
    if not raw:
        return Sha256Pins()
    single: str | None = None
    by_arch: dict[Architecture, str] = {}
    by_version: dict[str, Mapping[Architecture | None, str]] = {}
    for key, item in raw.items():
        if key == "":
            single = str(item)
        elif isinstance(item, dict):
            by_version[key] = MappingProxyType(
                {(Architecture(a) if a else None): str(d) for a, d in item.items()}
            )
        else:
            by_arch[Architecture(key)] = str(item)
    return Sha256Pins(
        single=single,
        by_arch=MappingProxyType(by_arch),
        by_version=MappingProxyType(by_version),
    )


def _sources(
    doc: RecipeDoc, where: Where, architectures: tuple[Architecture, ...]
) -> tuple[SourceSpec, ...]:
    # Imported here: the source kinds import this module's types.
    from sysext.build.sources import source_kind, source_kind_names

    specs: list[SourceSpec] = []
    for index, item in enumerate(doc.sources):
        here = where / "sources" / index
        if item.kind not in source_kind_names():
            raise (here / "kind").wrong(f"one of {', '.join(source_kind_names())}", item.kind)
        kind = source_kind(item.kind)
        allowed = kind.keys | _COMMON_SOURCE_KEYS
        for key in SourceDoc.model_fields:
            if key in item.model_fields_set and key not in allowed:
                raise (here / key).error(
                    "unknown key", f"a {item.kind} source takes: {', '.join(sorted(allowed))}"
                )
        arches: tuple[Architecture, ...] = tuple(item.architectures or ())
        for i, arch in enumerate(arches):
            if arch not in architectures:
                raise (here / "architectures" / i).error(
                    f"{arch.systemd_name} is not in the recipe's architectures"
                )
        spec = SourceSpec(
            index=index,
            kind=item.kind,
            id=item.id or item.package or (item.packages or [f"source{index}"])[0],
            url=item.url,
            path=item.path,
            package=item.package,
            package_version=item.package_version,
            sha256=_pins(item.sha256),
            checksum_url=item.checksum_url,
            signature_url=item.signature_url,
            signing_keys=tuple(item.signing_keys or ()),
            key_url=item.key_url,
            lock_required=item.integrity in ("lock", "github-digest"),
            github_digest=item.integrity == "github-digest",
            format=item.format,
            strip_components=item.strip_components,
            allow_setuid=tuple(item.allow_setuid),
            architectures=arches,
            platforms=MappingProxyType({a: tuple(t) for a, t in (item.platforms or {}).items()}),
            python_version=item.python_version,
            file_name=item.file_name,
            packages=tuple(item.packages or ()),
            skip_scripts=tuple(item.skip_scripts or ()),
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
        if any(s.id == spec.id for s in specs):
            raise (here / "id").error(f"source id {spec.id!r} is used twice")
        specs.append(spec)
    return tuple(specs)


_COMMON_SOURCE_KEYS = frozenset(
    {"kind", "id", "sha256", "format", "strip_components", "allow_setuid", "architectures"}
)


def _check_templates(recipe: Recipe, where: Where) -> None:
    """Every `{…}` in a template is a known field, and {arch} has an arch_map entry."""
    for spec in recipe.sources:
        for key in TEMPLATE_KEYS:
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


TEMPLATE_KEYS = (
    "url",
    "path",
    "checksum_url",
    "signature_url",
    "key_url",
    "package_version",
    "file_name",
)


def _install_rules(
    doc: RecipeDoc, where: Where, sources: tuple[SourceSpec, ...]
) -> tuple[InstallRule, ...]:
    rules: list[InstallRule] = []
    for index, item in enumerate(doc.install):
        here = where / "install" / index
        if item.source is not None:
            if item.source not in {s.id for s in sources}:
                raise (here / "source").wrong(
                    f"one of the source ids {', '.join(repr(s.id) for s in sources)}", item.source
                )
            source = item.source
        elif len(sources) == 1:
            source = sources[0].id
        else:
            raise (here / "source").error("missing (required when the recipe has several sources)")
        match = item.from_.strip("/")
        if ".." in match.split("/"):
            raise (here / "from").wrong("a member pattern without '..'", match)
        rules.append(
            InstallRule(
                index, source, match, item.to, item.mode, item.optional, tuple(item.exclude)
            )
        )
    return tuple(rules)


def _inline_files(doc: RecipeDoc, where: Where) -> tuple[InlineFile, ...]:
    files: list[InlineFile] = []
    for index, item in enumerate(doc.files):
        if any(f.path == item.path for f in files):
            raise (where / "files" / index / "path").error(f"{item.path} is defined twice")
        files.append(InlineFile(item.path, item.content, item.mode))
    return tuple(files)


def _versions(doc: VersionsDoc | None) -> VersionFeed | None:
    if doc is None:
        return None
    return VersionFeed(
        github=doc.github,
        pypi=doc.pypi,
        index_url=doc.index_url,
        tag_prefixes=tuple(doc.tag_prefix),
        tag_pattern=doc.tag_pattern,
        include=doc.include,
        prereleases=doc.prereleases,
        asset=doc.asset,
        track_url=doc.track_url,
        latest_url=doc.latest_url,
    )


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
