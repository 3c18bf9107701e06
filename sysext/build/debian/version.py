"""dpkg's version ordering (deb-version(7)) and relations, and image versions derived from it.

Pure functions: no I/O.
"""

from __future__ import annotations

import functools
import re

_EPOCH = re.compile(r"(\d+):(.*)")
# deb-version(7): upstream versions start with a digit; letters, digits and . + ~ - : follow.
_VALID = re.compile(r"(\d+:)?[0-9][A-Za-z0-9.+~:-]*")


def is_valid(version: str) -> bool:
    return _VALID.fullmatch(version) is not None


def _split(version: str) -> tuple[int, str, str]:
    """(epoch, upstream version, Debian revision); a missing revision is "" (= "0")."""
    epoch = 0
    match = _EPOCH.fullmatch(version)
    if match:
        epoch, version = int(match.group(1)), match.group(2)
    upstream, dash, revision = version.rpartition("-")
    if not dash:
        return epoch, version, ""
    return epoch, upstream, revision


def _order(char: str) -> int:
    if char.isdigit():
        return 0
    if char.isascii() and char.isalpha():
        return ord(char)
    if char == "~":
        return -1
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp(): alternating non-digit runs (by _order) and numbers."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        start_i = i
        while i < len(a) and a[i].isdigit():
            i += 1
        start_j = j
        while j < len(b) and b[j].isdigit():
            j += 1
        na = int(a[start_i:i] or "0")
        nb = int(b[start_j:j] or "0")
        if na != nb:
            return na - nb
    return 0


@functools.lru_cache(maxsize=65536)
def compare(a: str, b: str) -> int:
    """Negative if `a` is older than `b`, 0 if equal, positive if newer (dpkg's order)."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


version_key = functools.cmp_to_key(compare)

# deb-control(5): `<<`, `<=`, `=`, `>=`, `>>`; the obsolete `<` and `>` mean `<=` and `>=`.
RELATIONS = ("<<", "<=", "=", ">=", ">>", "<", ">")


def satisfies(version: str, op: str | None, wanted: str | None) -> bool:
    """Whether `version` meets the relation `op wanted` (no relation: any version does)."""
    if op is None or wanted is None:
        return True
    c = compare(version, wanted)
    if op == "<<":
        return c < 0
    if op in ("<=", "<"):
        return c <= 0
    if op == "=":
        return c == 0
    if op in (">=", ">"):
        return c >= 0
    if op == ">>":
        return c > 0
    raise ValueError(f"unknown version relation {op!r}")


def image_version(version: str) -> str:
    """A Debian version in the characters systemd-sysupdate accepts ([A-Za-z0-9.,_+-]).

    The epoch is dropped (it never changes within one release's suites); `~` and the
    revision's `-` become `_`, which systemd's ordering skips: `1:2.39.5-0+deb12u2` →
    `2.39.5_0+deb12u2`. No `-`: the image is OS-bound, and a `-` in the version of
    `NAME-VERSION-VERSIONID-ARCH.raw` would make the name mean two things (issue 19,
    finding 6). The price: an upstream version growing a component within one suite
    (`3.2.2-2` → `3.2.2.1-1`) would not order after the old one; Debian stable updates
    keep the upstream version, so this does not arise there.
    """
    match = _EPOCH.fullmatch(version)
    plain = match.group(2) if match else version
    return plain.replace("~", "_").replace("-", "_").replace(":", ".")
