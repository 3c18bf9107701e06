"""The rollout tree: one signed directory per rollout bucket (issue 21, sysext/core/rollout.py).

    rollouts/CHANNEL/NAME/BB/                 hosts without a group, bucket BB (00-99)
    rollouts/CHANNEL/NAME/groups/G/BB/        hosts of group G that has a policy

Each directory holds a SHA256SUMS listing what that bucket may install (the newest released
version per architecture and OS version, plus the versions being rolled out to it) and,
like a channel directory, the BEST-BEFORE line of the signing policy (materialize.py), its
detached signature, and the listed images: sysupdate builds image URLs as `Path/NAME` and a
manifest line may not contain '/' (spec §3.3), so the images must be reachable in the
bucket's own directory. Locally they are hard links (no space, and nginx serves the same
inode); in S3 they are server-side copies (s3.py).

Materialized like the channel directories (materialize.py): a complete new generation under
`DATA/rollout-snapshots/CHANNEL/NAME/GEN/`, fsynced, then one symlink swap of
`public/rollouts/CHANNEL/NAME`; an unchanged tree only gets its ageing signatures renewed,
unless the renewal moves the BEST-BEFORE day (a new manifest: a new generation).
Only a few distinct manifests exist at any time (one per combination of versions offered),
so each is signed once and the signature shared by every bucket listing it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from registry.settings import Settings
from registry.storage.blobs import blob_path
from registry.storage.materialize import (
    PLACEHOLDER_NAME,
    marker_files,
    prune_snapshots,
    served_is_current,
    served_manifest,
    split_served,
)
from registry.trust.keys import Signer
from sysext.core.atomic import atomic_write
from sysext.core.rollout import rollout_dir
from sysext.systemd.manifest import MANIFEST_NAME, SIGNATURE_NAMES


@dataclass(frozen=True)
class SlotContent:
    """One bucket directory: `path` relative to the extension's rollout directory."""

    path: str
    manifest: bytes
    images: tuple[tuple[str, str], ...]  # (filename, sha256) it lists
    placeholder: bool  # lists PLACEHOLDER_NAME (nothing installable)


@dataclass(frozen=True)
class RolloutContent:
    name: str
    channel: str
    slots: tuple[SlotContent, ...]

    @property
    def url_path(self) -> str:
        return rollout_dir(self.name, self.channel)


def public_link(settings: Settings, name: str, channel: str) -> Path:
    return settings.public_dir / rollout_dir(name, channel)


def current_generation(settings: Settings, name: str, channel: str) -> Path | None:
    link = public_link(settings, name, channel)
    if not link.is_symlink():
        return None
    target = (link.parent / os.readlink(link)).resolve()
    return target if target.is_dir() else None


def _matches(generation: Path, content: RolloutContent) -> bool:
    """True when `generation` holds exactly `content` (signatures and BEST-BEFORE lines
    aside)."""
    try:
        present = {
            str(p.parent.relative_to(generation))
            for p in generation.rglob(MANIFEST_NAME)
            if p.is_file()
        }
        if present != {s.path for s in content.slots}:
            return False
        for slot in content.slots:
            directory = generation / slot.path
            if split_served((directory / MANIFEST_NAME).read_bytes())[0] != slot.manifest:
                return False
            raws = {p.name for p in directory.iterdir() if p.name.endswith(".raw")}
            if raws != {f for f, _ in slot.images}:
                return False
        return True
    except OSError:
        return False


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def served_manifests(signer: Signer, content: RolloutContent) -> dict[bytes, bytes]:
    """listing → the SHA256SUMS served for it: with the BEST-BEFORE line the channel
    directories carry (materialize.served_manifest), dated by the signature's expiry."""
    best_before = signer.best_before()
    return {s.manifest: served_manifest(s.manifest, best_before) for s in content.slots}


def signatures(signer: Signer, served: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """One signature per distinct served manifest (there are few: see the module doc)."""
    return {m: signer.sign(m) for m in set(served.values())}


def _renew_in_place(generation: Path, signer: Signer, content: RolloutContent) -> bool:
    """Renew the ageing signatures of an unchanged generation; False when a manifest
    itself must change (its BEST-BEFORE day moved): then a new generation is built, as
    for the channel directories, so no reader sees a manifest and a signature that do
    not belong together."""
    wanted = served_manifests(signer, content)
    renewed: dict[bytes, bytes] = {}
    for slot in content.slots:
        directory = generation / slot.path
        try:
            stored = (directory / MANIFEST_NAME).read_bytes()
        except OSError:
            return False
        found: dict[str, bytes | None] = {}
        for name in SIGNATURE_NAMES:
            try:
                found[name] = (directory / name).read_bytes()
            except OSError:
                found[name] = None
        if served_is_current(stored, found, slot.manifest, signer):
            continue
        if stored != wanted[slot.manifest]:
            return False
        if stored not in renewed:
            renewed[stored] = signer.sign(stored)
        # The same signature under every name a client asks for first (materialize.py).
        for name in SIGNATURE_NAMES:
            atomic_write(directory / name, renewed[stored], 0o644)
    return True


def materialize_rollouts(settings: Settings, signer: Signer, content: RolloutContent) -> None:
    current = current_generation(settings, content.name, content.channel)
    if (
        current is not None
        and _matches(current, content)
        and _renew_in_place(current, signer, content)
    ):
        return
    parent = settings.data_dir / "rollout-snapshots" / content.channel / content.name
    parent.mkdir(parents=True, exist_ok=True)
    generations = [int(p.name) for p in parent.iterdir() if p.name.isdigit()]
    final = parent / f"{max(generations, default=0) + 1:010d}"
    building = parent / f".#{final.name}"
    shutil.rmtree(building, ignore_errors=True)
    served = served_manifests(signer, content)
    signed = signatures(signer, served)
    for slot in content.slots:
        directory = building / slot.path
        directory.mkdir(parents=True)
        manifest = served[slot.manifest]
        for filename, sha256 in slot.images:
            os.link(blob_path(settings.store_dir, sha256), directory / filename)
        if slot.placeholder:
            (directory / PLACEHOLDER_NAME).write_bytes(b"")
        for filename in marker_files(manifest):
            (directory / filename).write_bytes(b"")
        for name in SIGNATURE_NAMES:
            (directory / name).write_bytes(signed[manifest])
        (directory / MANIFEST_NAME).write_bytes(manifest)
        for path in directory.iterdir():
            os.chmod(path, 0o644)
            # Hard-linked images are durable already; only the new small files need it.
            if not path.name.endswith(".raw"):
                _fsync(path)
        _fsync(directory)
    for directory in sorted({p for p in building.rglob("*") if p.is_dir()}, reverse=True):
        os.chmod(directory, 0o755)
        if directory.name == "groups" or directory.parent.name == "groups":
            _fsync(directory)
    os.chmod(building, 0o755)
    _fsync(building)
    os.rename(building, final)
    _fsync(parent)
    link = public_link(settings, content.name, content.channel)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.parent / f".#{link.name}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.path.relpath(final, link.parent), tmp)
    os.replace(tmp, link)
    _fsync(link.parent)
    prune_snapshots(parent, keep=settings.keep_snapshots, current=final)
