"""Recipes: the declarative TOML description of one extension (recipes/README.md).

`load_recipe(path)` parses and checks a recipe completely before anything is fetched, into
frozen dataclasses. Any mistake becomes ONE error naming the file, the key and what was
expected, e.g. `recipe podman.toml: sources[0].sha256: expected 64 hex digits, got 'abc'`.
Source kinds validate their own keys through the plug-in registry in `sysext.sources`.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from sysext.architecture import Architecture
from sysext.errors import SysextError
from sysext.extension_release import MANAGED_KEYS, ExtensionRelease, name_problem
from sysext.extract import ArchiveFormat
from sysext.versioning import version_problem

_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELD = re.compile(r"[A-Z][A-Z0-9_]*")
_MODE = re.compile(r"0?[0-7]{3,4}")
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")
TEMPLATE_FIELDS = frozenset({"version", "arch", "systemd_arch", "name"})
# The hierarchies systemd-sysext merges (spec §1.5); anything else in an image is ignored.
IMAGE_TOP_DIRS = ("usr/", "opt/")


class RecipeError(SysextError):
    """A recipe does not follow the format; the message names the file and the key."""


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
        return self.error(f"expected {expected}, got {_show(got)}", hint)


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


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
    format: ArchiveFormat | None = None
    strip_components: int = 0
    allow_setuid: tuple[str, ...] = ()
    architectures: tuple[Architecture, ...] = ()  # empty: every recipe architecture
    platforms: Mapping[Architecture, tuple[str, ...]] = field(default_factory=dict)
    python_version: str | None = None
    file_name: str | None = None

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


@dataclass(frozen=True)
class VersionFeed:
    """Where `sysext versions` looks for upstream releases."""

    github: str | None = None  # "owner/repo": GitHub releases API
    pypi: str | None = None  # package name: `pip index versions`
    tag_prefix: str = "v"
    include_prereleases: bool = False


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


# -- parsing --------------------------------------------------------------------------------

_TOP_KEYS = frozenset(
    {
        "name",
        "description",
        "homepage",
        "license",
        "version",
        "architectures",
        "arch_map",
        "reload_manager",
        "os",
        "sources",
        "install",
        "files",
        "links",
        "extension_release",
        "allow_setuid",
        "versions",
    }
)


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
    _no_unknown_keys(data, _TOP_KEYS, where)
    name = _string(data, "name", where, default=path.stem)
    problem = name_problem(name)
    if problem:
        raise (where / "name").error(problem)
    version = _string(data, "version", where, required=True)
    problem = version_problem(version)
    if problem:
        raise (where / "version").error(problem, "sysupdate accepts only [A-Za-z0-9.,_+-]")
    architectures = _architectures(data.get("architectures"), where / "architectures")
    arch_map = _arch_map(data.get("arch_map", {}), where / "arch_map")
    os_id, level = "_any", None
    if "os" in data:
        os_spec = _string(data, "os", where)
        try:
            os_id, level = ExtensionRelease.parse_os_spec(os_spec)
        except SysextError as exc:
            raise (where / "os").wrong(
                '"ID" or "ID:SYSEXT_LEVEL" (e.g. "flatcar:1.0")', os_spec
            ) from exc
    reload_manager = data.get("reload_manager")
    if reload_manager is not None and not isinstance(reload_manager, bool):
        raise (where / "reload_manager").wrong("true or false", reload_manager)
    allow_setuid = _string_list(data.get("allow_setuid", []), where / "allow_setuid")
    sources = _sources(data.get("sources"), where / "sources", architectures)
    recipe_for_checks = Recipe(
        path=path,
        name=name,
        version=version,
        architectures=architectures,
        sources=sources,
        arch_map=MappingProxyType(arch_map),
    )
    _check_templates(recipe_for_checks, where)
    return Recipe(
        path=path,
        name=name,
        version=version,
        architectures=architectures,
        sources=sources,
        install=_install_rules(data.get("install", []), where / "install", sources),
        files=_inline_files(data.get("files", []), where / "files"),
        links=_links(data.get("links", []), where / "links"),
        description=_string(data, "description", where, default=""),
        homepage=_string(data, "homepage", where, default=""),
        license=_string(data, "license", where, default=""),
        arch_map=MappingProxyType(arch_map),
        reload_manager=reload_manager,
        os_id=os_id,
        sysext_level=level,
        extension_release=_release_fields(data.get("extension_release", {}), where),
        allow_setuid=allow_setuid,
        versions=_versions(data.get("versions"), where / "versions"),
    )


def _no_unknown_keys(table: Mapping[str, object], known: frozenset[str], where: Where) -> None:
    for key in table:
        if key not in known:
            close = [k for k in sorted(known) if k.replace("_", "-") == key or k == key.lower()]
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"known keys: {', '.join(sorted(known))}"
            )
            raise (where / key).error("unknown key", hint)


def _string(
    table: Mapping[str, object],
    key: str,
    where: Where,
    *,
    required: bool = False,
    default: str | None = None,
) -> str:
    if key not in table:
        if required or default is None:
            raise (where / key).error("missing (a string is required)")
        return default
    value = table[key]
    if not isinstance(value, str) or (required and not value):
        raise (where / key).wrong("a non-empty string" if required else "a string", value)
    return value


def _optional_string(table: Mapping[str, object], key: str, where: Where) -> str | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str) or not value:
        raise (where / key).wrong("a non-empty string", value)
    return value


def _string_list(value: object, where: Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise where.wrong("a list of strings", value)
    return tuple(value)


def _arch(text: object, where: Where) -> Architecture:
    if not isinstance(text, str):
        raise where.wrong('an architecture name such as "x86-64"', text)
    try:
        return Architecture.parse(text)
    except SysextError as exc:
        raise where.error(exc.message, exc.hint) from exc


def _architectures(value: object, where: Where) -> tuple[Architecture, ...]:
    if value is None:
        raise where.error('missing (a list such as ["x86-64", "arm64"] is required)')
    if not isinstance(value, list) or not value:
        raise where.wrong('a non-empty list such as ["x86-64", "arm64"]', value)
    arches = tuple(_arch(v, where / i) for i, v in enumerate(value))
    if len(set(arches)) != len(arches):
        raise where.error("lists an architecture twice")
    return arches


def _arch_map(value: object, where: Where) -> dict[Architecture, str]:
    if not isinstance(value, dict):
        raise where.wrong('a table such as { x86-64 = "amd64", arm64 = "arm64" }', value)
    out: dict[Architecture, str] = {}
    for key, upstream in value.items():
        arch = _arch(key, where / key)
        if not isinstance(upstream, str) or not upstream:
            raise (where / key).wrong("the upstream spelling as a string", upstream)
        out[arch] = upstream
    return out


def _sha256(value: str, where: Where) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value.lower()):
        raise where.wrong("64 hex digits", value)
    return value.lower()


def _pins(value: object, where: Where) -> Sha256Pins:
    if isinstance(value, str):
        return Sha256Pins(single=_sha256(value, where))
    if not isinstance(value, dict):
        raise where.wrong("64 hex digits or a table of them per architecture or version", value)
    by_arch: dict[Architecture, str] = {}
    by_version: dict[str, Mapping[Architecture | None, str]] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            per: dict[Architecture | None, str] = {}
            for arch_key, digest in item.items():
                per[_arch(arch_key, where / key / arch_key)] = _sha256(
                    digest, where / key / arch_key
                )
            by_version[key] = MappingProxyType(per)
        elif key in {a.value for a in Architecture}:
            by_arch[Architecture(key)] = _sha256(item, where / key)
        else:
            # A version pinned with one hash for every architecture.
            if version_problem(key):
                raise (where / key).error(
                    "expected an architecture or a version as key",
                    'e.g. sha256."1.2.3".x86-64 = "…" or sha256.x86-64 = "…"',
                )
            by_version[key] = MappingProxyType({None: _sha256(item, where / key)})
    return Sha256Pins(by_arch=MappingProxyType(by_arch), by_version=MappingProxyType(by_version))


def _sources(
    value: object, where: Where, architectures: tuple[Architecture, ...]
) -> tuple[SourceSpec, ...]:
    # Imported here: the source kinds import this module's types.
    from sysext.sources import source_kind, source_kind_names

    if value is None:
        raise where.error("missing (at least one [[sources]] table is required)")
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise where.wrong("one or more [[sources]] tables", value)
    specs: list[SourceSpec] = []
    for index, table in enumerate(value):
        here = where / index
        kind_name = table.get("kind", "url")
        if not isinstance(kind_name, str) or kind_name not in source_kind_names():
            raise (here / "kind").wrong(f"one of {', '.join(source_kind_names())}", kind_name)
        kind = source_kind(kind_name)
        _no_unknown_keys(table, kind.keys | _COMMON_SOURCE_KEYS, here)
        spec = _source_spec(index, kind_name, table, here, architectures)
        kind.check(spec, here)
        if any(s.id == spec.id for s in specs):
            raise (here / "id").error(f"source id {spec.id!r} is used twice")
        specs.append(spec)
    return tuple(specs)


_COMMON_SOURCE_KEYS = frozenset(
    {"kind", "id", "sha256", "format", "strip_components", "allow_setuid", "architectures"}
)


def _source_spec(
    index: int,
    kind: str,
    table: Mapping[str, object],
    where: Where,
    architectures: tuple[Architecture, ...],
) -> SourceSpec:
    fmt: ArchiveFormat | None = None
    if "format" in table:
        raw = table["format"]
        try:
            fmt = ArchiveFormat(raw)
        except ValueError as exc:
            choices = ", ".join(f.value for f in ArchiveFormat)
            raise (where / "format").wrong(f"one of {choices}", raw) from exc
    strip = table.get("strip_components", 0)
    if not isinstance(strip, int) or isinstance(strip, bool) or not 0 <= strip <= 16:
        raise (where / "strip_components").wrong("an integer from 0 to 16", strip)
    arches: tuple[Architecture, ...] = ()
    if "architectures" in table:
        arches = _architectures(table["architectures"], where / "architectures")
        for i, arch in enumerate(arches):
            if arch not in architectures:
                raise (where / "architectures" / i).error(
                    f"{arch.systemd_name} is not in the recipe's architectures"
                )
    platforms: dict[Architecture, tuple[str, ...]] = {}
    if "platforms" in table:
        raw_platforms = table["platforms"]
        if not isinstance(raw_platforms, dict):
            raise (where / "platforms").wrong(
                'a table such as { x86-64 = ["manylinux_2_17_x86_64"] }', raw_platforms
            )
        for key, tags in raw_platforms.items():
            arch = _arch(key, where / "platforms" / key)
            if isinstance(tags, str):
                tags = [tags]
            platforms[arch] = _string_list(tags, where / "platforms" / key)
    source_id = table.get("id", table.get("package") or f"source{index}")
    if not isinstance(source_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", source_id):
        raise (where / "id").wrong("a short identifier (letters, digits, '.', '_', '-')", source_id)
    return SourceSpec(
        index=index,
        kind=kind,
        id=source_id,
        url=_optional_string(table, "url", where),
        path=_optional_string(table, "path", where),
        package=_optional_string(table, "package", where),
        package_version=_optional_string(table, "package_version", where),
        sha256=_pins(table["sha256"], where / "sha256") if "sha256" in table else Sha256Pins(),
        checksum_url=_optional_string(table, "checksum_url", where),
        format=fmt,
        strip_components=strip,
        allow_setuid=_string_list(table.get("allow_setuid", []), where / "allow_setuid"),
        architectures=arches,
        platforms=MappingProxyType(platforms),
        python_version=_optional_string(table, "python_version", where),
        file_name=_optional_string(table, "file_name", where),
    )


def _check_templates(recipe: Recipe, where: Where) -> None:
    """Every `{…}` in a template is a known field, and {arch} has an arch_map entry."""
    for spec in recipe.sources:
        for key in ("url", "path", "checksum_url", "package_version", "file_name"):
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


def image_path(value: object, where: Where, *, directory_ok: bool) -> str:
    """A relative path inside the image, below usr/ or opt/ (spec §1.5)."""
    if not isinstance(value, str) or not value:
        raise where.wrong('a path inside the image such as "usr/bin/"', value)
    path = value.lstrip("/")
    parts = PurePosixPath(path).parts
    if ".." in parts or "." in parts:
        raise where.wrong("a normalized path without '.' or '..'", value)
    if not path.startswith(IMAGE_TOP_DIRS):
        raise where.wrong(
            "a path below usr/ or opt/",
            value,
            "systemd-sysext merges only /usr and /opt; ship configuration under "
            "usr/share/NAME/ and copy it to /etc with a tmpfiles.d rule",
        )
    if path.endswith("/") and not directory_ok:
        raise where.wrong("a file path (not ending in '/')", value)
    return path


def _mode(value: object, where: Where) -> int:
    if isinstance(value, str) and _MODE.fullmatch(value):
        return int(value, 8)
    raise where.wrong('an octal mode string such as "0755"', value)


def _tables(value: object, where: Where, what: str) -> list[Mapping[str, object]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise where.wrong(f"a list of [[{what}]] tables", value)
    return value


def _install_rules(
    value: object, where: Where, sources: tuple[SourceSpec, ...]
) -> tuple[InstallRule, ...]:
    rules: list[InstallRule] = []
    known = frozenset({"source", "from", "to", "mode", "optional"})
    for index, table in enumerate(_tables(value, where, "install")):
        here = where / index
        _no_unknown_keys(table, known, here)
        if "source" in table:
            source = _string(table, "source", here)
            if source not in {s.id for s in sources}:
                raise (here / "source").wrong(
                    f"one of the source ids {', '.join(repr(s.id) for s in sources)}", source
                )
        elif len(sources) == 1:
            source = sources[0].id
        else:
            raise (here / "source").error("missing (required when the recipe has several sources)")
        match = _string(table, "from", here, required=True).strip("/")
        if ".." in match.split("/"):
            raise (here / "from").wrong("a member pattern without '..'", match)
        to = image_path(table.get("to"), here / "to", directory_ok=True)
        mode = _mode(table["mode"], here / "mode") if "mode" in table else None
        optional = table.get("optional", False)
        if not isinstance(optional, bool):
            raise (here / "optional").wrong("true or false", optional)
        rules.append(InstallRule(index, source, match, to, mode, optional))
    return tuple(rules)


def _inline_files(value: object, where: Where) -> tuple[InlineFile, ...]:
    files: list[InlineFile] = []
    known = frozenset({"path", "content", "mode"})
    for index, table in enumerate(_tables(value, where, "files")):
        here = where / index
        _no_unknown_keys(table, known, here)
        path = image_path(table.get("path"), here / "path", directory_ok=False)
        content = table.get("content")
        if not isinstance(content, str):
            raise (here / "content").wrong("the file's text as a string", content)
        mode = _mode(table["mode"], here / "mode") if "mode" in table else 0o644
        if any(f.path == path for f in files):
            raise (here / "path").error(f"{path} is defined twice")
        files.append(InlineFile(path, content, mode))
    return tuple(files)


def _links(value: object, where: Where) -> tuple[Link, ...]:
    links: list[Link] = []
    known = frozenset({"path", "target"})
    for index, table in enumerate(_tables(value, where, "links")):
        here = where / index
        _no_unknown_keys(table, known, here)
        path = image_path(table.get("path"), here / "path", directory_ok=False)
        target = _string(table, "target", here, required=True)
        links.append(Link(path, target))
    return tuple(links)


def _release_fields(value: object, where: Where) -> Mapping[str, str]:
    here = where / "extension_release"
    if not isinstance(value, dict):
        raise here.wrong('a table of FIELD = "value"', value)
    out: dict[str, str] = {}
    for key, field_value in value.items():
        if not _FIELD.fullmatch(key):
            raise (here / key).error(
                "expected an os-release field name (upper-case letters, digits, '_')"
            )
        if key in MANAGED_KEYS:
            raise (here / key).error(
                "is written by sysext itself",
                'set the OS with `os = "ID:LEVEL"`, the version with `version`',
            )
        if not isinstance(field_value, str) or "\n" in field_value:
            raise (here / key).wrong("a one-line string", field_value)
        out[key] = field_value
    return MappingProxyType(out)


def _versions(value: object, where: Where) -> VersionFeed | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise where.wrong('a table such as { github = "owner/repo" }', value)
    _no_unknown_keys(
        value, frozenset({"github", "pypi", "tag_prefix", "include_prereleases"}), where
    )
    github = _optional_string(value, "github", where)
    if github is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", github):
        raise (where / "github").wrong('"owner/repo"', github)
    pypi = _optional_string(value, "pypi", where)
    if (github is None) == (pypi is None):
        raise where.error("expected exactly one of `github` or `pypi`")
    prefix = value.get("tag_prefix", "v")
    if not isinstance(prefix, str):
        raise (where / "tag_prefix").wrong("a string", prefix)
    pre = value.get("include_prereleases", False)
    if not isinstance(pre, bool):
        raise (where / "include_prereleases").wrong("true or false", pre)
    return VersionFeed(github=github, pypi=pypi, tag_prefix=prefix, include_prereleases=pre)


# -- lookup ---------------------------------------------------------------------------------


def bundled_recipes_dir() -> Path:
    """The shipped recipes: `$SYSEXT_RECIPES_DIR`, else the checkout's recipes/ directory
    (editable installs), else the copy a wheel installs under PREFIX/share/sysext/recipes."""
    override = os.environ.get("SYSEXT_RECIPES_DIR")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parent.parent / "recipes"
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
