"""Staged rollouts from an S3 bucket (issue 21): a real Ceph radosgw, PostgreSQL, and the
real systemd-sysupdate 254, 257 and 262. Hosts read their bucket directory straight from the
object store (`--static`, no host ID), point at a replica that records them and redirects to
the bucket, or go through the shipped replicas nginx block, which drops the host ID and sends
a replica a copy of each poll for the fleet view.

Every machine's transfer file is what `sysext transfer` prints for its host ID; each client
updates its own root of every machine (the same 20 machines, so the fleet counts stay those
of 20 hosts, whichever client polled last; and `sysext transfer` runs 21 times, not 63)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from registry.http.nginx_conf import replicas_block
from sysext.core.rollout import app_specific_id, host_bucket, offered_buckets
from tests.ceph_rgw import CephRgw
from tests.pg_cluster import PostgresCluster
from tests.registry_server import RegistryServer, build_image, free_port, running_nginx
from tests.servers import run_cli
from tests.sysupdate_client import follow_mkdir_instruction, run_sysupdates
from tests.test_registry_scale import bucket_env
from tests.test_rollout_sysupdate import CLIENTS, ROLLOUT_KEY, admin, fleet_when

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def s3_registry(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: PostgresCluster, ceph_rgw: CephRgw
) -> Iterator[tuple[RegistryServer, str]]:
    base = tmp_path_factory.mktemp("rollout-s3")
    env = bucket_env(base, pg_cluster, ceph_rgw, "rollout")
    env |= {"SYSEXT_FLEET_FLUSH": "0", "SYSEXT_ROLLOUT_TICK": "3600"}
    server = RegistryServer(data=base / "data", port=free_port(), env=env, args=("-w", "1"))
    server.start()
    try:
        dsn = env["SYSEXT_DATABASE_URL"].replace("+psycopg", "")
        with psycopg.connect(dsn) as db:
            fixed = "UPDATE registry_meta SET value = %s WHERE key = 'rollout_key'"
            db.execute(fixed, (ROLLOUT_KEY,))
        yield server, f"{ceph_rgw.endpoint}/{env['SYSEXT_S3_BUCKET']}"
    finally:
        server.stop()


def transfer(registry: str, number: int, *, static: bool) -> tuple[str, str]:
    """The transfer file `sysext transfer` prints for machine `number`, and its host ID."""
    host_id = app_specific_id(f"{number + 1:032x}")
    argv = ["transfer", "hello", "--registry", registry, "--any-os", "--host-id", host_id]
    result = run_cli(*argv, *(["--static"] if static else []))
    assert result.returncode == 0, result.stderr
    return result.stdout, host_id


def install(root: Path, text: str, client: int) -> Path:
    """A host ROOT with the transfer file where `client` reads it: NAME.conf for 252-256,
    NAME.transfer for 257+ (which read .conf only with a warning)."""
    suffix = "conf" if client < 257 else "transfer"
    (root / "etc/sysupdate.hello.d").mkdir(parents=True)
    (root / f"etc/sysupdate.hello.d/hello.{suffix}").write_text(text)
    (root / "etc/os-release").write_text("ID=flatcar\nVERSION_ID=4081.2.0\n")
    follow_mkdir_instruction(root, text)
    return root


def running(roots: list[Path], keyring: bytes, client: int) -> list[str]:
    """Each host updates once (all at once, run_sysupdates); what each then runs."""
    results = run_sysupdates(roots, ["-C", "hello", "update"], keyring, client=client)
    versions = []
    for root, result in zip(roots, results, strict=True):
        assert result.returncode == 0, (client, root.name, result.stderr[-3000:])
        link = (root / "etc/extensions/hello.raw").readlink()
        versions.append(link.name.removeprefix("hello-").removesuffix("-x86-64.raw"))
    return versions


@contextlib.contextmanager
def replicas_nginx(reg: RegistryServer, bucket_url: str, prefix: Path) -> Iterator[str]:
    """The shipped replicas block (sysext-replicas.conf) in front of the bucket."""
    replicas = [f"127.0.0.1:{reg.port}"]
    with running_nginx(prefix, lambda listen: replicas_block(listen, replicas, bucket_url)) as url:
        yield url


def test_rollout_from_the_bucket(s3_registry: tuple[RegistryServer, str], tmp_path: Path) -> None:
    reg, bucket_url = s3_registry
    images = tmp_path / "images"
    images.mkdir()
    admin(reg, "publish", str(build_image(images, "hello", "1.0")))
    with replicas_nginx(reg, bucket_url, tmp_path / "nginx") as front:
        # Before any rollout there is no tree: nginx reads the channel directory.
        early = transfer(front, 300, static=False)[0]
        for client in CLIENTS:
            root = install(tmp_path / f"early{client}", early, client)
            assert running([root], reg.keyring(), client) == ["1.0"]
        rollout_phases(reg, bucket_url, front, images, tmp_path)


def rollout_phases(
    reg: RegistryServer, bucket_url: str, front: str, images: Path, tmp_path: Path
) -> None:
    """50 % then 100 %, for hosts reading the bucket, a replica and the nginx block; one
    host polled through nginx before (on 1.0)."""
    admin(reg, "rollout", "set", "hello", "1.1", "--percent", "50")
    admin(reg, "publish", str(build_image(images, "hello", "1.1")))
    keyring = reg.keyring()
    offered = offered_buckets(bytes.fromhex(ROLLOUT_KEY), "hello", "1.1", 50)

    direct = [(f"d{n}", *transfer(bucket_url, n, static=True)) for n in range(8)]
    via_replica = [(f"r{n}", *transfer(reg.url, 100 + n, static=False)) for n in range(6)]
    via_nginx = [(f"n{n}", *transfer(front, 200 + n, static=False)) for n in range(6)]
    machines = [*direct, *via_replica, *via_nginx]
    for path in (direct, via_replica, via_nginx):  # both kinds of bucket on every path
        assert {host_bucket(h) in offered for _, _, h in path} == {True, False}
    want = ["1.1" if host_bucket(h) in offered else "1.0" for _, _, h in machines]
    roots = {
        client: [install(tmp_path / str(client) / name, text, client) for name, text, _ in machines]
        for client in CLIENTS
    }
    behind_nginx = {h for _, _, h in via_nginx}
    for number, client in enumerate(CLIENTS, 1):
        got = running(roots[client], keyring, client)
        assert got == want, (client, [(name, host_bucket(h)) for name, _, h in machines])
        # The fleet counts below are the same whichever client polled last: that each
        # client's polls through nginx reached the replica shows in its log, one copy each.
        copied = len(via_nginx) * number
        assert poll_copies_when(reg, behind_nginx, copied) == copied, client
    # The replica saw its own hosts and, from the nginx block's copies, those behind nginx
    # (and the one that polled nginx before, on 1.0); the bucket's readers are invisible.
    seen = [*via_replica, *via_nginx]
    on_11 = sum(host_bucket(h) in offered for _, _, h in seen)
    want_counts = {v: n for v, n in (("1.0", len(seen) + 1 - on_11), ("1.1", on_11)) if n}
    assert counts(fleet_when(reg, want_counts)) == want_counts
    # Every bucket directory in the bucket lists the channel's BEST-BEFORE marker (signed
    # with it: the hosts above verified it) and serves the empty file it names.
    channel = requests.get(f"{bucket_url}/extensions/hello/SHA256SUMS", timeout=10).text
    (marker,) = [line.split()[1] for line in channel.splitlines() if "BEST-BEFORE-" in line]
    for bucket in (0, 63, 99):
        directory = f"{bucket_url}/rollouts/stable/hello/{bucket:02d}"
        listed = requests.get(f"{directory}/SHA256SUMS", timeout=10).text
        assert listed.splitlines()[-1].endswith(f" {marker}"), listed
        assert requests.get(f"{directory}/{marker}", timeout=10).content == b""
    admin(reg, "rollout", "set", "hello", "1.1", "--percent", "100")
    for client in CLIENTS:
        assert running(roots[client], keyring, client) == ["1.1"] * len(machines)
    want_counts = {"1.0": 1, "1.1": len(seen)}
    assert counts(fleet_when(reg, want_counts)) == want_counts


def counts(fleet: dict[str, Any]) -> dict[str, int]:
    return {v: e["hosts"] for v, e in fleet["versions"].items()}


def poll_copies_when(reg: RegistryServer, host_ids: set[str], want: int) -> int:
    """How many copies of those hosts' polls (HEAD .../HOSTID/SHA256SUMS) the replica has
    logged, once that is `want`, or after 60 s (a copy may arrive after the host's answer)."""
    deadline = time.monotonic() + 60
    while True:
        got = sum(
            "method=HEAD" in line and any(f"/{h}/SHA256SUMS " in line for h in host_ids)
            for line in reg.log().splitlines()
        )
        if got >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)
