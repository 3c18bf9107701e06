"""The value types of the recipe format: what one key accepts, its error and its JSON Schema.

Each type below checks a value as TOML gives it, says what it expected when it is wrong
(a `problem` the parser turns into one line naming the file and key) and carries the JSON
Schema editors see. The keys themselves, their descriptions and the checks across keys are
declared once, in sysext.recipe.model; values are normalized into immutable shapes here
(tuples, read-only mappings, `Sha256Pins`) because the models are the builder's domain model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from sysext.build.extract import ArchiveFormat
from sysext.core.errors import SysextError
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import MANAGED_KEYS, ExtensionRelease, name_problem
from sysext.systemd.versioning import version_problem

_HEX64 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
_FIELD = re.compile(r"[A-Z][A-Z0-9_]*")
_MODE = re.compile(r"0?[0-7]{3,4}")
# The hierarchies systemd-sysext merges (spec §1.5); anything else in an image is ignored.
IMAGE_TOP_DIRS = ("usr/", "opt/")
SOURCE_KINDS = ("apt", "deb", "file", "pypi", "url")


class RecipeError(SysextError):
    """A recipe does not follow the format; the message names the file and the key."""


def show(value: object) -> str:
    """A value as error messages quote it: tables and lists by kind, scalars by repr."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def problem(message: str, *subpath: str | int, hint: str | None = None) -> PydanticCustomError:
    """A validation failure with our own wording; `subpath` extends the key path."""
    return PydanticCustomError(
        "recipe", "{message}", {"message": message, "subpath": list(subpath), "hint": hint}
    )


def wrong(expected: str, got: object, *subpath: str | int, hint: str | None = None) -> Any:
    return problem(f"expected {expected}, got {show(got)}", *subpath, hint=hint)


# -- value types: each checks its input and says what it expected ---------------------------


def _expect_str(expected: str, *, empty_ok: bool = False) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or (not value and not empty_ok):
            raise wrong(expected, value)
        return value

    return check


def _arch(value: object) -> Architecture:
    if isinstance(value, Architecture):
        return value
    if not isinstance(value, str):
        raise wrong('an architecture name such as "x86-64"', value)
    try:
        return Architecture.parse(value)
    except SysextError as exc:
        raise problem(exc.message, hint=exc.hint) from exc


def _arch_list(value: object) -> tuple[Architecture, ...]:
    if not isinstance(value, list) or not value:
        raise wrong('a non-empty list such as ["x86-64", "arm64"]', value)
    arches = []
    for index, item in enumerate(value):
        try:
            arches.append(_arch(item))
        except PydanticCustomError as exc:
            ctx = exc.context or {}
            raise problem(str(ctx.get("message")), index, hint=ctx.get("hint")) from exc
    if len(set(arches)) != len(arches):
        raise problem("lists an architecture twice")
    return tuple(arches)


def _arch_map(value: object) -> dict[Architecture, str]:
    if not isinstance(value, dict):
        raise wrong('a table such as { x86-64 = "amd64", arm64 = "arm64" }', value)
    out: dict[Architecture, str] = {}
    for key, upstream in value.items():
        try:
            arch = _arch(key)
        except PydanticCustomError as exc:
            ctx = exc.context or {}
            raise problem(str(ctx.get("message")), key, hint=ctx.get("hint")) from exc
        if not isinstance(upstream, str) or not upstream:
            raise wrong("the upstream spelling as a string", upstream, key)
        out[arch] = upstream
    return out


def _hex(value: object, *subpath: str | int) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value.lower()):
        raise wrong("64 hex digits", value, *subpath)
    return value.lower()


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


def _pins(value: object) -> Sha256Pins:
    """`"HEX"`, `{ARCH = HEX}`, `{VERSION = HEX}` or `{VERSION = {ARCH = HEX}}`."""
    if isinstance(value, Sha256Pins):
        return value
    if isinstance(value, str):
        return Sha256Pins(single=_hex(value))
    if not isinstance(value, dict):
        raise wrong("64 hex digits or a table of them per architecture or version", value)
    out: dict[str, Any] = {}
    arch_names = {a.value for a in Architecture}
    for key, item in value.items():
        if isinstance(item, dict):
            per: dict[str, str] = {}
            for arch_key, digest in item.items():
                try:
                    arch = _arch(arch_key)
                except PydanticCustomError as exc:
                    ctx = exc.context or {}
                    raise problem(str(ctx.get("message")), key, arch_key) from exc
                per[arch.value] = _hex(digest, key, arch_key)
            out[key] = per
        elif key in arch_names:
            out[key] = _hex(item, key)
        else:
            if version_problem(key):
                raise problem(
                    "expected an architecture or a version as key",
                    key,
                    hint='e.g. sha256."1.2.3".x86-64 = "…" or sha256.x86-64 = "…"',
                )
            out[key] = {"": _hex(item, key)}
    return _pins_value(out)


