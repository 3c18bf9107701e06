"""What the squashfs writer (mksquashfs from a private view) puts in an image, checked with
squashfs-tools-ng's `rdsquashfs -s` and squashfs-tools' `unsquashfs`: big directories carry
an index (issue 23: lookups in them stay fast on a cold cache), owners are 0:0, every time is
SOURCE_DATE_EPOCH, hard-linked sources become separate inodes, any name packs, and rebuilds
are byte-identical whatever the tree's own times and owners. The private view
(sysext.image.formats.view) is shared with erofs: both formats give the same bytes from a
tree on another file system, under another umask and with other thread counts; the view
lives in the build's scratch directory and is gone afterwards, also when laying it out fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sysext.build.pack import pack
from sysext.core.errors import SysextError
from sysext.image.formats import ImageFormat, WriteRequest, writer_for
from sysext.image.staging import EntryKind, StagedEntry
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease

RELEASE = ExtensionRelease("x", "1.0", Architecture.X86_64)


def stat_entry(image: Path, path: str) -> str:
    return subprocess.run(
        ["rdsquashfs", "-s", "/" + path, image], capture_output=True, text=True, check=True
    ).stdout


def make_tree(base: Path, mtime: int) -> Path:
    tree = base / "tree"
    big = tree / "usr/lib/big"
    big.mkdir(parents=True)
    # 1,200 entries with 40-byte names: a listing of ~60 KiB, several metadata blocks.
    for i in range(1200):
        (big / f"module-{i:04d}-{'x' * 28}").write_text(str(i))
    small = tree / "usr/share/x"
    small.mkdir(parents=True)
    (small / 'odd name "quoted" ').write_text("odd")
    (small / "é.txt").write_text("accent")
    (small / "a").write_text("same bytes")
    os.link(small / "a", small / "b")
    for path in tree.rglob("*"):
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return tree


def test_big_directories_get_an_index_and_small_ones_need_none(tmp_path: Path) -> None:
    built = pack(make_tree(tmp_path, 1_000_000), RELEASE, tmp_path / "out")
    big = stat_entry(built.path, "usr/lib/big")
    assert "Inode type: extended directory" in big, big
    found = re.search(r"Directory index entries: (\d+)", big)
    assert found and int(found.group(1)) >= 5, big
    assert "Inode type: directory" in stat_entry(built.path, "usr/share/x")


def test_owners_times_hard_links_names_and_rebuilds(tmp_path: Path) -> None:
    first = pack(make_tree(tmp_path / "a", 1_000_000), RELEASE, tmp_path / "out-a",
                 source_date_epoch=86400 * 365)  # fmt: skip
    listing = subprocess.run(
        ["unsquashfs", "-lln", first.path], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert {line.split()[1] for line in listing} == {"0/0"}
    assert {line.split()[3] for line in listing} == {"1971-01-01"}
    # The two hard-linked names are two basic file inodes (link count 1), not one inode.
    numbers = set()
    for name in ("a", "b"):
        shown = stat_entry(first.path, f"usr/share/x/{name}")
        assert "Inode type: file" in shown and "Hard link count" not in shown, shown
        numbers.add(re.search(r"Inode number: (\d+)", shown).group(1))  # type: ignore[union-attr]
    assert len(numbers) == 2
    for name, data in (("a", b"same bytes"), ("b", b"same bytes"), ("é.txt", b"accent"),
                       ('odd name "quoted" ', b"odd")):  # fmt: skip
        shown = subprocess.run(
            ["unsquashfs", "-cat", first.path, f"usr/share/x/{name}"],
            capture_output=True,
            check=True,
        ).stdout
        assert shown == data
    # Other tree times (and creation order) give the same bytes.
    second = pack(make_tree(tmp_path / "b", 2_000_000), RELEASE, tmp_path / "out-b",
                  source_date_epoch=86400 * 365)  # fmt: skip
    assert first.path.read_bytes() == second.path.read_bytes()


def odd_tree(base: Path, mtime: int) -> Path:
    """Every kind of entry the view must recreate: a read-only directory, symlinks (one
    dangling, with quotes and blanks), names that needed quoting in gensquashfs's pack file,
    hard links, an executable; in another creation order each time it is called with a
    different `mtime`."""
    tree = base / "tree"
    names = ["with space", "quote'single", 'dq"x', "back\\slash", "trailing "]
    if mtime % 2:
        names.reverse()
    share = tree / "usr/share/odd"
    share.mkdir(parents=True)
    for name in names:
        (share / name).write_text(name)
    (share / "a").write_text("linked")
    os.link(share / "a", share / "b")
    os.link(share / "a", share / "c d")
    (share / "to-a").symlink_to("a")
    (share / "dangling").symlink_to('../no "such" target')
    ro = tree / "usr/lib/ro"
    ro.mkdir(parents=True)
    (ro / "data").write_bytes(bytes(range(256)) * 64)
    (tree / "usr/bin").mkdir()
    (tree / "usr/bin/tool").write_text("#!/bin/sh\necho tool\n")
    (tree / "usr/bin/tool").chmod(0o755)
    ro.chmod(0o555)
    for path in tree.rglob("*"):
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return tree


def other_file_system(tmp_path: Path) -> Path:
    """A scratch directory on another file system than tmp_path (tmpfs), or a skip."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's temporary directory")
    return Path(tempfile.mkdtemp(prefix="sysext-test-", dir=shm))


