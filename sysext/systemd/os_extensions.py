"""Extensions an OS ships itself, and whether ours would merge next to them.

Flatcar (since 3794.0.0) merges its own `docker-flatcar` and `containerd-flatcar` by
default, and offers optional `flatcar-NAME` extensions (podman, zfs, python, incus,
nvidia-drivers-*, overlaybd…) enabled by a `NAME` line in /etc/flatcar/enabled-sysext.conf
(Flatcar docs, "Systemd-sysext": https://www.flatcar.org/docs/latest/provisioning/sysext/).
Two extensions shipping the same binaries both merge and the overlay order decides which
one runs, so an image declares what it replaces (X_SYSEXT_REPLACES, a space-separated list)
and the host switches those off: a /dev/null link for built-in ones, `-NAME` for optional ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPLACES_FIELD = "X_SYSEXT_REPLACES"
FLATCAR_OPTIONAL_PREFIX = "flatcar-"
FLATCAR_ENABLED_SYSEXT = "etc/flatcar/enabled-sysext.conf"
# Built-in Flatcar extensions (enabled by default) and files they ship that a community
# image replacing them would ship too (used to flag an image that forgot to declare it).
FLATCAR_BUILTIN: Mapping[str, tuple[str, ...]] = {
    "docker-flatcar": ("usr/bin/docker", "usr/bin/dockerd"),
    "containerd-flatcar": ("usr/bin/containerd", "usr/bin/ctr"),
}
FLATCAR_OPTIONAL: Mapping[str, tuple[str, ...]] = {
    "flatcar-podman": ("usr/bin/podman",),
    "flatcar-incus": ("usr/bin/incus",),
    "flatcar-zfs": ("usr/sbin/zfs", "usr/bin/zfs"),
    "flatcar-python": ("usr/bin/python3",),
}


def replaced(release: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(release.get(REPLACES_FIELD, "").split())


def masking_advice(os_name: str) -> str:
    if os_name.startswith(FLATCAR_OPTIONAL_PREFIX):
        short = os_name[len(FLATCAR_OPTIONAL_PREFIX) :]
        return f"write -{short} to /{FLATCAR_ENABLED_SYSEXT}"
    return f"link /etc/extensions/{os_name}.raw to /dev/null"


@dataclass(frozen=True)
class Conflict:
    os_extension: str
    declared: bool  # False: guessed from the files the image ships
    message: str


def flatcar_conflicts(
    name: str, release: Mapping[str, str], shipped: frozenset[str]
) -> list[Conflict]:
    """What a Flatcar host merges next to image `name` unless it is switched off.

    `shipped`: the image's file paths (no leading '/'), to catch an image that ships
    `usr/bin/docker` without declaring that it replaces docker-flatcar.
    """
    declared = replaced(release)
    conflicts = [
        Conflict(
            os_name,
            True,
            f"{name} replaces Flatcar's {os_name}, which would merge too: "
            f"{masking_advice(os_name)} (sysext butane does)",
        )
        for os_name in declared
        if os_name in FLATCAR_BUILTIN or os_name.startswith(FLATCAR_OPTIONAL_PREFIX)
    ]
    for os_name, files in {**FLATCAR_BUILTIN, **FLATCAR_OPTIONAL}.items():
        clash = sorted(f for f in files if f in shipped)
        if clash and os_name not in declared:
            when = "" if os_name in FLATCAR_BUILTIN else " when enabled"
            conflicts.append(
                Conflict(
                    os_name,
                    False,
                    f"{name} ships /{clash[0]} like Flatcar's {os_name}{when}; both merge and "
                    f"the overlay order picks one: declare {REPLACES_FIELD}={os_name} "
                    "(recipe key `replaces`)",
                )
            )
    return conflicts


def host_merges(root: Path, os_name: str) -> bool:
    """Whether the host under `root` would merge its own extension `os_name` now."""
    if os_name.startswith(FLATCAR_OPTIONAL_PREFIX):
        short = os_name[len(FLATCAR_OPTIONAL_PREFIX) :]
        enabled: list[str] = []
        for conf in ("usr/share/flatcar/enabled-sysext.conf", FLATCAR_ENABLED_SYSEXT):
            try:
                lines = (root / conf).read_text().split()
            except OSError:
                continue
            for line in lines:
                if line == f"-{short}" and short in enabled:
                    enabled.remove(short)
                elif line == short:
                    enabled.append(short)
        return short in enabled
    link = root / "etc/extensions" / f"{os_name}.raw"
    try:
        return os.readlink(link) != "/dev/null"
    except OSError:
        return link.exists()
