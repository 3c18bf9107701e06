"""Issue 19, findings 4 and 5: the image check is the kernel's check.

Small valid squashfs and erofs images (built with the real tools) get every superblock byte
XORed with a few values and every superblock field set to boundary values. Each mutant goes
through the registry's own upload validation (`validate_image`, the same lint as `sysext
validate`); every mutant it accepts is then loop-mounted read-only on this machine's kernel
and read completely (every directory listed, every file read, every link and xattr read).
An accepted mutant that does not mount or read is a test failure: the registry would have
signed an image hosts cannot use. erofs mutants also come re-checksummed (the crc32c fixed
up, as an attacker would), so the feature and geometry checks behind the checksum are
exercised too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry.errors import RegistryError
from registry.service.names import parse_image_filename
from registry.service.validation import validate_image
from sysext.build.pack import pack
from sysext.image.formats import ImageFormat
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease

pytestmark = [pytest.mark.root, pytest.mark.slow]

NAME = "mut"
FILENAME = "mut-1.0-x86-64.raw"
UUID = "6f3a9d8e-1919-4019-8019-000000000019"
RELEASE = "ID=_any\nSYSEXT_ID=mut\nSYSEXT_VERSION_ID=1.0\nARCHITECTURE=x86-64\n"

# (name, offset, size) of the superblock fields (squashfs_fs.h; erofs_fs.h, from byte 1024).
SQUASHFS_FIELDS = [
    ("magic", 0, 4), ("inodes", 4, 4), ("mkfs_time", 8, 4), ("block_size", 12, 4),
    ("fragments", 16, 4), ("compression", 20, 2), ("block_log", 22, 2), ("flags", 24, 2),
    ("no_ids", 26, 2), ("s_major", 28, 2), ("s_minor", 30, 2), ("root_inode", 32, 8),
    ("bytes_used", 40, 8), ("id_table_start", 48, 8), ("xattr_id_table_start", 56, 8),
    ("inode_table_start", 64, 8), ("directory_table_start", 72, 8),
    ("fragment_table_start", 80, 8), ("lookup_table_start", 88, 8),
]  # fmt: skip
EROFS_FIELDS = [
    ("magic", 0, 4), ("checksum", 4, 4), ("feature_compat", 8, 4), ("blkszbits", 12, 1),
    ("sb_extslots", 13, 1), ("root_nid", 14, 2), ("inos", 16, 8), ("build_time", 24, 8),
    ("build_time_nsec", 32, 4), ("blocks", 36, 4), ("meta_blkaddr", 40, 4),
    ("xattr_blkaddr", 44, 4), ("uuid", 48, 4), ("volume_name", 64, 4),
    ("feature_incompat", 80, 4), ("u1", 84, 2), ("extra_devices", 86, 2),
    ("devt_slotoff", 88, 2), ("dirblkbits", 90, 1), ("xattr_prefix_count", 91, 1),
    ("xattr_prefix_start", 92, 4), ("packed_nid", 96, 8), ("xattr_filter_reserved", 104, 1),
    ("reserved", 105, 4), ("reserved_end", 124, 4),
]  # fmt: skip
XOR_VALUES = (0x01, 0x10, 0x80, 0xFF)


@dataclass(frozen=True)
class Corpus:
    label: str
    image: Path
    fstype: str  # for mount -t
    sb_offset: int
    sb_size: int
    fields: list[tuple[str, int, int]]
    rechecksum: bool = False  # erofs: also emit variants with a fixed-up crc32c


def _tree(base: Path, *, xattrs: bool = False) -> Path:
    """A small tree with enough in it that blocks really get compressed: a compressible
    text, a file larger than one 512 KiB block, small files sharing fragments, links."""
    tree = base / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/share/mut/deep/er").mkdir(parents=True)
    (tree / "usr/bin/mut").write_text("#!/bin/sh\necho mut\n" * 200)
    (tree / "usr/bin/mut").chmod(0o755)
    rng = random.Random(19)
    big = bytes(rng.randrange(256) for _ in range(4096)) * 150 + b"tail" * 1000
    (tree / "usr/share/mut/big.bin").write_bytes(big)
    (tree / "usr/share/mut/words.txt").write_text("compressible words\n" * 3000)
    for index in range(12):
        (tree / f"usr/share/mut/deep/er/f{index}").write_text(f"file {index}\n" * (index + 3))
    (tree / "usr/share/mut/link").symlink_to("deep/er/f1")
    (tree / "usr/bin/mut-alias").symlink_to("mut")
    if xattrs:
        os.setxattr(tree / "usr/bin/mut", "user.origin", b"mutant corpus")
        os.setxattr(tree / "usr/share/mut/deep/er/f2", "user.origin", b"mutant corpus")
        os.setxattr(tree / "usr/share/mut/deep/er/f3", "user.note", b"x" * 300)
    return tree


def _release(tree: Path) -> None:
    release = tree / "usr/lib/extension-release.d"
    release.mkdir(parents=True)
    (release / "extension-release.mut").write_text(RELEASE)


def build_corpus(label: str, base: Path) -> Corpus:
    release = ExtensionRelease(name=NAME, version="1.0", arch=Architecture.parse("x86-64"))
    image = base / FILENAME
    if label == "squashfs-pack":  # what `sysext pack` makes: mksquashfs, zstd, fragments
        built = pack(_tree(base), release, base / "out", image_format=ImageFormat.SQUASHFS)
        return Corpus(label, built.path, "squashfs", 0, 96, SQUASHFS_FIELDS)
    if label == "squashfs-mksquashfs":  # gzip, an export table and an xattr table
        tree = _tree(base, xattrs=True)
        _release(tree)
        subprocess.run(["mksquashfs", str(tree), str(image), "-all-root", "-noappend",
                        "-quiet", "-no-progress", "-mkfs-time", "0", "-b", "131072"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        return Corpus(label, image, "squashfs", 0, 96, SQUASHFS_FIELDS)
    if label == "erofs-pack":  # mkfs.erofs, lz4hc, 64 KiB physical clusters
        built = pack(_tree(base), release, base / "out", image_format=ImageFormat.EROFS)
        return Corpus(label, built.path, "erofs", 1024, 128, EROFS_FIELDS, True)
    assert label == "erofs-mkfs"  # mkfs.erofs keeping the tree's xattrs
    tree = _tree(base, xattrs=True)
    _release(tree)
    subprocess.run(["mkfs.erofs", "-zlz4hc", "-T0", "-U", UUID, "--all-root", "--quiet", str(image),
                    str(tree)], check=True)  # fmt: skip
    return Corpus(label, image, "erofs", 1024, 128, EROFS_FIELDS, True)


def erofs_crc(block: bytes) -> int:
    """The kernel's erofs superblock checksum: crc32c seeded with ~0, no final inversion,
    over the superblock's block from byte 1024 with the checksum field zeroed."""
    data = bytearray(block)
    data[4:8] = b"\0\0\0\0"
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


