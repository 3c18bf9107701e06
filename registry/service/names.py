"""What the registry accepts as extension names, image file names and channels.

Pure functions. Image files are `NAME-VERSION-ARCH.raw` (DESIGN.md §3), or
`NAME-VERSION-VERSIONID-ARCH.raw` for OS-version-bound images, whose version part is then
`VERSION-VERSIONID` (registry/service/validation.py checks it against the release); since NAME and
VERSION may both contain `-`, the extension name comes from the URL (and, on upload, must
match the single `extension-release.NAME` inside), and ARCH is one of systemd's names at
the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import image_filename_problem
from sysext.systemd.extension_release import name_problem as release_name_problem
from sysext.systemd.versioning import version_problem

IMAGE_SUFFIX = ".raw"
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
    """Why `name` is not acceptable as an extension name, or None.

    The same rule as `sysext pack`/`build` (sysext.extension_release.name_problem), so an
    image the builder makes is never refused for its name here, and the other way round.
    """
    problem = release_name_problem(name)
    if problem and not problem.startswith("invalid extension name"):
        return f"invalid extension name {name[:130]!r}: {problem}"
    return problem


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
    problem = version_problem(version) or registry_version_problem(version)
    if problem:
        raise ValueError(f"{filename!r}: {problem}")
    # The name becomes a file in every snapshot directory, a SHA256SUMS line and a hard
    # link: whatever systemd or the file system cannot hold must be refused here, before
    # anything is committed (issue 13, finding 1).
    problem = image_filename_problem(filename)
    if problem:
        raise ValueError(problem)
    return ImageName(name, version, arch)


def registry_version_problem(version: str) -> str | None:
    """The registry's own rule on top of sysupdate's: a version starts with a digit.

    sysupdate's `@v` matches letters too, so `hello-x-1.0-x86-64.raw` is version `x-1.0`
    of `hello` to a host, while its owner meant version 1.0 of `hello-x`. Requiring a
    digit first makes every file name belong to one extension only (docs/registry.md).
    """
    if not version[:1].isascii() or not version[:1].isdigit():
        return (
            f"version {version!r} does not start with a digit; this registry accepts "
            "versions such as 1.0 or 2024.05.1 (a leading letter would let NAME-x-1.0 "
            "pass for a version of NAME)"
        )
    return None


def claimed_by(other: str, filename: str) -> bool:
    """True when `filename` is what the transfer pattern `OTHER-@v-%a.raw` of extension
    `other` (with the registry's version rule) would match: such a file could be taken for
    one of `other`'s versions, so no other extension may publish it."""
    if not filename.startswith(other + "-"):
        return False
    try:
        parse_image_filename(other, filename)
    except ValueError:
        return False
    return True


def channel_problem(channel: str, channels: tuple[str, ...]) -> str | None:
    if channel not in channels:
        return f"unknown channel {channel!r} (this registry has: {', '.join(channels)})"
    return None
