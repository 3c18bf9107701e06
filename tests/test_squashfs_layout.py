"""What the squashfs writer (mksquashfs from a private view) puts in an image, checked with
squashfs-tools-ng's `rdsquashfs -s` and squashfs-tools' `unsquashfs`: big directories carry
an index (issue 23: lookups in them stay fast on a cold cache), owners are 0:0, every time is
SOURCE_DATE_EPOCH, hard-linked sources become separate inodes, any name packs, and rebuilds
are byte-identical whatever the tree's own times and owners.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from sysext.build.pack import pack
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
