"""Proof: images from `sysext pack` really merge with systemd-sysext and their binary runs.

Uses the real `systemd-sysext --root=ROOT merge` in a private mount namespace (root only),
see tests/merge_helper.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sysext.build.pack import pack
from sysext.image.formats import ImageFormat
from sysext.image.lint import lint_image
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease
from sysext.systemd.osrelease import parse_os_release
from tests.merge_helper import merge_and_run

pytestmark = pytest.mark.root

FLATCAR = "ID=flatcar\nVERSION_ID=3815.2.0\nSYSEXT_LEVEL=1.0\n"
HOST_ARCH = Architecture.from_uname()


def _tree(base: Path) -> Path:
    tree = base / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    hello = tree / "usr/bin/hello"
    hello.write_text('#!/bin/sh\necho "hello from the extension: $*"\n')
    hello.chmod(0o755)
    units = tree / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    (units / "hello.service").write_text(
        "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/usr/bin/hello service\n"
    )
    return tree


@pytest.mark.parametrize("image_format", [ImageFormat.SQUASHFS, ImageFormat.EROFS])
def test_packed_image_merges_and_its_binary_runs(tmp_path: Path, image_format: ImageFormat) -> None:
    release = ExtensionRelease("hello", "1.0", HOST_ARCH, os_id="flatcar", sysext_level="1.0")
    built = pack(_tree(tmp_path), release, tmp_path / "out", image_format=image_format)
    result = merge_and_run([built.path], FLATCAR, ["{root}/usr/bin/hello", "world"])

    assert result.merge.returncode == 0, result.merge.stderr
    assert result.merged_names == ["hello"]
    assert "hello" in result.status.stdout
    assert result.command.returncode == 0, result.command.stderr
    assert result.command.stdout == "hello from the extension: world\n"
    assert result.unmerge.returncode == 0, result.unmerge.stderr
    # After unmerge the host's /usr is back: the binary is gone again.
    assert result.after_unmerge.returncode != 0


def test_image_for_another_os_is_not_merged(tmp_path: Path) -> None:
    release = ExtensionRelease("hello", "1.0", HOST_ARCH, os_id="fedora", sysext_level="1.0")
    built = pack(_tree(tmp_path), release, tmp_path / "out")
    result = merge_and_run([built.path], FLATCAR, ["{root}/usr/bin/hello"])

    assert result.merged_names == []
    assert result.command.returncode != 0
    assert "incompatible" in result.merge.stderr or "No suitable" in result.merge.stderr


# Each case: (fields beyond SYSEXT_ID, expect merge). The lint verdict must agree with what
# the real systemd-sysext does for every one.
_CASES = [
    ({"ID": "flatcar", "SYSEXT_LEVEL": "1.0"}, True),
    ({"ID": "flatcar", "SYSEXT_LEVEL": "1"}, False),
    ({"ID": "flatcar", "SYSEXT_LEVEL": "2.0", "VERSION_ID": "3815.2.0"}, False),
    ({"ID": "flatcar", "VERSION_ID": "3815.2.0"}, True),
    ({"ID": "flatcar", "VERSION_ID": "3815.2.1"}, False),
    ({"ID": "flatcar"}, False),
    ({"ID": "_any"}, True),
    ({"ID": "_any", "ARCHITECTURE": "arm64" if HOST_ARCH.value != "arm64" else "x86-64"}, False),
    ({"ID": "_any", "ARCHITECTURE": "x86_64"}, False),
    ({"ID": "_any", "ARCHITECTURE": "_any"}, True),
    ({"ID": "fedora", "SYSEXT_LEVEL": "1.0"}, False),
    ({"SYSEXT_LEVEL": "1.0"}, False),
    ({"ID": "_any", "SYSEXT_SCOPE": "portable"}, False),
]


@pytest.mark.parametrize(("fields", "expected"), _CASES, ids=[str(c[0]) for c in _CASES])
def test_lint_verdict_agrees_with_real_systemd_sysext(
    tmp_path: Path, fields: dict[str, str], expected: bool
) -> None:
    from tests.test_lint import make_image

    image = make_image(tmp_path, "hello", {**fields, "SYSEXT_ID": "hello"})
    report = lint_image(image, host_os_release=parse_os_release(FLATCAR), host_arch=HOST_ARCH)
    result = merge_and_run([image], FLATCAR, ["{root}/usr/bin/hello"], names=["hello"])
    really_merged = result.merged_names == ["hello"]
    assert report.host is not None
    assert report.host.merges is expected, report.host.reason
    assert really_merged is expected, result.merge.stderr


def test_os_release_inside_an_image_is_refused_as_lint_says(tmp_path: Path) -> None:
    from tests.test_lint import good_fields, make_image

    bad = make_image(
        tmp_path / "bad",
        "bad",
        good_fields(SYSEXT_ID="bad", ARCHITECTURE=HOST_ARCH.value),
        filename="bad.raw",
        extra_lines=("file /usr/lib/os-release 0644 0 0 {src}/hello",),
    )
    report = lint_image(bad, host_os_release=parse_os_release(FLATCAR), host_arch=HOST_ARCH)
    assert "tree-os-release" in {f.code for f in report.errors}
    assert report.host is not None and not report.host.merges
    release = ExtensionRelease("hello", "1.0", HOST_ARCH, os_id="flatcar", sysext_level="1.0")
    good = pack(_tree(tmp_path), release, tmp_path / "out")
    result = merge_and_run([good.path, bad], FLATCAR, ["{root}/usr/bin/hello"])
    # 252 aborts the whole merge (spec §1.1), 255+ skips only the bad image: either way the
    # bad one is never merged.
    assert "bad" not in result.merged_names
    assert "os-release" in result.merge.stderr
    if _systemd_version() < 255:
        assert result.merged_names == []  # the good image went down with it


def _systemd_version() -> int:
    out = subprocess.run(["systemd-sysext", "--version"], capture_output=True, text=True).stdout
    return int(out.split()[1])
