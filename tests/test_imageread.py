"""sysext.imageread against the real tools' view of the same images, and hostile input."""

from __future__ import annotations

import os
import random
import subprocess
import tarfile
from pathlib import Path

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
    # squashfs-tools 4.5's unsquashfs cannot read gensquashfs's lz4 images (the kernel
    # mounts them fine), so the reference listing comes from a zstd build of the same tree.
    reference = pack(tree, RELEASE, tmp_path / "ref", compression=Compression.ZSTD)
    assert mine == unsquashfs_view(reference.path)
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
