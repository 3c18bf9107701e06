"""End to end with the REAL systemd-sysupdate clients, 254 and 262 (tests/sysupdate_client.py).

What a Flatcar-like host does with our registry: install the registry's own transfer file,
`systemd-sysupdate -C NAME update`, activate through the CurrentSymlink, merge with
systemd-sysext and run the binary; follow newer publishes, vacuum old versions, refuse
everything unsigned or tampered — and `sysext check` must reach the same verdict as the
real client on each served directory (the agreement table).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from registry.http.nginx_conf import replicas_block
from sysext.systemd.manifest import MANIFEST_NAME, SIGNATURE_NAME
from sysext.systemd.transfer import TransferSpec, render_transfer
from sysext.trust import signing
from tests.booted import apply_ignition
from tests.ceph_rgw import CephRgw
from tests.merge_helper import merge_and_run
from tests.pg_cluster import PostgresCluster
from tests.registry_server import (
    RegistryServer,
    build_image,
    free_port,
    running_nginx,
    running_registry,
)
from tests.servers import StaticServer, run_cli
from tests.sysupdate_client import (
    client_version,
    follow_mkdir_instruction,
    merge_through_link,
    prepare_root,
    requested,
    run_sysupdate,
)
from tests.test_registry_scale import bucket_env, s3_client

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


# 257 (Debian 13) runs from the cached trixie boot root through its own loader
# (tests/sysupdate_client.py).
CLIENTS = (254, 257, 262)
# The newest version that fetches only SHA256SUMS.gpg and reads no BEST-BEFORE marker.
LEGACY_UNTIL = 257


def reads_conf(client: int) -> bool:
    """252-256 read only NAME.conf; 257+ read NAME.transfer (and warn about .conf)."""
    return client < 257


@pytest.mark.parametrize("client", CLIENTS)
def test_the_fetched_clients_run_here(client: int) -> None:
    version = client_version(client)
    if client in (254, 257):
        assert version.startswith(f"systemd {client}")
    else:  # Debian forky: 262 today, whatever 26x it carries later
        assert int(version.split()[1].split(".")[0]) >= 262, version


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
        # The host's keyring is the one the config installed (beside, never over, the vendor
        # keyring), not one the test hands in.
        keyring = (root / "etc/sysext/keyring.gpg").read_bytes()
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
        signing.write_signed_manifest(directory, crlf, signing.sign_detached(keys.key, crlf))
    elif case.manifest == "missing-signature":
        (directory / SIGNATURE_NAME).unlink()
    elif case.manifest == "resigned-bad-hash":  # signature fine, the newest image's hash wrong
        lines = manifest.decode().splitlines(keepends=True)
        lines = [("f" * 64 + line[64:]) if "1.1" in line else line for line in lines]
        bad = "".join(lines).encode()
        signing.write_signed_manifest(directory, bad, signing.sign_detached(keys.key, bad))


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


# --- signature names and BEST-BEFORE, per client ------------------------------------------
#
# 252–257 fetch SHA256SUMS.gpg and nothing else; 258+ fetch SHA256SUMS.sha256.asc first and
# move on (.sha256.gpg, .gpg, .asc) only after a 404. 260+ refuse a manifest whose
# BEST-BEFORE-YYYY-MM-DD day has come; older clients ignore the line. Each case serves one
# directory, runs every real client on it (their debug log names every request) and
# `sysext check`, which must fail whenever either client fails.

LEGACY, NEWER = "SHA256SUMS.gpg", "SHA256SUMS.sha256.asc"
THREE = ("SHA256SUMS.sha256.asc", "SHA256SUMS.sha256.gpg", "SHA256SUMS.gpg")


@dataclass(frozen=True)
class Serving:
    id: str
    change: str  # what happens to the `sysext sign` output before it is served
    says: dict[int, str]  # client → the key line of its log
    installs: dict[int, bool]
    asks: dict[int, tuple[str, ...]]  # client → the signature names it requests, in order
    check_says: str
    check_ok: bool


SERVINGS = (
    Serving(
        "as-signed",
        "none",
        {254: "Signature verification succeeded.", 262: "Signature verification succeeded."},
        {254: True, 262: True},
        {254: (LEGACY,), 262: (NEWER,)},
        "update:    1.1 ",
        True,
    ),
    Serving(
        "gpg-only",
        "drop-newer",
        {254: "Signature verification succeeded.", 262: "Signature verification succeeded."},
        {254: True, 262: True},
        {254: (LEGACY,), 262: THREE},
        "systemd 258+ hosts make 3 signature requests per poll",
        True,
    ),
    Serving(
        "asc-only",
        "drop-legacy",
        {
            254: "Failed to retrieve signature file, cannot verify.",
            262: "Signature verification succeeded.",
        },
        {254: False, 262: True},
        {254: (LEGACY,), 262: (NEWER,)},
        "SHA256SUMS.gpg: HTTP 404 Not Found (systemd 252–257 ask for no other name)",
        False,
    ),
    Serving(
        "asc-by-another-key",
        "foreign-newer",
        {
            254: "Signature verification succeeded.",
            262: "DOWNLOAD INVALID: Signature verification failed.",
        },
        {254: True, 262: False},
        {254: (LEGACY,), 262: (NEWER,)},
        "SHA256SUMS.sha256.asc (what systemd 258+ verify): no public key",
        False,
    ),
    Serving(
        "best-before-passed",
        "marker-2000-01-01",
        {
            254: "Successfully installed update '1.1'.",
            262: "Best before marker indicates out-of-date file list, refusing",
        },
        {254: True, 262: False},
        {254: (LEGACY,), 262: (NEWER,)},
        "SHA256SUMS lists BEST-BEFORE-2000-01-01: systemd 260+ refuse this manifest since"
        " 2000-01-01 00:00 UTC",
        False,
    ),
    Serving(
        "best-before-ahead",
        "marker-ahead",
        {
            254: "Successfully installed update '1.1'.",
            262: "Found best before marker, and it checks out, proceeding.",
        },
        {254: True, 262: True},
        {254: (LEGACY,), 262: (NEWER,)},
        "marker:    BEST-BEFORE-",
        True,
    ),
    Serving(
        "best-before-not-a-date",
        "marker-2027-02-30",
        {
            254: "Successfully installed update '1.1'.",
            262: "Found best before marker with an invalid date, ignoring: BEST-BEFORE-2027-02-30",
        },
        {254: True, 262: True},
        {254: (LEGACY,), 262: (NEWER,)},
        "update:    1.1 ",
        True,
    ),
)


def serve_signed(serving: Serving, keys: Keys, pool: Path, directory: Path) -> None:
    directory.mkdir(parents=True)
    for stem in PAIR:
        shutil.copyfile(pool / f"{stem}-x86-64.raw", directory / f"{stem}-x86-64.raw")
    if serving.change == "marker-ahead":
        ahead = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)
        signing.sign_directory(directory, keys.key, best_before=ahead)
        return
    signing.sign_directory(directory, keys.key)
    if serving.change.startswith("marker-"):
        # Written by hand: `sysext sign` refuses a date that has passed (or is no date).
        name = f"BEST-BEFORE-{serving.change.removeprefix('marker-')}"
        manifest = (directory / MANIFEST_NAME).read_bytes()
        manifest += f"{hashlib.sha256(b'').hexdigest()}  {name}\n".encode()
        signature = signing.sign_detached(keys.key, manifest)
        signing.write_signed_manifest(directory, manifest, signature)
    elif serving.change == "drop-newer":
        (directory / NEWER).unlink()
    elif serving.change == "drop-legacy":
        (directory / LEGACY).unlink()
    elif serving.change == "foreign-newer":
        foreign = keys.key.parent / "foreign.pgp"
        manifest = (directory / MANIFEST_NAME).read_bytes()
        (directory / NEWER).write_bytes(signing.sign_detached(foreign, manifest))


def signature_requests(log: str) -> list[str]:
    names = [path.rsplit("/", 1)[-1] for path in requested(log)]
    return [n for n in names if n.startswith("SHA256SUMS.")]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("serving", SERVINGS, ids=lambda s: s.id)
def test_signature_names_and_best_before_per_client(
    serving: Serving,
    client: int,
    keys: Keys,
    image_pool: Path,
    static_server: StaticServer,
    tmp_path: Path,
) -> None:
    serve_signed(serving, keys, image_pool, static_server.root / "extensions" / "hello")
    spec = TransferSpec(name="hello", base_url=static_server.url)
    suffix = "conf" if reads_conf(client) else "transfer"  # what each reads, no warning
    transfer = render_transfer(spec, file_format=suffix)
    root = prepare_root(tmp_path / "root", "hello", transfer, suffix=suffix)

    real = run_sysupdate(
        root, ["-C", "hello", "update"], keys.keyring, client=client, log_level="debug"
    )
    # 257 behaves as 254 in every case (one signature name, no BEST-BEFORE: 260+).
    expected = 254 if client <= LEGACY_UNTIL else client
    assert serving.says[expected] in real.stderr, real.stderr[-3000:]
    assert signature_requests(real.stderr) == list(serving.asks[expected])
    link = root / "etc/extensions/hello.raw"
    if serving.installs[expected]:
        assert real.returncode == 0, real.stderr[-3000:]
        assert installed(root, "hello") == ["hello-1.1-x86-64.raw"]
        assert os.readlink(link).endswith("/hello-1.1-x86-64.raw")
    else:
        assert real.returncode != 0
        assert installed(root, "hello") == [] and not link.is_symlink()

    keyring_file = tmp_path / "keyring.gpg"
    keyring_file.write_bytes(keys.keyring)
    url = f"{static_server.url}/extensions/hello"
    ours = run_cli("check", url, "--keyring", keyring_file, "--arch", "x86-64")
    assert serving.check_says in ours.stdout + ours.stderr, (ours.stdout, ours.stderr)
    # `sysext check` passes only when every client version would update.
    assert serving.check_ok is all(serving.installs.values())
    if serving.check_ok:
        assert ours.returncode == 0, ours.stderr
    else:
        assert ours.returncode == 2, ours.stdout
        assert ours.stderr.startswith("error: "), ours.stderr


# --- from `sysext serve` and from a bucket, Verify=yes ------------------------------------


# 257 is left out here to keep the suite's time: the cases above run it on the registry's
# signed output already.
@pytest.mark.parametrize("client", (254, 262))
def test_updates_from_sysext_serve_with_one_signature_request(client: int, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    suffix = "conf" if reads_conf(client) else "transfer"
    with running_registry(tmp_path / "data") as reg:
        publish(reg, build_image(images, "hello", "1.0"))
        transfer = requests.get(f"{reg.url}/extensions/hello/hello.{suffix}", timeout=10).text
        assert "Verify=yes" in transfer
        root = prepare_root(tmp_path / "root", "hello", transfer, suffix=suffix)
        for version in ("1.0", "1.1"):
            if version != "1.0":
                publish(reg, build_image(images, "hello", version))
            run = run_sysupdate(
                root, ["-C", "hello", "update"], reg.keyring(), client=client, log_level="debug"
            )
            assert run.returncode == 0, run.stderr[-3000:]
            assert f"Successfully installed update '{version}'." in run.stderr
            assert "Signature verification succeeded." in run.stderr
            assert signature_requests(run.stderr) == [LEGACY if client <= LEGACY_UNTIL else NEWER]
            if client == 262:  # the registry's marker (the signature's expiry day)
                assert "Found best before marker, and it checks out, proceeding." in run.stderr
            assert "As of v257" not in run.stderr  # no .conf warning on 257+
        merged = merge_through_link(root, "hello", ["hello"])
        assert merged.stdout.split() == ["hello", "1.1"], merged.stderr
        keyring_file = tmp_path / "keyring.gpg"
        keyring_file.write_bytes(reg.keyring())
        ours = check_json(f"{reg.url}/extensions/hello", keyring_file)
        assert ours["signature_requests_258"] == 1 and ours["best_before"] is not None
        assert ours["warnings"] == []


def test_updates_from_a_bucket_and_a_403_for_a_missing_name(
    tmp_path: Path, pg_cluster: PostgresCluster, ceph_rgw: CephRgw
) -> None:
    """The registry on a real Ceph RGW bucket whose policy allows anonymous GetObject only
    (so a missing key answers 403): every client (254, 257, 262) updates with Verify=yes,
    262 with one signature request. A tree without SHA256SUMS.sha256.asc (an older
    registry's) ends every 262 update at the 403; `sysext check` says so; nginx in front
    (the shipped replicas block) turns it into a 404; the registry's next start writes the
    name again."""
    env = bucket_env(tmp_path, pg_cluster, ceph_rgw, "sysext-262")
    bucket = env["SYSEXT_S3_BUCKET"]
    bucket_url = f"{ceph_rgw.endpoint}/{bucket}"
    server = RegistryServer(data=tmp_path / "data", port=free_port(), env=env, args=("-w", "1"))
    server.start()
    try:
        (tmp_path / "images").mkdir()
        publish(server, build_image(tmp_path / "images", "e2e", "1.0"))
        keyring = requests.get(f"{bucket_url}/keyring.gpg", timeout=10).content
        base = f"{bucket_url}/extensions/e2e"
        assert requests.get(f"{base}/SHA256SUMS.sha256.gpg", timeout=10).status_code == 403
        roots: dict[int, Path] = {}
        for client in CLIENTS:
            suffix = "conf" if reads_conf(client) else "transfer"
            transfer = requests.get(f"{base}/e2e.{suffix}", timeout=10).text
            assert "Verify=yes" in transfer and f"Path={base}" in transfer
            roots[client] = prepare_root(tmp_path / f"root{client}", "e2e", transfer, suffix=suffix)
            run = run_sysupdate(
                roots[client], ["-C", "e2e", "update"], keyring, client=client, log_level="debug"
            )
            assert run.returncode == 0, run.stderr[-3000:]
            assert "Successfully installed update '1.0'." in run.stderr
            assert signature_requests(run.stderr) == [LEGACY if client <= LEGACY_UNTIL else NEWER]

        # An older registry's tree: no SHA256SUMS.sha256.asc, and the bucket says 403.
        admin = s3_client(ceph_rgw)
        admin.delete_object(Bucket=bucket, Key=f"extensions/e2e/{NEWER}")  # type: ignore[attr-defined]
        publish(server, build_image(tmp_path / "images", "e2e", "1.1"))
        admin.delete_object(Bucket=bucket, Key=f"extensions/e2e/{NEWER}")  # type: ignore[attr-defined]
        assert requests.get(f"{base}/{NEWER}", timeout=10).status_code == 403
        new = run_sysupdate(roots[262], ["-C", "e2e", "update"], keyring, client=262)
        assert new.returncode != 0
        assert f"HTTP request to {base}/{NEWER} failed with code 403." in new.stderr
        assert "Failed to retrieve signature file, cannot verify." in new.stderr
        for client in (254, 257):  # they never ask for the missing name
            old = run_sysupdate(roots[client], ["-C", "e2e", "update"], keyring, client=client)
            assert old.returncode == 0 and "Successfully installed update '1.1'." in old.stderr
        keyring_file = tmp_path / "keyring.gpg"
        keyring_file.write_bytes(keyring)
        ours = run_cli("check", base, "--keyring", keyring_file, "--arch", "x86-64")
        assert ours.returncode == 2, ours.stdout
        assert f"{NEWER}: HTTP 403" in ours.stderr
        assert "systemd 258+ try the next signature name only after a 404" in ours.stderr

        # The shipped nginx block in front of the bucket answers 404 instead: 262 walks on.
        with nginx_front(tmp_path / "nginx", server, bucket_url) as front:
            via = (roots[262] / "etc/sysupdate.e2e.d/e2e.transfer").read_text()
            prepare_root(roots[262], "e2e", via.replace(bucket_url, front), suffix="transfer")
            walked = run_sysupdate(
                roots[262], ["-C", "e2e", "update"], keyring, client=262, log_level="debug"
            )
            assert walked.returncode == 0, walked.stderr[-3000:]
            assert "Successfully installed update '1.1'." in walked.stderr
            assert signature_requests(walked.stderr) == list(THREE)

        # The registry writes the missing name again when it next materializes (start).
        server.stop()
        server.start()
        assert requests.get(f"{base}/{NEWER}", timeout=10).status_code == 200
        healed = check_json(base, keyring_file)
        assert healed["signature_requests_258"] == 1 and healed["best_before"] is not None
    finally:
        server.stop()


@contextlib.contextmanager
def nginx_front(prefix: Path, replica: RegistryServer, bucket_url: str) -> Iterator[str]:
    """nginx with the shipped replicas block (registry/public/nginx/sysext-replicas.conf)."""
    replicas = [f"127.0.0.1:{replica.port}"]
    with running_nginx(prefix, lambda listen: replicas_block(listen, replicas, bucket_url)) as url:
        yield url
