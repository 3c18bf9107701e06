"""`MatchPattern=` as systemd-sysupdate 252–256 parses, matches and formats it (spec §2.3).

Pure functions over strings. The quirks are deliberate and mirror `sysupdate-pattern.c`:

* a marker captures up to the *first* occurrence of the next literal and is never
  retried at a later occurrence (no backtracking);
* after the last element the rest of the name is **not** checked (§7.2: `foo-@v.raw`
  matches `foo-1.raw.sig`), so `strict=True` is offered for our own safety checks;
* structural mistakes (`@v@u`, no `@v`, a repeated or unknown marker, a trailing `@`) are
  EINVAL, a fatal configuration error; a forbidden *character* is EBADRQC, which systemd
  accepts at parse time and only fails on when it first matches a name.

Specifier expansion (`%a`, `%w`, …) against a host lives here too, because it is applied
to every pattern word before the pattern is parsed.
"""

from __future__ import annotations

import enum
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sysext.core.errors import SysextError
from sysext.systemd.architecture import Architecture
from sysext.systemd.osrelease import read_os_release
from sysext.systemd.versioning import version_is_valid

NAME_MAX = 255
# Literal characters systemd refuses (char_is_valid() in sysupdate-pattern.c).
_FORBIDDEN_LITERALS = frozenset("$*?[]!\\|")


class PatternError(SysextError):
    """A pattern systemd-sysupdate refuses (at parse time, or when it first matches)."""


class SpecifierError(SysextError):
    """A `%x` specifier systemd does not know (or an over-long expansion)."""


class Field(enum.Enum):
    """The `@x` markers of a pattern, with the name used in `PatternMatch.fields`."""

    VERSION = "v"
    PARTITION_UUID = "u"
    PARTITION_FLAGS = "f"
    NO_AUTO = "a"
    GROW_FILE_SYSTEM = "g"
    READ_ONLY = "r"
    MTIME = "t"
    MODE = "m"
    SIZE = "s"
    TRIES_DONE = "d"
    TRIES_LEFT = "l"
    SHA256 = "h"

    @property
    def key(self) -> str:
        """Name of the field in `PatternMatch.fields` and `format_pattern(**fields)`."""
        return _FIELD_KEYS[self]


_FIELD_KEYS: dict[Field, str] = {
    Field.VERSION: "version",
    Field.PARTITION_UUID: "partition_uuid",
    Field.PARTITION_FLAGS: "partition_flags",
    Field.NO_AUTO: "no_auto",
    Field.GROW_FILE_SYSTEM: "grow_file_system",
    Field.READ_ONLY: "read_only",
    Field.MTIME: "mtime",
    Field.MODE: "mode",
    Field.SIZE: "size",
    Field.TRIES_DONE: "tries_done",
    Field.TRIES_LEFT: "tries_left",
    Field.SHA256: "sha256",
}
_FIELD_BY_KEY = {f.key: f for f in Field}


@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class Marker:
    field: Field


@dataclass(frozen=True)
class Slash:
    """A `/` (v255+): a directory separator for file targets; never in a manifest name."""


Element = Literal | Marker | Slash


@dataclass(frozen=True)
class Pattern:
    text: str
    elements: tuple[Element, ...]
    # EBADRQC-class problem (forbidden character): systemd accepts the pattern but every
    # match attempt fails with this message.
    match_error: str | None = None

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(e.field for e in self.elements if isinstance(e, Marker))

    def __str__(self) -> str:
        return self.text


class MatchResult(enum.Enum):
    YES = "yes"
    NO = "no"
    # The name is a directory on the way to a nested match (v255+ PATTERN_MATCH_RETRY);
    # for url-file sources this counts as no match.
    RETRY = "retry"


@dataclass(frozen=True)
class PatternMatch:
    version: str
    fields: Mapping[str, str] = field(default_factory=dict)
    pattern: str = ""


