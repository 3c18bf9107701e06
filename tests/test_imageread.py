"""sysext.imageread against the real tools' view of the same images, and hostile input."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sysext.build.pack import pack
from sysext.core.errors import SysextError
from sysext.image.formats import Compression, ImageFormat
from sysext.image.read import read_file, read_image
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease

RELEASE = ExtensionRelease("tree", "1", Architecture.X86_64)


def rich_tree(base: Path, longest_name: int = 255) -> Path:
    """Many entries per directory, deep nesting, long names and link targets, big files."""
    tree = base / "tree"
    many = tree / "usr/share/many"
    many.mkdir(parents=True)
    for i in range(400):  # several erofs directory blocks
        (many / f"entry-{i:04d}-{'x' * (i % 50)}").write_text(str(i))
    deep = tree / "opt" / "/".join(f"d{i}" for i in range(40))
    deep.mkdir(parents=True)
    (deep / "leaf").write_text("leaf")
    (tree / "usr/share" / ("n" * longest_name)).write_text("long name")
    (tree / "usr/share/longlink").symlink_to("t/" * 1500)
    (tree / "usr/bin").mkdir()
    big = tree / "usr/bin/big"
    rng = random.Random(7)
    big.write_bytes(bytes(rng.getrandbits(8) for _ in range(300_000)) + b"A" * 500_000)
    big.chmod(0o711)
    (tree / "usr/bin/empty").write_bytes(b"")
    return tree


def unsquashfs_view(image: Path) -> dict[str, tuple[str, str, int]]:
    text = subprocess.run(
        ["unsquashfs", "-lln", str(image)], capture_output=True, text=True, check=True
    ).stdout
    view = {}
    for line in text.splitlines():
        perms, owner, size, _d, _t, rest = line.split(None, 5)
        path = rest.split(" -> ")[0].removeprefix("squashfs-root").lstrip("/")
        if path:
            view[path] = (perms[0], owner, int(size) if perms[0] == "-" else 0)
    return view


def extracted_view(root: Path) -> dict[str, tuple[str, int, int, str | None]]:
    view = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            kind = "symlink" if full.is_symlink() else "dir" if full.is_dir() else "file"
            target = os.readlink(full) if kind == "symlink" else None
            view[str(full.relative_to(root))] = (
                kind,
                st.st_mode & 0o7777 if kind != "symlink" else 0o777,
                st.st_size if kind == "file" else 0,
                target,
            )
    return view


@pytest.mark.parametrize(
    "compression", [Compression.ZSTD, Compression.XZ, Compression.GZIP, Compression.LZ4]
)
def test_squashfs_listing_matches_unsquashfs(tmp_path: Path, compression: Compression) -> None:
    tree = rich_tree(tmp_path)
    built = pack(tree, RELEASE, tmp_path / "out", compression=compression)
    contents = read_image(built.path)
    kinds = {"dir": "d", "file": "-", "symlink": "l"}
    mine = {e.path: (kinds[e.kind], f"{e.uid}/{e.gid}", e.size) for e in contents.entries}
    assert mine == unsquashfs_view(built.path)
    assert contents.format is ImageFormat.SQUASHFS
    assert contents.size == built.size
    assert read_file(built.path, "usr/bin/big") == (rich_tree_bytes(tmp_path))
    assert read_file(built.path, "/usr/share/many/entry-0007-xxxxxxx") == b"7"


def rich_tree_bytes(base: Path) -> bytes:
    return (base / "tree/usr/bin/big").read_bytes()


@pytest.mark.parametrize("compression", [Compression.LZ4HC, Compression.LZ4])
def test_erofs_listing_matches_fsck_extraction(tmp_path: Path, compression: Compression) -> None:
    built = pack(rich_tree(tmp_path, longest_name=254), RELEASE, tmp_path / "out",
                 image_format=ImageFormat.EROFS, compression=compression)  # fmt: skip
    contents = read_image(built.path)
    dest = tmp_path / "x"
    subprocess.run(["fsck.erofs", f"--extract={dest}", "--preserve-perms", str(built.path)],
                   check=True, capture_output=True)  # fmt: skip
    mine = {e.path: (e.kind, e.mode, e.size, e.target) for e in contents.entries}
    assert mine == extracted_view(dest)
    assert {(e.uid, e.gid) for e in contents.entries} == {(0, 0)}
    assert contents.compression == "lz4"  # the big file really is compressed
    assert contents.release_files["tree"]["SYSEXT_ID"] == "tree"
    assert read_file(built.path, "opt/" + "/".join(f"d{i}" for i in range(40)) + "/leaf") == b"leaf"
    assert read_file(built.path, "usr/share/" + "n" * 254) == b"long name"


@pytest.mark.root
def test_erofs_owners_are_read(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/x").write_text("x")
    os.chown(tree / "usr/bin/x", 70000, 12)  # needs the extended inode (uid > 65535)
    os.chown(tree / "usr/bin", 5, 6)
    image = tmp_path / "img.raw"
    subprocess.run(["mkfs.erofs", "-T0", "--quiet", str(image), str(tree)], check=True)
    owners = {e.path: (e.uid, e.gid) for e in read_image(image).entries}
    assert owners == {"usr": (0, 0), "usr/bin": (5, 6), "usr/bin/x": (70000, 12)}


def test_read_file_errors(tmp_path: Path) -> None:
    built = pack(rich_tree(tmp_path), RELEASE, tmp_path / "out")
    with pytest.raises(SysextError, match="no file usr/bin/nope in the image"):
        read_file(built.path, "usr/bin/nope")
    with pytest.raises(SysextError, match="no file usr/bin in the image"):
        read_file(built.path, "usr/bin")


def _tarball(path: Path) -> None:
    src = path.parent / "member.txt"
    src.write_text("hello")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src, arcname="usr/bin/x")


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(b"\0" * 10000),
        lambda p: p.write_bytes(b"hsq"),
        lambda p: p.write_text("ID=_any\n"),
        _tarball,
    ],
    ids=["empty", "zeros", "short", "text", "tarball"],
)
def test_not_an_image(tmp_path: Path, make: object) -> None:
    path = tmp_path / "thing.raw"
    make(path)  # type: ignore[operator]
    with pytest.raises(
        SysextError, match=r"thing.raw: (not a squashfs or erofs image|truncated|corrupt)"
    ):
        read_image(path)


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SysextError, match="is a directory"):
        read_image(tmp_path)
    with pytest.raises(SysextError, match="no such file"):
        read_image(tmp_path / "missing.raw")


@pytest.mark.parametrize("image_format", [ImageFormat.SQUASHFS, ImageFormat.EROFS])
def test_corrupted_images_fail_cleanly(tmp_path: Path, image_format: ImageFormat) -> None:
    """Flip bytes and truncate: reading either works or raises SysextError, never a crash."""
    built = pack(rich_tree(tmp_path, 200), RELEASE, tmp_path / "out", image_format=image_format)
    original = built.path.read_bytes()
    rng = random.Random(1234)
    broken = tmp_path / "broken.raw"
    failures = 0
    for attempt in range(60):
        data = bytearray(original)
        if attempt % 3 == 0:
            data = data[: rng.randrange(1100, len(data))]
        else:
            # Metadata lives near the start (erofs) or the end (squashfs); hit both.
            for _ in range(rng.randrange(1, 20)):
                where = rng.choice(
                    [rng.randrange(0, 8192), rng.randrange(len(data) - 8192, len(data))]
                )
                data[where] = rng.randrange(256)
            data[:4] = original[:4]
            data[1024:1028] = original[1024:1028]
        broken.write_bytes(bytes(data))
        try:
            read_image(broken)
        except SysextError as exc:
            failures += 1
            assert "broken.raw" in exc.message
    assert failures > 0  # the damage was noticed at least sometimes


# --- the kernel's mount checks, one rule at a time (issue 19, findings 4 and 5) ------------


def _small_image(
    base: Path, image_format: ImageFormat, compression: Compression | None = None
) -> bytes:
    tree = base / "small"
    (tree / "usr/bin").mkdir(parents=True)
    for index in range(3):
        (tree / f"usr/bin/t{index}").write_text(f"#!/bin/sh\necho {index}\n")
    built = pack(tree, RELEASE, base / "out", image_format=image_format, compression=compression)
    return built.path.read_bytes()


def _field(data: bytearray, fmt: str, offset: int) -> int:
    return int(struct.unpack_from(fmt, data, offset)[0])


SQUASHFS_RULES = [
    # (what, change the superblock, words of the one-line error)
    ("check flag", lambda d: struct.pack_into("<H", d, 24, _field(d, "<H", 24) | 0x4),
     "superblock flags"),
    ("lzma", lambda d: struct.pack_into("<H", d, 20, 2), "which Linux does not implement"),
    ("lz4 without options", lambda d: struct.pack_into("<H", d, 20, 5),
     "lz4 image without its compressor options"),
    ("compressor options that are not there", lambda d: struct.pack_into(
        "<H", d, 24, _field(d, "<H", 24) | 0x400), "metadata block"),
    ("unpadded", lambda d: d.__delitem__(slice(_field(d, "<Q", 40) + 1, None)),
     "not padded to 4 KiB"),
    ("bytes_used", lambda d: struct.pack_into("<Q", d, 40, _field(d, "<Q", 40) + 8),
     "id table out of range"),
    ("root offset", lambda d: struct.pack_into("<Q", d, 32, 0x2001), "root inode offset"),
    ("fewer fragments", lambda d: struct.pack_into("<I", d, 16, 0),
     "fragment index out of range"),
    ("more fragments", lambda d: struct.pack_into("<I", d, 16, 1000),
     "fragment table out of range for 1000 fragments"),
    ("xattr table", lambda d: struct.pack_into("<Q", d, 56, _field(d, "<Q", 48)),
     "xattr id table"),
    ("export table", lambda d: struct.pack_into("<Q", d, 88, _field(d, "<Q", 48) - 8),
     "export (inode lookup) table out of range"),
    ("directory table", lambda d: struct.pack_into("<Q", d, 72, _field(d, "<Q", 48)),
     "directory table overlaps"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "change", "words"), SQUASHFS_RULES,
                         ids=[r[0] for r in SQUASHFS_RULES])  # fmt: skip
def test_squashfs_kernel_rules(tmp_path: Path, what: str, change: Any, words: str) -> None:
    # gzip at its default level is written without compressor options (zstd-16, the
    # default, has them), which the rules about options need.
    data = bytearray(_small_image(tmp_path, ImageFormat.SQUASHFS, Compression.GZIP))
    change(data)
    broken = tmp_path / "broken.raw"
    broken.write_bytes(bytes(data))
    with pytest.raises(SysextError, match=r"broken\.raw: corrupt squashfs image") as caught:
        read_image(broken)
    assert words in caught.value.message and "\n" not in caught.value.message
    assert caught.value.hint


def _recheck(data: bytearray) -> None:
    """Fix up the erofs superblock checksum after a change, as an attacker would."""
    from tests.test_image_mutants import erofs_crc

    size = 1 << data[1036]
    size = size - 1024 if size > 1024 else size
    struct.pack_into("<I", data, 1028, erofs_crc(bytes(data[1024 : 1024 + size])))


EROFS_RULES = [
    ("checksum", lambda d: struct.pack_into("<I", d, 1028, _field(d, "<I", 1028) ^ 1),
     "superblock checksum"),
    ("incompat feature", lambda d: (struct.pack_into("<I", d, 1104,
                                                     _field(d, "<I", 1104) | 0x40), _recheck(d)),
     "incompat 0x43 this reader does not know"),
    ("compat feature", lambda d: (struct.pack_into("<I", d, 1032, _field(d, "<I", 1032) | 0x8),
                                  _recheck(d)), "compat 0xb"),
    ("block size", lambda d: (struct.pack_into("<B", d, 1036, 13), _recheck(d)),
     "block size 2^13"),
    ("smaller block size", lambda d: (struct.pack_into("<B", d, 1036, 11), _recheck(d)),
     "claims"),
    ("dirblkbits", lambda d: (struct.pack_into("<B", d, 1114, 1), _recheck(d)),
     "dirblkbits 1"),
    ("extra devices", lambda d: (struct.pack_into("<I", d, 1104, _field(d, "<I", 1104) | 0x8),
                                 struct.pack_into("<H", d, 1110, 1), _recheck(d)),
     "1 extra devices"),
    # The lz4 configuration record right after the superblock: u16 size, max_distance,
    # max_pclusterblks (more than 1 MiB of blocks is refused).
    ("lz4 cluster config", lambda d: (struct.pack_into("<H", d, 1156, 1000), _recheck(d)),
     "lz4 physical clusters of 1000 blocks"),
    ("unknown algorithm", lambda d: (struct.pack_into("<H", d, 1108, 0x11), _recheck(d)),
     "unknown compression algorithms 0x10"),
    ("no zero padding", lambda d: (struct.pack_into("<I", d, 1104, _field(d, "<I", 1104) & ~1),
                                   _recheck(d)), "compressed data without zero padding"),
    ("volume name", lambda d: (d.__setitem__(slice(1088, 1104), b"x" * 16), _recheck(d)),
     "volume name"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "change", "words"), EROFS_RULES,
                         ids=[r[0] for r in EROFS_RULES])  # fmt: skip
def test_erofs_kernel_rules(tmp_path: Path, what: str, change: Any, words: str) -> None:
    tree = tmp_path / "small"
    (tree / "usr/share").mkdir(parents=True)
    (tree / "usr/share/words").write_text("compressible words\n" * 3000)  # compressed
    data = bytearray(pack(tree, RELEASE, tmp_path / "out", image_format=ImageFormat.EROFS)
                     .path.read_bytes())  # fmt: skip
    change(data)
    broken = tmp_path / "broken.raw"
    broken.write_bytes(bytes(data))
    with pytest.raises(SysextError, match=r"broken\.raw: corrupt erofs image") as caught:
        read_image(broken)
    assert words in caught.value.message and "\n" not in caught.value.message
