"""The one reader and writer of os-release syntax.

Used for a host's /etc/os-release, for extension-release files inside images, and for the
release files of uploads alike. Syntax (os-release(5)): `KEY=value` lines, values optionally
in single or double quotes, backslash escapes inside double quotes, `#` comments, blank
lines ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from sysext.core.errors import SysextError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that are safe unquoted in a shell assignment.
_SAFE = re.compile(r"[A-Za-z0-9_.,:+/@%=-]*")


class OsReleaseError(SysextError):
    pass


def parse_os_release(text: str, *, source: str = "os-release") -> dict[str, str]:
    """Parse os-release syntax; later assignments win, like a shell would do."""
    fields: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise OsReleaseError(
                f"{source}: line {number}: expected KEY=value, got {raw!r}",
            )
        fields[key] = _unquote(value.strip(), source, number)
    return fields


def _unquote(value: str, source: str, number: int) -> str:
    if not value:
        return ""
    quote = value[0]
    if quote in "\"'":
        if len(value) < 2 or value[-1] != quote:
            raise OsReleaseError(f"{source}: line {number}: unterminated quote in {value!r}")
        inner = value[1:-1]
        if quote == "'":
            return inner
        return re.sub(r'\\([\\"$`])', r"\1", inner)
    return re.sub(r"\\(.)", r"\1", value)


def format_os_release(fields: Mapping[str, str]) -> str:
    """Write fields in os-release syntax, quoting only where needed; keys keep their order."""
    lines = []
    for key, value in fields.items():
        if not _KEY.fullmatch(key):
            raise OsReleaseError(f"invalid os-release key {key!r}")
        if "\n" in value:
            raise OsReleaseError(f"os-release value of {key} contains a newline")
        if _SAFE.fullmatch(value) and value:
            lines.append(f"{key}={value}")
        else:
            escaped = re.sub(r'([\\"$`])', r"\\\1", value)
            lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


def read_os_release(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OsReleaseError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise OsReleaseError(f"{path}: not UTF-8 text") from None
    return parse_os_release(text, source=str(path))
