"""Booted-systemd helpers for tests: the cached boot root, Ignition's files stage, and
daemon-shaped extension images.

The root is `sysext.boot.rootfs.ensure_root()` — built once per machine (about a minute
with debootstrap from the Debian mirror in the machine's apt sources) and cached under
~/.cache/sysext/roots (or $SYSEXT_BOOT_ROOTS), so a clean clone reuses it. Tests that boot
are marked `root` (conftest skips them, saying why, for other users) and share the root
through the session fixtures `boot_root` (systemd 254) and `boot_root_newest` (257) of
conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from sysext.build.pack import pack
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease


def decode_data_url(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if header.endswith(";base64"):
        return base64.b64decode(payload)
    return urllib.parse.unquote_to_bytes(payload)


def apply_ignition(
    document: Mapping[str, Any], root: Path, *, reach: tuple[str, str] | None = None
) -> None:
    """What Ignition's files stage writes for this config, under `root` (here: a booted
    container's writable layer): files (remote ones fetched and hash-checked), links as real
    symlinks, units and their drop-ins into /etc/systemd/system, and `enabled` units as
    preset lines in
    20-ignition.preset — Ignition 2.14 writes presets, not .wants links, and systemd applies
    them on the first boot.

    `reach`: (prefix, replacement) for fetching remote files from here when the config
    names the registry as its host will see it (a VM's view of the host: tests/vm.py)."""
    storage = document.get("storage", {})
    for entry in storage.get("files", []):
        source = entry["contents"]["source"]
        if source.startswith("data:"):
            data = decode_data_url(source)
        else:
            if reach is not None and source.startswith(reach[0]):
                source = reach[1] + source.removeprefix(reach[0])
            data = requests.get(source, timeout=60).content
        expected = entry["contents"].get("verification", {}).get("hash")
        assert expected in (None, f"sha256-{hashlib.sha256(data).hexdigest()}")
        target = root / entry["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(entry.get("mode", 0o644))
    for link in storage.get("links", []):
        assert not link.get("hard", False)
        path = root / link["path"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(link["target"])
    presets = []
    for unit in document.get("systemd", {}).get("units", []):
        if "contents" in unit:
            path = root / "etc/systemd/system" / unit["name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(unit["contents"])
        for dropin in unit.get("dropins", []):
            # Ignition writes drop-ins to /etc/systemd/system/UNIT.d/NAME.
            path = root / "etc/systemd/system" / f"{unit['name']}.d" / dropin["name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(dropin["contents"])
        if "enabled" in unit:
            presets.append(f"{'enable' if unit['enabled'] else 'disable'} {unit['name']}\n")
    if presets:
        preset = root / "etc/systemd/system-preset/20-ignition.preset"
        preset.parent.mkdir(parents=True, exist_ok=True)
        preset.write_text("".join(presets))


def daemon_script(name: str, version: str) -> str:
    """A stand-in daemon: says which version started (journal), then stays alive."""
    return f"#!/bin/sh\necho '{name} {version} started'\nexec sleep infinity\n"


def service_image(
    output: Path,
    name: str,
    version: str,
    *,
    extra_units: Mapping[str, str] | None = None,
    reload_manager: bool = True,
) -> Path:
    """NAME-VERSION-x86-64.raw: usr/bin/NAME (prints `NAME VERSION`), NAMEd, NAME.service
    upheld by multi-user.target (the recipes' mechanism), plus `extra_units`: more daemons,
    each upheld the same way."""
    tree = output / f".tree-{name}-{version}"
    units = tree / "usr/lib/systemd/system"
    (units / "multi-user.target.d").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    cli = tree / "usr/bin" / name
    cli.write_text(f"#!/bin/sh\necho {name} {version}\n")
    cli.chmod(0o755)
    for unit, daemon in {f"{name}.service": f"{name}d", **(extra_units or {})}.items():
        binary = tree / "usr/bin" / daemon
        binary.write_text(daemon_script(daemon, version))
        binary.chmod(0o755)
        (units / unit).write_text(
            f"[Unit]\nDescription={daemon}\n\n[Service]\nExecStart=/usr/bin/{daemon}\n"
        )
        stem = unit.removesuffix(".service")
        (units / "multi-user.target.d" / f"10-{stem}.conf").write_text(f"[Unit]\nUpholds={unit}\n")
    release = ExtensionRelease(
        name=name, version=version, arch=Architecture.X86_64, reload_manager=reload_manager
    )
    built = pack(tree, release, output / f".pack-{name}-{version}")
    target = output / f"{name}-{version}-x86-64.raw"
    built.path.replace(target)
    return target
