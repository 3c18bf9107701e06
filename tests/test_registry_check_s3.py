"""`sysext registry check|repair` when the tree and the images live in an S3 bucket.

The same checks as for a local data directory (tests/test_registry_hardening.py), read
through the storage (registry/storage/s3.py): stored images by HEAD, both directories of a
stable extension by listing (ETags) and their signature, the published directories by
prefix listing. A real `sysext serve` on PostgreSQL publishes into a bucket of the
session's Ceph radosgw; the test then tampers with the bucket as an operator or a broken
tool would, and reads the result anonymously, as hosts do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from sysext.trust.signing import verify_detached
from tests.ceph_rgw import CephRgw
from tests.pg_cluster import PostgresCluster
from tests.registry_server import RegistryServer, build_image, free_port, listing
from tests.servers import run_cli
from tests.test_registry_scale import bucket_env, s3_client

pytestmark = pytest.mark.slow


@dataclass
class Bucketed:
    server: RegistryServer
    env: dict[str, str]
    bucket: str
    bucket_url: str
    s3: Any

    def cli(self, *args: str | Path, **env: str) -> tuple[int, str]:
        result = run_cli(*args, "--data", self.server.data, env={**self.env, **env})
        return result.returncode, result.stdout + result.stderr

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)


@pytest.fixture
def bucketed(tmp_path: Path, pg_cluster: PostgresCluster, ceph_rgw: CephRgw) -> Iterator[Bucketed]:
    env = bucket_env(tmp_path, pg_cluster, ceph_rgw, "sysext-check")
    bucket = env["SYSEXT_S3_BUCKET"]
    server = RegistryServer(data=tmp_path / "data", port=free_port(), env=env, args=("-w", "1"))
    server.start()
    try:
        yield Bucketed(server, env, bucket, f"{ceph_rgw.endpoint}/{bucket}", s3_client(ceph_rgw))
    finally:
        server.stop()


def publish(reg: Bucketed, image: Path, name: str, channel: str = "stable") -> dict[str, Any]:
    response = requests.put(
        f"{reg.server.url}/api/v1/extensions/{name}/images/{image.name}",
        params={"channel": channel},
        data=image.read_bytes(),
        headers=reg.server.headers(),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def anonymous_manifest(reg: Bucketed, directory: str) -> list[str]:
    """The image names a host reads from `directory`, after checking the signature."""
    keyring = requests.get(f"{reg.bucket_url}/keyring.gpg", timeout=10).content
    manifest = requests.get(f"{reg.bucket_url}/{directory}/SHA256SUMS", timeout=10)
    assert manifest.status_code == 200, directory
    signature = requests.get(f"{reg.bucket_url}/{directory}/SHA256SUMS.gpg", timeout=10)
    verify_detached(keyring, manifest.content, signature.content)
    return [entry.filename for entry in listing(manifest.content)]


def test_check_and_repair_read_the_bucket(bucketed: Bucketed, tmp_path: Path) -> None:
    reg = bucketed
    for version in ("1.0", "1.1"):
        publish(reg, build_image(tmp_path, "bkt", version), "bkt")
    publish(reg, build_image(tmp_path, "bkt", "1.2"), "bkt", channel="beta")
    gone = publish(reg, build_image(tmp_path, "gone", "1.0"), "gone")
    code, out = reg.cli("registry", "check")
    assert code == 0, out
    assert "consistent: the public tree serves exactly what the database holds" in out

    # What a broken tool or a hand edit leaves in the bucket.
    reg.put("extensions/bkt/SHA256SUMS", b"tampered\n")
    reg.s3.delete_object(Bucket=reg.bucket, Key="channels/beta/extensions/bkt/bkt.conf")
    reg.put("channels/beta/extensions/ghost/SHA256SUMS", b"")
    sha = gone["image"]["sha256"]
    reg.s3.delete_object(Bucket=reg.bucket, Key=f"store/sha256/{sha[:2]}/{sha}")
    objects = sorted(
        (o["Key"], o["ETag"]) for o in reg.s3.list_objects_v2(Bucket=reg.bucket).get("Contents", [])
    )

    code, out = reg.cli("registry", "check")
    assert code == 1, out
    lines = out.splitlines()
    expected = [
        "bkt (stable): the public tree differs from the database",
        "bkt (beta): the public tree differs from the database",
        "ghost (beta): published but unknown to the database",
        f"gone: gone-1.0-x86-64.raw cannot be served: its stored file (sha256 {sha}) is missing",
        # Its row is left out of what should be served, so its directory is unknown too.
        "gone (stable): published but unknown to the database",
    ]
    for start in expected:
        assert any(line.startswith(start) for line in lines), (start, out)
    assert f"{len(expected)} problem(s)" in out, out
    # check only reads.
    after = sorted(
        (o["Key"], o["ETag"]) for o in reg.s3.list_objects_v2(Bucket=reg.bucket).get("Contents", [])
    )
    assert after == objects

    code, out = reg.cli("registry", "repair")
    assert code == 0, out
    assert "deleted row gone gone-1.0-x86-64.raw" in out
    code, out = reg.cli("registry", "check")
    assert code == 0, out

    # Hosts read a signed tree again; ghost and the unservable extension are unpublished.
    assert anonymous_manifest(reg, "extensions/bkt") == ["bkt-1.0-x86-64.raw", "bkt-1.1-x86-64.raw"]
    beta = anonymous_manifest(reg, "channels/beta/extensions/bkt")
    assert beta == ["bkt-1.2-x86-64.raw"]
    conf = requests.get(f"{reg.bucket_url}/channels/beta/extensions/bkt/bkt.conf", timeout=10)
    assert conf.status_code == 200 and "channels/beta/extensions/bkt" in conf.text
    body = requests.get(f"{reg.bucket_url}/extensions/bkt/bkt-1.1-x86-64.raw", timeout=10)
    assert (
        hashlib.sha256(body.content).hexdigest()
        == hashlib.sha256((tmp_path / "bkt-1.1-x86-64.raw").read_bytes()).hexdigest()
    )
    for directory in ("channels/beta/extensions/ghost", "extensions/gone"):
        assert requests.get(f"{reg.bucket_url}/{directory}/SHA256SUMS", timeout=10).status_code in (
            403,
            404,
        )


def test_check_names_an_unreachable_object_store(bucketed: Bucketed) -> None:
    reg = bucketed
    code, out = reg.cli("registry", "check", SYSEXT_S3_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert code == 2, out
    assert "object storage" in out and "Traceback" not in out, out
    assert "hint: check SYSEXT_S3_ENDPOINT" in out
