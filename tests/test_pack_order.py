"""The content-kind sort file for gensquashfs (sysext.formats.squashfs.sort_file): groups,
names it cannot express, and that an image packed with it holds the same files and is
reproducible. It is off by default (measured in bench/build.py), so it is switched on here.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

import sysext.image.formats.squashfs as squashfs
from sysext.build.pack import pack
from sysext.image.formats.squashfs import content_group, sort_file
from sysext.image.staging import EntryKind, StagedEntry
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease


def entry(path: str, mode: int = 0o644) -> StagedEntry:
    return StagedEntry(path, EntryKind.FILE, mode, source="/dev/null")


def test_content_groups() -> None:
    assert content_group(entry("usr/lib/libz.so.1.2.13")) == ".so"
    assert content_group(entry("usr/lib/x.so")) == ".so"
    assert content_group(entry("usr/lib/python3/os.PY")) == ".py"
    assert content_group(entry("usr/bin/podman", 0o755)) == "~exec"
    assert content_group(entry("usr/share/doc/README")) == "~data"
    assert content_group(entry("usr/share/.hidden")) == "~data"


def test_sort_file_groups_by_kind_then_path_and_skips_unquotable_names() -> None:
    entries = [
        StagedEntry("usr", EntryKind.DIR, 0o755),
        entry("usr/b.py"),
        entry("usr/lib/libz.so.1"),
        entry("usr/a.txt"),
        entry("usr/a.py"),
        entry("usr/with space.py"),
        entry('usr/quote".py'),
        StagedEntry("usr/link", EntryKind.SYMLINK, 0o777, target="a.py"),
    ]
    assert sort_file(entries).splitlines() == [
        "1 usr/a.py",
        "2 usr/b.py",
        "3 usr/lib/libz.so.1",
        "4 usr/a.txt",
    ]


def test_image_packed_with_the_sort_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    for name, data in {
        "usr/lib/libx.so.1": b"\x7fELF" + bytes(range(256)) * 40,
        "usr/share/x/a.txt": b"text " * 300,
        "usr/share/x/b.py": b"print('b')\n" * 50,
        "usr/share/x/odd name.py": b"print('odd')\n",
    }.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    release = ExtensionRelease("x", "1.0", Architecture.X86_64)

    def listing(image: Path) -> list[str]:
        out = subprocess.run(
            ["unsquashfs", "-lln", image], capture_output=True, text=True, check=True
        ).stdout
        return sorted(line.split()[-1] for line in out.splitlines() if "squashfs-root" in line)

    plain = pack(tree, release, tmp_path / "plain")
    monkeypatch.setattr(squashfs, "ORDER_BY_CONTENT", True)
    first = pack(tree, release, tmp_path / "sorted1")
    again = pack(tree, release, tmp_path / "sorted2")
    assert listing(first.path) == listing(plain.path)
    assert hashlib.sha256(first.path.read_bytes()).digest() == (
        hashlib.sha256(again.path.read_bytes()).digest()
    )
    for name in ("usr/lib/libx.so.1", "usr/share/x/odd name.py"):
        shown = subprocess.run(
            ["unsquashfs", "-cat", first.path, name], capture_output=True, check=True
        ).stdout
        assert shown == (tree / name).read_bytes()
