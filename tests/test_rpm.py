"""`.rpm` payload extraction: files, directories and symlinks of the cpio payload in every
compression rpmbuild uses; scriptlets never run; the same safety rules as tar members."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import pytest

from sysext.build.extract import (
    ArchiveFormat,
    ExtractOptions,
    UnsafeArchiveError,
    extract,
    list_members,
)
from sysext.core.errors import SysextError
from tests.rpm_fixture import cpio_newc, rpm_package

FILES = {
    "/usr/bin/amazon-ssm-agent": (b"#!/bin/sh\necho agent\n", 0o755),
    "/etc/amazon/ssm/seelog.xml.template": (b"<seelog/>\n", 0o644),
}


def write(tmp_path: Path, blob: bytes, name: str = "pkg.rpm") -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd"])
def test_rpm_payload_is_extracted_without_running_scripts(tmp_path: Path, compression: str) -> None:
    rpm = rpm_package(
        "agent",
        "1.0",
        FILES,
        symlinks={"/usr/bin/ssm": "amazon-ssm-agent"},
        compression=compression,
    )
    assert ArchiveFormat.from_filename("amazon-ssm-agent.rpm") is ArchiveFormat.RPM
    dest = tmp_path / "out"
    dest.mkdir()
    extract(write(tmp_path, rpm), dest, ArchiveFormat.RPM, ExtractOptions())
    assert sorted(list_members(dest)) == [
        "etc",
        "etc/amazon",
        "etc/amazon/ssm",
        "etc/amazon/ssm/seelog.xml.template",
        "usr",
        "usr/bin",
        "usr/bin/amazon-ssm-agent",
        "usr/bin/ssm",
    ]
    agent = dest / "usr/bin/amazon-ssm-agent"
    assert agent.read_bytes() == FILES["/usr/bin/amazon-ssm-agent"][0]
    assert stat.S_IMODE(agent.stat().st_mode) == 0o755
    assert os.readlink(dest / "usr/bin/ssm") == "amazon-ssm-agent"


def test_rpm_hard_links_share_the_data_of_the_last_name(tmp_path: Path) -> None:
    """cpio stores a hard-linked file's content with its last name only."""
    members = [
        ("./usr", stat.S_IFDIR | 0o755, b"", 1, 2),
        ("./usr/a", stat.S_IFREG | 0o755, b"", 7, 2),
        ("./usr/b", stat.S_IFREG | 0o755, b"payload", 7, 2),
    ]
    rpm = rpm_package("x", "1", {})
    head = rpm[: rpm.index(b"\x1f\x8b")]
    blob = head + gzip.compress(cpio_newc(members))
    dest = tmp_path / "out"
    dest.mkdir()
    extract(write(tmp_path, blob), dest, ArchiveFormat.RPM, ExtractOptions())
    assert (dest / "usr/a").read_bytes() == (dest / "usr/b").read_bytes() == b"payload"
    assert (dest / "usr/a").stat().st_ino == (dest / "usr/b").stat().st_ino


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        (("./../etc/passwd", stat.S_IFREG | 0o644, b"x", 1, 1), "'./../etc/passwd'"),
        (("/etc/shadow", stat.S_IFREG | 0o644, b"x", 1, 1), "'/etc/shadow'"),
        (("./usr/bin/su", stat.S_IFREG | 0o4755, b"x", 1, 1), "is setuid/setgid; refusing it"),
        (("./dev/null", stat.S_IFCHR | 0o666, b"", 1, 1), "is a device, FIFO or socket"),
        (("./usr/esc", stat.S_IFLNK | 0o777, b"../../etc", 1, 1), "points outside the archive"),
    ],
)
def test_hostile_rpm_members_are_refused(
    tmp_path: Path, member: tuple[str, int, bytes, int, int], expected: str
) -> None:
    rpm = rpm_package("x", "1", {})
    head = rpm[: rpm.index(b"\x1f\x8b")]
    blob = head + gzip.compress(cpio_newc([member]))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError) as info:
        extract(write(tmp_path, blob), dest, ArchiveFormat.RPM, ExtractOptions(), label="evil.rpm")
    assert info.value.message.startswith("evil.rpm: ")
    assert expected in info.value.message
    assert not (tmp_path / "etc").exists()


def test_not_an_rpm_is_a_clear_error(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(SysextError, match=r"^junk\.rpm: not an RPM package \(no lead\)$"):
        extract(
            write(tmp_path, b"junk" * 40),
            dest,
            ArchiveFormat.RPM,
            ExtractOptions(),
            label="junk.rpm",
        )
