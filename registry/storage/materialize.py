"""Materialize the public tree from the database: plain files any web server can serve.

Every (channel, extension) directory is a **snapshot**: a new directory under
`DATA/snapshots/CHANNEL/NAME/GENERATION` holding hard links to the images, SHA256SUMS,
its detached signature and the transfer files, fsynced before a symlink in `DATA/public`
is atomically swapped to point at it (rename of a new symlink over the old one). So a
request always resolves to one complete, signed snapshot; a crash at any point leaves the
previous snapshot served. Images are only ever added to a snapshot (yanked ones stay for
direct links), so a manifest from the previous snapshot still downloads from the next one.

The signature is there under every name a client asks for first (manifest.SIGNATURE_NAMES:
`SHA256SUMS.gpg` for systemd 252–257, `SHA256SUMS.sha256.asc` for 258+), the same bytes,
so every poll costs one signature request. The served SHA256SUMS is the image listing
(`DirectoryContent.manifest`) plus, when the signing policy asks for it, a
`BEST-BEFORE-YYYY-MM-DD` line (systemd 260+ refuse the manifest from that day): its date
follows the signature's expiry, so each re-signing moves it, and a re-signing on a new
date is a new manifest, hence a new snapshot.

What no file layout can prevent: a client fetching SHA256SUMS from one snapshot and
its signature from the next when a publish lands between its two requests. sysupdate
then fails that run and succeeds on the next timer; docs/registry.md explains this.
"""

from __future__ import annotations

import contextlib
import datetime as dt
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
from sysext.systemd.manifest import (
    EMPTY_SHA256,
    MANIFEST_NAME,
    SIGNATURE_NAMES,
    ManifestEntry,
    best_before_date,
    best_before_deadline,
    best_before_entry,
    format_manifest,
)
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
    manifest: bytes  # the listing; what is served adds the BEST-BEFORE line (served_manifest)
    images: tuple[tuple[str, str], ...]  # (filename, sha256), yanked included
    texts: tuple[tuple[str, bytes], ...]  # NAME.conf, NAME.transfer


# Listed when nothing else is (every version yanked): systemd 252–256 refuse an empty
# SHA256SUMS as a download error (spec §3.3, < 6 bytes), while a line no transfer pattern
# matches is simply ignored, so hosts see "no version" instead of failing every run. The
# file exists (empty) so that every listed name downloads and verifies.
PLACEHOLDER_NAME = "NO-PUBLISHED-IMAGES"


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


def served_manifest(listing: bytes, best_before: dt.date | None) -> bytes:
    """The SHA256SUMS hosts get: the listing, then the BEST-BEFORE line if any.

    Like the placeholder, the marker is also served as the empty file its line names, so
    every listed name downloads and verifies (`sha256sum -c` included); systemd itself
    never fetches it (it reads only the name, for now).
    """
    if best_before is None:
        return listing
    return listing + format_manifest([best_before_entry(best_before)])


def marker_files(served: bytes) -> list[str]:
    """The names of the BEST-BEFORE files a served SHA256SUMS lists (served empty)."""
    return [best_before_entry(d).filename for d in split_served(served)[1]]


def split_served(served: bytes) -> tuple[bytes, list[dt.date]]:
    """(listing, marker dates) of a served SHA256SUMS (canonical lines, as written here)."""
    kept: list[bytes] = []
    dates: list[dt.date] = []
    for line in served.splitlines(keepends=True):
        date = best_before_date(line[66:].rstrip(b"\n").decode("utf-8", "replace"))
        if date is None:
            kept.append(line)
        else:
            dates.append(date)
    return b"".join(kept), dates


