"""Version strings as systemd-sysupdate sees them (spec §2.4, §4.1).

`strverscmp` is a port of systemd's `strverscmp_improved()`; `version_is_valid` mirrors
`version_is_valid()`. Pure functions: no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Characters strverscmp_improved() looks at; everything else (`_`, `+`, `,` …) is skipped.
_VALID = _DIGITS | _LETTERS | frozenset("~-^.")
_VERSION_CHARS = re.compile(r"[A-Za-z0-9.,_+-]+")


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def strverscmp(a: str | None, b: str | None) -> int:
    """-1 if `a` is older than `b`, 0 if equal, 1 if newer (systemd's ordering).

    None behaves like the empty string, as upstream treats NULL.
    """
    a = (a or "") + "\0"
    b = (b or "") + "\0"
    i = j = 0
    while True:
        while a[i] != "\0" and a[i] not in _VALID:
            i += 1
        while b[j] != "\0" and b[j] not in _VALID:
            j += 1
        # `~` sorts before everything, even the end of the string (pre-releases).
        if a[i] == "~" or b[j] == "~":
            r = _sign((a[i] != "~") - (b[j] != "~"))
            if r:
                return r
            i += 1
            j += 1
        if a[i] == "\0" or b[j] == "\0":
            return _sign(ord(a[i]) - ord(b[j]))
        # At a segment boundary: `-` < `^` < `.` < a bare letter or digit.
        for sep in "-^.":
            if a[i] == sep or b[j] == sep:
                r = _sign((a[i] != sep) - (b[j] != sep))
                if r:
                    return r
                i += 1
                j += 1
        if a[i] in _DIGITS or b[j] in _DIGITS:
            ai = i
            while a[ai] in _DIGITS:
                ai += 1
            bj = j
            while b[bj] in _DIGITS:
                bj += 1
            r = _sign((ai != i) - (bj != j))
            if r:
                return r
            while a[i] == "0":
                i += 1
            while b[j] == "0":
                j += 1
            r = _sign((ai - i) - (bj - j))
            if r:
                return r
            r = _sign((a[i:ai] > b[j:bj]) - (a[i:ai] < b[j:bj]))
            if r:
                return r
        else:
            ai = i
            while a[ai] in _LETTERS:
                ai += 1
            bj = j
            while b[bj] in _LETTERS:
                bj += 1
            n = min(ai - i, bj - j)
            pa, pb = a[i : i + n], b[j : j + n]
            r = _sign((pa > pb) - (pa < pb)) or _sign((ai - i) - (bj - j))
            if r:
                return r
        i, j = ai, bj


version_key = functools.cmp_to_key(strverscmp)


def sort_versions(versions: Iterable[str], *, newest_first: bool = False) -> list[str]:
    return sorted(versions, key=version_key, reverse=newest_first)


def version_is_valid(version: str) -> bool:
    """True when systemd-sysupdate accepts `version` (spec §2.4, strictest of 252–256)."""
    if not version or len(version.encode()) > 255 or version in (".", ".."):
        return False
    return _VERSION_CHARS.fullmatch(version) is not None


def version_problem(version: str) -> str | None:
    """Why `version` is not valid for sysupdate, or None when it is."""
    if not version:
        return "the version is empty"
    if len(version.encode()) > 255:
        return "the version is longer than 255 bytes"
    if version in (".", ".."):
        return f"{version!r} is not a valid version"
    bad = sorted({c for c in version if not _VERSION_CHARS.fullmatch(c)})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"version {version!r} contains {shown}; sysupdate allows only [A-Za-z0-9.,_+-]"
    return None
