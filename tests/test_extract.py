"""Safe extraction: every archive kind round-trips, and every hostile member is refused with
the archive and member named, without anything written outside the destination."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from sysext.build.extract import (
    ArchiveFormat,
    ExtractOptions,
    UnsafeArchiveError,
    extract,
    list_members,
)


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], compression: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}" if compression else "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def reg(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def upstream_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    top = special("tool-1.0/", tarfile.DIRTYPE)
    top[0].mode = 0o755
    return [
        top,
        reg("tool-1.0/bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
        reg("tool-1.0/share/doc/README", b"read me\n"),
        special("tool-1.0/bin/tool-alias", tarfile.SYMTYPE, "tool"),
        special("tool-1.0/bin/tool-hard", tarfile.LNKTYPE, "tool-1.0/bin/tool"),
        special("tool-1.0/share/up", tarfile.SYMTYPE, "../bin/tool"),
        special("tool-1.0/bin/host-sh", tarfile.SYMTYPE, "/bin/sh"),
    ]


def check_upstream_tree(dest: Path) -> None:
    assert list_members(dest) == [
        "bin",
        "bin/host-sh",
        "bin/tool",
        "bin/tool-alias",
        "bin/tool-hard",
        "share",
        "share/doc",
        "share/doc/README",
        "share/up",
    ]
    assert (dest / "bin/tool").read_bytes() == b"#!/bin/sh\necho tool\n"
    assert stat.S_IMODE((dest / "bin/tool").stat().st_mode) == 0o755
    assert os.readlink(dest / "bin/tool-alias") == "tool"
    assert os.readlink(dest / "bin/host-sh") == "/bin/sh"
    assert (dest / "bin/tool-hard").stat().st_ino == (dest / "bin/tool").stat().st_ino


def zstd_compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize(
    ("suffix", "make"),
    [
        (".tar", lambda m: tar_bytes(m)),
        (".tar.gz", lambda m: tar_bytes(m, "gz")),
        (".tar.xz", lambda m: tar_bytes(m, "xz")),
        (".tar.bz2", lambda m: tar_bytes(m, "bz2")),
        (".tar.zst", lambda m: zstd_compress(tar_bytes(m))),
    ],
)
def test_tar_kinds_round_trip_with_strip_components(
    tmp_path: Path, suffix: str, make: Callable[[list[tuple[tarfile.TarInfo, bytes | None]]], bytes]
) -> None:
    archive = tmp_path / f"tool-1.0{suffix}"
    archive.write_bytes(make(upstream_members()))
    dest = tmp_path / "dest"
    dest.mkdir()
    fmt = ArchiveFormat.from_filename(archive.name)
    assert fmt.value == suffix.lstrip(".")
    extract(archive, dest, fmt, ExtractOptions(strip_components=1))
    check_upstream_tree(dest)


def test_zip_and_wheel_keep_modes_and_symlinks(tmp_path: Path) -> None:
    archive = tmp_path / "tool-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        exe = zipfile.ZipInfo("tool-1.0.data/scripts/tool")
        exe.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(exe, b"#!/bin/sh\n")
        meta = zipfile.ZipInfo("tool-1.0.dist-info/METADATA")
        meta.external_attr = (stat.S_IFREG | 0o644) << 16
        zf.writestr(meta, b"Name: tool\n")
        link = zipfile.ZipInfo("tool-1.0.data/scripts/alias")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, b"tool")
    assert ArchiveFormat.from_filename(archive.name) is ArchiveFormat.ZIP
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(archive, dest, ArchiveFormat.ZIP, ExtractOptions())
    assert stat.S_IMODE((dest / "tool-1.0.data/scripts/tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "tool-1.0.dist-info/METADATA").stat().st_mode) == 0o644
    assert os.readlink(dest / "tool-1.0.data/scripts/alias") == "tool"


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n"
        out += header.encode("ascii") + data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


@pytest.mark.parametrize("data_member", ["data.tar.xz", "data.tar.gz", "data.tar.zst", "data.tar"])
def test_deb_uses_only_the_data_tarball(tmp_path: Path, data_member: str) -> None:
    files = [reg("./usr/bin/tool", b"#!/bin/sh\n", 0o755), reg("./usr/share/doc/tool/copyright")]
    plain = tar_bytes(files)
    payload = {
        "data.tar.xz": tar_bytes(files, "xz"),
        "data.tar.gz": tar_bytes(files, "gz"),
        "data.tar.zst": zstd_compress(plain),
        "data.tar": plain,
    }[data_member]
    control = tar_bytes(
        [reg("./control", b"Package: tool\n"), reg("./postinst", b"rm -rf /\n", 0o755)], "gz"
    )
    archive = tmp_path / "tool_1.0-1_amd64.deb"
    archive.write_bytes(
        ar_archive(
            [("debian-binary", b"2.0\n"), ("control.tar.gz", control), (data_member, payload)]
        )
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(archive, dest, ArchiveFormat.from_filename(archive.name), ExtractOptions())
    assert list_members(dest) == [
        "usr", "usr/bin", "usr/bin/tool", "usr/share", "usr/share/doc", "usr/share/doc/tool",
        "usr/share/doc/tool/copyright",
    ]  # fmt: skip


def test_single_file_gets_its_name(tmp_path: Path) -> None:
    archive = tmp_path / "download"
    archive.write_bytes(b"\x7fELF")
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(archive, dest, ArchiveFormat.FILE, ExtractOptions(file_name="tool-linux-amd64"))
    assert list_members(dest) == ["tool-linux-amd64"]


# -- hostile members ------------------------------------------------------------------------

HOSTILE: list[tuple[str, list[tuple[tarfile.TarInfo, bytes | None]], str]] = [
    ("absolute path", [reg("/etc/evil")], "member '/etc/evil' has an absolute path"),
    ("dot-dot", [reg("tool/../../evil")], "member 'tool/../../evil' contains '..'"),
    (
        "escaping symlink",
        [special("tool/bin/link", tarfile.SYMTYPE, "../../../evil")],
        "symlink 'tool/bin/link' points outside the archive ('../../../evil')",
    ),
    (
        "write through a symlink",
        [special("tool/dir", tarfile.SYMTYPE, "/tmp"), reg("tool/dir/evil")],
        "member 'tool/dir/evil' lies below the symlink 'dir'",
    ),
    (
        "hard link to outside",
        [special("tool/bin/pw", tarfile.LNKTYPE, "/etc/passwd")],
        "hard link 'tool/bin/pw' points outside the archive ('/etc/passwd')",
    ),
    (
        "hard link to a missing member",
        [special("tool/bin/pw", tarfile.LNKTYPE, "tool/etc/shadow")],
        "hard link 'tool/bin/pw' points to 'tool/etc/shadow', which is not a regular file",
    ),
    (
        "character device",
        [special("tool/dev/null", tarfile.CHRTYPE)],
        "member 'tool/dev/null' is a character device",
    ),
    (
        "block device",
        [special("tool/dev/sda", tarfile.BLKTYPE)],
        "member 'tool/dev/sda' is a block device",
    ),
    ("fifo", [special("tool/run/pipe", tarfile.FIFOTYPE)], "member 'tool/run/pipe' is a FIFO"),
    ("setuid", [reg("tool/bin/su", b"x", 0o4755)], "member 'tool/bin/su' is setuid/setgid"),
    ("setgid", [reg("tool/bin/sg", b"x", 0o2755)], "member 'tool/bin/sg' is setuid/setgid"),
]


@pytest.mark.parametrize(("label", "members", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_tar_members_are_refused(
    tmp_path: Path, label: str, members: list[tuple[tarfile.TarInfo, bytes | None]], expected: str
) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_bytes(members, "gz"))
    sandbox = tmp_path / "sandbox"
    dest = sandbox / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError) as info:
        extract(archive, dest, ArchiveFormat.TAR_GZ, ExtractOptions(strip_components=1))
    assert info.value.message.startswith("evil.tar.gz: "), info.value.message
    assert expected in info.value.message
    # Nothing escaped: the sandbox holds only the destination, and nothing named "evil"
    # appeared anywhere.
    assert sorted(os.listdir(sandbox)) == ["dest"]
    assert not any("evil" in m for m in list_members(sandbox))


def test_setuid_is_kept_where_allowed(tmp_path: Path) -> None:
    archive = tmp_path / "tool.tar"
    archive.write_bytes(tar_bytes([reg("tool/bin/newuidmap", b"x", 0o4755)]))
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(archive, dest, ArchiveFormat.TAR, ExtractOptions(1, allow_setuid=("bin/newuid*",)))
    assert stat.S_IMODE((dest / "bin/newuidmap").stat().st_mode) == 0o4755


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../evil", "contains '..'"), ("/abs/evil", "has an absolute path")],
)
def test_hostile_zip_members_are_refused(tmp_path: Path, name: str, expected: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), b"x")
    sandbox = tmp_path / "sandbox"
    dest = sandbox / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError) as info:
        extract(archive, dest, ArchiveFormat.ZIP, ExtractOptions())
    assert f"evil.zip: member {name!r} {expected}" in info.value.message
    assert list_members(sandbox) == ["dest"]


def test_escaping_zip_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("a/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, b"../../outside")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match="symlink 'a/link' points outside"):
        extract(archive, dest, ArchiveFormat.ZIP, ExtractOptions())
    assert list_members(dest) == []


def test_garbage_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "tool.tar.gz"
    archive.write_bytes(b"<html>not found</html>")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(Exception) as info:
        extract(archive, dest, ArchiveFormat.TAR_GZ, ExtractOptions())
    assert "tool.tar.gz: not a readable archive" in str(info.value)
    assert list_members(dest) == []
