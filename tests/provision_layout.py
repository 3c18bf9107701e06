"""A registry's public tree built by hand from real images, keys and signed manifests.

Provisioning reads only the sysupdate layout (SHA256SUMS + images + keyring.gpg), so these
tests can serve it from any static HTTP server; test_provision_registry.py uses the real
registry instead.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sysext.build.pack import pack
from sysext.core.urls import KEYRING_BINARY, extension_url_path
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease
from sysext.trust import signing

# (name, version, arch, channel)
PUBLISHED = (
    ("podman", "5.2.0", "x86-64", "stable"),
    ("podman", "5.3.1", "x86-64", "stable"),
    ("podman", "5.3.1", "arm64", "stable"),
    ("crio", "1.31.1", "x86-64", "stable"),
    ("podman", "5.4.0-rc1", "x86-64", "beta"),
)


@dataclass(frozen=True)
class PublicTree:
    root: Path
    key: Path
    keyring: bytes

    def image(self, name: str, version: str, arch: str, channel: str = "stable") -> Path:
        return self.root / extension_url_path(name, channel) / f"{name}-{version}-{arch}.raw"


def build_public_tree(work: Path) -> PublicTree:
    """Pack one tiny real image per PUBLISHED entry, sign each directory, export the key."""
    root = (work / "public").absolute()
    key = (work / "signing.pgp").absolute()
    signing.generate_key(key)
    directories: set[Path] = set()
    for name, version, arch, channel in PUBLISHED:
        tree = (work / f"tree-{name}-{version}-{arch}").absolute()
        binary = tree / "usr" / "bin" / name
        binary.parent.mkdir(parents=True)
        binary.write_text(f"#!/bin/sh\necho {name} {version}\n")
        binary.chmod(0o755)
        directory = root / extension_url_path(name, channel)
        pack(tree, ExtensionRelease(name, version, Architecture(arch)), directory)
        directories.add(directory)
    for directory in directories:
        signing.sign_directory(directory, key)
    keyring = signing.export_public_key(key)
    (root / KEYRING_BINARY).write_bytes(keyring)
    return PublicTree(root, key, keyring)


def copy_tree(tree: PublicTree, destination: Path) -> PublicTree:
    shutil.copytree(tree.root, destination, dirs_exist_ok=True)
    return PublicTree(destination, tree.key, tree.keyring)
