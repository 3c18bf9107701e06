"""End to end with the REAL systemd-sysupdate 254 client (tests/sysupdate_client.py).

What a Flatcar-like host does with our registry: install the registry's own transfer file,
`systemd-sysupdate -C NAME update`, activate through the CurrentSymlink, merge with
systemd-sysext and run the binary; follow newer publishes, vacuum old versions, refuse
everything unsigned or tampered — and `sysext check` must reach the same verdict as the
real client on each served directory (the agreement table).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from sysext.systemd.manifest import MANIFEST_NAME, SIGNATURE_NAME
from sysext.systemd.transfer import TransferSpec, render_transfer
from sysext.trust import signing
from tests.booted import apply_ignition
from tests.merge_helper import merge_and_run
from tests.registry_server import RegistryServer, build_image, running_registry
from tests.servers import StaticServer, run_cli
from tests.sysupdate_client import (
    client_version,
    follow_mkdir_instruction,
    merge_through_link,
    prepare_root,
    run_sysupdate,
)

pytestmark = pytest.mark.root

HOST_OS_RELEASE = "ID=flatcar\nVERSION_ID=4081.2.0\n"


def publish(reg: RegistryServer, image: Path) -> None:
    result = run_cli("publish", image, "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token})
    assert result.returncode == 0, result.stderr
    assert f"published: {image.name}" in result.stdout


def installed(root: Path, name: str) -> list[str]:
    return sorted(p.name for p in (root / "opt" / "extensions" / name).iterdir())


def assessments(listing: str) -> dict[str, str]:
    """`systemd-sysupdate list`: VERSION → ASSESSMENT (current, installed, candidate…)."""
    header, *rows = listing.splitlines()
    assert header.split() == ["VERSION", "INSTALLED", "AVAILABLE", "ASSESSMENT"]
    return {r.replace("●", " ").split()[0]: r.split()[-1] for r in rows if r.strip()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_fetched_client_is_systemd_254() -> None:
    assert client_version().startswith("systemd 254")


def test_registry_transfer_installs_follows_and_vacuums(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    with running_registry(tmp_path / "data") as reg:
        publish(reg, build_image(images, "hello", "1.0"))
        transfer = requests.get(f"{reg.url}/extensions/hello/hello.conf", timeout=10).text
        root = prepare_root(tmp_path / "root", "hello", transfer, make_dirs=False)
        keyring = reg.keyring()
        update = ["-C", "hello", "update"]

        # systemd 254 refuses a missing target directory (252 created it): the transfer
        # file's install comment says to create it, and following it is enough.
        missing = run_sysupdate(root, update, keyring)
        assert missing.returncode == 1
        target = root / "opt/extensions/hello"
        assert f"Failed to resolve '{target}' (relative to '/')" in missing.stderr
        keyring_file = tmp_path / "keyring.gpg"
        keyring_file.write_bytes(keyring)
        ours = check_json(f"{reg.url}/extensions/hello", keyring_file, "--installed", target)
        assert ours["candidate"] == "1.0"
        assert any(f"target directory {target} does not exist" in w for w in ours["warnings"])
        made = follow_mkdir_instruction(root, transfer)
        assert made == ["/opt/extensions/hello", "/etc/extensions"]

        # No keyring on the host: the signature cannot be checked, nothing is installed.
        refused = run_sysupdate(root, update, None)
        assert refused.returncode == 1
        assert "Can't check signature: No public key" in refused.stderr
        assert "DOWNLOAD INVALID: Signature verification failed." in refused.stderr
        assert installed(root, "hello") == []
        assert not (root / "etc/extensions/hello.raw").is_symlink()
        # --verify=no overrides Verify=yes for the manifest only (spec §3.5).
        unverified = run_sysupdate(root, ["-C", "hello", "--verify=no", "check-new"], None)
        assert (unverified.returncode, unverified.stdout.strip()) == (0, "1.0")
        assert "SHA256SUMS.gpg" not in unverified.stderr

        # With the registry's key: installs 1.0 and points the CurrentSymlink at it.
        first = run_sysupdate(root, update, keyring)
        assert first.returncode == 0, first.stderr
        assert "Signature verification succeeded." in first.stderr
        assert "Selected update '1.0' for install." in first.stderr
        assert "Successfully installed update '1.0'." in first.stderr
        assert installed(root, "hello") == ["hello-1.0-x86-64.raw"]
        link = root / "etc/extensions/hello.raw"
        assert os.readlink(link) == "../../opt/extensions/hello/hello-1.0-x86-64.raw"
        manifest = requests.get(f"{reg.url}/extensions/hello/{MANIFEST_NAME}", timeout=10).text
        assert f"{sha256(link.resolve())}  hello-1.0-x86-64.raw\n" in manifest

        # The link really activates the image (host sysext follows it), and so does a copy
        # merged with --root (which ignores symlinked images, see sysupdate_client.py).
        merged = merge_through_link(root, "hello", ["hello"])
        assert merged.returncode == 0, merged.stderr
        assert merged.stdout.split() == ["hello", "1.0"]
        assert "Using extensions 'hello'." in merged.stderr
        copy = merge_and_run([link.resolve()], HOST_OS_RELEASE, ["{root}/usr/bin/hello"])
        assert copy.merged_names == ["hello"]
        assert copy.command.stdout.split() == ["hello", "1.0"]

        # Up to date: check-new exits 1 and prints nothing; `sysext check` agrees.
        nothing = run_sysupdate(root, ["-C", "hello", "check-new"], keyring)
        assert (nothing.returncode, nothing.stdout) == (1, "")
        ours = check_json(
            f"{reg.url}/extensions/hello",
            keyring_file,
            "--installed",
            root / "opt/extensions/hello",
        )
        assert ours["ok"] and ours["candidate"] is None

        publish(reg, build_image(images, "hello", "1.1"))
        new = run_sysupdate(root, ["-C", "hello", "check-new"], keyring)
        assert (new.returncode, new.stdout.strip()) == (0, "1.1")
        ours = check_json(
            f"{reg.url}/extensions/hello",
            keyring_file,
            "--installed",
            root / "opt/extensions/hello",
        )
        assert ours["candidate"] == "1.1"

        second = run_sysupdate(root, update, keyring)
        assert second.returncode == 0, second.stderr
        assert "Successfully installed update '1.1'." in second.stderr
        assert os.readlink(link) == "../../opt/extensions/hello/hello-1.1-x86-64.raw"
        assert installed(root, "hello") == ["hello-1.0-x86-64.raw", "hello-1.1-x86-64.raw"]

        # InstancesMax defaults to 3: installing 1.3 makes room by deleting the oldest.
        for version in ("1.2", "1.3"):
            publish(reg, build_image(images, "hello", version))
            step = run_sysupdate(root, update, keyring)
            assert step.returncode == 0, step.stderr
            assert f"Successfully installed update '{version}'." in step.stderr
        assert "Removed 1 instances." in step.stderr
        assert installed(root, "hello") == [f"hello-{v}-x86-64.raw" for v in ("1.1", "1.2", "1.3")]
        assert os.readlink(link) == "../../opt/extensions/hello/hello-1.3-x86-64.raw"

        listing = run_sysupdate(root, ["-C", "hello", "list"], keyring)
        assert listing.returncode == 0, listing.stderr
        assert assessments(listing.stdout) == {
            "1.3": "current",
            "1.2": "installed",
            "1.1": "installed",
            "1.0": "available",
        }

        # `vacuum -m 2` keeps two; the explicit verb never touches the current link.
        vacuum = run_sysupdate(root, ["-C", "hello", "-m", "2", "vacuum"], keyring)
        assert vacuum.returncode == 0, vacuum.stderr
        assert installed(root, "hello") == ["hello-1.2-x86-64.raw", "hello-1.3-x86-64.raw"]

        merged = merge_through_link(root, "hello", ["hello"])
        assert merged.stdout.split() == ["hello", "1.3"], merged.stderr


def test_root_mode_of_254_replaces_the_old_image_by_a_link(tmp_path: Path) -> None:
    """Why run_sysupdate does not use --root (sysupdate_client.py): systemd 254 follows the
    existing CurrentSymlink inside ROOT and turns the previous image into a symlink."""
    images = tmp_path / "images"
    images.mkdir()
    with running_registry(tmp_path / "data") as reg:
        publish(reg, build_image(images, "hello", "1.0"))
        transfer = requests.get(f"{reg.url}/extensions/hello/hello.conf", timeout=10).text
        root = prepare_root(tmp_path / "root", "hello", transfer)
        update = ["-C", "hello", "update"]
        assert run_sysupdate(root, update, reg.keyring(), root_mode=True).returncode == 0
        publish(reg, build_image(images, "hello", "1.1"))
        second = run_sysupdate(root, update, reg.keyring(), root_mode=True)
        assert second.returncode == 0, second.stderr
        old = root / "opt/extensions/hello/hello-1.0-x86-64.raw"
        assert f"Updated symlink '{old}' → 'hello-1.1-x86-64.raw'." in second.stderr
        assert os.readlink(old) == "hello-1.1-x86-64.raw"
        assert os.readlink(root / "etc/extensions/hello.raw").endswith("hello-1.0-x86-64.raw")


def check_json(url: str, keyring: Path | None, *extra: str | Path) -> dict[str, Any]:
    args: list[str | Path] = ["check", url, "--arch", "x86-64", "--json", *extra]
    if keyring is not None:
        args += ["--keyring", keyring]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


# --- first boot from the Ignition config -------------------------------------------------


def test_first_boot_config_is_recognized_then_updated(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    with running_registry(tmp_path / "data") as reg:
        publish(reg, build_image(images, "hello", "1.0"))
        result = run_cli("butane", "hello", "--registry", reg.url, "--ignition")
        assert result.returncode == 0, result.stderr
        root = tmp_path / "root"
        apply_ignition(json.loads(result.stdout), root)
        (root / "etc/os-release").write_text(HOST_OS_RELEASE)
        # The host's keyring is the one the config installed, not one the test hands in.
        keyring = (root / "etc/systemd/import-pubring.gpg").read_bytes()
        link = root / "etc/extensions/hello.raw"
        assert os.readlink(link) == "/opt/extensions/hello/hello-1.0-x86-64.raw"

        nothing = run_sysupdate(root, ["-C", "hello", "check-new"], keyring)
        assert (nothing.returncode, nothing.stdout) == (1, "")
        assert "Signature verification succeeded." in nothing.stderr
        listing = run_sysupdate(root, ["-C", "hello", "list"], keyring)
        # Installed, available and current: sysupdate knows the image Ignition wrote.
        assert assessments(listing.stdout) == {"1.0": "current"}
        merged = merge_through_link(root, "hello", ["hello"])
        assert merged.stdout.split() == ["hello", "1.0"], merged.stderr

        publish(reg, build_image(images, "hello", "1.1"))
        new = run_sysupdate(root, ["-C", "hello", "check-new"], keyring)
        assert (new.returncode, new.stdout.strip()) == (0, "1.1")
        update = run_sysupdate(root, ["-C", "hello", "update"], keyring)
        assert update.returncode == 0, update.stderr
        assert "Successfully installed update '1.1'." in update.stderr
        # The same link the config created now points at the new version.
        assert os.readlink(link) == "../../opt/extensions/hello/hello-1.1-x86-64.raw"
        assert installed(root, "hello") == ["hello-1.0-x86-64.raw", "hello-1.1-x86-64.raw"]
        merged = merge_through_link(root, "hello", ["hello"])
        assert merged.stdout.split() == ["hello", "1.1"], merged.stderr


# --- agreement table: the real client vs `sysext check` ---------------------------------


@dataclass(frozen=True)
class Keys:
    key: Path
    keyring: bytes
    armored: bytes
    foreign: bytes


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    work = tmp_path_factory.mktemp("keys")
    signing.generate_key(work / "key.pgp")
    signing.generate_key(work / "foreign.pgp", "someone else <other@localhost>")
    return Keys(
        key=work / "key.pgp",
        keyring=signing.export_public_key(work / "key.pgp"),
        armored=signing.export_public_key(work / "key.pgp", armor=True),
        foreign=signing.export_public_key(work / "foreign.pgp"),
    )


@pytest.fixture(scope="module")
def image_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pool = tmp_path_factory.mktemp("pool")
    for name, version in (
        ("hello", "1.0"),
        ("hello", "1.1"),
        ("hello", "1.2.3"),
        ("hello", "1.2.3-rc1"),
        ("docker", "24.0.5"),
        ("docker-compose", "2.20.0"),
    ):
        build_image(pool, name, version)
    return pool


@dataclass(frozen=True)
class Case:
    id: str
    name: str  # the extension the host follows (pattern NAME-@v-%a.raw)
    files: tuple[str, ...]  # images served in that one directory
    client_says: str  # the key line of the real client's log
    check_says: str  # the key line of `sysext check`
    keyring: str = "good"  # good, foreign, armored
    manifest: str = "plain"  # plain, tampered, crlf, missing-signature, resigned-bad-hash
    installs: str | None = None  # the version the real client installs; None: refused
    check_flags: bool = False  # installed by the client, but `sysext check` calls it a mistake


PAIR = ("hello-1.0", "hello-1.1")
CASES = (
    Case(
        "good",
        "hello",
        PAIR,
        "Signature verification succeeded.",
        "update:    1.1 ",
        installs="1.1",
    ),
    Case(
        "tampered-manifest",
        "hello",
        PAIR,
        "gpg: BAD signature",
        "error: BAD signature",
        manifest="tampered",
    ),
    Case(
        "foreign-key",
        "hello",
        PAIR,
        "Can't check signature: No public key",
        "error: no public key",
        keyring="foreign",
    ),
    Case(
        "armored-keyring",
        "hello",
        PAIR,
        "Can't check signature: No public key",
        "the keyring is ASCII-armored",
        keyring="armored",
    ),
    Case(
        "crlf-manifest",
        "hello",
        PAIR,
        "Filename contains control characters at manifest line 1, refusing.",
        "contains a control character (CRLF line ending?)",
        manifest="crlf",
    ),
    Case(
        "missing-gpg",
        "hello",
        PAIR,
        "Failed to retrieve signature file, cannot verify.",
        "SHA256SUMS.gpg: HTTP 404 Not Found",
        manifest="missing-signature",
    ),
    Case(
        "signed-wrong-hash",
        "hello",
        PAIR,
        "DOWNLOAD INVALID: Checksum of",
        "SHA-256 mismatch",
        manifest="resigned-bad-hash",
    ),
    Case(
        "shared-with-compose",
        "docker",
        ("docker-24.0.5", "docker-compose-2.20.0"),
        "Successfully installed update '24.0.5'.",
        "update:    24.0.5 ",
        installs="24.0.5",
    ),
    Case(
        "compose-only-trap",
        "docker",
        ("docker-compose-2.20.0",),
        "Successfully installed update 'compose-2.20.0'.",
        "looks like another extension's name",
        installs="compose-2.20.0",
        check_flags=True,
    ),
    Case(
        "rc-suffix-is-newer",
        "hello",
        ("hello-1.2.3", "hello-1.2.3-rc1"),
        "Successfully installed update '1.2.3-rc1'.",
        "update:    1.2.3-rc1 ",
        installs="1.2.3-rc1",
    ),
)


def serve_case(case: Case, keys: Keys, pool: Path, www: Path) -> None:
    directory = www / "extensions" / case.name
    directory.mkdir(parents=True)
    for stem in case.files:
        shutil.copyfile(pool / f"{stem}-x86-64.raw", directory / f"{stem}-x86-64.raw")
    signing.sign_directory(directory, keys.key)
    manifest = (directory / MANIFEST_NAME).read_bytes()
    if case.manifest == "tampered":  # one hash changed after signing
        (directory / MANIFEST_NAME).write_bytes(b"0" * 8 + manifest[8:])
    elif case.manifest == "crlf":  # CRLF line endings, correctly signed
        crlf = manifest.replace(b"\n", b"\r\n")
        (directory / MANIFEST_NAME).write_bytes(crlf)
        (directory / SIGNATURE_NAME).write_bytes(signing.sign_detached(keys.key, crlf))
    elif case.manifest == "missing-signature":
        (directory / SIGNATURE_NAME).unlink()
    elif case.manifest == "resigned-bad-hash":  # signature fine, the newest image's hash wrong
        lines = manifest.decode().splitlines(keepends=True)
        lines = [("f" * 64 + line[64:]) if "1.1" in line else line for line in lines]
        bad = "".join(lines).encode()
        (directory / MANIFEST_NAME).write_bytes(bad)
        (directory / SIGNATURE_NAME).write_bytes(signing.sign_detached(keys.key, bad))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sysext_check_agrees_with_the_real_client(
    case: Case, keys: Keys, image_pool: Path, static_server: StaticServer, tmp_path: Path
) -> None:
    serve_case(case, keys, image_pool, static_server.root)
    keyring = {"good": keys.keyring, "foreign": keys.foreign, "armored": keys.armored}[case.keyring]
    transfer = render_transfer(TransferSpec(name=case.name, base_url=static_server.url))
    root = prepare_root(tmp_path / "root", case.name, transfer)

    real = run_sysupdate(root, ["-C", case.name, "update"], keyring)
    assert case.client_says in real.stderr, real.stderr
    files = installed(root, case.name)
    link = root / "etc/extensions" / f"{case.name}.raw"
    if case.installs is None:
        assert real.returncode == 1, real.stderr
        assert files == [] and not link.is_symlink()
    else:
        assert real.returncode == 0, real.stderr
        assert files == [f"{case.name}-{case.installs}-x86-64.raw"]
        assert os.readlink(link).endswith(f"/{files[0]}")

    keyring_file = tmp_path / "keyring.gpg"
    keyring_file.write_bytes(keyring)
    url = f"{static_server.url}/extensions/{case.name}"
    ours = run_cli("check", url, "--keyring", keyring_file, "--arch", "x86-64", "--verify-payload")
    assert case.check_says in ours.stdout + ours.stderr, (ours.stdout, ours.stderr)
    if case.installs is None or case.check_flags:
        # Refused (or, for the trap, installed under the wrong name): exit 2, one error line.
        assert ours.returncode == 2, ours.stdout
        assert ours.stderr.startswith("error: "), ours.stderr
    else:
        assert ours.returncode == 0, ours.stderr
        assert f"update:    {case.installs} " in ours.stdout