def parse_pattern(text: str, *, allow_slash: bool = True) -> Pattern:
    """Split `text` like pattern_split(); raise PatternError for what systemd calls EINVAL.

    `allow_slash=False` gives systemd 252's behaviour, where `/` is a forbidden character.
    """
    elements: list[Element] = []
    literal: list[str] = []
    seen: set[Field] = set()
    # Like upstream, the start of the pattern counts as "after a literal", so `@v.raw` is
    # fine, while two markers need a literal or a `/` between them.
    separated = True
    at = False

    def flush() -> None:
        if literal:
            elements.append(Literal("".join(literal)))
            literal.clear()

    def bad_char(char: str) -> Pattern:
        flush()
        problem = f"pattern {text!r}: invalid character {char!r}"
        return Pattern(text, tuple(elements), match_error=problem)

    for char in text:
        if char == "@" and not at:
            at = True
            continue
        if at and char != "@":
            at = False
            marker = _marker(char)
            if marker is None:
                raise PatternError(
                    f"pattern {text!r}: unknown field marker '@{char}'",
                    "known markers: @v @u @f @a @g @r @t @m @s @d @l @h; write '@@' for '@'",
                )
            if marker in seen:
                raise PatternError(f"pattern {text!r}: field marker '@{char}' appears twice")
            if not separated:
                raise PatternError(
                    f"pattern {text!r}: two field markers without a literal between them",
                    "systemd splits fields at the next literal text, e.g. NAME-@v-%a.raw",
                )
            flush()
            elements.append(Marker(marker))
            seen.add(marker)
            separated = False
            continue
        at = False  # "@@" falls through as one literal '@'
        if char == "/" and allow_slash:
            flush()
            elements.append(Slash())
            separated = True
            continue
        if not (" " <= char <= "~") or char in _FORBIDDEN_LITERALS or char == "/":
            return bad_char(char)
        literal.append(char)
        separated = True
    if at:
        raise PatternError(f"pattern {text!r}: trailing '@'", "write '@@' for a literal '@'")
    if Field.VERSION not in seen:
        raise PatternError(
            f"pattern {text!r}: no '@v' version marker",
            "every MatchPattern= needs @v, e.g. NAME-@v-%a.raw",
        )
    flush()
    return Pattern(text, tuple(elements))


def _marker(char: str) -> Field | None:
    for candidate in Field:
        if candidate.value == char:
            return candidate
    return None


def pattern_match(pattern: Pattern | str, name: str) -> tuple[MatchResult, PatternMatch | None]:
    """pattern_match() of systemd 252–256: YES with the fields, NO, or RETRY.

    Raises PatternError when the pattern holds a forbidden character (EBADRQC).
    """
    pat = pattern if isinstance(pattern, Pattern) else parse_pattern(pattern)
    if pat.match_error:
        raise PatternError(
            f"failed to match pattern: {pat.match_error}",
            "pattern literals may not contain $ * ? [ ] ! \\ | or control characters",
        )
    found: dict[str, str] = {}
    pos = 0
    elements = pat.elements
    for index, element in enumerate(elements):
        if isinstance(element, Slash):
            if name.startswith("/", pos):
                pos += 1
                continue
            if pos == len(name):
                return MatchResult.RETRY, None
            return MatchResult.NO, None
        if isinstance(element, Literal):
            if not name.startswith(element.text, pos):
                return MatchResult.NO, None
            pos += len(element.text)
            continue
        following = elements[index + 1] if index + 1 < len(elements) else None
        if following is None:
            end = len(name)
        else:
            # strstr(): the first occurrence only — systemd never backtracks.
            if isinstance(following, Slash):
                # No '/' yet: the name may be the directory on the way (RETRY below).
                end = name.find("/", pos)
                end = len(name) if end < 0 else end
            else:
                end = name.find(_literal_text(following), pos)
                if end < 0:
                    return MatchResult.NO, None
        value = name[pos:end]
        if not _field_value_ok(element.field, value):
            return MatchResult.NO, None
        found[element.field.key] = value
        pos = end
    # Deliberately no "pos == len(name)" check: 252–256 ignore trailing text (§7.2).
    version = found.pop(Field.VERSION.key)
    return MatchResult.YES, PatternMatch(version, found, pat.text)


def _literal_text(element: Element) -> str:
    assert isinstance(element, Literal), "parse_pattern() separates markers by literals"
    return element.text


