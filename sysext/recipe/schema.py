"""The recipe format, declared once (pydantic v2): parser, error messages, JSON Schema, docs.

The models below describe the TOML document exactly as written. `validate_document()`
turns a pydantic failure into ONE `RecipeError` naming the file and the key path
(`recipe podman.toml: sources[0].sha256: expected 64 hex digits, got 'abc'`);
the same declaration gives `recipes/schema.json` and the README's key table
(sysext.recipe.docs; `python -m sysext.recipe.docs` rewrites both).

Checks that need more than one key (templates against `arch_map`, install rules against
source ids, which keys a source kind accepts) live in sysext.recipe, after this layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
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
    if isinstance(value, list):
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


def _arch_list(value: object) -> list[Architecture]:
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
    return arches


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


def _pins(value: object) -> dict[str, Any]:
    """`"HEX"`, `{ARCH = HEX}`, `{VERSION = HEX}` or `{VERSION = {ARCH = HEX}}`, normalized
    to {"": HEX} / {ARCH: HEX} / {VERSION: {ARCH or "": HEX}}."""
    if isinstance(value, str):
        return {"": _hex(value)}
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
    return out


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


def _string_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise wrong("a list of strings", value)
    return list(value)


_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


def _deb_names(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise wrong('a non-empty list of Debian package names such as ["htop"]', value)
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _DEB_NAME.fullmatch(item):
            raise wrong("a Debian package name (lower case, digits, + - .)", item, index)
    if len(set(value)) != len(value):
        raise problem("lists a package twice")
    return list(value)


def _os_id(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9._-]+", value):
        raise wrong('an os-release ID such as "debian" (lower case, digits, ".", "_", "-")', value)
    return value


def _version_id(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._~-]+", value):
        raise wrong('an os-release VERSION_ID such as "12"', value)
    return value


def _prefixes(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise wrong('a string or a list of strings such as ["docker-v", "v"]', value)
    return list(value)


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


def _fingerprints(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise wrong("a list of OpenPGP fingerprints (40 hex digits)", value)
    out = []
    for index, item in enumerate(value):
        normal = item.replace(" ", "").upper() if isinstance(item, str) else ""
        if not _FINGERPRINT.fullmatch(normal):
            raise wrong("an OpenPGP fingerprint (40 hex digits)", item, index)
        out.append(normal)
    return out


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


def _names(value: object) -> list[str]:
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
Strings = Annotated[list[str], BeforeValidator(_string_list), _json(_STRS)]
Arches = Annotated[
    list[Architecture],
    BeforeValidator(_arch_list),
    _json({"type": "array", "items": _ARCH_SCHEMA, "minItems": 1, "uniqueItems": True}),
]
ArchMap = Annotated[
    dict[Architecture, str],
    BeforeValidator(_arch_map),
    _json({"type": "object", "propertyNames": _ARCH_SCHEMA, "additionalProperties": _STR}),
]
Pins = Annotated[
    dict[str, Any],
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
    list[str], BeforeValidator(_prefixes), _json({"oneOf": [_STR, {**_STRS, "minItems": 1}]})
]
Pattern = Annotated[str, BeforeValidator(_regex), _json({"type": "string", "format": "regex"})]
Filter = Annotated[
    str, BeforeValidator(_filter_regex), _json({"type": "string", "format": "regex"})
]
Fingerprints = Annotated[
    list[str],
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
Names = Annotated[list[str], BeforeValidator(_names), _json(_STRS)]
Version = Annotated[
    str, BeforeValidator(_version), _json({"type": "string", "pattern": "^[A-Za-z0-9.,_+-]+$"})
]
OsSpec = Annotated[
    str,
    BeforeValidator(_os),
    _json({"type": "string", "pattern": "^[a-z0-9._-]+(:[a-z0-9._-]+)?$"}),
]
ReleaseFields = Annotated[
    dict[str, str],
    BeforeValidator(_release_fields),
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
    list[str],
    BeforeValidator(_deb_names),
    _json({"type": "array", "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9+.-]+$"}}),
]
OsId = Annotated[
    str, BeforeValidator(_os_id), _json({"type": "string", "pattern": "^[a-z0-9._-]+$"})
]
VersionId = Annotated[
    str, BeforeValidator(_version_id), _json({"type": "string", "pattern": "^[A-Za-z0-9._~-]+$"})
]


def _platforms(value: object) -> dict[Architecture, list[str]]:
    if not isinstance(value, dict):
        raise wrong('a table such as { x86-64 = ["manylinux_2_17_x86_64"] }', value)
    out: dict[Architecture, list[str]] = {}
    for key, tags in value.items():
        try:
            arch = _arch(key)
        except PydanticCustomError as exc:
            raise problem(str((exc.context or {}).get("message")), key) from exc
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise wrong("a list of strings", tags, key)
        out[arch] = list(tags)
    return out


Platforms = Annotated[
    dict[Architecture, list[str]],
    BeforeValidator(_platforms),
    _json({"type": "object", "propertyNames": _ARCH_SCHEMA, "additionalProperties": _STRS}),
]

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


def _doc(text: str, kinds: str = "", *, required: bool = False) -> Any:
    """Field metadata: the description (schema and README table) and the kinds it applies to;
    optional fields default to None (absent)."""
    extra: dict[str, Any] | None = {"x-kinds": kinds} if kinds else None
    if required:
        return Field(description=text, json_schema_extra=extra)
    return Field(None, description=text, json_schema_extra=extra)


class SourceDoc(BaseModel):
    """One `[[sources]]` table: where a file comes from and how it is verified."""

    model_config = _STRICT

    kind: Kind = Field(
        "url",
        description="`url` (default), `file`, `pypi`, `deb`, `apt`; a `.rpm` download is a "
        "`url` source whose payload is extracted (scripts never run)",
    )
    id: SourceId | None = _doc(
        "name used by `install.source` (default: the package name or `sourceN`); required in "
        "rules only when there are several sources"
    )
    sha256: Pins | None = _doc(
        'pin: `"HEX"`, a table per architecture `{ x86-64 = "HEX" }`, or per version '
        '`sha256."1.0.3".x86-64 = "HEX"` (most specific wins)'
    )
    format: Format | None = _doc("archive format (default: from the file name; `.whl` is zip)")
    strip_components: Strip = Field(0, description="leading path components to drop from members")
    allow_setuid: Strings = Field(
        default_factory=list,
        description="member globs (after stripping) that may carry setuid/setgid bits",
    )
    architectures: Arches | None = _doc("limit this source to some of the recipe's architectures")
    url: NonEmpty | None = _doc(
        "download URL template (`https://`, `http://`, `file://` or a local path)", "url"
    )
    checksum_url: NonEmpty | None = _doc(
        "upstream checksum file (sha256sum text or binary mode, aggregate, BSD, or a bare "
        "digest); used when no pin matches",
        "url",
    )
    signature_url: NonEmpty | None = _doc(
        "detached OpenPGP signature of the download (`.asc` armored or `.sig` binary), "
        "checked against `signing_keys`",
        "url",
    )
    signing_keys: Fingerprints | None = _doc(
        "fingerprints of the OpenPGP certificates allowed to sign (primary key fingerprints)",
        "url",
    )
    key_url: NonEmpty | None = _doc(
        "where the signing certificate is fetched from (URL, or a path relative to the "
        "recipe); only certificates whose fingerprint is in `signing_keys` are used",
        "url",
    )
    integrity: Literal["lock", "github-digest"] | None = _doc(
        'where upstream publishes no checksum or signature: `"lock"` makes builds need a '
        '`sysext lock` entry (`sysext build --locked`); `"github-digest"` takes the sha256 '
        "GitHub records for a release asset (uploads since June 2025), else needs the lock",
        "url",
    )
    file_name: NonEmpty | None = _doc(
        "the name a single-file download gets inside the image source tree", "url, file"
    )
    path: NonEmpty | None = _doc("a file relative to the recipe", "file")
    package: NonEmpty | None = _doc("project / package name", "pypi, deb")
    package_version: NonEmpty | None = _doc(
        "default `{version}` for pypi; for deb, unset means apt's candidate", "pypi, deb"
    )
    platforms: Platforms | None = _doc(
        "wheel platform tags per architecture (default: manylinux 2.17 / 2014, musllinux 1.1)",
        "pypi",
    )
    python_version: NonEmpty | None = _doc(
        "`--python-version` for pip (default: the running interpreter's)", "pypi"
    )
    packages: DebNames | None = _doc(
        "Debian packages to add to the base with their dependencies, minus what the base "
        "has; the first names the image's version (see [base])",
        "apt",
    )
    skip_scripts: DebNames | None = _doc(
        "packages whose first-install maintainer scripts may stay unrun (checked by the "
        "recipe's author; every other package with such scripts is refused)",
        "apt",
    )


class InstallDoc(BaseModel):
    """One `[[install]]` rule: archive members → image paths."""

    model_config = _STRICT

    source: NonEmpty | None = _doc("the source id (may be left out when there is one source)")
    from_: NonEmpty = Field(
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
        default_factory=list,
        description="globs (matched against a member's base name) that `from` must skip, "
        'e.g. `["LICENSE*", "*.md"]`',
    )
    optional: Flag = Field(False, description="a glob matching nothing is an error unless true")


class FileDoc(BaseModel):
    """One `[[files]]` entry: a file written from the recipe itself."""

    model_config = _STRICT

    path: ImageFile = _doc("image path of the file", required=True)
    content: Text = _doc("the file's text", required=True)
    mode: Mode = Field("0644", validate_default=True, description='octal string (default `"0644"`)')


class LinkDoc(BaseModel):
    """One `[[links]]` entry: a symbolic link in the image."""

    model_config = _STRICT

    path: ImageFile = _doc("image path of the link", required=True)
    target: NonEmpty = _doc("what the link points to (relative or absolute)", required=True)
    optional: Flag = Field(
        False,
        description="create the link only when its target exists in the image (for files "
        "that some upstream versions lack)",
    )


class VersionsDoc(BaseModel):
    """`[versions]`: where `sysext versions` and `--version latest` look."""

    model_config = _STRICT

    github: NonEmpty | None = _doc('"owner/repo": the GitHub releases API (all pages)')
    pypi: NonEmpty | None = _doc("project name: `pip index versions`")
    index_url: NonEmpty | None = _doc(
        "an HTML directory listing (e.g. download.docker.com); versions are taken from its "
        "links with `tag_pattern`"
    )
    tag_prefix: Prefixes = Field(
        default_factory=lambda: ["v"],
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
    def _one_feed(self) -> VersionsDoc:
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


class BaseDoc(BaseModel):
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
    components: DebNames = Field(
        default_factory=lambda: ["main"], description="archive components (default `main`)"
    )
    keyring: NonEmpty | None = _doc(
        "OpenPGP keyring whose keys sign the archive's InRelease (default for debian: "
        "/usr/share/keyrings/debian-archive-keyring.gpg of debian-archive-keyring); "
        "relative to the recipe"
    )
    signing_keys: Fingerprints | None = _doc(
        "primary key fingerprints of the keyring that may sign (default: any key in it)"
    )


class RecipeDoc(BaseModel):
    """A recipe file: one extension, built from upstream release files."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        title="sysext recipe",
        json_schema_extra={"$id": "https://sysext.invalid/recipes/schema.json"},
    )

    name: Name | None = _doc(
        "activation name: extension-release.NAME (default: the file name without .toml)"
    )
    description: OneLine = Field("", description="one line; written as X_SYSEXT_DESCRIPTION")
    homepage: OneLine = Field("", description="upstream home page; X_SYSEXT_HOMEPAGE")
    license: OneLine = Field("", description="SPDX expression; X_SYSEXT_LICENSE")
    version: Version | None = _doc(
        "default upstream version (only `[A-Za-z0-9.,_+-]`, what systemd-sysupdate accepts); "
        "`--version` overrides it; required unless an `apt` source decides it"
    )
    architectures: Arches = _doc('systemd\'s names, e.g. `["x86-64", "arm64"]`', required=True)
    arch_map: ArchMap = Field(
        default_factory=dict,
        description="`{arch}` in templates: the upstream spelling per architecture",
    )
    os: OsSpec | None = _doc("`ID[:SYSEXT_LEVEL]` the image is bound to (default `_any`)")
    reload_manager: Flag | None = _doc(
        "EXTENSION_RELOAD_MANAGER=1 (default: true exactly when units ship)"
    )
    replaces: Names = Field(
        default_factory=list,
        description="OS-shipped extensions this one replaces (e.g. `docker-flatcar`); "
        "X_SYSEXT_REPLACES, masked by `sysext butane`",
    )
    allow_setuid: Strings = Field(
        default_factory=list, description="image paths that may keep a setuid/setgid bit"
    )
    extension_release: ReleaseFields = Field(
        default_factory=dict, description='extra `FIELD = "value"` lines for extension-release.NAME'
    )
    sources: list[SourceDoc] = Field(min_length=1, description="`[[sources]]`: at least one")
    install: list[InstallDoc] = Field(default_factory=list, description="`[[install]]` rules")
    files: list[FileDoc] = Field(default_factory=list, description="`[[files]]` written inline")
    links: list[LinkDoc] = Field(default_factory=list, description="`[[links]]` symbolic links")
    versions: VersionsDoc | None = _doc("`[versions]`: the upstream version feed")
    base: BaseDoc | None = _doc("`[base]`: the OS an `apt` source builds against")


