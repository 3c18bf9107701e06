"""`sysext try`: boot extensions in a throw-away container and say what became of them.

The images go to /etc/extensions/NAME.raw of the container's writable layer, where the
container's own systemd-sysext.service merges them at boot, exactly as on a host. The
report compares that with what `sysext validate` predicts for the root's os-release.
"""

from __future__ import annotations

import enum
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sysext.boot.container import Container
from sysext.boot.report import (
    ExtensionReport,
    TryReport,
    drop_in_paths,
    failed_units,
    journal_of,
    merged_extensions,
    shipped_units,
    unit_states,
    units_meant_to_start,
)
from sysext.core.errors import SysextError
from sysext.image.lint import lint_image
from sysext.image.read import read_files, read_image
from sysext.systemd.osrelease import format_os_release, parse_os_release


class GuestOS(enum.Enum):
    """Whose os-release the container shows to systemd-sysext (extensions built with
    `--os flatcar` merge only where ID=flatcar)."""

    FLATCAR = "flatcar"
    FCOS = "fcos"
    DEBIAN = "debian"  # the root's own


# The fields systemd-sysext compares (spec §1.3): ID, VERSION_ID, SYSEXT_LEVEL.
OS_RELEASE = {
    GuestOS.FLATCAR: {
        "NAME": "Flatcar Container Linux by Kinvolk",
        "ID": "flatcar",
        "ID_LIKE": "coreos",
        "VERSION_ID": "4081.2.0",
        "SYSEXT_LEVEL": "1.0",
        "PRETTY_NAME": "Flatcar Container Linux (stand-in: sysext try)",
    },
    GuestOS.FCOS: {
        "NAME": "Fedora Linux",
        "ID": "fedora",
        "VARIANT_ID": "coreos",
        "VERSION_ID": "41",
        "PRETTY_NAME": "Fedora CoreOS 41 (stand-in: sysext try)",
    },
}


@dataclass(frozen=True)
class Extension:
    name: str  # activation name: the release file inside, extension-release.NAME
    image: Path


def identify(image: Path) -> Extension:
    contents = read_image(image)
    names = sorted(contents.release_files)
    if len(names) != 1:
        raise SysextError(
            f"{image}: expected one extension-release file, found {len(names)}",
            f"check it with: sysext validate {image}",
        )
    return Extension(names[0], image)


def root_os_release(root: Path, guest: GuestOS) -> dict[str, str]:
    if guest in OS_RELEASE:
        return dict(OS_RELEASE[guest])
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = root / candidate
        if path.is_symlink():  # relative to the root, not to this machine
            target = Path(str(path.readlink()))
            path = (
                (root / target.relative_to("/")) if target.is_absolute() else path.parent / target
            )
        if path.is_file():
            return parse_os_release(path.read_text(encoding="utf-8", errors="replace"))
    raise SysextError(f"{root}: no os-release", "pass the root of an OS tree")


def stage(box: Container, extensions: Sequence[Extension], guest: GuestOS) -> None:
    """Write the images (real files: systemd-sysext skips nothing that way) and, for a
    stand-in OS, its os-release into the container's writable layer."""
    names = [e.name for e in extensions]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise SysextError(
            f"two images are both the extension {clash[0]!r}",
            "a host activates one image per name (/etc/extensions/NAME.raw)",
        )
    directory = box.upper / "etc" / "extensions"
    directory.mkdir(parents=True, exist_ok=True)
    for extension in extensions:
        shutil.copyfile(extension.image, directory / f"{extension.name}.raw")
    if guest in OS_RELEASE:
        (box.upper / "etc" / "os-release").write_text(
            format_os_release(OS_RELEASE[guest]), encoding="utf-8"
        )


def inspect(
    box: Container, extensions: Sequence[Extension], os_release: dict[str, str]
) -> TryReport:
    """Ask the booted container about every extension (call after `box.boot()`)."""
    assert box.last_boot is not None
    merged = merged_extensions(box)
    reports = []
    for extension in extensions:
        contents = read_image(extension.image)
        drop_ins = read_files(extension.image, drop_in_paths(contents))
        units = shipped_units(contents)
        meant = units_meant_to_start(contents, drop_ins)
        verdict = lint_image(extension.image, host_os_release=os_release, contents=contents).host
        states = unit_states(box, sorted(set(units) | set(meant)), meant)
        reports.append(
            ExtensionReport(
                extension.name, extension.image, verdict, extension.name in merged, tuple(states)
            )
        )
    failed = failed_units(box)
    journal = {unit: journal_of(box, unit) for unit in failed}
    for report in reports:
        if not report.merged:
            journal.setdefault("systemd-sysext.service", journal_of(box, "systemd-sysext.service"))
    return TryReport(box.last_boot, tuple(reports), tuple(failed), journal)
