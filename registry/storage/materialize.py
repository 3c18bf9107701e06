"""Materialize the public tree from the database: plain files any web server can serve.

Every (channel, extension) directory is a **snapshot**: a new directory under
`DATA/snapshots/CHANNEL/NAME/GENERATION` holding hard links to the images, SHA256SUMS,
its detached signature and the transfer files, fsynced before a symlink in `DATA/public`
is atomically swapped to point at it (rename of a new symlink over the old one). So a
request always resolves to one complete, signed snapshot; a crash at any point leaves the
previous snapshot served. Images are only ever added to a snapshot (yanked ones stay for
direct links), so a manifest from the previous snapshot still downloads from the next one.

What no file layout can prevent: a client fetching SHA256SUMS from one snapshot and
SHA256SUMS.gpg from the next when a publish lands between its two requests. sysupdate
then fails that run and succeeds on the next timer; docs/registry.md explains this.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from registry.db.models import Image
from registry.failpoints import failpoint
from registry.settings import Settings
from registry.storage.blobs import blob_path
from registry.storage.layout import channel_alias_dir, extension_dir
from registry.trust.keys import Signer
from sysext.core.atomic import atomic_write
from sysext.core.errors import SysextError
from sysext.core.urls import DEFAULT_CHANNEL
from sysext.systemd.manifest import MANIFEST_NAME, SIGNATURE_NAME, ManifestEntry, format_manifest
from sysext.systemd.transfer import TransferSpec, render_transfer
from sysext.systemd.versioning import version_key
from sysext.trust.signing import verify_detached

# How `sysext registry check` words the two kinds of drift, whatever the storage.
NOT_PUBLISHED = "not published in the public tree"
DIFFERS = "the public tree differs from the database (manifest, files or signature)"


@dataclass(frozen=True)
class DirectoryContent:
    """What one (channel, extension) directory must hold."""

    name: str
    channel: str
    manifest: bytes
    images: tuple[tuple[str, str], ...]  # (filename, sha256), yanked included
    texts: tuple[tuple[str, bytes], ...]  # NAME.conf, NAME.transfer


# Listed when nothing else is (every version yanked): systemd 252–256 refuse an empty
# SHA256SUMS as a download error (spec §3.3, < 6 bytes), while a line no transfer pattern
# matches is simply ignored, so hosts see "no version" instead of failing every run. The
# file exists (empty) so that every listed name downloads and verifies.
PLACEHOLDER_NAME = "NO-PUBLISHED-IMAGES"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def manifest_bytes(images: Iterable[Image], held: frozenset[str] = frozenset()) -> bytes:
    """SHA256SUMS of the non-yanked images, in systemd's version order (oldest first).

    Each line comes from format_manifest(), so the grammar is the canonical one (§3.3);
    only the line order is ours: by version as sysupdate compares them, then by arch.
    """
    listed = sorted(
        (i for i in images if not i.yanked and i.filename not in held),
        key=lambda i: (version_key(i.version), i.arch),
    )
    if not listed:
        return format_manifest([ManifestEntry(PLACEHOLDER_NAME, EMPTY_SHA256)])
    return b"".join(format_manifest([ManifestEntry(i.filename, i.sha256)]) for i in listed)


def transfer_texts(
    name: str, channel: str, base_url: str, *, os_bound: bool = False
) -> tuple[tuple[str, bytes], ...]:
    """NAME.conf (systemd 252–256 read only this) and NAME.transfer (257+), Verify=yes.

    `os_bound`: the images are NAME-VERSION-VERSIONID-ARCH.raw, so the pattern is
    NAME-@v-%w-%a.raw and each host (%w: its own VERSION_ID) sees only its images.
    """
    spec = TransferSpec(
        name=name, base_url=base_url, channel=channel, verify=True, os_bound=os_bound
    )
    return tuple(
        (f"{name}.{kind}", render_transfer(spec, file_format=kind).encode())
        for kind in ("conf", "transfer")
    )


def desired_content(
    settings: Settings,
    name: str,
    channel: str,
    images: Iterable[Image],
    held: frozenset[str] = frozenset(),
) -> DirectoryContent:
    """`held`: file names left out of the manifest while their version rolls out
    (registry/service/rollouts.py); their files stay, like yanked ones."""
    images = list(images)
    # The registry refuses to mix bound and plain images in one extension (service.py),
    # so any bound image means all are.
    os_bound = any(i.os_version_id for i in images)
    return DirectoryContent(
        name=name,
        channel=channel,
        manifest=manifest_bytes(images, held),
        images=tuple(sorted((i.filename, i.sha256) for i in images)),
        texts=(
            *transfer_texts(name, channel, settings.base_url, os_bound=os_bound),
            (PLACEHOLDER_NAME, b""),
        ),
    )


def _public_links(settings: Settings, name: str, channel: str) -> list[Path]:
    links = [channel_alias_dir(settings.public_dir, name, channel)]
    if channel == DEFAULT_CHANNEL:
        links.append(extension_dir(settings.public_dir, name))
    return links


def current_snapshot(settings: Settings, name: str, channel: str) -> Path | None:
    link = channel_alias_dir(settings.public_dir, name, channel)
    if not link.is_symlink():
        return None
    target = (link.parent / os.readlink(link)).resolve()
    return target if target.is_dir() else None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _snapshot_matches(snapshot: Path, content: DirectoryContent) -> bool:
    """True when `snapshot` already holds exactly `content` (its signature aside)."""
    try:
        if (snapshot / MANIFEST_NAME).read_bytes() != content.manifest:
            return False
        for filename, data in content.texts:
            if (snapshot / filename).read_bytes() != data:
                return False
        present = {p.name for p in snapshot.iterdir() if p.name.endswith(".raw")}
        return present == {f for f, _ in content.images}
    except OSError:
        return False


def _resign_in_place(snapshot: Path, signer: Signer, manifest: bytes) -> None:
    """Renew the signature of an unchanged snapshot, and change nothing else.

    The manifest stays byte for byte, so old and new signature are equally valid for it:
    one atomic rename is enough, and every other file keeps its inode (and ETag).
    """
    try:
        signature = (snapshot / SIGNATURE_NAME).read_bytes()
    except OSError:
        signature = b""
    if not signer.signature_is_current(manifest, signature):
        atomic_write(snapshot / SIGNATURE_NAME, signer.sign(manifest), 0o644)


def _swap_symlink(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.parent / f".#{link.name}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
    _fsync(link.parent)


def materialize(
    settings: Settings, signer: Signer, content: DirectoryContent, *, force: bool = False
) -> Path:
    """Make the public directories of (content.channel, content.name) serve `content`."""
    current = current_snapshot(settings, content.name, content.channel)
    if not force and current is not None and _snapshot_matches(current, content):
        _resign_in_place(current, signer, content.manifest)
        for link in _public_links(settings, content.name, content.channel):
            if not link.is_symlink() or (link.parent / os.readlink(link)).resolve() != current:
                _swap_symlink(link, current)
        return current

    parent = settings.snapshots_dir / content.channel / content.name
    parent.mkdir(parents=True, exist_ok=True)
    generations = [int(p.name) for p in parent.iterdir() if p.name.isdigit()]
    final = parent / f"{max(generations, default=0) + 1:010d}"
    building = parent / f".#{final.name}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    for filename, sha256 in content.images:
        os.link(blob_path(settings.store_dir, sha256), building / filename)
    for filename, data in content.texts:
        (building / filename).write_bytes(data)
    (building / SIGNATURE_NAME).write_bytes(signer.sign(content.manifest))
    (building / MANIFEST_NAME).write_bytes(content.manifest)
    for path in building.iterdir():
        os.chmod(path, 0o644)
        _fsync(path)
    _fsync(building)
    os.rename(building, final)
    _fsync(parent)
    failpoint("before-swap")
    for index, link in enumerate(_public_links(settings, content.name, content.channel)):
        if index:
            failpoint("between-swaps")
        _swap_symlink(link, final)
    prune_snapshots(parent, keep=settings.keep_snapshots, current=final)
    return final


def prune_snapshots(parent: Path, keep: int, current: Path) -> None:
    """Drop old snapshots; recent ones stay for readers that resolved them a moment ago."""
    names = sorted(p.name for p in parent.iterdir() if p.name.isdigit())
    for name in names[:-keep] if keep > 0 else names:
        if parent / name != current:
            shutil.rmtree(parent / name, ignore_errors=True)
    for leftover in parent.glob(".#*"):
        shutil.rmtree(leftover, ignore_errors=True)


def remove_unknown_links(settings: Settings, known: set[tuple[str, str]]) -> None:
    """Unpublish directories the database does not know (e.g. after a restored backup)."""
    public = settings.public_dir
    candidates: list[tuple[Path, str, str]] = []
    if (public / "extensions").is_dir():
        candidates += [(p, p.name, DEFAULT_CHANNEL) for p in (public / "extensions").iterdir()]
    if (public / "channels").is_dir():
        for channel_dir in (public / "channels").iterdir():
            ext = channel_dir / "extensions"
            if ext.is_dir():
                candidates += [(p, p.name, channel_dir.name) for p in ext.iterdir()]
    for path, name, channel in candidates:
        if name.startswith(".#") or (name, channel) not in known:
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)


def snapshot_matches(snapshot: Path, content: DirectoryContent, keyring: bytes) -> bool:
    """The content check materialize() uses, plus a signature hosts with `keyring` accept
    (valid and not expired); registry/service/consistency.py reports drift with it."""
    if not _snapshot_matches(snapshot, content):
        return False
    try:
        verify_detached(keyring, content.manifest, (snapshot / SIGNATURE_NAME).read_bytes())
    except (OSError, SysextError):
        return False
    return True


def published_directories(settings: Settings) -> set[tuple[str, str]]:
    """(name, channel) of every extension directory in the public tree."""
    public = settings.public_dir
    found = set()
    channels = public / "channels"
    if channels.is_dir():
        for channel_dir in channels.iterdir():
            extensions = channel_dir / "extensions"
            if extensions.is_dir():
                found |= {(p.name, channel_dir.name) for p in extensions.iterdir()}
    stable = public / "extensions"
    if stable.is_dir():
        found |= {(p.name, DEFAULT_CHANNEL) for p in stable.iterdir()}
    return {(n, c) for n, c in found if not n.startswith(".")}
