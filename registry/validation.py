"""Upload validation: is this file an extension image hosts will accept under its name?

Checked before anything becomes visible (issue 4): a squashfs or erofs image; exactly one
`extension-release.NAME` and NAME is the file name's (hosts activate it as
`/etc/extensions/NAME.raw`, so sysext looks for exactly that file, spec §1.2); its
ARCHITECTURE equals the file name's arch (systemd's vocabulary, spec §1.4); and
SYSEXT_VERSION_ID, when present, equals the file name's version (or, for an image bound to
one OS VERSION_ID, the file name's version is VERSION-VERSIONID) — hosts pick versions from
file names (sysupdate's @v), so a name that lies about its contents would be offered as an
update it is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from registry.errors import RegistryError
from registry.names import ImageName
from sysext.errors import SysextError
from sysext.image_summary import ImageSummary, summarize
from sysext.imageread import read_image

ACCEPTED_FORMATS = ("squashfs", "erofs")


@dataclass(frozen=True)
class ValidatedImage:
    """What the registry records about an accepted upload."""

    format: str  # "squashfs" or "erofs"
    # The release's VERSION_ID when the file is named NAME-VERSION-VERSIONID-ARCH.raw (an
    # OS-bound image, served with MatchPattern=NAME-@v-%w-%a.raw); None for the plain form.
    os_version_id: str | None = None
    # Release fields and what the image ships, stored with it for the API and the pages.
    summary: ImageSummary = field(default_factory=ImageSummary)


def validate_image(path: Path, expected: ImageName) -> ValidatedImage:
    """Check an upload; raise RegistryError(422, reason) when it is not acceptable."""
    try:
        contents = read_image(path)
    except SysextError as exc:
        raise RegistryError(
            422, f"{expected.filename}: not a readable extension image: {exc}"
        ) from None
    fmt = str(getattr(contents.format, "value", contents.format))
    if fmt not in ACCEPTED_FORMATS:
        raise RegistryError(
            422, f"{expected.filename}: {fmt} images are not accepted (squashfs or erofs)"
        )
    releases = sorted(contents.release_files)
    if not releases:
        raise RegistryError(
            422,
            f"{expected.filename}: no usr/lib/extension-release.d/extension-release.* inside",
        )
    if len(releases) > 1:
        raise RegistryError(
            422,
            f"{expected.filename}: {len(releases)} extension-release files inside "
            f"({', '.join(releases)}); exactly one is allowed",
        )
    if releases[0] != expected.name:
        raise RegistryError(
            422,
            f"{expected.filename}: holds extension-release.{releases[0]}, expected "
            f"extension-release.{expected.name}",
        )
    arch = contents.release_files[releases[0]].get("ARCHITECTURE")
    if arch != expected.arch:
        shown = f"ARCHITECTURE={arch}" if arch else "no ARCHITECTURE="
        raise RegistryError(
            422,
            f"{expected.filename}: extension-release.{expected.name} has {shown}, "
            f"the file name says {expected.arch}",
        )
    release = contents.release_files[releases[0]]
    version = release.get("SYSEXT_VERSION_ID")
    if version is not None and expected.version not in _file_versions(version, release):
        bound = release.get("VERSION_ID")
        shown = f"SYSEXT_VERSION_ID={version}" + (f" and VERSION_ID={bound}" if bound else "")
        raise RegistryError(
            422,
            f"{expected.filename}: extension-release.{expected.name} has {shown}, "
            f"the file name says {expected.version}",
        )
    return ValidatedImage(
        fmt,
        _bound_version_id(version, release, expected.version),
        summarize(contents, expected.name),
    )


def _bound_version_id(
    version: str | None, release: Mapping[str, str], file_version: str
) -> str | None:
    """VERSION_ID when the file name carries it (the bound form accepted above), else None."""
    bound = release.get("VERSION_ID")
    if version is None or not bound or file_version == version:
        return None
    return bound if file_version == f"{version}-{bound}" else None


def _file_versions(version: str, release: Mapping[str, str]) -> tuple[str, ...]:
    """The version parts a file name may carry for this release.

    An OS-version-bound image (VERSION_ID set) is published as NAME-VERSION-VERSIONID-ARCH.raw
    so that hosts find it with `MatchPattern=NAME-@v-%w-%a.raw` (spec §2.3); its file
    version part is then VERSION-VERSIONID. The plain NAME-VERSION-ARCH.raw stays accepted.
    """
    bound = release.get("VERSION_ID")
    return (version, f"{version}-{bound}") if bound else (version,)
