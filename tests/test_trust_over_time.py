"""Trust over time with the REAL systemd-sysupdate 254 (issue 14).

* Expiry: a host updates from a fresh manifest; served with an expired signature (made
  with a key that existed then, backdated: what every host sees once the clock passes
  the expiry of a signature nobody renewed) its update fails closed and it keeps its
  version; once the registry is back and has re-signed, it updates again.
* Rotation: a host provisioned by `sysext butane` trusts key A; `sysext key rotate` adds B
  (certified by A); the host's keyring updater (the script the config installs) adds B;
  manifests switch to B and the host still updates; a keyring with a key nobody it trusts
  certified is refused; after retirement A leaves the host's keyring and no longer verifies.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from sysext.systemd.manifest import MANIFEST_NAME, SIGNATURE_NAME
from sysext.trust import signing
from tests.past_keys import gpg_verify_like_systemd, make_past_key
from tests.registry_server import RegistryServer, build_image, running_registry
from tests.servers import StaticServer, run_cli, serve_directory
from tests.sysupdate_client import run_sysupdate
from tests.test_real_sysupdate import HOST_OS_RELEASE, apply_ignition, installed, publish

pytestmark = pytest.mark.root

WEEK = dt.timedelta(days=7)
HOST_KEYRING = "etc/sysext/keyring.gpg"  # the registry key, beside the vendor keyring


def provision(reg: RegistryServer, root: Path) -> dict[str, Any]:
    result = run_cli("butane", "hello", "--registry", reg.url, "--ignition")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    apply_ignition(document, root)
    (root / "etc/os-release").write_text(HOST_OS_RELEASE)
    return document


def replace_signature(data: Path, signature: bytes) -> None:
    """Serve `signature` beside the current manifest (atomically, as any writer would)."""
    snapshot = (data / "public/extensions/hello").resolve()
    tmp = snapshot / ".#replaced"
    tmp.write_bytes(signature)
    os.replace(tmp, snapshot / SIGNATURE_NAME)


def served_manifest(reg: RegistryServer) -> bytes:
    return requests.get(f"{reg.url}/extensions/hello/{MANIFEST_NAME}", timeout=10).content


def test_expired_signature_fails_closed_and_renewal_recovers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = data / "keys" / "signing.pgp"
    make_past_key(key, days_ago=30)  # a key old enough to have signed ten days ago
    images = tmp_path / "images"
    images.mkdir()
    root = tmp_path / "root"
    update = ["-C", "hello", "update"]
    with running_registry(data) as reg:
        publish(reg, build_image(images, "hello", "1.0"))
        provision(reg, root)
        keyring = (root / HOST_KEYRING).read_bytes()
        publish(reg, build_image(images, "hello", "1.1"))
        fresh = run_sysupdate(root, update, keyring)
        assert fresh.returncode == 0, fresh.stderr
        assert "Signature verification succeeded." in fresh.stderr
        assert "Successfully installed update '1.1'." in fresh.stderr
        port = reg.port

        # 1.2 is listed, but its signature expired (nobody renewed it for ten days).
        publish(reg, build_image(images, "hello", "1.2"))
        manifest = served_manifest(reg)
        ten_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
        expired = signing.sign_detached(key, manifest, lifetime=WEEK, created=ten_days_ago)
        replace_signature(data, expired)
        link = root / "etc/extensions/hello.raw"
        before = (os.readlink(link), installed(root, "hello"))

    # The registry is down; a stale mirror keeps serving that directory on its address.
    with serve_directory(data / "public", port):
        refused = run_sysupdate(root, update, keyring)
    assert refused.returncode != 0
    assert "Expired signature" in refused.stderr or "Signature expired" in refused.stderr
    assert "DOWNLOAD INVALID: Signature verification failed." in refused.stderr
    assert (os.readlink(link), installed(root, "hello")) == before  # kept 1.1

    # Back up: the registry renews the signature at start (and daily); the host updates.
    with running_registry(data, port=port) as reg:
        renewed = requests.get(f"{reg.url}/extensions/hello/{SIGNATURE_NAME}", timeout=10)
        assert renewed.content != expired
        again = run_sysupdate(root, update, keyring)
        assert again.returncode == 0, again.stderr
        assert "Successfully installed update '1.2'." in again.stderr
        assert os.readlink(link).endswith("hello-1.2-x86-64.raw")


def keys_in(keyring: bytes) -> set[str]:
    return {str(c.fingerprint).upper() for c in signing.load_keyring(keyring)}


def run_updater(script: Path, url: str, keyring: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), url],
        env={**os.environ, "SYSEXT_KEYRING": str(keyring)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_provisioned_host_follows_a_key_rotation(
    tmp_path: Path, static_server: StaticServer
) -> None:
    data = tmp_path / "data"
    images = tmp_path / "images"
    images.mkdir()
    root = tmp_path / "root"
    admin: dict[str, str] = {}
    with running_registry(data) as reg:
        admin = {"SYSEXT_TOKEN": reg.admin_token}
        publish(reg, build_image(images, "hello", "1.0"))
        document = provision(reg, root)
        host_keyring = root / HOST_KEYRING
        key_a = signing.key_fingerprint(data / "keys/signing.pgp")
        assert keys_in(host_keyring.read_bytes()) == {key_a}
        # The config installs the updater, its service (with the registry's keyring URL)
        # and an enabled daily timer.
        units = {u["name"]: u for u in document["systemd"]["units"]}
        exec_start = re.search(
            r"^ExecStart=(\S+) (\S+)$",
            units["sysext-keyring-update.service"]["contents"],
            re.MULTILINE,
        )
        assert exec_start is not None
        assert units["sysext-keyring-update.timer"]["enabled"] is True
        script = root / exec_start.group(1).lstrip("/")
        url = exec_start.group(2)
        assert url == f"{reg.url}/keyring.gpg"
        assert os.access(script, os.X_OK)
        unchanged = run_updater(script, url, host_keyring)
        assert unchanged.returncode == 0, unchanged.stderr
        assert keys_in(host_keyring.read_bytes()) == {key_a}

        # Phase 1: B joins the keyring, certified by A; A still signs.
        started = run_cli("key", "rotate", "--registry", reg.url, env=admin)
        assert started.returncode == 0, started.stderr
        assert "rotation:   introducing" in started.stdout
        key_b = requests.get(f"{reg.url}/api/v1/keys", timeout=10).json()["rotation"]["other"]
        overlap_keyring = requests.get(url, timeout=10).content
        assert keys_in(overlap_keyring) == {key_a, key_b}
        signer = signing.verify_detached(
            overlap_keyring,
            served_manifest(reg),
            requests.get(f"{reg.url}/extensions/hello/{SIGNATURE_NAME}", timeout=10).content,
        )
        assert signer == key_a
        learned = run_updater(script, url, host_keyring)
        assert learned.returncode == 0, learned.stderr
        assert keys_in(host_keyring.read_bytes()) == {key_a, key_b}

        # Someone controlling only the HTTP path serves a key of their own: refused, alone
        # or beside the genuine ones, and the host's keyring stays as it was.
        forged_key = tmp_path / "forged.key"
        signing.generate_key(forged_key, "registry <registry@localhost>")
        forged = signing.export_public_key(forged_key)
        kept = host_keyring.read_bytes()
        for name, served in (("alone", forged), ("beside", overlap_keyring + forged)):
            (static_server.root / f"{name}.gpg").write_bytes(served)
            attack = run_updater(script, f"{static_server.url}/{name}.gpg", host_keyring)
            assert attack.returncode == 1
            assert "is not certified by a key this host trusts" in attack.stderr
            assert host_keyring.read_bytes() == kept

        # Phase 2: B signs (every manifest re-signed in place); the host still updates.
        switched = run_cli("key", "rotate", "--advance", "--registry", reg.url, env=admin)
        assert switched.returncode == 0, switched.stderr
        assert "rotation:   retiring" in switched.stdout
        publish(reg, build_image(images, "hello", "1.1"))
        signature = requests.get(f"{reg.url}/extensions/hello/{SIGNATURE_NAME}", timeout=10)
        assert signing.verify_detached(kept, served_manifest(reg), signature.content) == key_b
        assert run_updater(script, url, host_keyring).returncode == 0
        update = run_sysupdate(root, ["-C", "hello", "update"], host_keyring.read_bytes())
        assert update.returncode == 0, update.stderr
        assert "Successfully installed update '1.1'." in update.stderr

        # Phase 3: A is retired; the host's keyring follows and A no longer verifies.
        retired = run_cli("key", "rotate", "--advance", "--registry", reg.url, env=admin)
        assert retired.returncode == 0, retired.stderr
        assert "rotation:   none in progress" in retired.stdout
        final = run_updater(script, url, host_keyring)
        assert final.returncode == 0, final.stderr
        assert keys_in(host_keyring.read_bytes()) == {key_b}
        old_key = data / "keys" / "retired" / f"{key_a}.pgp"
        by_a = signing.sign_detached(old_key, served_manifest(reg), lifetime=WEEK)
        status, stderr = gpg_verify_like_systemd(
            host_keyring.read_bytes(), by_a, served_manifest(reg)
        )
        assert status != 0 and "No public key" in stderr
        replace_signature(data, by_a)
        stale_key = run_sysupdate(root, ["-C", "hello", "check-new"], host_keyring.read_bytes())
        assert stale_key.returncode != 0
        assert "DOWNLOAD INVALID: Signature verification failed." in stale_key.stderr

        # Replaying the overlap keyring cannot bring A back: B never certified A.
        (static_server.root / "replay.gpg").write_bytes(overlap_keyring)
        replay = run_updater(script, f"{static_server.url}/replay.gpg", host_keyring)
        assert replay.returncode == 1 and key_a in replay.stderr
        assert keys_in(host_keyring.read_bytes()) == {key_b}

        # A host that slept through the whole rotation (trusting only A) still accepts B:
        # B carries A's certification.
        sleeper = tmp_path / "sleeper.gpg"
        sleeper.write_bytes(signing.export_public_key(old_key))
        woke = run_updater(script, url, sleeper)
        assert woke.returncode == 0, woke.stderr
        assert keys_in(sleeper.read_bytes()) == {key_b}
