"""Durations as people write them in flags and config files: `7d`, `12h`, `2w`, `90s`.

One grammar for every lifetime and interval (signature lifetime, key-rotation overlap,
re-signing period), so `--expires 7d` and `signature_lifetime = "7d"` mean the same.
"""

from __future__ import annotations

import datetime as dt
import re

from sysext.core.errors import SysextError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str, *, what: str = "duration") -> dt.timedelta:
    """`7d`, `36h`, `1w2d`, `600s` → timedelta; a clear error for anything else or zero."""
    cleaned = text.strip().lower().replace(" ", "")
    parts = _PATTERN.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise SysextError(
            f"invalid {what} {text!r}",
            "write a number and a unit: 90s, 30m, 12h, 7d or 2w (units may be combined: 1d12h)",
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise SysextError(f"invalid {what} {text!r}: it must be longer than zero")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    """Compact, human form of a (possibly negative) duration: `6d 23h`, `-2h 5m`, `40s`."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m")) if v]
    if not parts or (not days and not hours and secs):
        parts.append(f"{secs}s")
    return sign + " ".join(parts[:2])