def _pins_value(raw: Mapping[str, Any]) -> Sha256Pins:
    """{ARCH: HEX} / {VERSION: {ARCH or "": HEX}} as typed, read-only pins."""
    by_arch: dict[Architecture, str] = {}
    by_version: dict[str, Mapping[Architecture | None, str]] = {}
    for key, item in raw.items():
        if isinstance(item, dict):
            by_version[key] = MappingProxyType(
                {(Architecture(a) if a else None): str(d) for a, d in item.items()}
            )
        else:
            by_arch[Architecture(key)] = str(item)
    return Sha256Pins(by_arch=MappingProxyType(by_arch), by_version=MappingProxyType(by_version))


def _mode(value: object) -> int:
    if isinstance(value, str) and _MODE.fullmatch(value):
        return int(value, 8)
    raise wrong('an octal mode string such as "0755"', value)


def _strip(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 16:
        raise wrong("an integer from 0 to 16", value)
    return value


RECIPE_FORMATS = tuple(f for f in ArchiveFormat if f is not ArchiveFormat.DIRECTORY)


def _format(value: object) -> ArchiveFormat:
    try:
        fmt = ArchiveFormat(value)
    except ValueError:
        fmt = ArchiveFormat.DIRECTORY
    if fmt not in RECIPE_FORMATS:
        raise wrong(f"one of {', '.join(f.value for f in RECIPE_FORMATS)}", value)
    return fmt


def _kind(value: object) -> str:
    if not isinstance(value, str) or value not in SOURCE_KINDS:
        raise wrong(f"one of {', '.join(SOURCE_KINDS)}", value)
    return value


def _source_id(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise wrong("a short identifier (letters, digits, '.', '_', '-')", value)
    return value


def _string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise wrong("a list of strings", value)
    return tuple(value)


_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


def _deb_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise wrong('a non-empty list of Debian package names such as ["htop"]', value)
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _DEB_NAME.fullmatch(item):
            raise wrong("a Debian package name (lower case, digits, + - .)", item, index)
    if len(set(value)) != len(value):
        raise problem("lists a package twice")
    return tuple(value)


def _os_id(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9._-]+", value):
        raise wrong('an os-release ID such as "debian" (lower case, digits, ".", "_", "-")', value)
    return value


def _version_id(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._~-]+", value):
        raise wrong('an os-release VERSION_ID such as "12"', value)
    return value


def _prefixes(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise wrong('a string or a list of strings such as ["docker-v", "v"]', value)
    return tuple(value)


def _regex(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise wrong("a regular expression", value)
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise problem(f"not a valid regular expression ({exc})") from exc
    if "version" not in compiled.groupindex:
        raise problem("the pattern needs a named group (?P<version>…)")
    return value


def _filter_regex(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise wrong("a regular expression", value)
    try:
        re.compile(value)
    except re.error as exc:
        raise problem(f"not a valid regular expression ({exc})") from exc
    return value


def _fingerprints(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise wrong("a list of OpenPGP fingerprints (40 hex digits)", value)
    out = []
    for index, item in enumerate(value):
        normal = item.replace(" ", "").upper() if isinstance(item, str) else ""
        if not _FINGERPRINT.fullmatch(normal):
            raise wrong("an OpenPGP fingerprint (40 hex digits)", item, index)
        out.append(normal)
    return tuple(out)


def image_path_problem(value: object, *, directory_ok: bool) -> tuple[str, str | None] | None:
    """Why `value` is not a relative path below usr/ or opt/ (spec §1.5), with a hint."""
    if not isinstance(value, str) or not value:
        return f'expected a path inside the image such as "usr/bin/", got {show(value)}', None
    path = value.lstrip("/")
    parts = PurePosixPath(path).parts
    if ".." in parts or "." in parts:
        return f"expected a normalized path without '.' or '..', got {show(value)}", None
    if not path.startswith(IMAGE_TOP_DIRS):
        return (
            f"expected a path below usr/ or opt/, got {show(value)}",
            "systemd-sysext merges only /usr and /opt; ship configuration under "
            "usr/share/NAME/ and copy it to /etc with a tmpfiles.d rule",
        )
    if path.endswith("/") and not directory_ok:
        return f"expected a file path (not ending in '/'), got {show(value)}", None
    return None


def _image_path(directory_ok: bool) -> Callable[[object], str]:
    def check(value: object) -> str:
        found = image_path_problem(value, directory_ok=directory_ok)
        if found:
            raise problem(found[0], hint=found[1])
        assert isinstance(value, str)
        return value.lstrip("/")

    return check


def _name(value: object) -> str:
    text = _expect_str("a string")(value)
    found = name_problem(text)
    if found:
        raise problem(found)
    return text


def _names(value: object) -> tuple[str, ...]:
    names = _string_list(value)
    for index, item in enumerate(names):
        found = name_problem(item)
        if found:
            raise problem(found, index)
    return names


def _version(value: object) -> str:
    text = _expect_str("a non-empty string")(value)
    found = version_problem(text)
    if found:
        raise problem(found, hint="sysupdate accepts only [A-Za-z0-9.,_+-]")
    return text


def _os(value: object) -> str:
    text = _expect_str("a string")(value)
    try:
        ExtensionRelease.parse_os_spec(text)
    except SysextError as exc:
        raise wrong('"ID" or "ID:SYSEXT_LEVEL" (e.g. "flatcar:1.0")', text) from exc
    return text


def _release_fields(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise wrong('a table of FIELD = "value"', value)
    for key, field_value in value.items():
        if not _FIELD.fullmatch(key):
            raise problem(
                "expected an os-release field name (upper-case letters, digits, '_')", key
            )
        if key in MANAGED_KEYS or key.startswith("X_SYSEXT_"):
            raise problem(
                "is written by sysext itself",
                key,
                hint='set the OS with `os = "ID:LEVEL"`, the version with `version`, '
                "X_SYSEXT_* with description, homepage, license and replaces",
            )
        if not isinstance(field_value, str) or "\n" in field_value:
            raise wrong("a one-line string", field_value, key)
    return dict(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise wrong("true or false", value)
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise wrong("the file's text as a string", value)
    return value


def _one_line(value: object) -> str:
    if not isinstance(value, str) or "\n" in value:
        raise wrong("a one-line string", value)
    return value


_K = TypeVar("_K")
_V = TypeVar("_V")


def _read_only(value: Mapping[_K, _V]) -> Mapping[_K, _V]:
    # The models are frozen; their tables are too, so no builder step edits a recipe.
    return MappingProxyType(dict(value))


def _member_glob(value: object) -> str:
    # Members are matched after stripping; a leading or trailing '/' means nothing more.
    return _expect_str("a non-empty string")(value).strip("/")


def _keyring(value: object, info: ValidationInfo) -> Path:
    # Relative to the recipe's directory, like every other path a recipe names.
    text = _expect_str("a non-empty string")(value)
    recipe = (info.context or {}).get("path")
    path = Path(text)
    if path.is_absolute() or not isinstance(recipe, Path):
        return path
    return recipe.resolve().parent / path


def _tables(value: object) -> tuple[object, ...]:
    # TOML arrays of tables come as lists; the model keeps them as tuples.
    if not isinstance(value, list):
        raise wrong("a list", value)
    return tuple(value)


def _json(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema(schema)


_STR = {"type": "string"}
_STRS = {"type": "array", "items": {"type": "string"}}
_ARCH_SCHEMA = {"type": "string", "enum": [a.value for a in Architecture]}
_HEX_SCHEMA = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}

Str = Annotated[str, BeforeValidator(_expect_str("a string", empty_ok=True)), _json(_STR)]
NonEmpty = Annotated[str, BeforeValidator(_expect_str("a non-empty string")), _json(_STR)]
OneLine = Annotated[str, BeforeValidator(_one_line), _json(_STR)]
Flag = Annotated[bool, BeforeValidator(_bool), _json({"type": "boolean"})]
Strings = Annotated[tuple[str, ...], BeforeValidator(_string_list), _json(_STRS)]
Arches = Annotated[
    tuple[Architecture, ...],
    BeforeValidator(_arch_list),
    _json({"type": "array", "items": _ARCH_SCHEMA, "minItems": 1, "uniqueItems": True}),
]
ArchMap = Annotated[
    Mapping[Architecture, str],
    BeforeValidator(_arch_map),
    AfterValidator(_read_only),
    _json({"type": "object", "propertyNames": _ARCH_SCHEMA, "additionalProperties": _STR}),
]
Pins = Annotated[
    Sha256Pins,
    BeforeValidator(_pins),
    _json(
        {
            "oneOf": [
                _HEX_SCHEMA,
                {
                    "type": "object",
                    "additionalProperties": {
                        "oneOf": [
                            _HEX_SCHEMA,
                            {
                                "type": "object",
                                "propertyNames": _ARCH_SCHEMA,
                                "additionalProperties": _HEX_SCHEMA,
                            },
                        ]
                    },
                },
            ]
        }
    ),
]
Mode = Annotated[
    int, BeforeValidator(_mode), _json({"type": "string", "pattern": "^0?[0-7]{3,4}$"})
]
Strip = Annotated[
    int, BeforeValidator(_strip), _json({"type": "integer", "minimum": 0, "maximum": 16})
]
Format = Annotated[
    ArchiveFormat,
    BeforeValidator(_format),
    _json({"type": "string", "enum": [f.value for f in RECIPE_FORMATS]}),
]
Kind = Annotated[str, BeforeValidator(_kind), _json({"type": "string", "enum": list(SOURCE_KINDS)})]
SourceId = Annotated[
    str,
    BeforeValidator(_source_id),
    _json({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"}),
]
Prefixes = Annotated[
    tuple[str, ...], BeforeValidator(_prefixes), _json({"oneOf": [_STR, {**_STRS, "minItems": 1}]})
]
Pattern = Annotated[str, BeforeValidator(_regex), _json({"type": "string", "format": "regex"})]
Filter = Annotated[
    str, BeforeValidator(_filter_regex), _json({"type": "string", "format": "regex"})
]
Fingerprints = Annotated[
    tuple[str, ...],
    BeforeValidator(_fingerprints),
    _json({"type": "array", "items": {"type": "string", "pattern": "^[0-9A-Fa-f ]{40,80}$"}}),
]
ImageDir = Annotated[
    str, BeforeValidator(_image_path(True)), _json({"type": "string", "pattern": "^/?(usr|opt)/"})
]
ImageFile = Annotated[
    str,
    BeforeValidator(_image_path(False)),
    _json({"type": "string", "pattern": "^/?(usr|opt)/.*[^/]$"}),
]
Name = Annotated[
    str,
    BeforeValidator(_name),
    _json({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"}),
]
Names = Annotated[tuple[str, ...], BeforeValidator(_names), _json(_STRS)]
Version = Annotated[
    str, BeforeValidator(_version), _json({"type": "string", "pattern": "^[A-Za-z0-9.,_+-]+$"})
]
OsSpec = Annotated[
    str,
    BeforeValidator(_os),
    _json({"type": "string", "pattern": "^[a-z0-9._-]+(:[a-z0-9._-]+)?$"}),
]
ReleaseFields = Annotated[
    Mapping[str, str],
    BeforeValidator(_release_fields),
    AfterValidator(_read_only),
    _json(
        {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Z][A-Z0-9_]*$"},
            "additionalProperties": _STR,
        }
    ),
]
Text = Annotated[str, BeforeValidator(_text), _json(_STR)]
DebNames = Annotated[
    tuple[str, ...],
    BeforeValidator(_deb_names),
    _json({"type": "array", "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9+.-]+$"}}),
]
OsId = Annotated[
    str, BeforeValidator(_os_id), _json({"type": "string", "pattern": "^[a-z0-9._-]+$"})
]
VersionId = Annotated[
    str, BeforeValidator(_version_id), _json({"type": "string", "pattern": "^[A-Za-z0-9._~-]+$"})
]


def _platforms(value: object) -> dict[Architecture, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise wrong('a table such as { x86-64 = ["manylinux_2_17_x86_64"] }', value)
    out: dict[Architecture, tuple[str, ...]] = {}
    for key, tags in value.items():
        try:
            arch = _arch(key)
        except PydanticCustomError as exc:
            raise problem(str((exc.context or {}).get("message")), key) from exc
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise wrong("a list of strings", tags, key)
        out[arch] = tuple(tags)
    return out


Platforms = Annotated[
    Mapping[Architecture, tuple[str, ...]],
    BeforeValidator(_platforms),
    AfterValidator(_read_only),
    _json({"type": "object", "propertyNames": _ARCH_SCHEMA, "additionalProperties": _STRS}),
]
MemberGlob = Annotated[str, BeforeValidator(_member_glob), _json(_STR)]
Keyring = Annotated[Path, BeforeValidator(_keyring), _json(_STR)]
_T = TypeVar("_T")
# `[[sources]]`, `[[install]]`…: a list of tables, each validated by its model.
Tables = Annotated[tuple[_T, ...], BeforeValidator(_tables)]
