"""deb822 control data: paragraphs of `Field: value` lines, and dependency fields.

Used for Packages indices, dpkg's status file, Release/InRelease and a .deb's `control`.
Pure functions: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from sysext.core.errors import SysextError


def paragraphs(text: str, *, keep: frozenset[str] | None = None) -> Iterator[dict[str, str]]:
    """Each paragraph as {field: value}; continuation lines are joined with newlines.

    `keep` limits the fields kept (a Packages index is 50 MB of text, mostly descriptions).
    Field names are compared as written; deb822 spells them the same way everywhere.
    """
    fields: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, current = {}, None
            continue
        if line[0] in " \t":
            if current is not None:
                fields[current] += "\n" + line.strip()
            continue
        if line.startswith("#"):
            continue
        name, colon, value = line.partition(":")
        if not colon:
            current = None
            continue
        if keep is not None and name not in keep:
            current = None
            continue
        current = name
        fields[name] = value.strip()
    if fields:
        yield fields


@dataclass(frozen=True, order=True)
class Relation:
    """One package in a dependency field: `name[:arch] (op version)`."""

    name: str
    op: str | None = None
    version: str | None = None
    arch: str | None = None  # `any`, `native` or an architecture qualifier

    def __str__(self) -> str:
        text = self.name + (f":{self.arch}" if self.arch else "")
        return text + (f" ({self.op} {self.version})" if self.op else "")


# A dependency clause: alternatives, any one of which satisfies it (`a | b (>= 2)`).
Clause = tuple[Relation, ...]

_RELATION = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9+.-]*)(?::(?P<arch>[a-z0-9-]+))?"
    r"\s*(?:\(\s*(?P<op><<|<=|>=|>>|=|<|>)\s*(?P<version>[0-9][^\s)]*)\s*\))?"
    # architecture restrictions and build profiles belong to source packages; skipped
    r"\s*(?:\[[^\]]*\])?\s*(?:<[^>]*>\s*)*"
)


def parse_relations(text: str, *, field: str = "Depends") -> tuple[Clause, ...]:
    """`a (>= 1), b | c` → ((a>=1,), (b, c)); an error naming the field for bad syntax."""
    clauses: list[Clause] = []
    for part in text.replace("\n", " ").split(","):
        if not part.strip():
            continue
        alternatives: list[Relation] = []
        for alternative in part.split("|"):
            match = _RELATION.fullmatch(alternative.strip())
            if match is None:
                raise SysextError(f"{field}: cannot parse {alternative.strip()!r}")
            alternatives.append(
                Relation(match["name"], match["op"], match["version"], match["arch"])
            )
        clauses.append(tuple(alternatives))
    return tuple(clauses)


def parse_provides(text: str) -> tuple[Relation, ...]:
    """`Provides:` lists single packages (optionally `(= version)`), no alternatives."""
    return tuple(clause[0] for clause in parse_relations(text, field="Provides"))
