"""What the registry accepts as extension names, image file names and channels.

Pure functions. Image files are `NAME-VERSION-ARCH.raw` (DESIGN.md §3), or
`NAME-VERSION-VERSIONID-ARCH.raw` for OS-version-bound images, whose version part is then
`VERSION-VERSIONID` (registry/validation.py checks it against the release); since NAME and
VERSION may both contain `-`, the extension name comes from the URL (and, on upload, must
match the single `extension-release.NAME` inside), and ARCH is one of systemd's names at
the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sysext.architecture import Architecture
from sysext.versioning import version_problem

IMAGE_SUFFIX = ".raw"
# A name becomes a directory, part of a URL path and of `extension-release.NAME`: keep it
# to a boring, shell- and URL-safe charset. No `/`, no leading `.` (so never `..`).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Longest first, so that "x86-64" wins over "x86".
_ARCHES = sorted((a.value for a in Architecture), key=len, reverse=True)


@dataclass(frozen=True, order=True)
class ImageName:
    name: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.arch}{IMAGE_SUFFIX}"


def name_problem(name: str) -> str | None:
    """Why `name` is not acceptable as an extension name, or None."""
    if not _NAME.fullmatch(name) or ".." in name:
        return (
            f"invalid extension name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return None


def parse_image_filename(name: str, filename: str) -> ImageName:
    """Split `NAME-VERSION-ARCH.raw` for the extension `name`; ValueError with a reason."""
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    if "/" in filename or filename.startswith("."):
        raise ValueError(f"invalid file name {filename!r}")
    if not filename.endswith(IMAGE_SUFFIX):
        raise ValueError(f"{filename!r}: image file names end in {IMAGE_SUFFIX}")
    stem = filename[: -len(IMAGE_SUFFIX)]
    if not stem.startswith(name + "-"):
        raise ValueError(f"{filename!r} is not named {name}-VERSION-ARCH{IMAGE_SUFFIX}")
    rest = stem[len(name) + 1 :]
    for arch in _ARCHES:
        if rest.endswith("-" + arch):
            version = rest[: -len(arch) - 1]
            break
    else:
        known = ", ".join(a.value for a in Architecture)
        raise ValueError(
            f"{filename!r} does not end in -ARCH{IMAGE_SUFFIX} with a systemd "
            f"architecture ({known})"
        )
    problem = version_problem(version)
    if problem:
        raise ValueError(f"{filename!r}: {problem}")
    return ImageName(name, version, arch)


def channel_problem(channel: str, channels: tuple[str, ...]) -> str | None:
    if channel not in channels:
        return f"unknown channel {channel!r} (this registry has: {', '.join(channels)})"
    return None
