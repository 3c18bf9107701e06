"""OS-version-bound extensions, end to end (issue 3, `sysext transfer --os-bound`).

An image packed with `--os flatcar --os-version-id V` carries VERSION_ID=V (only hosts with
that exact VERSION_ID merge it, spec §1.3 step 8) and is named NAME-VERSION-V-ARCH.raw, so
that a host's `MatchPattern=NAME-@v-%w-%a.raw` (%w: its own VERSION_ID) finds exactly the
image built for it. Checked with our pattern matcher, `sysext validate`, the real
systemd-sysext, a real registry with `sysext check`, and the real systemd-sysupdate 254.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import requests

from sysext.systemd.osrelease import read_os_release
from sysext.systemd.patterns import HostInfo, expand_specifiers, match_pattern
from sysext.systemd.transfer import TransferSpec, image_file_name
from tests.registry_server import RegistryServer, running_registry
from tests.servers import CliResult, StaticServer, run_cli

OS_VERSIONS = ("3815.2.0", "3975.0.0")
ARCH = "x86-64"


def os_release(version_id: str) -> str:
    # Flatcar's own shape: ID, VERSION_ID and SYSEXT_LEVEL. An image without a level is
    # then compared by VERSION_ID (spec §1.3 step 8).
    return f"ID=flatcar\nVERSION_ID={version_id}\nSYSEXT_LEVEL=1.0\n"


def make_tree(root: Path, name: str, text: str) -> Path:
    tree = root / f"tree-{name}-{text.replace(' ', '_')}"
    (tree / "usr/bin").mkdir(parents=True)
    script = tree / "usr/bin" / name
    script.write_text(f"#!/bin/sh\necho {text}\n")
    script.chmod(0o755)
    return tree


def pack(
    tmp: Path,
    out: Path,
    version_id: str,
    *,
    name: str = "kmod",
    version: str = "1.0",
    os_id: str = "flatcar",
) -> Path:
    tree = make_tree(tmp, name, f"{name} {version} for {version_id}")
    result = run_cli(
        "pack", tree, "--name", name, "--version", version, "--arch", ARCH,
        "--os", os_id, "--os-version-id", version_id, "--output", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    image = out / f"{name}-{version}-{version_id}-{ARCH}.raw"
    assert result.stdout.splitlines()[0] == str(image)
    return image


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("os-bound")
    return {v: pack(tmp, tmp / "out", v) for v in OS_VERSIONS}


def test_pack_names_the_image_and_writes_version_id(images: dict[str, Path]) -> None:
    out = images[OS_VERSIONS[0]].parent
    assert sorted(p.name for p in out.glob("*.raw")) == [
        f"kmod-1.0-{v}-{ARCH}.raw" for v in OS_VERSIONS
    ]
    manifest = (out / "SHA256SUMS").read_text()
    for version_id, image in images.items():
        assert image.name == image_file_name("kmod", "1.0", ARCH, os_version_id=version_id)
        assert f"  {image.name}\n" in manifest
        assert (out / f"kmod-1.0-{version_id}-{ARCH}.provenance.json").is_file()
        result = run_cli("inspect", image, "--json")
        assert result.returncode == 0, result.stderr
        release = json.loads(result.stdout)["release_files"]["kmod"]
        assert release["ID"] == "flatcar"
        assert release["VERSION_ID"] == version_id
        assert release["SYSEXT_VERSION_ID"] == "1.0"
        assert "SYSEXT_LEVEL" not in release


@pytest.mark.parametrize("host_version", OS_VERSIONS)
def test_os_bound_pattern_matches_only_the_hosts_image(
    images: dict[str, Path], host_version: str
) -> None:
    spec = TransferSpec("kmod", "http://127.0.0.1:1", os_bound=True)
    assert spec.match_pattern == "kmod-@v-%w-%a.raw"
    host = HostInfo(arch=ARCH, os_release={"ID": "flatcar", "VERSION_ID": host_version})
    pattern = expand_specifiers(spec.match_pattern, host)
    assert pattern == f"kmod-@v-{host_version}-{ARCH}.raw"
    matched = {v: match_pattern(pattern, images[v].name, strict=True) for v in OS_VERSIONS}
    assert [v for v, m in matched.items() if m is not None] == [host_version]
    found = matched[host_version]
    assert found is not None and found.version == "1.0"
    # The plain pattern still matches, reading "1.0-VERSIONID" as the version: such a host
    # would download an image that its systemd-sysext then refuses (VERSION_ID differs),
    # which is why bound images need the `--os-bound` transfer.
    plain = expand_specifiers(TransferSpec("kmod", "http://127.0.0.1:1").match_pattern, host)
    seen = match_pattern(plain, images[host_version].name, strict=True)
    assert seen is not None and seen.version == f"1.0-{host_version}"


@pytest.mark.parametrize("host_version", OS_VERSIONS)
def test_validate_says_merge_only_on_the_matching_host(
    tmp_path: Path, images: dict[str, Path], host_version: str
) -> None:
    host = tmp_path / "os-release"
    host.write_text(os_release(host_version))
    for version_id, image in images.items():
        result = run_cli("validate", image, "--os-release", host, "--arch", ARCH)
        assert "0 error(s), 0 warning(s)" in result.stdout  # lint accepts the bound name
        if version_id == host_version:
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"host: merges: ID=flatcar and VERSION_ID={host_version}" in result.stdout
        else:
            assert result.returncode == 1, result.stdout + result.stderr
            assert (
                f"host: would NOT merge: step 8 (version): VERSION_ID={version_id} does not "
                f"equal the host's VERSION_ID={host_version}"
            ) in result.stdout


def test_lint_refuses_a_bound_image_under_another_version_id(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    lying = tmp_path / f"kmod-1.0-{OS_VERSIONS[1]}-{ARCH}.raw"
    lying.write_bytes(images[OS_VERSIONS[0]].read_bytes())
    result = run_cli("validate", lying)
    assert result.returncode != 0
    assert (
        f"{lying.name} does not match its release fields: expected "
        f"kmod-1.0-{OS_VERSIONS[0]}-{ARCH}.raw (NAME-SYSEXT_VERSION_ID-VERSION_ID-ARCHITECTURE)"
    ) in result.stdout


@pytest.mark.root
@pytest.mark.parametrize("host_version", OS_VERSIONS)
def test_real_sysext_merges_only_the_matching_image(
    images: dict[str, Path], host_version: str
) -> None:
    from tests.merge_helper import merge_and_run

    for version_id, image in images.items():
        result = merge_and_run([image], os_release(host_version), ["{root}/usr/bin/kmod"])
        if version_id == host_version:
            assert result.merge.returncode == 0, result.merge.stderr
            assert result.merged_names == ["kmod"]
            assert result.command.stdout == f"kmod 1.0 for {version_id}\n"
        else:
            assert result.merged_names == []
            assert result.command.returncode != 0
            assert "1 ignored due to incompatible version" in result.merge.stderr


# --- a real registry --------------------------------------------------------------------


def publish(reg: RegistryServer, *paths: Path) -> CliResult:
    return run_cli("publish", *paths, "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token})


def check(url: str, keyring: Path, pattern: str, host: Path) -> dict[str, Any]:
    result = run_cli(
        "check", url, "--arch", ARCH, "--json", "--keyring", keyring,
        "--pattern", pattern, "--os-release", host,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_registry_serves_each_host_its_own_image(tmp_path: Path, images: dict[str, Path]) -> None:
    newer = pack(tmp_path, tmp_path / "newer", OS_VERSIONS[0], version="1.1")
    with running_registry(tmp_path / "data") as reg:
        result = publish(reg, *images.values(), newer)
        assert result.returncode == 0, result.stderr
        for image in (*images.values(), newer):
            assert f"published: {image.name}" in result.stdout
        keyring = tmp_path / "keyring.gpg"
        keyring.write_bytes(reg.keyring())
        transfer = run_cli("transfer", "kmod", "--registry", reg.url, "--os-bound")
        assert transfer.returncode == 0, transfer.stderr
        assert "MatchPattern=kmod-@v-%w-%a.raw" in transfer.stdout
        url = f"{reg.url}/extensions/kmod"
        for host_version, expected in (("3815.2.0", "1.1"), ("3975.0.0", "1.0")):
            host = tmp_path / f"os-release-{host_version}"
            host.write_text(os_release(host_version))
            report = check(url, keyring, "kmod-@v-%w-%a.raw", host)
            assert report["ok"], report
            assert report["patterns"] == [f"kmod-@v-{host_version}-{ARCH}.raw"]
            assert sorted(a["filename"] for a in report["available"]) == sorted(
                f"kmod-{v}-{host_version}-{ARCH}.raw"
                for v in (["1.0", "1.1"] if expected == "1.1" else ["1.0"])
            )
            assert report["candidate"] == expected
            assert report["verified_by"]


def test_registry_refuses_a_file_name_with_another_version_id(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    lying = tmp_path / f"kmod-1.0-{OS_VERSIONS[1]}-{ARCH}.raw"
    lying.write_bytes(images[OS_VERSIONS[0]].read_bytes())
    with running_registry(tmp_path / "data") as reg:
        result = publish(reg, lying)
        assert result.returncode != 0
        assert (
            f"has SYSEXT_VERSION_ID=1.0 and VERSION_ID={OS_VERSIONS[0]}, the file name says "
            f"1.0-{OS_VERSIONS[1]}"
        ) in result.stderr
        listing = requests.get(f"{reg.url}/extensions/kmod/SHA256SUMS", timeout=10)
        assert listing.status_code == 404 or lying.name not in listing.text


# --- the real systemd-sysupdate 254 --------------------------------------------------------


@pytest.mark.root
def test_real_sysupdate_expands_w_from_the_host_and_installs_its_image(tmp_path: Path) -> None:
    from tests.sysupdate_client import prepare_root, run_sysupdate

    # Without --root (how run_sysupdate runs it, like a real host) systemd-sysupdate 254
    # expands %w from the machine's own /etc/os-release, so bind the image to that.
    host = read_os_release(Path("/etc/os-release"))
    host_version = host["VERSION_ID"]
    out = tmp_path / "out"
    mine = pack(tmp_path, out, host_version, os_id=host["ID"])
    other = pack(tmp_path, out, "3815.2.0", version="2.0")
    with running_registry(tmp_path / "data") as reg:
        result = publish(reg, mine, other)
        assert result.returncode == 0, result.stderr
        transfer = run_cli("transfer", "kmod", "--registry", reg.url, "--os-bound")
        assert transfer.returncode == 0, transfer.stderr
        root = prepare_root(tmp_path / "root", "kmod", transfer.stdout)
        update = run_sysupdate(root, ["-C", "kmod", "update"], reg.keyring())
        assert update.returncode == 0, update.stderr
        assert "Selected update '1.0' for install." in update.stderr
        installed = sorted(p.name for p in (root / "opt/extensions/kmod").iterdir())
        assert installed == [mine.name]
        link = root / "etc/extensions/kmod.raw"
        assert os.readlink(link) == f"../../opt/extensions/kmod/{mine.name}"
        assert link.resolve().read_bytes() == mine.read_bytes()


# --- bad options: one line, nothing written ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--os", "flatcar", "--os-version-id", "3815~2"],
            "error: --os-version-id: version '3815~2' contains '~'",
        ),
        (
            ["--os", "flatcar", "--os-version-id", ""],
            "error: --os-version-id: ",
        ),
        (
            ["--os-version-id", "3815.2.0"],
            "error: --os-version-id has no effect with ID=_any (spec §1.3 step 5)",
        ),
        (
            ["--os", "flatcar:1.0", "--os-version-id", "3815.2.0"],
            "error: --os-version-id has no effect with SYSEXT_LEVEL=1.0 (spec §1.3 step 8)",
        ),
    ],
)
def test_pack_refuses_bad_os_version_id(tmp_path: Path, args: list[str], message: str) -> None:
    tree = make_tree(tmp_path, "kmod", "x")
    out = tmp_path / "out"
    result = run_cli("pack", tree, "--name", "kmod", "--version", "1.0", *args, "--output", out)
    assert_one_error(result, message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--os", "flatcar", "--os-version-id", "1^2"],
            "error: --os-version-id: version '1^2' contains '^'",
        ),
        (
            ["--os", "_any", "--os-version-id", "3815.2.0"],
            "error: --os-version-id has no effect with ID=_any",
        ),
        (
            ["--os", "flatcar:1.0", "--os-version-id", "3815.2.0"],
            "error: --os-version-id has no effect with SYSEXT_LEVEL=1.0",
        ),
        (
            # One OS-bound name, one meaning (issue 19, finding 6).
            ["--os", "flatcar", "--os-version-id", "3815-2"],
            "error: VERSION_ID 3815-2 contains '-'",
        ),
    ],
)
def test_build_refuses_bad_os_version_id_before_fetching(
    tmp_path: Path, static_server: StaticServer, args: list[str], message: str
) -> None:
    from tests.test_build import RECIPE, build
    from tests.test_build import publish as publish_upstream

    publish_upstream(static_server)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/hello.toml").write_text(RECIPE)
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out, *args)
    assert_one_error(result, message)
    assert not out.exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.tar.gz"))


def test_build_writes_an_os_bound_image(tmp_path: Path, static_server: StaticServer) -> None:
    from tests.test_build import HOST, RECIPE, build
    from tests.test_build import publish as publish_upstream

    publish_upstream(static_server)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/hello.toml").write_text(RECIPE)
    out = tmp_path / "out"
    result = build(
        tmp_path,
        static_server.url,
        "--output",
        out,
        "--os",
        "flatcar",
        "--os-version-id",
        "3815.2.0",
    )
    assert result.returncode == 0, result.stderr
    stem = f"hello-1.0-3815.2.0-{HOST.systemd_name}"
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS",
        f"{stem}.provenance.json",
        f"{stem}.raw",
    ]
    release = json.loads(run_cli("inspect", out / f"{stem}.raw", "--json").stdout)
    assert release["release_files"]["hello"]["VERSION_ID"] == "3815.2.0"
    assert f"  {stem}.raw\n" in (out / "SHA256SUMS").read_text()


def assert_one_error(result: CliResult, message: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(message), errors[0]
    assert any(line.startswith("hint:") for line in result.stderr.splitlines())