@pytest.mark.parametrize("image_format", [ImageFormat.SQUASHFS, ImageFormat.EROFS])
def test_same_bytes_from_another_file_system_umask_and_thread_count(
    tmp_path: Path, image_format: ImageFormat
) -> None:
    # Same file system as the output: files are hard-linked into the view. On tmpfs: copied.
    # The umask changes the mode of the extension-release source written in the scratch
    # directory, so the view copies it with the entry's mode instead of linking it.
    elsewhere = other_file_system(tmp_path)
    try:
        near = pack(odd_tree(tmp_path / "near", 1_000_000), RELEASE, tmp_path / "out-near",
                    image_format=image_format, jobs=1)  # fmt: skip
        far_tree = odd_tree(elsewhere, 2_000_001)
        old = os.umask(0o077)
        try:
            far = pack(far_tree, RELEASE, tmp_path / "out-far", image_format=image_format,
                       jobs=2)  # fmt: skip
        finally:
            os.umask(old)
        assert near.path.read_bytes() == far.path.read_bytes()
        # The sources keep their modes; nothing of the view stays behind.
        assert (tmp_path / "near/tree/usr/lib/ro").stat().st_mode & 0o777 == 0o555
        for out in (tmp_path / "out-near", tmp_path / "out-far"):
            assert not [p for p in out.iterdir() if p.name.startswith(".#")]
    finally:
        for path in elsewhere.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(elsewhere)
    listing = subprocess.run(
        ["unsquashfs", "-lln", near.path] if image_format is ImageFormat.SQUASHFS
        else ["dump.erofs", "--ls", "--path=/usr/share/odd", near.path],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in ("with space", "quote'single", 'dq"x', "back\\slash", "c d", "dangling"):
        assert name in listing, listing
    if image_format is ImageFormat.SQUASHFS:
        assert "dr-xr-xr-x 0/0" in listing and "squashfs-root/usr/lib/ro" in listing
        assert '-> ../no "such" target' in listing, listing


def test_the_view_is_made_in_the_scratch_directory_and_removed(tmp_path: Path) -> None:
    # A mksquashfs first on PATH that notes where its source (the view) is, then runs the
    # real tool.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen"
    wrapper = bin_dir / "mksquashfs"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$1" in -version) ;; *) echo "$1" >> {seen} ;; esac\n'
        f'exec {shutil.which("mksquashfs")} "$@"\n'
    )
    wrapper.chmod(0o755)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{old_path}"
    try:
        built = pack(make_tree(tmp_path, 1_000_000), RELEASE, tmp_path / "out")
    finally:
        os.environ["PATH"] = old_path
    view = Path(seen.read_text().strip())
    assert view.parent.parent == tmp_path / "out" and view.parent.name.startswith(".#sysext-pack.")
    assert view.name == "root" and not view.parent.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")) == []
    assert built.path.exists()


@pytest.mark.parametrize("image_format", [ImageFormat.SQUASHFS, ImageFormat.EROFS])
def test_a_source_gone_before_packing_leaves_no_image_and_no_view(
    tmp_path: Path, image_format: ImageFormat
) -> None:
    # The entry list names a file that vanished after the scan (a tree changed while
    # packing): a one-line error, no output, and the half-made view is removed.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "present").write_text("here")
    entries = [
        StagedEntry("usr", EntryKind.DIR, 0o555),
        StagedEntry("usr/a", EntryKind.FILE, 0o644, source=str(tmp_path / "present")),
        StagedEntry("usr/b", EntryKind.FILE, 0o644, source=str(tmp_path / "gone")),
    ]
    writer = writer_for(image_format)
    output = tmp_path / "image.raw"
    request = WriteRequest(entries=entries, output=output, compression=writer.compressions()[0],
                           level=None, mtime=0, uuid="00000000-0000-0000-0000-000000000001",
                           scratch=scratch)  # fmt: skip
    with pytest.raises(SysextError, match=r"cannot lay out the image's files: .*gone") as caught:
        writer.write(request)
    assert "\n" not in caught.value.message and caught.value.hint
    assert not output.exists() and list(scratch.iterdir()) == []
