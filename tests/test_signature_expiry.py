"""Expiring SHA256SUMS signatures (issue 14): made with gpg, refused by gpg (systemd's
command line) and sqv once expired, reported by `sysext sign/verify/check`, and renewed
in place by the registry without touching any other byte of the tree."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from registry.settings import load_settings
from sysext.core.durations import format_duration, parse_duration
from sysext.core.errors import SysextError
from sysext.systemd.manifest import MANIFEST_NAME, SIGNATURE_NAME, SIGNATURE_NAMES
from sysext.trust import signing
from sysext.trust.gpg import sweep_orphaned_homes
from tests.past_keys import gpg_verify_like_systemd, make_past_key, sqv_verify
from tests.registry_server import build_image, free_port, running_registry
from tests.servers import run_cli

MANIFEST = b"0" * 64 + b"  hello-1.0-x86-64.raw\n"
WEEK = dt.timedelta(days=7)


@pytest.fixture(scope="module")
def past_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A key made 30 days ago (so signatures from 10 days ago are possible) + its keyring."""
    key = tmp_path_factory.mktemp("past") / "signing.pgp"
    make_past_key(key, days_ago=30)
    return key, signing.export_public_key(key)


def test_durations() -> None:
    assert parse_duration("7d") == WEEK
    assert parse_duration("1d12h") == dt.timedelta(hours=36)
    assert parse_duration("2w") == dt.timedelta(days=14)
    for bad in ("", "7", "d", "7x", "-1d", "0s", "7d 3"):
        with pytest.raises(SysextError):
            parse_duration(bad)
    assert format_duration(dt.timedelta(days=6, hours=23, minutes=5)) == "6d 23h"
    assert format_duration(dt.timedelta(seconds=-40)) == "-40s"


def test_expiring_signature_verifies_everywhere_and_reports_its_expiry(
    past_key: tuple[Path, bytes],
) -> None:
    key, keyring = past_key
    signature = signing.sign_detached(key, MANIFEST, lifetime=WEEK)
    assert gpg_verify_like_systemd(keyring, signature, MANIFEST)[0] == 0
    assert sqv_verify(keyring, signature, MANIFEST)[0] == 0
    info = signing.verify_signature(keyring, MANIFEST, signature)
    assert info.signer == signing.key_fingerprint(key)
    assert info.created is not None and info.expires == info.created + WEEK
    assert info.expiry_warning() is None
    assert "(in 6d 23h)" in info.describe()
    # Without a lifetime the signature (pysequoia's) never expires, as before.
    plain = signing.sign_detached(key, MANIFEST)
    assert signing.verify_signature(keyring, MANIFEST, plain).expires is None


def test_expired_signature_is_refused_like_a_host_refuses_it(
    past_key: tuple[Path, bytes], tmp_path: Path
) -> None:
    key, keyring = past_key
    ten_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    expired = signing.sign_detached(key, MANIFEST, lifetime=WEEK, created=ten_days_ago)
    status, stderr = gpg_verify_like_systemd(keyring, expired, MANIFEST)
    assert status != 0 and "Expired signature" in stderr
    status, stderr = sqv_verify(keyring, expired, MANIFEST)
    assert status != 0 and "Expired" in stderr
    with pytest.raises(signing.SignatureError, match="the signature expired at"):
        signing.verify_signature(keyring, MANIFEST, expired)
    created, expires = signing.signature_times(expired)
    assert created == ten_days_ago.replace(microsecond=0) and expires == created + WEEK

    directory = tmp_path / "out"
    directory.mkdir()
    (directory / "hello-1.0-x86-64.raw").write_bytes(b"image")
    signing.sign_directory(directory, key)
    (directory / SIGNATURE_NAME).write_bytes(
        signing.sign_detached(
            key, (directory / MANIFEST_NAME).read_bytes(), lifetime=WEEK, created=ten_days_ago
        )
    )
    (tmp_path / "keyring.gpg").write_bytes(keyring)
    result = run_cli("verify", directory, "--keyring", tmp_path / "keyring.gpg")
    assert result.returncode == 2
    assert "error: the signature expired at" in result.stderr
    assert "Traceback" not in result.stderr


