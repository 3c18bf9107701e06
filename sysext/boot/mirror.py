"""The Debian mirror this machine already uses, read from its own apt sources.

The cached boot root is bootstrapped from the same mirror the host's apt uses, so it works
behind the same proxy or snapshot service; the address is read at build time and never
written anywhere (the root's own apt sources are emptied after the build).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sysext.core.errors import SysextError

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


def host_debian_mirror(suite: str = "bookworm") -> AptSource:
    """The host's Debian mirror for `suite`; a clear error when there is none."""
    sources: list[AptSource] = []
    for path in sorted(SOURCES_DIR.glob("*.sources")):
        sources += parse_deb822(path.read_text(encoding="utf-8", errors="replace"))
    if SOURCES_LIST.is_file():
        sources += parse_one_line(SOURCES_LIST.read_text(encoding="utf-8", errors="replace"))
    found = pick_mirror(sources, suite)
    if found is None:
        raise SysextError(
            f"no Debian '{suite}' source in this machine's apt sources",
            "the boot root is bootstrapped from the mirror apt already uses; add a "
            f"'{suite}' source to /etc/apt/sources.list.d/ or pass --root with an OS tree",
        )
    return found
