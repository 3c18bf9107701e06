"""Turn a staged tree into `OUT/NAME-VERSION-ARCH.raw` (+ SHA256SUMS, + provenance).

The pipeline: check the tree (sysext.staging) → add the extension-release file to the
*entry list* (the caller's tree is never modified) → let the format's writer pack the list
into a hidden temporary file (with a verity signer: into a scratch file that
sysext.image.ddi wraps into a signed verity DDI) → rename it into place → merge SHA256SUMS
→ write provenance.
A failure at any step leaves the output directory as it was: no partial image, no
temporaries.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sysext.build.provenance import provenance_filename, provenance_record, write_provenance
from sysext.core.atomic import atomic_path
from sysext.core.errors import SysextError
from sysext.core.steps import step
from sysext.image.ddi import RootHashSigner, write_ddi
from sysext.image.formats import (
    Compression,
    ImageFormat,
    ImageWriter,
    WriteRequest,
    resolve_compression,
    writer_for,
)
from sysext.image.staging import EntryKind, StagedEntry, StagedTree, scan_tree
from sysext.systemd.extension_release import RELEASE_DIR, ExtensionRelease
from sysext.systemd.manifest import MANIFEST_NAME, ManifestEntry, merge_into_manifest, sha256_file

__all__ = ["BuiltImage", "Compression", "ImageFormat", "pack"]

log = logging.getLogger("sysext.build.pack")
# Namespace for the erofs UUID derived from the image name: same name → same UUID, so
# rebuilds are identical, while different images still get different UUIDs.
_UUID_NAMESPACE = uuid.UUID("5f0c5d1e-2b1f-4c39-9a43-7e0f3b6a1c2d")


@dataclass(frozen=True)
class BuiltImage:
    path: Path
    sha256: str
    size: int
    provenance_path: Path | None
    release: ExtensionRelease | None = None
    image_format: ImageFormat = ImageFormat.SQUASHFS
    compression: Compression = Compression.ZSTD
    level: int | None = None
    warnings: tuple[str, ...] = ()
    unchanged: bool = False  # an image of the same build key was already there: not packed
    # A signed verity DDI: its root hash and the signing certificate's fingerprint.
    root_hash: str | None = None
    verity_signer: str | None = None


def resolve_source_date_epoch(explicit: int | None = None) -> int:
    """The fixed timestamp of every inode: explicit, else $SOURCE_DATE_EPOCH, else 0."""
    if explicit is not None:
        value: str | int = explicit
    else:
        value = os.environ.get("SOURCE_DATE_EPOCH", "0") or "0"
    try:
        number = int(value)
    except ValueError:
        raise SysextError(
            f"SOURCE_DATE_EPOCH={value!r} is not an integer",
            "set it to seconds since 1970, e.g. $(git log -1 --format=%ct)",
        ) from None
    if not 0 <= number < 2**32:
        raise SysextError(
            f"SOURCE_DATE_EPOCH={number} is out of range",
            "squashfs stores 32-bit times; use a value between 0 and 4294967295",
        )
    return number


def pack(
    tree: Path,
    release: ExtensionRelease,
    output_dir: Path,
    *,
    image_format: ImageFormat = ImageFormat.SQUASHFS,
    compression: Compression | None = None,
    level: int | None = None,
    source_date_epoch: int | None = None,
    provenance: Mapping[str, object] | None = None,
    allow_setuid: frozenset[str] = frozenset(),
    block_size: int | None = None,
    key: str | None = None,
    jobs: int | None = None,
    verity_signer: RootHashSigner | None = None,
) -> BuiltImage:
    """Pack `tree` (holding usr/ and/or opt/) into an extension image in `output_dir`.

    `compression=None` picks the format's default (zstd for squashfs, lz4hc for erofs);
    `level=None` the compressor's default (zstd 16); `block_size` (squashfs only, 4 KiB–1 MiB,
    a power of two) defaults to 1 MiB. `key` (sysext.build_key) is
    recorded in the provenance file; `jobs` caps the compressor's threads (matrix builds pack
    several images at once). When the tree ships units under usr/lib/systemd/system,
    EXTENSION_RELOAD_MANAGER=1 is set even if the caller did not, so systemd-sysext reloads
    the manager and the units become visible (spec §1.3).

    With `verity_signer` the file is a Discoverable Disk Image instead: the file system, its
    dm-verity hash tree and the root hash signed by that certificate (sysext.image.ddi);
    hosts verify every block at read time. Plain images stay the default.
    """
    writer = writer_for(image_format)
    chosen, chosen_level = resolve_compression(writer, compression, level)
    mtime = resolve_source_date_epoch(source_date_epoch)
    check_block_size(image_format, block_size)
    if verity_signer is not None and release.arch is None:
        raise SysextError(
            f"{release.image_stem}: a verity DDI needs an architecture",
            "its partition types are per architecture (root-x86-64…); pass --arch",
        )
    staged = scan_tree(Path(tree).absolute(), allow_setuid=allow_setuid)
    for warning in staged.warnings:
        log.warning("%s", warning)
    if staged.ships_units and not release.reload_manager:
        release = dataclasses.replace(release, reload_manager=True)
    output_dir = Path(output_dir).absolute()
    target = output_dir / release.image_filename
    if output_dir.exists() and not output_dir.is_dir():
        raise SysextError(f"{output_dir}: not a directory", "pass a directory with --output")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        root_hash = _write_image(
            writer, staged, release, target, chosen, chosen_level, mtime, image_format, block_size,
            jobs, verity_signer,
        )  # fmt: skip
    except OSError as exc:
        raise SysextError(
            f"{output_dir}: cannot write the image: {exc.strerror or exc}",
            "check that the output directory is writable and has free space",
        ) from None
    digest = sha256_file(target)
    size = target.stat().st_size
    merge_into_manifest(output_dir / MANIFEST_NAME, [ManifestEntry(target.name, digest)])
    record = provenance_record(
        image={"file": target.name, "sha256": digest, "size": size},
        release=release.fields(),
        tools=writer.tool_versions(),
        build={
            "format": image_format.value,
            "compression": chosen.value,
            "level": chosen_level,
            "block_size": block_size,
            "source_date_epoch": mtime,
            **(
                {"verity": {"root_hash": root_hash, "signer": verity_signer.fingerprint}}
                if verity_signer is not None
                else {}
            ),
            "files": 1 + sum(1 for e in staged.entries if e.kind is not EntryKind.DIR),
        },
        inputs=provenance,
        key=key,
    )
    provenance_path = output_dir / provenance_filename(release.image_stem)
    write_provenance(provenance_path, record)
    return BuiltImage(
        path=target,
        sha256=digest,
        size=size,
        provenance_path=provenance_path,
        release=release,
        image_format=image_format,
        compression=chosen,
        level=chosen_level,
        warnings=staged.warnings,
        root_hash=root_hash,
        verity_signer=verity_signer.fingerprint if verity_signer is not None else None,
    )


def _write_image(
    writer: ImageWriter,
    staged: StagedTree,
    release: ExtensionRelease,
    target: Path,
    compression: Compression,
    level: int | None,
    mtime: int,
    image_format: ImageFormat,
    block_size: int | None,
    jobs: int | None,
    verity_signer: RootHashSigner | None = None,
) -> str | None:
    """Write the image; return the verity root hash when it is a DDI."""
    output_dir = target.parent
    kind = ", signed verity DDI" if verity_signer is not None else ""
    with (
        step(f"Packing {target.name} ({image_format.value}, {compression.value}{kind})"),
        tempfile.TemporaryDirectory(prefix=".#sysext-pack.", dir=output_dir) as scratch_name,
    ):
        scratch = Path(scratch_name)
        entries = _with_release_file(staged, release, scratch)
        with atomic_path(target, 0o644) as tmp:
            fs_image = scratch / "filesystem.img" if verity_signer is not None else tmp
            writer.write(
                WriteRequest(
                    entries=entries,
                    output=fs_image,
                    compression=compression,
                    level=level,
                    mtime=mtime,
                    uuid=str(uuid.uuid5(_UUID_NAMESPACE, release.image_stem)),
                    scratch=scratch,
                    block_size=block_size,
                    jobs=jobs,
                )
            )
            if verity_signer is None:
                return None
            assert release.arch is not None  # checked in pack()
            _, root_hash = write_ddi(fs_image, tmp, release.arch, verity_signer)
            return root_hash


def check_block_size(image_format: ImageFormat, block_size: int | None) -> None:
    if block_size is None:
        return
    if image_format is not ImageFormat.SQUASHFS:
        raise SysextError(
            f"--block-size applies to squashfs images only, not {image_format.value}",
            "drop --block-size",
        )
    if not 4096 <= block_size <= 1 << 20 or block_size & (block_size - 1):
        raise SysextError(
            f"block size {block_size} is not a power of two between 4096 and 1048576",
            "e.g. 131072 (squashfs's traditional default) or 1048576",
        )


def _with_release_file(
    staged: StagedTree, release: ExtensionRelease, scratch: Path
) -> list[StagedEntry]:
    """The tree's entries plus the release file (and the directories leading to it)."""
    release_source = scratch / "extension-release"
    release_source.write_text(release.render(), encoding="utf-8")
    entries = list(staged.entries)
    present = {e.path: e.kind for e in entries}
    parts = RELEASE_DIR.split("/")
    for depth in range(1, len(parts) + 1):
        directory = "/".join(parts[:depth])
        kind = present.get(directory)
        if kind is None:
            entries.append(StagedEntry(directory, EntryKind.DIR, 0o755))
        elif kind is not EntryKind.DIR:
            raise SysextError(
                f"{staged.root}: {directory} is a {kind.value}, but the extension-release "
                f"file goes into {RELEASE_DIR}/",
                f"make {directory} a real directory in the tree",
            )
    entries.append(
        StagedEntry(
            release.release_path,
            EntryKind.FILE,
            0o644,
            source=str(release_source),
            size=release_source.stat().st_size,
        )
    )
    return entries