def test_sign_expires_and_verify_warns_when_near(
    past_key: tuple[Path, bytes], tmp_path: Path
) -> None:
    key, keyring = past_key
    directory = tmp_path / "out"
    directory.mkdir()
    (directory / "hello-1.0-x86-64.raw").write_bytes(b"image")
    (tmp_path / "keyring.gpg").write_bytes(keyring)

    bad = run_cli("sign", directory, "--key", key, "--expires", "soon")
    assert bad.returncode == 2 and "error: invalid --expires 'soon'" in bad.stderr
    assert not (directory / MANIFEST_NAME).exists()

    signed = run_cli("sign", directory, "--key", key, "--expires", "7d")
    assert signed.returncode == 0, signed.stderr
    assert ", expires " in signed.stderr
    fresh = run_cli("verify", directory, "--keyring", tmp_path / "keyring.gpg")
    assert fresh.returncode == 0, fresh.stderr
    assert "(in 6d 23h)" in fresh.stderr and "warning" not in fresh.stderr

    # Five days into a seven-day lifetime: still valid, but less than half is left.
    five_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=5)
    (directory / SIGNATURE_NAME).write_bytes(
        signing.sign_detached(
            key, (directory / MANIFEST_NAME).read_bytes(), lifetime=WEEK, created=five_days_ago
        )
    )
    ageing = run_cli("verify", directory, "--keyring", tmp_path / "keyring.gpg")
    assert ageing.returncode == 0, ageing.stderr
    assert "warning: the signature expires in 1d 23h" in ageing.stderr


def test_registry_signs_with_expiry_and_renews_only_the_signature(
    past_key: tuple[Path, bytes], tmp_path: Path
) -> None:
    key, keyring = past_key
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    os.link(key, data / "keys" / "signing.pgp")
    images = tmp_path / "images"
    images.mkdir()
    image = build_image(images, "hello", "1.0")
    (tmp_path / "keyring.gpg").write_bytes(keyring)
    with running_registry(data) as reg:
        published = run_cli(
            "publish", image, "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token}
        )
        assert published.returncode == 0, published.stderr
        url = f"{reg.url}/extensions/hello"
        served = requests.get(f"{url}/{SIGNATURE_NAME}", timeout=10).content
        manifest = requests.get(f"{url}/{MANIFEST_NAME}", timeout=10).content
        info = signing.verify_signature(keyring, manifest, served)
        assert info.created is not None and info.expires == info.created + WEEK
        checked = run_cli("check", url, "--keyring", tmp_path / "keyring.gpg")
        assert checked.returncode == 0, checked.stderr
        assert "signature: OK, key" in checked.stdout and ", expires 20" in checked.stdout

        # A signature five days into its week still verifies, with a warning; one that
        # has expired (what a frozen mirror would serve) fails exactly as the host's gpg.
        snapshot = (data / "public/extensions/hello").resolve()
        now = dt.datetime.now(dt.UTC)
        for days_ago in (5, 10):
            old = signing.sign_detached(
                key, manifest, lifetime=WEEK, created=now - dt.timedelta(days=days_ago)
            )
            tmp = snapshot / ".#old"
            tmp.write_bytes(old)
            os.replace(tmp, snapshot / SIGNATURE_NAME)
            if days_ago == 5:
                ageing = run_cli("check", url, "--keyring", tmp_path / "keyring.gpg")
                assert ageing.returncode == 0, ageing.stderr
                assert "warning:   the signature expires in 1d 23h" in ageing.stdout
        stale = old
        refused = run_cli("check", url, "--keyring", tmp_path / "keyring.gpg")
        assert refused.returncode == 2
        assert "error: the signature expired at" in refused.stderr
        before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in snapshot.iterdir()}
        port = reg.port

    # The registry renews ageing signatures when it starts (and daily while it runs):
    # only SHA256SUMS.gpg changes; the manifest, images and transfer files keep their
    # bytes and inodes, and the same snapshot stays served.
    with running_registry(data, port=port) as reg:
        renewed = requests.get(f"{url}/{SIGNATURE_NAME}", timeout=10).content
        assert renewed != stale
        info = signing.verify_signature(keyring, manifest, renewed)
        assert info.created is not None
        assert dt.datetime.now(dt.UTC) - info.created < dt.timedelta(minutes=10)
        assert (data / "public/extensions/hello").resolve() == snapshot
        after = {p.name: (p.stat().st_ino, p.read_bytes()) for p in snapshot.iterdir()}
        assert set(after) == set(before)
        changed = {name for name in after if after[name] != before[name]}
        assert changed == set(SIGNATURE_NAMES)
        status = requests.get(f"{reg.url}/api/v1/keys", timeout=10).json()
        assert status["signature_lifetime_seconds"] == WEEK.total_seconds()