def served_is_current(
    served: bytes,
    signatures: dict[str, bytes | None],
    listing: bytes,
    signer: Signer,
    now: dt.datetime | None = None,
) -> bool:
    """True when a served manifest lists exactly `listing`, carries the marker the policy
    asks for (none, or one still ahead), and its signature, the same bytes under every
    name, need not be renewed yet (keys.Signer.signature_is_current)."""
    rest, dates = split_served(served)
    if rest != listing:
        return False
    now = now or dt.datetime.now(dt.UTC)
    if signer.policy.lists_best_before:
        if len(dates) != 1 or best_before_deadline(dates[0]) <= now:
            return False
    elif dates:
        return False
    first = signatures.get(SIGNATURE_NAMES[0])
    if first is None or any(signatures.get(n) != first for n in SIGNATURE_NAMES):
        return False
    return signer.signature_is_current(served, first, now)


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
    """True when `snapshot` already holds exactly `content` (its signature and BEST-BEFORE
    line aside)."""
    try:
        if split_served((snapshot / MANIFEST_NAME).read_bytes())[0] != content.manifest:
            return False
        for filename, data in content.texts:
            if (snapshot / filename).read_bytes() != data:
                return False
        present = {p.name for p in snapshot.iterdir() if p.name.endswith(".raw")}
        return present == {f for f, _ in content.images}
    except OSError:
        return False


def _read_signatures(snapshot: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for name in SIGNATURE_NAMES:
        try:
            found[name] = (snapshot / name).read_bytes()
        except OSError:
            found[name] = None
    return found


def _resign_in_place(snapshot: Path, signer: Signer, manifest: bytes) -> None:
    """Renew the signature of an unchanged snapshot, and change nothing else.

    The manifest stays byte for byte, so old and new signature are equally valid for it:
    one atomic rename per signature name is enough (a reader asks for one name only),
    and every other file keeps its inode (and ETag).
    """
    signature = signer.sign(manifest)
    for name in SIGNATURE_NAMES:
        atomic_write(snapshot / name, signature, 0o644)


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
    manifest = served_manifest(content.manifest, signer.best_before())
    if not force and current is not None and _snapshot_matches(current, content):
        served = (current / MANIFEST_NAME).read_bytes()
        fresh = served_is_current(served, _read_signatures(current), content.manifest, signer)
        if not fresh and served == manifest:
            _resign_in_place(current, signer, manifest)
        if fresh or served == manifest:
            for link in _public_links(settings, content.name, content.channel):
                if not link.is_symlink() or (link.parent / os.readlink(link)).resolve() != current:
                    _swap_symlink(link, current)
            return current
        # Re-signing on a new day moves the BEST-BEFORE line: a new manifest, so a new
        # snapshot (the old one stays whole for readers that resolved it).

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
    for filename in marker_files(manifest):
        (building / filename).write_bytes(b"")
    signature = signer.sign(manifest)
    for name in SIGNATURE_NAMES:
        (building / name).write_bytes(signature)
    (building / MANIFEST_NAME).write_bytes(manifest)
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


def served_refused(served: bytes, signatures: dict[str, bytes | None], keyring: bytes) -> bool:
    """True when hosts holding `keyring` would refuse what is served: a signature missing
    under one of its names, not verifying or expired, or a BEST-BEFORE day that has come."""
    now = dt.datetime.now(dt.UTC)
    if any(best_before_deadline(d) <= now for d in split_served(served)[1]):
        return True
    for name in SIGNATURE_NAMES:
        signature = signatures.get(name)
        if signature is None:
            return True
        try:
            verify_detached(keyring, served, signature)
        except SysextError:
            return True
    return False


def snapshot_matches(snapshot: Path, content: DirectoryContent, keyring: bytes) -> bool:
    """The content check materialize() uses, plus signatures hosts with `keyring` accept
    (valid and not expired, under every name) and a BEST-BEFORE day still ahead;
    registry/service/consistency.py reports drift with it."""
    if not _snapshot_matches(snapshot, content):
        return False
    try:
        served = (snapshot / MANIFEST_NAME).read_bytes()
    except OSError:
        return False
    return not served_refused(served, _read_signatures(snapshot), keyring)


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
