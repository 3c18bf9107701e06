"""Rollout bucket manifests carry the channel's BEST-BEFORE marker (issue 20 for issue 21's
tree), signed, and the real systemd-sysupdate 254 and 262 still install from a bucket.

systemd 260+ refuse a manifest once its BEST-BEFORE day has come; a bucket directory
without the line would let a replayed old bucket manifest stay acceptable to them until
its signature expires, which the channel directories no longer allow.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sysext.core.rollout import offered_buckets
from sysext.systemd.manifest import BEST_BEFORE_PREFIX
from tests.registry_server import RegistryServer, build_image, running_registry
from tests.sysupdate_client import run_sysupdate
from tests.test_rollout_sysupdate import ROLLOUT_KEY, admin, provision, running_version

pytestmark = pytest.mark.root


def marker(manifest: str) -> list[str]:
    return [line.split()[1] for line in manifest.splitlines() if BEST_BEFORE_PREFIX in line]


def generations(reg: RegistryServer) -> list[str]:
    return sorted(p.name for p in (reg.data / "rollout-snapshots/stable/hello").iterdir())


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    env = {"SYSEXT_WORKERS": "1", "SYSEXT_ROLLOUT_TICK": "3600"}
    with running_registry(tmp_path / "data", env=env) as reg:
        with sqlite3.connect(reg.data / "registry.db") as db:
            db.execute(
                "UPDATE registry_meta SET value = ? WHERE key = 'rollout_key'", (ROLLOUT_KEY,)
            )
        images = tmp_path / "images"
        images.mkdir()
        admin(reg, "publish", str(build_image(images, "hello", "1.0")))
        admin(reg, "rollout", "set", "hello", "1.1", "--percent", "50")
        admin(reg, "publish", str(build_image(images, "hello", "1.1")))
        yield reg


def test_bucket_manifests_carry_the_channels_marker_and_sysupdate_accepts_them(
    registry: RegistryServer, tmp_path: Path
) -> None:
    reg = registry
    channel = requests.get(f"{reg.url}/extensions/hello/SHA256SUMS", timeout=10).text
    (expected,) = marker(channel)
    for bucket in (0, 42, 99):
        url = f"{reg.url}/rollouts/stable/hello/{bucket:02d}"
        assert marker(requests.get(f"{url}/SHA256SUMS", timeout=10).text) == [expected]
        # The name it lists downloads (as an empty file), like the channel's marker.
        found = requests.get(f"{url}/{expected}", timeout=10)
        assert (found.status_code, found.content) == (200, b"")

    # Real hosts in offered and other buckets: the signed manifests with the marker
    # verify (Verify=yes) and each installs what its bucket offers.
    # 254 ignores the marker; 262 reads it and refuses a manifest whose day has come.
    offered = offered_buckets(bytes.fromhex(ROLLOUT_KEY), "hello", "1.1", 50)
    hosts = provision(reg, tmp_path / "hosts", 12)
    keyring = reg.keyring()
    for number, host in enumerate(hosts):
        client = 262 if number % 3 == 2 else 254
        result = run_sysupdate(host.root, ["-C", "hello", "update"], keyring, client=client)
        assert result.returncode == 0, (client, result.stderr)
        assert running_version(host) == ("1.1" if host.bucket in offered else "1.0")
    assert {host.bucket in offered for host in hosts} == {True, False}
    assert {host.bucket in offered for host in hosts[2::3]} == {True, False}

    # A restart with a fresh tree rebuilds nothing. Re-signing under a policy that moves
    # the marker's day (30 days of lifetime, renewal due at once) gives a new generation
    # whose buckets again list the channel's (new) marker.
    before = generations(reg)
    reg.stop()
    reg.start()
    assert generations(reg) == before
    reg.stop()
    reg.start(env={"SYSEXT_SIGNATURE_LIFETIME": "30d", "SYSEXT_RESIGN_INTERVAL": "1s"})
    assert generations(reg)[-1] > before[-1]
    channel = requests.get(f"{reg.url}/extensions/hello/SHA256SUMS", timeout=10).text
    (moved,) = marker(channel)
    assert moved != expected
    listed = requests.get(f"{reg.url}/rollouts/stable/hello/07/SHA256SUMS", timeout=10).text
    assert marker(listed) == [moved]
    for host in hosts[:2]:
        result = run_sysupdate(host.root, ["-C", "hello", "update"], reg.keyring())
        assert result.returncode == 0, result.stderr

    # Without expiry there is no marker, in the channel or the buckets.
    reg.stop()
    reg.start(env={"SYSEXT_SIGNATURE_LIFETIME": "never"})
    for path in ("extensions/hello", "rollouts/stable/hello/07"):
        assert marker(requests.get(f"{reg.url}/{path}/SHA256SUMS", timeout=10).text) == []