def test_bad_signing_settings_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for env, message in (
        ({"SYSEXT_SIGNATURE_LIFETIME": "soon"}, "invalid signature_lifetime 'soon'"),
        ({"SYSEXT_KEY_OVERLAP": "0d"}, "invalid key_overlap '0d': it must be longer"),
        ({"SYSEXT_RESIGN_INTERVAL": "4d"}, "resign_interval 4d is more than half of"),
    ):
        with pytest.raises(SysextError, match=re.escape(message)):
            _ = load_settings(env={**env, "SYSEXT_DATA": str(tmp_path)}).signing_policy
    assert load_settings(env={"SYSEXT_SIGNATURE_LIFETIME": "never"}).signing_policy.lifetime is None
    # And `sysext serve` says so in one line, before it writes anything.
    data = tmp_path / "data"
    result = run_cli(
        "serve", "--data", data, "--port", str(free_port()), env={"SYSEXT_RESIGN_INTERVAL": "4d"}
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: resign_interval 4d is more than half of")
    assert not data.exists()


def test_a_running_registry_renews_signatures_on_its_schedule(tmp_path: Path) -> None:
    """With a 3 s re-sign interval (a 30 s lifetime) the maintenance loop, not a restart,
    renews the served signature; the manifest stays the same bytes."""
    images = tmp_path / "images"
    images.mkdir()
    image = build_image(images, "hello", "1.0")
    env = {"SYSEXT_SIGNATURE_LIFETIME": "30s", "SYSEXT_RESIGN_INTERVAL": "3s"}
    with running_registry(tmp_path / "data", env=env) as reg:
        published = run_cli(
            "publish", image, "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token}
        )
        assert published.returncode == 0, published.stderr
        url = f"{reg.url}/extensions/hello"
        manifest = requests.get(f"{url}/{MANIFEST_NAME}", timeout=10).content
        first = requests.get(f"{url}/{SIGNATURE_NAME}", timeout=10).content
        created, expires = signing.signature_times(first)
        assert created is not None and expires == created + dt.timedelta(seconds=30)
        renewed = first
        for _ in range(120):  # the loop checks every second; renewal is due after 3 s
            renewed = requests.get(f"{url}/{SIGNATURE_NAME}", timeout=10).content
            if renewed != first:
                break
            time.sleep(0.5)
        assert renewed != first, "the signature was not renewed within a minute"
        later, _ = signing.signature_times(renewed)
        assert later is not None and later > created
        assert requests.get(f"{url}/{MANIFEST_NAME}", timeout=10).content == manifest
        assert signing.verify_detached(reg.keyring(), manifest, renewed)


def _agents_of(home: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"gpg-agent") and str(home).encode() in cmdline:
                found.append(int(proc.name))
    return found


def test_a_signer_killed_mid_signature_leaves_no_gpg_agent_behind(
    past_key: tuple[Path, bytes],
) -> None:
    key, _ = past_key
    code = (
        "import datetime as dt, os, sys\n"
        "from sysext.trust.gpg import gpg_home\n"
        "from sysext.trust import signing\n"
        f"key = {str(key)!r}\n"
        "with gpg_home() as home:\n"
        "    home.import_keys(open(key, 'rb').read())\n"
        "    home.detach_sign(signing.key_fingerprint(key), b'x', lifetime=dt.timedelta(1))\n"
        "    print(home.path, flush=True)\n"
        "    os.kill(os.getpid(), 9)  # a crash: no `finally` runs\n"
    )
    crashed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert crashed.returncode == -9, crashed.stderr
    home = Path(crashed.stdout.strip())
    assert home.is_dir() and _agents_of(home)  # what the crash left
    sweep_orphaned_homes()  # what the next signer on this machine does first
    assert not home.exists()
    for _ in range(100):
        if not _agents_of(home):
            break
        time.sleep(0.1)
    assert _agents_of(home) == []