def _mutants(corpus: Corpus, original: bytes) -> Iterator[tuple[str, bytes]]:
    """(label, the whole mutated superblock region) for every mutant."""
    start, size = corpus.sb_offset, corpus.sb_size
    region = original[start : start + size]
    for where in range(size):
        for value in XOR_VALUES:
            mutated = bytearray(region)
            mutated[where] ^= value
            yield f"byte {where} ^ {value:#04x}", bytes(mutated)
    for name, offset, width in corpus.fields:
        current = int.from_bytes(region[offset : offset + width], "little")
        top = (1 << (8 * width)) - 1
        for value in sorted({0, 1, 2, current - 1, current + 1, top, top - 1, 1 << (8 * width - 1),
                             current * 2, current // 2} - {current}):  # fmt: skip
            if not 0 <= value <= top:
                continue
            mutated = bytearray(region)
            mutated[offset : offset + width] = value.to_bytes(width, "little")
            yield f"{name}={value:#x}", bytes(mutated)
            if corpus.rechecksum and name != "checksum":
                yield f"{name}={value:#x} re-checksummed", _rechecksum(original, mutated)


def _rechecksum(original: bytes, region: bytearray) -> bytes:
    fixed = bytearray(region)
    blkszbits = fixed[12]
    length = 1 << blkszbits if 9 <= blkszbits <= 16 else 4096
    length = length - 1024 if length > 1024 else length
    block = bytearray(original[1024 : 1024 + length].ljust(length, b"\0"))
    block[: len(fixed)] = fixed
    fixed[4:8] = struct.pack("<I", erofs_crc(bytes(block)))
    return bytes(fixed)


# Runs as root inside a private mount namespace: mount each image read-only, read all of it.
_MOUNT_AND_READ = r"""
import errno, json, os, subprocess, sys
fstype, where, images = sys.argv[1], sys.argv[2], sys.argv[3:]
results = {}
for image in images:
    mounted = subprocess.run(["mount", "-o", "loop,ro", "-t", fstype, image, where],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        # mount(8) says "mount: WHERE: REASON." then a dmesg hint: keep the reason.
        results[image] = "mount: " + mounted.stderr.strip().splitlines()[0].split(": ")[-1]
        continue
    try:
        for top, dirs, files in os.walk(where, onerror=lambda e: (_ for _ in ()).throw(e)):
            for name in dirs + files:
                full = os.path.join(top, name)
                try:  # an image without an xattr table answers EOPNOTSUPP
                    attrs = os.listxattr(full, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno != errno.EOPNOTSUPP:
                        raise
                    attrs = []
                for attr in attrs:
                    os.getxattr(full, attr, follow_symlinks=False)
                if os.path.islink(full):
                    os.readlink(full)
                elif name in files:
                    with open(full, "rb") as f:
                        while f.read(1 << 20):
                            pass
        results[image] = None
    except OSError as exc:
        results[image] = f"read: {exc.strerror} ({os.path.relpath(exc.filename or where, where)})"
    finally:
        subprocess.run(["umount", where], check=True)
print(json.dumps(results))
"""


def mount_and_read(fstype: str, images: list[Path], scratch: Path) -> dict[str, str | None]:
    """Path → None when the kernel mounts the image and every entry reads, else the error."""
    if not images:
        return {}
    where = scratch / "mnt"
    where.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", _MOUNT_AND_READ,
         fstype, str(where), *map(str, images)],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    answer: dict[str, str | None] = json.loads(proc.stdout)
    return answer


def accepted(image: Path) -> bool:
    try:
        validate_image(image, parse_image_filename(NAME, FILENAME))
    except RegistryError as exc:
        assert exc.status == 422, exc.detail
        return False
    return True


def run_corpus(corpus: Corpus, scratch: Path) -> tuple[int, int, dict[str, str]]:
    """(mutants, accepted, {label: why it failed} for accepted mutants the kernel refuses)."""
    original = corpus.image.read_bytes()
    scratch.mkdir(parents=True, exist_ok=True)
    probe = scratch / FILENAME
    probe.write_bytes(original)
    assert accepted(probe), f"{corpus.label}: the unmutated image is refused"
    keep = scratch / "accepted"
    keep.mkdir()
    seen = {original[corpus.sb_offset : corpus.sb_offset + corpus.sb_size]}
    total = 0
    kept: dict[Path, str] = {}
    with open(probe, "r+b") as f:
        for label, region in _mutants(corpus, original):
            if region in seen:
                continue
            seen.add(region)
            total += 1
            f.seek(corpus.sb_offset)
            f.write(region)
            f.flush()
            if accepted(probe):
                copy = keep / f"{len(kept)}.raw"
                shutil.copyfile(probe, copy)
                kept[copy] = label
    results = mount_and_read(corpus.fstype, list(kept), scratch)
    failures = {kept[Path(p)]: why for p, why in results.items() if why is not None}
    return total, len(kept), failures


@pytest.mark.parametrize("label", ["squashfs-pack", "squashfs-mksquashfs", "erofs-pack",
                                   "erofs-mkfs"])  # fmt: skip
def test_every_accepted_superblock_mutant_mounts_and_reads(tmp_path: Path, label: str) -> None:
    corpus = build_corpus(label, tmp_path / "build")
    # The reference: the unmutated image mounts and reads here.
    assert mount_and_read(corpus.fstype, [corpus.image], tmp_path) == {str(corpus.image): None}
    total, kept, failures = run_corpus(corpus, tmp_path / "run")
    print(f"{label}: {total} mutants, {kept} accepted, {kept - len(failures)} mountable")
    assert total >= 300
    assert not failures, f"{label}: {len(failures)} accepted mutants fail: " + "; ".join(
        f"{k}: {v}" for k, v in list(failures.items())[:20]
    )
