"""Real extension images with catalogue metadata, for registry and web tests.

`make_image()` packs a small squashfs image with `sysext.image.pack` (the real gensquashfs):
a command in usr/bin, optional systemd units, optional `X_SYSEXT_*` release fields and an
optional binding to one OS VERSION_ID (`NAME-VERSION-VERSIONID-ARCH.raw`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from sysext.architecture import Architecture
from sysext.extension_release import ExtensionRelease
from sysext.image import pack


def make_image(
    output: Path,
    name: str,
    version: str,
    arch: str = "x86-64",
    *,
    extra: Mapping[str, str] | None = None,
    units: Sequence[str] = (),
    commands: Sequence[str] | None = None,
    os_id: str = "_any",
    version_id: str | None = None,
) -> Path:
    """Pack NAME-VERSION[-VERSIONID]-ARCH.raw into `output` and return its path."""
    release = ExtensionRelease(
        name=name,
        version=version,
        arch=Architecture.parse(arch),
        os_id=os_id,
        version_id=version_id,
        extra=dict(extra or {}),
    )
    stem = release.image_stem
    tree = output / f".tree-{stem}"
    bindir = tree / "usr" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    commands = list(commands) if commands is not None else [name]
    for command in commands:
        script = bindir / command
        script.write_text(f"#!/bin/sh\necho {name} {version}\n")
        script.chmod(0o755)
    if units:
        unit_dir = tree / "usr" / "lib" / "systemd" / "system"
        unit_dir.mkdir(parents=True, exist_ok=True)
        for unit in units:
            (unit_dir / unit).write_text(
                f"[Unit]\nDescription={unit}\n\n[Service]\nExecStart=/usr/bin/{commands[0]}\n"
            )
    built = pack(tree, release, output / f".pack-{stem}")
    target = output / release.image_filename
    os.replace(built.path, target)
    return target
