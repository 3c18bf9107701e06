"""Real extension images with catalogue metadata, for registry and web tests.

`make_image()` packs a small squashfs image with `sysext.build.pack` (the real gensquashfs):
a command in usr/bin, optional systemd units, optional `X_SYSEXT_*` release fields and an
optional binding to one OS VERSION_ID (`NAME-VERSION-VERSIONID-ARCH.raw`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from sysext.build.pack import pack
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease


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


# A registry like the one the catalogue issue was tried on: 9 extensions, two channels, two
# architectures, yanks, a beta-only and a fully yanked extension, one built per OS version,
# and one whose stored fields hold HTML.
HTML_DESCRIPTION = "<script>window.__pwned = 1</script><b>bold</b> & <i>more</i>"
OS_VERSIONS = ("3975.2.0", "4012.0.0")


def _podman_fields(version: str) -> dict[str, str]:
    return {
        "X_SYSEXT_DESCRIPTION": "Daemonless container engine with pods and a Docker-compatible CLI",
        "X_SYSEXT_HOMEPAGE": "https://podman.io/",
        "X_SYSEXT_LICENSE": "Apache-2.0",
        "X_SYSEXT_UPSTREAM_VERSION": f"v{version}",
        "X_SYSEXT_REPLACES": "podman-flatcar",
    }


# (name, version, arch, channels, kwargs for make_image)
CATALOGUE: list[tuple[str, str, str, tuple[str, ...], dict[str, object]]] = [
    *[
        (
            "podman",
            v,
            a,
            ("stable",),
            {
                "extra": _podman_fields(v),
                "units": ["podman.service", "podman.socket"],
                "commands": ["podman", "podman-remote"],
            },
        )
        for v in ("5.2.0", "5.3.1")
        for a in ("x86-64", "arm64")
    ],
    ("podman", "5.4.0-rc1", "x86-64", ("beta",), {"extra": _podman_fields("5.4.0-rc1")}),
    ("crio", "1.30.0", "x86-64", ("stable", "beta"), {"units": ["crio.service"]}),
    ("crio", "1.30.0", "arm64", ("stable",), {"units": ["crio.service"]}),
    ("crio", "1.31.0", "x86-64", ("beta",), {"units": ["crio.service"]}),
    ("tailscale", "1.70.0", "x86-64", ("stable",), {"extra": {"X_SYSEXT_DESCRIPTION": "Mesh VPN"}}),
    ("tailscale", "1.70.0", "arm64", ("stable",), {}),  # yanked below: arm64 not installable
    ("wasmtime", "25.0.0", "x86-64", ("beta",), {"extra": {"X_SYSEXT_LICENSE": "Apache-2.0"}}),
    ("oldtool", "1.0", "x86-64", ("stable",), {}),  # yanked below: nothing installable
    *[
        (
            "nvidia",
            v,
            "x86-64",
            ("stable",),
            {
                "os_id": "flatcar",
                "version_id": os,
                "extra": {"X_SYSEXT_DESCRIPTION": "NVIDIA driver, built per Flatcar release"},
            },
        )
        for v, os in (
            ("550.90", OS_VERSIONS[0]),
            ("560.35", OS_VERSIONS[0]),
            ("560.35", OS_VERSIONS[1]),
        )
    ],
    (
        "htmltest",
        "1.0",
        "x86-64",
        ("stable",),
        {
            "extra": {
                "X_SYSEXT_DESCRIPTION": HTML_DESCRIPTION,
                "X_SYSEXT_HOMEPAGE": "javascript:window.__pwned=2",
                "X_SYSEXT_LICENSE": "<img src=x onerror=window.__pwned=3>",
            }
        },
    ),
    ("docker-compose", "2.29.1", "x86-64", ("stable",), {}),
    (
        "shellcheck",
        "0.10.0",
        "x86-64",
        ("stable",),
        {"extra": {"X_SYSEXT_LICENSE": "GPL-3.0-only"}},
    ),
]
# (name, version, arch)
YANKED = [("tailscale", "1.70.0", "arm64"), ("oldtool", "1.0", "x86-64")]


def populate(url: str, token: str, workdir: Path) -> list[Path]:
    """Build every CATALOGUE image, publish it in its channels, apply YANKED."""
    import requests

    headers = {"Authorization": f"Bearer {token}"}
    images = []
    for name, version, arch, channels, kwargs in CATALOGUE:
        image = make_image(workdir, name, version, arch, **kwargs)  # type: ignore[arg-type]
        images.append(image)
        for channel in channels:
            response = requests.put(
                f"{url}/api/v1/extensions/{name}/images/{image.name}",
                params={"channel": channel},
                data=image.read_bytes(),
                headers=headers,
                timeout=60,
            )
            response.raise_for_status()
    for name, version, arch in YANKED:
        response = requests.post(
            f"{url}/api/v1/extensions/{name}/versions/{version}/yank",
            params={"arch": arch},
            headers=headers,
            timeout=60,
        )
        response.raise_for_status()
    return images
