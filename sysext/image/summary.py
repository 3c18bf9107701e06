"""What an image is and ships, in a few fields a catalogue can show.

From an image's contents (imageread.py): the fields of its `extension-release.NAME`, among
them the catalogue fields every image may carry (`X_SYSEXT_DESCRIPTION`, `X_SYSEXT_HOMEPAGE`,
`X_SYSEXT_LICENSE`, `X_SYSEXT_UPSTREAM_VERSION`, `X_SYSEXT_REPLACES`; absent means unknown),
the commands it puts on the host's PATH and the systemd units it brings. Pure: the registry
stores the result with each image, so pages never reopen images.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sysext.image.read import ImageContents, ImageEntry

DESCRIPTION = "X_SYSEXT_DESCRIPTION"
HOMEPAGE = "X_SYSEXT_HOMEPAGE"
LICENSE = "X_SYSEXT_LICENSE"
UPSTREAM_VERSION = "X_SYSEXT_UPSTREAM_VERSION"
REPLACES = "X_SYSEXT_REPLACES"

# Directories whose entries a host runs by name once the image is merged.
_BIN_DIRS = ("usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin")
# Where systemd looks for units that extensions ship (systemd.unit(5) search path under /usr).
_UNIT_DIRS = ("usr/lib/systemd/system", "usr/lib/systemd/user", "usr/local/lib/systemd/system")
_UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".timer",
    ".path",
    ".mount",
    ".automount",
    ".target",
    ".slice",
    ".scope",
    ".swap",
    ".device",
)
# A catalogue shows what an image ships, not its whole tree: bound what is stored per image.
MAX_LISTED = 200


@dataclass(frozen=True)
class ImageSummary:
    """Release fields (all of them, as written) and what the image ships."""

    release: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    binaries: tuple[str, ...] = ()
    units: tuple[str, ...] = ()

    @property
    def description(self) -> str | None:
        return self.release.get(DESCRIPTION) or None

    @property
    def homepage(self) -> str | None:
        return self.release.get(HOMEPAGE) or None

    @property
    def license(self) -> str | None:
        return self.release.get(LICENSE) or None

    @property
    def upstream_version(self) -> str | None:
        return self.release.get(UPSTREAM_VERSION) or None

    @property
    def replaces(self) -> tuple[str, ...]:
        return tuple(self.release.get(REPLACES, "").split())


def _direct_children(entries: Iterable[ImageEntry], directories: tuple[str, ...]) -> list[str]:
    found = []
    for entry in entries:
        parent, _, base = entry.path.rpartition("/")
        if parent in directories and entry.kind in ("file", "symlink"):
            found.append(base)
    return found


def binaries_of(entries: Iterable[ImageEntry]) -> tuple[str, ...]:
    """Commands on PATH (regular files with an execute bit, or links), plus `opt/*/bin/*`."""
    names = []
    for entry in entries:
        parent, _, base = entry.path.rpartition("/")
        on_path = parent in _BIN_DIRS
        # /opt/NAME/bin: how vendors ship self-contained trees (e.g. /opt/bin on Flatcar).
        in_opt = parent.startswith("opt/") and parent.endswith("/bin")
        if not (on_path or in_opt):
            continue
        if entry.kind == "symlink" or (entry.kind == "file" and entry.mode & 0o111):
            names.append(base if on_path else entry.path)
    return tuple(sorted(set(names))[:MAX_LISTED])


def units_of(entries: Iterable[ImageEntry]) -> tuple[str, ...]:
    units = [n for n in _direct_children(entries, _UNIT_DIRS) if n.endswith(_UNIT_SUFFIXES)]
    return tuple(sorted(set(units))[:MAX_LISTED])


def summarize(contents: ImageContents, name: str) -> ImageSummary:
    """The summary of an image whose release file is `extension-release.NAME`."""
    release = contents.release_files.get(name, {})
    return ImageSummary(
        release=MappingProxyType(dict(release)),
        binaries=binaries_of(contents.entries),
        units=units_of(contents.entries),
    )
