"""The Debian mirror this machine already uses, read from its own apt sources.

The cached boot root is bootstrapped from the same mirror the host's apt uses, so it works
behind the same proxy or snapshot service; the address is read at build time and never
written anywhere (the root's own apt sources are emptied after the build).
"""

from __future__ import annotations

from pathlib import Path

from sysext.build.debian.sources_list import (
    AptSource,
    machine_sources,
    parse_deb822,
    parse_one_line,
    pick_mirror,
)
from sysext.core.errors import SysextError

__all__ = ["AptSource", "host_debian_mirror", "parse_deb822", "parse_one_line", "pick_mirror"]

SOURCES_DIR = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")


def host_debian_mirror(suite: str = "bookworm") -> AptSource:
    """The host's Debian mirror for `suite`; a clear error when there is none."""
    found = pick_mirror(machine_sources(SOURCES_DIR, SOURCES_LIST), suite)
    if found is None:
        raise SysextError(
            f"no Debian '{suite}' source in this machine's apt sources",
            "the boot root is bootstrapped from the mirror apt already uses; add a "
            f"'{suite}' source to /etc/apt/sources.list.d/ or pass --root with an OS tree",
        )
    return found