def match_pattern(
    pattern: Pattern | str, name: str, *, strict: bool = False
) -> PatternMatch | None:
    """The fields if `name` matches as systemd 252–256 would see it, else None.

    `strict=True` additionally requires the pattern to consume the whole name (what
    systemd ≥ 258 does, and what our own safety checks want: `foo-1.raw.sig` must not
    count as an image).
    """
    pat = pattern if isinstance(pattern, Pattern) else parse_pattern(pattern)
    result, found = pattern_match(pat, name)
    if result is not MatchResult.YES or found is None:
        return None
    if strict and format_pattern(pat, found.version, **found.fields) != name:
        return None
    return found


def match_many(
    patterns: Iterable[Pattern | str], name: str, *, strict: bool = False
) -> PatternMatch | None:
    """pattern_match_many(): the patterns are tried in order and the first match wins."""
    for pattern in patterns:
        found = match_pattern(pattern, name, strict=strict)
        if found is not None:
            return found
    return None


def format_pattern(pattern: Pattern | str, version: str, **fields: object) -> str:
    """pattern_format(): the file name sysupdate writes for these fields.

    Booleans are written as 1/0 and modes in octal, as upstream does; a marker without a
    value is an error ("Failed to format target pattern", ENXIO).
    """
    pat = pattern if isinstance(pattern, Pattern) else parse_pattern(pattern)
    unknown = set(fields) - set(_FIELD_BY_KEY) - {Field.VERSION.key}
    if unknown:
        raise PatternError(f"unknown pattern field(s): {', '.join(sorted(unknown))}")
    values: dict[str, object] = {Field.VERSION.key: version, **fields}
    parts: list[str] = []
    for element in pat.elements:
        if isinstance(element, Literal):
            parts.append(element.text)
        elif isinstance(element, Slash):
            parts.append("/")
        else:
            value = values.get(element.field.key)
            if value is None:
                raise PatternError(
                    f"pattern {pat.text!r}: no value for '@{element.field.value}'"
                    f" ({element.field.key})",
                    "sysupdate fails with 'Failed to format target pattern' here too",
                )
            parts.append(_format_value(element.field, value))
    return "".join(parts)


