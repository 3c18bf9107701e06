"""Booted-systemd helpers for tests: the cached boot root, Ignition's files stage, and
daemon-shaped extension images.

The root is `sysext.boot.rootfs.ensure_root()` — built once per machine (about a minute
with debootstrap from the Debian mirror in the machine's apt sources) and cached under
~/.cache/sysext/roots (or $SYSEXT_BOOT_ROOTS), so a clean clone reuses it. Tests that boot
are marked `root` (conftest skips them, saying why, for other users) and share the root
through the session fixtures `boot_root` (systemd 254), `boot_root_newest` (257) and
`boot_root_262` (262) of conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
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


# Debian's ignition 2.14 (the package scripts/setup.sh installs) keeps its binary here.
IGNITION = Path("/usr/lib/dracut/modules.d/30ignition/ignition")


def ignition_files_stage(document: Mapping[str, Any], root: Path, scratch: Path) -> None:
    """Run the REAL Ignition files stage for `document` with `-root root` (here: a booted
    container's writable layer, before the boot): files fetched and hash-checked, links,
    units and drop-ins in /etc/systemd/system, and `enabled` units as lines of
    /etc/systemd/system-preset/20-ignition.preset, which systemd applies on the first boot
    as on a real Ignition host. Ignition 2.14 always relabels what it wrote: it reads
    SELINUXTYPE from /etc/selinux/config and runs `setfiles`. The Debian root has neither
    SELinux nor that file, so for the stage only the root gets a config and PATH a
    `setfiles` that labels nothing (the container runs without SELinux)."""
    if not IGNITION.is_file():
        # No pytest here: bench/boot.py imports this module without the test extras.
        raise RuntimeError(
            f"{IGNITION} is missing: install Debian's ignition (scripts/setup.sh --test)"
        )
    scratch.mkdir(parents=True, exist_ok=True)
    selinux = root / "etc/selinux"
    selinux.mkdir(parents=True)
    (selinux / "config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")
    tools = scratch / "bin"
    tools.mkdir(exist_ok=True)
    (tools / "setfiles").write_text("#!/bin/sh\ncat >/dev/null\n")
    (tools / "setfiles").chmod(0o755)
    cache = scratch / "ignition.json"
    cache.write_text(json.dumps(document), encoding="utf-8")
    result = subprocess.run(
        [
            IGNITION, "-platform", "file", "-stage", "files", "-root", root,
            "-config-cache", cache, "-state-file", scratch / "ignition.state", "-log-to-stdout",
        ],
        env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    shutil.rmtree(selinux)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


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
    restart_units: Sequence[str] = (),
) -> Path:
    """NAME-VERSION-x86-64.raw: usr/bin/NAME (prints `NAME VERSION`), NAMEd, NAME.service
    upheld by multi-user.target (the recipes' mechanism), plus `extra_units`: more daemons,
    each upheld the same way. `restart_units` go to EXTENSION_RESTART_UNITS= (what the
    recipes set so a refresh restarts their daemons)."""
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
    extra = {"EXTENSION_RESTART_UNITS": " ".join(restart_units)} if restart_units else {}
    release = ExtensionRelease(
        name=name,
        version=version,
        arch=Architecture.X86_64,
        reload_manager=reload_manager,
        extra=extra,
    )
    built = pack(tree, release, output / f".pack-{name}-{version}")
    target = output / f"{name}-{version}-x86-64.raw"
    built.path.replace(target)
    return target
