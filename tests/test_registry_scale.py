"""Scaling out on real engines: two `sysext serve` replicas sharing one PostgreSQL database
and one bucket of a real Ceph radosgw (tests/ceph_rgw.py), read by hosts straight from the
bucket and through nginx; concurrent publishes, kill -9, database and RGW restarts.

The engines start once per session (conftest.py: `pg_cluster`, `ceph_rgw`); each test
module gets its own database and bucket.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from registry.http.nginx_conf import replicas_block
from sysext.core.errors import SysextError
from sysext.systemd.manifest import best_before_date, parse_manifest
from sysext.trust.signing import export_public_key, generate_key, verify_detached
from tests.ceph_rgw import CephRgw
from tests.pg_cluster import PostgresCluster
from tests.registry_server import RegistryServer, build_image, free_port, listing, running_nginx
from tests.servers import run_cli

pytestmark = pytest.mark.slow


@dataclass
class Replicas:
    a: RegistryServer
    b: RegistryServer
    bucket: str
    bucket_url: str
    database_url: str
    key: Path
    rgw: CephRgw
    pg: PostgresCluster
    images: Path

    def both(self) -> tuple[RegistryServer, RegistryServer]:
        return self.a, self.b


def s3_env(rgw: CephRgw, bucket: str, database_url: str, key: Path) -> dict[str, str]:
    return {
        "SYSEXT_DATABASE_URL": database_url,
        "SYSEXT_S3_ENDPOINT": rgw.endpoint,
        "SYSEXT_S3_BUCKET": bucket,
        "SYSEXT_SIGNING_KEY": str(key),
        "AWS_ACCESS_KEY_ID": rgw.access_key,
        "AWS_SECRET_ACCESS_KEY": rgw.secret_key,
    }


def bucket_env(base: Path, pg: PostgresCluster, rgw: CephRgw, prefix: str) -> dict[str, str]:
    """The environment of a registry on a new bucket and a new database, signing with a new
    key (0600) under `base`."""
    key = base / "key" / "signing.pgp"
    key.parent.mkdir(mode=0o700)
    generate_key(key, "sysext test registry <test@localhost>")
    bucket = f"{prefix}-{uuid.uuid4().hex[:10]}"
    return s3_env(rgw, bucket, pg.create_database(), key)


def s3_client(rgw: CephRgw) -> object:
    return boto3.client(
        "s3",
        endpoint_url=rgw.endpoint,
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: PostgresCluster, ceph_rgw: CephRgw
) -> Iterator[Replicas]:
    base = tmp_path_factory.mktemp("replicas")
    env = bucket_env(base, pg_cluster, ceph_rgw, "sysext")
    bucket, key = env["SYSEXT_S3_BUCKET"], Path(env["SYSEXT_SIGNING_KEY"])
    servers = [
        RegistryServer(data=base / f"data-{n}", port=free_port(), env=dict(env), args=("-w", "1"))
        for n in ("a", "b")
    ]
    for server in servers:
        server.start()
    try:
        yield Replicas(
            a=servers[0],
            b=servers[1],
            bucket=bucket,
            bucket_url=f"{ceph_rgw.endpoint}/{bucket}",
            database_url=env["SYSEXT_DATABASE_URL"],
            key=key,
            rgw=ceph_rgw,
            pg=pg_cluster,
            images=base / "images",
        )
    finally:
        for server in servers:
            server.stop()


def upload(server: RegistryServer, image: Path, channel: str = "stable") -> requests.Response:
    name = image.name.split("-")[0]
    with image.open("rb") as body:
        return requests.put(
            f"{server.url}/api/v1/extensions/{name}/images/{image.name}",
            params={"channel": channel},
            data=body,
            headers=server.headers(),
            timeout=120,
        )


def upload_retrying(server: RegistryServer, image: Path, channel: str = "stable") -> dict:
    """What `sysext publish` users do after a 5xx or a dropped connection: send it again."""
    for _ in range(40):
        try:
            response = upload(server, image, channel)
        except requests.ConnectionError:
            time.sleep(0.5)
            continue
        if response.status_code < 500:
            assert response.status_code == 200, response.text
            result: dict = response.json()
            return result
        time.sleep(0.5)
    raise AssertionError(f"{image.name} never published")


def assert_tree_consistent(replicas: Replicas, names: list[str], channels: tuple[str, ...]) -> int:
    """Every manifest in the bucket verifies with the bucket's keyring (read anonymously),
    and every image it lists downloads with the listed hash. Returns the images checked."""
    keyring = requests.get(f"{replicas.bucket_url}/keyring.gpg", timeout=10)
    assert keyring.status_code == 200
    checked = 0
    for name in names:
        for channel in channels:
            base = f"{replicas.bucket_url}/channels/{channel}/extensions/{name}"
            manifest = requests.get(f"{base}/SHA256SUMS", timeout=10)
            # Never published: S3 answers 403 for a missing key to a reader who may not list.
            if manifest.status_code == 403:
                continue
            assert manifest.status_code == 200, base
            signature = requests.get(f"{base}/SHA256SUMS.gpg", timeout=10)
            verify_detached(keyring.content, manifest.content, signature.content)
            for entry in parse_manifest(manifest.content):
                body = requests.get(f"{base}/{entry.filename}", timeout=30)
                assert body.status_code == 200, f"{base}/{entry.filename}"
                assert hashlib.sha256(body.content).hexdigest() == entry.sha256
                # The BEST-BEFORE marker downloads too (empty), but is no image.
                checked += best_before_date(entry.filename) is None
    return checked


def test_hosts_read_the_signed_tree_from_the_bucket(replicas: Replicas, tmp_path: Path) -> None:
    image = build_image(replicas.images, "hello", "1.0")
    first = upload(replicas.a, image)
    assert first.status_code == 200, first.text
    assert first.json()["created"] is True

    # Anonymous reads, straight from radosgw: no registry process in the path.
    base = f"{replicas.bucket_url}/extensions/hello"
    keyring = requests.get(f"{replicas.bucket_url}/keyring.gpg", timeout=10).content
    assert keyring == export_public_key(replicas.key)
    manifest = requests.get(f"{base}/SHA256SUMS", timeout=10)
    assert manifest.headers["cache-control"].startswith("public, max-age=30")
    verify_detached(keyring, manifest.content, requests.get(f"{base}/SHA256SUMS.gpg").content)
    body = requests.get(f"{base}/hello-1.0-x86-64.raw", timeout=10)
    assert body.content == image.read_bytes()
    assert "immutable" in body.headers["cache-control"]
    transfer = requests.get(f"{base}/hello.conf", timeout=10).text
    assert f"Path={replicas.bucket_url}/extensions/hello" in transfer
    keyring_file = tmp_path / "keyring.gpg"
    keyring_file.write_bytes(keyring)
    check = run_cli("check", base, "--keyring", keyring_file)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "signature: OK" in check.stdout

    # Private: the blob store and listings; a replica redirects reads to the bucket.
    sha = first.json()["image"]["sha256"]
    assert requests.get(f"{replicas.bucket_url}/store/sha256/{sha[:2]}/{sha}").status_code == 403
    assert requests.get(f"{replicas.bucket_url}/").status_code == 403
    assert requests.put(f"{base}/evil.raw", data=b"x", timeout=10).status_code == 403
    redirect = requests.get(f"{replicas.b.url}/extensions/hello/SHA256SUMS", allow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["location"] == f"{base}/SHA256SUMS"
    # Provisioning and the web page read the tree from the bucket too.
    butane = requests.get(f"{replicas.b.url}/api/v1/extensions/hello/butane", timeout=30)
    assert butane.status_code == 200, butane.text
    assert f"{base}/hello-1.0-x86-64.raw" in butane.text
    assert sha in butane.text
    page = requests.get(f"{replicas.a.url}/catalog/hello", timeout=30)
    assert f"Path={replicas.bucket_url}/extensions/hello" in page.text


def test_same_version_from_both_replicas_at_once(replicas: Replicas) -> None:
    same = [build_image(replicas.images, f"twin{n}", "1.0") for n in range(4)]
    other_dir = replicas.images / "other"
    barrier = threading.Barrier(2)

    def race(server: RegistryServer, image: Path) -> requests.Response:
        barrier.wait()
        return upload(server, image)

    for image in same:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(race, replicas.both(), [image, image]))
        assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
        assert sorted(r.json()["created"] for r in results) == [False, True]
    # Other bytes under one name at the same moment: one wins, the other gets 409.
    for n in range(4):
        mine = build_image(replicas.images, f"clash{n}", "1.0", payload="a")
        theirs = build_image(other_dir, f"clash{n}", "1.0", payload="b")
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(race, replicas.both(), [mine, theirs]))
        assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
        winner = results[0] if results[0].status_code == 200 else results[1]
        manifest = requests.get(f"{replicas.bucket_url}/extensions/clash{n}/SHA256SUMS").text
        assert winner.json()["image"]["sha256"] in manifest
    names = [f"twin{n}" for n in range(4)] + [f"clash{n}" for n in range(4)]
    assert assert_tree_consistent(replicas, names, ("stable",)) == 8


def test_no_channel_change_is_lost(replicas: Replicas) -> None:
    versions = [f"1.{n}" for n in range(8)]
    for version in versions:
        upload_retrying(replicas.a, build_image(replicas.images, "chan", version), "beta")

    def promote(args: tuple[RegistryServer, str]) -> int:
        server, version = args
        return requests.post(
            f"{server.url}/api/v1/extensions/chan/versions/{version}/promote",
            params={"channel": "stable"},
            headers=server.headers(),
            timeout=60,
        ).status_code

    jobs = [(replicas.both()[i % 2], v) for i, v in enumerate(versions)]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(promote, jobs)) == [200] * 8
    manifest = requests.get(f"{replicas.bucket_url}/extensions/chan/SHA256SUMS", timeout=10)
    assert [e.filename for e in listing(manifest.content)] == [
        f"chan-{v}-x86-64.raw" for v in versions
    ]
    assert assert_tree_consistent(replicas, ["chan"], ("stable", "beta")) == 16


def test_twenty_uploads_over_two_replicas_while_hosts_poll_the_bucket(
    replicas: Replicas,
) -> None:
    names = ["polla", "pollb"]
    images = [
        build_image(replicas.images, names[n % 2], f"2.{n}", payload=str(n)) for n in range(20)
    ]
    keyring = requests.get(f"{replicas.bucket_url}/keyring.gpg", timeout=10).content
    stop = threading.Event()
    seen = {"verified": 0, "mismatched": 0, "images": 0}
    failures: list[str] = []

    def reader(name: str) -> None:
        base = f"{replicas.bucket_url}/extensions/{name}"
        session = requests.Session()
        while not stop.is_set():
            manifest = session.get(f"{base}/SHA256SUMS", timeout=10)
            if manifest.status_code == 403:  # nothing published yet
                continue
            signature = session.get(f"{base}/SHA256SUMS.gpg", timeout=10)
            try:
                verify_detached(keyring, manifest.content, signature.content)
            except SysextError:
                # A publish between the two GETs (storage/s3.py): the host retries later.
                seen["mismatched"] += 1
                continue
            seen["verified"] += 1
            for entry in parse_manifest(manifest.content):
                head = session.head(f"{base}/{entry.filename}", timeout=10)
                if head.status_code != 200:
                    failures.append(f"{entry.filename}: {head.status_code}")
                seen["images"] += 1

    readers = [threading.Thread(target=reader, args=(n,)) for n in names * 2]
    for thread in readers:
        thread.start()
    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(
                pool.map(
                    lambda pair: upload_retrying(pair[0], pair[1]),
                    [(replicas.both()[n % 2], image) for n, image in enumerate(images)],
                )
            )
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert all(r["created"] for r in results)
    assert failures == []
    assert seen["verified"] > 0 and seen["images"] > 0
    print(f"readers: {seen}")
    assert assert_tree_consistent(replicas, names, ("stable",)) == 20


def test_kill_minus_9_mid_publish_and_mid_upload_then_converge(
    replicas: Replicas, tmp_path: Path
) -> None:
    env = s3_env(replicas.rgw, replicas.bucket, replicas.database_url, replicas.key)
    crashy = RegistryServer(data=tmp_path / "crashy", port=free_port(), env=env, args=("-w", "1"))
    stable_crash = f"{replicas.bucket_url}/extensions/crash/SHA256SUMS"
    # A blob in the bucket's store but no row (garbage at the next start), committed but
    # nothing in the public tree, and a new signature next to the old manifest (the other
    # local-tree crash points run in test_registry_robustness.py).
    points = ("after-store", "after-commit", "between-signature-and-manifest")
    for n, point in enumerate(points):
        image = build_image(replicas.images, "crash", f"3.{n}")
        crashy.start(env={"SYSEXT_FAILPOINT": point})
        with pytest.raises(requests.ConnectionError):
            upload(crashy, image)
        crashy.stop(kill=True)
        # The survivor's next publish of that extension converges the tree: it writes the
        # committed image and a matching signature/manifest pair.
        upload_retrying(replicas.b, build_image(replicas.images, "crash", f"3.{n}.1"))
        listed = {e.filename for e in listing(requests.get(stable_crash).content)}
        assert (f"crash-3.{n}-x86-64.raw" in listed) == (point != "after-store")
        assert assert_tree_consistent(replicas, ["crash"], ("stable",)) == len(listed)
    # Mid-upload: the body is half sent when the replica dies.
    big = tmp_path / "big"
    big.mkdir()
    image = build_image(big, "crash", "3.9", payload="x" * 100)
    crashy.start()

    def slow_body() -> Iterator[bytes]:
        data = image.read_bytes()
        yield data[: len(data) // 2]
        crashy.stop(kill=True)
        yield data[len(data) // 2 :]

    with pytest.raises(requests.ConnectionError):
        requests.put(
            f"{crashy.url}/api/v1/extensions/crash/images/{image.name}",
            data=slow_body(),
            headers=crashy.headers(),
            timeout=60,
        )
    # A restarted replica converges: what was committed is published, signed pairs match.
    crashy.start()
    crashy.stop()
    listed = requests.get(f"{replicas.a.url}/api/v1/extensions/crash", timeout=10).json()
    committed = {i["filename"] for i in listed["images"]}
    assert "crash-3.9-x86-64.raw" not in committed
    manifest = requests.get(f"{replicas.bucket_url}/extensions/crash/SHA256SUMS").text
    assert {e.filename for e in listing(manifest.encode())} == committed
    assert len(committed) == 2 * len(points) - 1
    assert assert_tree_consistent(replicas, ["crash"], ("stable",)) == len(committed)
    # Nothing left in the store that no row references after a restart's garbage collection.
    s3 = s3_client(replicas.rgw)
    stored = s3.list_objects_v2(Bucket=replicas.bucket, Prefix="store/")  # type: ignore[attr-defined]
    shas = {o["Key"].rsplit("/", 1)[-1] for o in stored.get("Contents", [])}
    everything = [
        i["sha256"]
        for name in requests.get(f"{replicas.a.url}/api/v1/extensions", timeout=10).json()
        for i in requests.get(f"{replicas.a.url}/api/v1/extensions/{name['name']}").json()["images"]
    ]
    assert shas == set(everything)


def test_database_and_rgw_restarts_during_publishes(replicas: Replicas) -> None:
    images = [build_image(replicas.images, "restart", f"4.{n}") for n in range(6)]
    done: list[dict] = []

    def publish_all() -> None:
        for n, image in enumerate(images):
            done.append(upload_retrying(replicas.both()[n % 2], image))

    worker = threading.Thread(target=publish_all)
    worker.start()
    while len(done) < 2 and worker.is_alive():
        time.sleep(0.05)
    replicas.pg.restart()
    while len(done) < 4 and worker.is_alive():
        time.sleep(0.05)
    replicas.rgw.restart_rgw()
    worker.join()
    assert len(done) == 6
    assert assert_tree_consistent(replicas, ["restart"], ("stable",)) == 6
    # Both replicas still work after the two restarts (pools reconnect by themselves).
    for n, server in enumerate(replicas.both()):
        after = upload(server, build_image(replicas.images, "restart", f"5.{n}"))
        assert after.status_code == 200, after.text
    assert assert_tree_consistent(replicas, ["restart"], ("stable",)) == 8


def test_a_replica_with_another_key_is_refused(replicas: Replicas, tmp_path: Path) -> None:
    env = s3_env(replicas.rgw, replicas.bucket, replicas.database_url, tmp_path / "k.pgp")
    stranger = RegistryServer(data=tmp_path / "stranger", port=free_port(), env=env)
    with pytest.raises(RuntimeError) as excinfo:
        stranger.start(timeout=60)
    assert "give every replica the same key file" in str(excinfo.value)


def test_migrations_up_down_up_on_postgresql(pg_cluster: PostgresCluster) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import inspect

    from registry.db.models import MIGRATIONS_DIR, make_engine, migrate

    engine = make_engine(pg_cluster.create_database())
    migrate(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"images", "image_channels", "tokens", "alembic_version"} <= tables
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert {"images", "image_channels", "tokens"} <= set(inspect(engine).get_table_names())
    engine.dispose()


@pytest.mark.root
def test_sysupdate_updates_from_the_bucket_and_through_nginx(
    replicas: Replicas, tmp_path: Path
) -> None:
    from tests.sysupdate_client import prepare_root, run_sysupdate

    first = upload(replicas.a, build_image(replicas.images, "e2e", "1.0"))
    assert first.status_code == 200, first.text
    keyring = requests.get(f"{replicas.bucket_url}/keyring.gpg", timeout=10).content
    transfer = requests.get(f"{replicas.bucket_url}/extensions/e2e/e2e.conf", timeout=10).text
    assert "Verify=yes" in transfer and replicas.bucket_url in transfer
    root = prepare_root(tmp_path / "root", "e2e", transfer)
    update = run_sysupdate(root, ["-C", "e2e", "update"], keyring)
    assert update.returncode == 0, update.stderr
    assert "Signature verification succeeded." in update.stderr
    assert "Successfully installed update '1.0'." in update.stderr

    # nginx in front: the public tree comes from the bucket, the API from the replicas.
    upstreams = [f"127.0.0.1:{s.port}" for s in replicas.both()]
    with running_nginx(
        tmp_path / "nginx", lambda listen: replicas_block(listen, upstreams, replicas.bucket_url)
    ) as front:
        assert requests.get(f"{front}/keyring.gpg", timeout=10).content == keyring
        via_front = transfer.replace(replicas.bucket_url, front)
        prepare_root(root, "e2e", via_front)
        # Publish 1.1 through nginx: its API location reaches one of the replicas.
        image = build_image(replicas.images, "e2e", "1.1")
        env = {"SYSEXT_TOKEN": replicas.a.admin_token, "SYSEXT_REGISTRY": front}
        published = run_cli("publish", image, env=env)
        assert published.returncode == 0, published.stderr
        second = run_sysupdate(root, ["-C", "e2e", "update"], keyring)
        assert second.returncode == 0, second.stderr
        assert "Successfully installed update '1.1'." in second.stderr
        assert front in second.stderr
        # Publish 1.2 through replica B directly; the host updates through nginx again,
        # with replica A stopped: hosts do not need any replica.
        assert upload(replicas.b, build_image(replicas.images, "e2e", "1.2")).status_code == 200
        replicas.a.stop()
        try:
            third = run_sysupdate(root, ["-C", "e2e", "update"], keyring)
        finally:
            replicas.a.start()
        assert third.returncode == 0, third.stderr
        assert "Successfully installed update '1.2'." in third.stderr


def test_unreachable_database_or_bucket_is_a_one_line_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cases = {
        "cannot use database postgresql+psycopg://sysext:***@127.0.0.1": {
            "SYSEXT_DATABASE_URL": f"postgresql+psycopg://sysext:hunter2@127.0.0.1:{port}/x"
        },
        "cannot use bucket 'nope' at http://127.0.0.1": {
            "SYSEXT_S3_ENDPOINT": f"http://127.0.0.1:{port}",
            "SYSEXT_S3_BUCKET": "nope",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_MAX_ATTEMPTS": "1",
        },
    }
    for n, (message, env) in enumerate(cases.items()):
        result = run_cli("serve", "--data", tmp_path / f"d{n}", "--port", str(free_port()), env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert message in lines[0], result.stderr
        assert "hunter2" not in result.stderr + result.stdout
        assert not (tmp_path / f"d{n}" / "public").exists()
