"""The archives this machine's apt already uses, read from its own sources.

Builds reach a distribution's archive through the same mirror, proxy or snapshot service
the host's apt uses, so no archive host is written into recipes or code: the address is
read at build time (or set with a mirror rule, see sysext.build.debian.archive).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SOURCES_DIR = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    signed_by: str | None = None


def parse_deb822(text: str) -> list[AptSource]:
    """`deb` stanzas of a .sources file (blank-line separated `Key: value` paragraphs)."""
    sources = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or not fields.get("uris"):
            continue
        sources.append(
            AptSource(
                uri=fields["uris"].split()[0],
                suites=tuple(fields.get("suites", "").split()),
                signed_by=fields.get("signed-by") or None,
            )
        )
    return sources


def parse_one_line(text: str) -> list[AptSource]:
    """`deb [options] URI SUITE COMPONENT…` lines of a sources.list."""
    sources = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        signed_by = None
        if words and words[0].startswith("["):
            options = []
            while words:
                word = words.pop(0)
                options.append(word.strip("[]"))
                if word.endswith("]"):
                    break
            for option in options:
                if option.startswith("signed-by="):
                    signed_by = option.removeprefix("signed-by=")
        if len(words) >= 2:
            sources.append(AptSource(uri=words[0], suites=(words[1],), signed_by=signed_by))
    return sources


def pick_mirror(sources: list[AptSource], suite: str) -> AptSource | None:
    """The first source serving `suite` itself (not -security or -updates)."""
    return next((s for s in sources if suite in s.suites), None)


def machine_sources(
    sources_dir: Path = SOURCES_DIR, sources_list: Path = SOURCES_LIST
) -> list[AptSource]:
    """Every `deb` source of this machine's apt configuration, in apt's reading order."""
    sources: list[AptSource] = []
    if sources_dir.is_dir():
        for path in sorted(sources_dir.glob("*.sources")):
            sources += parse_deb822(path.read_text(encoding="utf-8", errors="replace"))
        for path in sorted(sources_dir.glob("*.list")):
            sources += parse_one_line(path.read_text(encoding="utf-8", errors="replace"))
    if sources_list.is_file():
        sources += parse_one_line(sources_list.read_text(encoding="utf-8", errors="replace"))
    return sources


def archive_uri(
    sources: list[AptSource], codenames: frozenset[str], *, security: bool
) -> str | None:
    """The URI of the first source serving one of a distribution's `codenames` (any
    release: one mirror serves them all), its security archive when `security`."""
    for source in sources:
        for suite in source.suites:
            codename, _, pocket = suite.partition("-")
            if codename in codenames and (pocket == "security") == security:
                return source.uri.rstrip("/") + "/"
    return None