# -- from pydantic errors to one line naming file and key -----------------------------------

_TYPE_WORDS = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "an integer",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def key_path(parts: list[str | int]) -> str:
    """`["sources", 0, "sha256", "1.2.3"]` → `sources[0].sha256."1.2.3"`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = f'"{part}"' if "." in part else part
        out = f"{out}.{text}" if out else text
    return out


def _known_keys(model: type[BaseModel]) -> list[str]:
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _model_at(parts: list[str | int]) -> type[BaseModel]:
    model: type[BaseModel] = RecipeDoc
    nested: dict[str, type[BaseModel]] = {
        "sources": SourceDoc,
        "install": InstallDoc,
        "files": FileDoc,
        "links": LinkDoc,
        "versions": VersionsDoc,
        "base": BaseDoc,
    }
    for part in parts:
        if isinstance(part, str) and part in nested and model is RecipeDoc:
            model = nested[part]
    return model


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
    where = key_path(loc)
    prefix = f"recipe {file}: {where}: " if where else f"recipe {file}: "
    return RecipeError(prefix + message, hint)


def validate_document(data: Mapping[str, object], file: str) -> RecipeDoc:
    """The document as a RecipeDoc, or the first problem as a RecipeError."""
    try:
        return RecipeDoc.model_validate(dict(data))
    except ValidationError as exc:
        raise translate(exc.errors()[0], file) from None
