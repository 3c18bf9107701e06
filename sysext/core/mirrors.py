"""URL rewriting for mirrors and air-gapped builds.

A mirror map sends upstream URL prefixes to other bases, e.g.
`https://github.com/` → `http://127.0.0.1:8000/gh/`. The longest matching prefix wins, so a
specific project can be sent somewhere else than the rest of its host. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sysext.core.errors import SysextError


@dataclass(frozen=True)
class MirrorMap:
    """Prefix → replacement rules; `rewrite()` applies the longest matching prefix."""

    rules: Mapping[str, str] = field(default_factory=dict)

    def rewrite(self, url: str) -> str:
        best = ""
        for prefix in self.rules:
            if url.startswith(prefix) and len(prefix) > len(best):
                best = prefix
        if not best:
            return url
        return self.rules[best] + url[len(best) :]

    def merged_over(self, lower: MirrorMap) -> MirrorMap:
        """These rules, falling back to `lower` for prefixes they do not mention."""
        return MirrorMap({**lower.rules, **self.rules})


def parse_mirror_spec(text: str, *, source: str) -> MirrorMap:
    """Parse `PREFIX=REPLACEMENT` pairs separated by whitespace or commas (the
    SYSEXT_MIRRORS syntax). Commas separate rules too, since that is how lists are usually
    written in one environment variable; a URL containing a comma cannot be a rule here."""
    rules: dict[str, str] = {}
    for item in (part for part in re.split(r"[\s,]+", text) if part):
        prefix, sep, replacement = item.partition("=")
        if not sep or not prefix or not replacement:
            raise SysextError(
                f"{source}: mirror rule {item!r} is not PREFIX=REPLACEMENT",
                "example: SYSEXT_MIRRORS='https://github.com/=http://mirror.example/gh/'",
            )
        if "://" not in prefix:
            raise SysextError(
                f"{source}: mirror rule {item!r} does not start with an upstream URL",
                "example: SYSEXT_MIRRORS='https://github.com/=http://mirror.example/gh/'",
            )
        if prefix in rules:
            raise SysextError(f"{source}: the prefix {prefix!r} is mapped twice")
        rules[prefix] = replacement
    return MirrorMap(rules)


def mirror_map_from_table(table: object, *, source: str) -> MirrorMap:
    """Build a MirrorMap from a config file's `[mirrors]` table of prefix = replacement."""
    if not isinstance(table, dict):
        raise SysextError(f'{source}: [mirrors] must be a table of "prefix" = "replacement"')
    rules: dict[str, str] = {}
    for prefix, replacement in table.items():
        if not isinstance(replacement, str) or not replacement or not prefix:
            raise SysextError(
                f"{source}: mirrors.{prefix!r}: expected a non-empty replacement URL string, "
                f"got {replacement!r}"
            )
        rules[prefix] = replacement
    return MirrorMap(rules)
