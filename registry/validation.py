"""Upload validation: is this file an extension image hosts will accept under its name?

Checked before anything becomes visible (issue 4): a squashfs or erofs image; exactly one
`extension-release.NAME` and NAME is the file name's (hosts activate it as
`/etc/extensions/NAME.raw`, so sysext looks for exactly that file, spec §1.2); its
ARCHITECTURE equals the file name's arch (systemd's vocabulary, spec §1.4); and
SYSEXT_VERSION_ID, when present, equals the file name's version (or, for an image bound to
one OS VERSION_ID, the file name's version is VERSION-VERSIONID) — hosts pick versions from
file names (sysupdate's @v), so a name that lies about its contents would be offered as an
update it is not.

Then the image gets exactly the lint `sysext validate` runs (sysext/lint.py, one
implementation), and any of its errors refuses the upload with the lint's own message: a
registry must not sign what hosts would refuse or silently skip (issue 13, finding 4).
Messages name the published file name, never the server's temporary file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from registry.errors import RegistryError
from registry.names import ImageName
from sysext.errors import SysextError
from sysext.imageread import read_image
from sysext.lint import lint_image

ACCEPTED_FORMATS = ("squashfs", "erofs")


@dataclass(frozen=True)
class ValidatedImage:
    """What the registry records about an accepted upload."""

    format: str  # "squashfs" or "erofs"
    # The release's VERSION_ID when the file is named NAME-VERSION-VERSIONID-ARCH.raw (an
    # OS-bound image, served with MatchPattern=NAME-@v-%w-%a.raw); None for the plain form.
    os_version_id: str | None = None


def validate_image(path: Path, expected: ImageName) -> ValidatedImage:
    """Check an upload; raise RegistryError(422, reason) when it is not acceptable."""
    try:
        contents = read_image(path)
    except SysextError as exc:
        reason = _hide_path(exc.message, path)
        raise RegistryError(
            422, f"{expected.filename}: not a readable extension image: {reason}"
        ) from None
    fmt = str(getattr(contents.format, "value", contents.format))
    if fmt not in ACCEPTED_FORMATS:
        raise RegistryError(
            422, f"{expected.filename}: {fmt} images are not accepted (squashfs or erofs)"
        )
    releases = sorted(contents.release_files)
    if not releases and contents.release_errors:
        bad, reason = sorted(contents.release_errors.items())[0]
        raise RegistryError(
            422, f"{expected.filename}: extension-release.{bad} cannot be read: {reason}"
        )
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
    try:
        report = lint_image(path, contents=contents, filename=expected.filename)
    except SysextError as exc:
        raise RegistryError(422, f"{expected.filename}: {_hide_path(exc.message, path)}") from None
    if report.errors:
        first = report.errors[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise RegistryError(
            422,
            f"{expected.filename}: {_hide_path(first.message, path)} [{first.code}]{more}; "
            "`sysext validate` shows every finding",
        )
    return ValidatedImage(fmt, _bound_version_id(version, release, expected.version))


def _hide_path(message: str, path: Path) -> str:
    """The client never learns where the server keeps its temporary files."""
    return message.replace(str(path), "the upload").replace(str(path.parent), "…")


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