def _format_value(marker: Field, value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if marker is Field.MODE and isinstance(value, int):
        return f"{value:o}"
    if marker is Field.PARTITION_FLAGS and isinstance(value, int):
        return f"{value:x}"
    return str(value)


# --- field validators (pattern_match()'s switch over element types) ---------------------

_BOOLEANS = frozenset(("1", "yes", "y", "true", "t", "on", "0", "no", "n", "false", "f", "off"))
_ID128 = re.compile(
    r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_U64_MAX = (1 << 64) - 1


def _strtoull(text: str, base: int) -> int | None:
    """strtoull() as systemd's safe_atou64*() use it: leading space, sign, auto base."""
    s = text.lstrip(" \t\n\r\v\f")
    negative = False
    if s[:1] in ("+", "-"):
        negative = s[0] == "-"
        s = s[1:]
    if base in (0, 16) and s[:2].lower() == "0x" and len(s) > 2:
        s, base = s[2:], 16
    elif base == 0:
        base = 8 if s.startswith("0") and len(s) > 1 else 10
    digits = "0123456789abcdef"[:base]
    if not s or any(c.lower() not in digits for c in s):
        return None
    number = int(s, base)
    if number > _U64_MAX or (negative and number != 0):
        return None
    return number


def _field_value_ok(marker: Field, value: str) -> bool:
    if marker is Field.VERSION:
        return version_is_valid(value)
    if marker is Field.PARTITION_UUID:
        return _ID128.fullmatch(value) is not None
    if marker is Field.PARTITION_FLAGS:
        return _strtoull(value, 16) is not None
    if marker in (Field.NO_AUTO, Field.GROW_FILE_SYSTEM, Field.READ_ONLY):
        return value.lower() in _BOOLEANS
    if marker is Field.MODE:
        mode = _strtoull(value, 8)
        return mode is not None and mode <= 0o775
    if marker is Field.SHA256:
        return re.fullmatch(r"[0-9a-fA-F]{64}", value) is not None
    # @t @s @d @l: unsigned decimal (safe_atou64)
    return _strtoull(value, 0) is not None


# --- specifiers --------------------------------------------------------------------------


@dataclass(frozen=True)
class HostInfo:
    """What specifier expansion needs to know about a host (real or hypothetical)."""

    arch: str
    os_release: Mapping[str, str]
    hostname: str = "localhost"
    pretty_hostname: str = ""
    machine_id: str = ""
    boot_id: str = ""
    kernel_release: str = ""

    @classmethod
    def from_os_release_file(cls, path: Path, arch: str | None = None) -> HostInfo:
        """A host described by an os-release file; `arch` defaults to this machine's."""
        fields = read_os_release(path)
        return cls(
            arch=Architecture.parse(arch).value if arch else Architecture.from_uname().value,
            os_release=fields,
        )

    @classmethod
    def local(cls, os_release: Path = Path("/etc/os-release")) -> HostInfo:
        """This machine, as systemd-sysupdate running here would see it."""
        fields = read_os_release(os_release)
        return cls(
            arch=Architecture.from_uname().value,
            os_release=fields,
            hostname=socket.gethostname(),
            machine_id=_read_first_line(Path("/etc/machine-id")),
            boot_id=_read_first_line(Path("/proc/sys/kernel/random/boot_id")).replace("-", ""),
            kernel_release=os.uname().release,
        )


def _read_first_line(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _specifier_table(host: HostInfo) -> dict[str, str]:
    # COMMON_SYSTEM_SPECIFIERS + COMMON_TMP_SPECIFIERS of v256 (spec §2.3); missing
    # os-release fields expand to "".
    osr = host.os_release
    return {
        "a": host.arch,
        "A": osr.get("IMAGE_VERSION", ""),
        "b": host.boot_id,
        "B": osr.get("BUILD_ID", ""),
        "H": host.hostname,
        "l": host.hostname.split(".", 1)[0],
        "q": host.pretty_hostname or host.hostname,
        "m": host.machine_id,
        "M": osr.get("IMAGE_ID", ""),
        "o": osr.get("ID", ""),
        "v": host.kernel_release,
        "w": osr.get("VERSION_ID", ""),
        "W": osr.get("VARIANT_ID", ""),
        "T": "/tmp",
        "V": "/var/tmp",
    }


def expand_specifiers(text: str, host: HostInfo, *, max_length: int | None = None) -> str:
    """specifier_printf(): expand `%x`; `%%` is `%`; an unknown specifier is an error.

    A lone `%` at the very end is kept, as upstream does. `max_length` mirrors the
    NAME_MAX limit applied to pattern words.
    """
    table = _specifier_table(host)
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "%" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        spec = text[i + 1]
        if spec == "%":
            out.append("%")
        elif spec in table:
            out.append(table[spec])
        else:
            raise SpecifierError(
                f"unknown specifier '%{spec}' in {text!r}",
                "write '%%' for a literal '%' (URL escapes like %20 need '%%20')",
            )
        i += 2
    result = "".join(out)
    if max_length is not None and len(result.encode()) > max_length:
        raise SpecifierError(f"{text!r} expands to more than {max_length} bytes")
    return result


@dataclass(frozen=True)
class ExpandedPatterns:
    patterns: tuple[str, ...]
    # Words dropped because of an unknown specifier, with the reason (systemd warns).
    dropped: tuple[str, ...] = ()
    warning: str | None = None


def expand_match_patterns(value: str, host: HostInfo) -> ExpandedPatterns:
    """One `MatchPattern=` line: split into words, expand each, validate (§2.3).

    An unknown specifier drops that word and every later word of the line (systemd logs a
    warning); an invalid pattern (EINVAL) raises PatternError.
    """
    words = value.split()
    kept: list[str] = []
    for index, word in enumerate(words):
        try:
            expanded = expand_specifiers(word, host, max_length=NAME_MAX)
        except SpecifierError as exc:
            return ExpandedPatterns(tuple(kept), tuple(words[index:]), exc.message)
        parse_pattern(expanded)
        if expanded not in kept:  # strv_uniq()
            kept.append(expanded)
    return ExpandedPatterns(tuple(kept))
