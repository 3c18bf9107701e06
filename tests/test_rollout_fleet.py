"""The fleet view's sightings (issue 21): queued by the poll path, written by a background
thread, kept across a restart, dropped and counted when the queue is full, never making
a poll wait. Real `sysext serve` (SQLite and PostgreSQL), plain HTTP clients fetching
what systemd-sysupdate fetches; tests/test_rollout_sysupdate.py runs the real client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from sysext.core.rollout import app_specific_id, host_bucket
from tests.registry_server import RegistryServer, build_image, listing, running_registry
from tests.servers import run_cli
from tests.test_rollout_policy import wait_for

NAME = "hello"


@contextlib.contextmanager
def registry(tmp_path: Path, **env: str) -> Iterator[RegistryServer]:
    """hello 1.0 released, 1.1 rolling out at 50 %."""
    settings = {"SYSEXT_ROLLOUT_TICK": "3600", **env}
    with running_registry(tmp_path / "data", env=settings) as reg:
        images = tmp_path / "images"
        images.mkdir()
        token = {"SYSEXT_TOKEN": reg.admin_token}
        for version in ("1.0", "1.1"):
            if version == "1.1":
                args = ("rollout", "set", NAME, "1.1", "--percent", "50")
                assert run_cli(*args, "--registry", reg.url, env=token).returncode == 0
            image = build_image(images, NAME, version)
            assert run_cli("publish", str(image), "--registry", reg.url, env=token).returncode == 0
        yield reg


def hosts(first: int, count: int) -> list[str]:
    return [app_specific_id(f"{n + 1:032x}") for n in range(first, first + count)]


def poll(reg: RegistryServer, host: str, image: bool = False) -> int:
    """A host's poll: its bucket's manifest, and (`image`) the newest image it lists."""
    base = f"{reg.url}/rollouts/stable/{NAME}/{host_bucket(host):02d}/{host}"
    manifest = requests.get(f"{base}/SHA256SUMS", timeout=30)
    if not image or manifest.status_code != 200:
        return manifest.status_code
    # The newest image it lists (a BEST-BEFORE marker line comes after the images).
    newest = listing(manifest.content)[-1].filename
    return requests.get(f"{base}/{newest}", timeout=30, allow_redirects=False).status_code


def poll_all(reg: RegistryServer, ids: list[str], image: bool = False) -> list[int]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda h: poll(reg, h, image), ids))


def fleet(reg: RegistryServer) -> dict[str, Any]:
    response = requests.get(f"{reg.url}/api/v1/extensions/{NAME}/fleet", timeout=60)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def test_sightings_queued_before_a_restart_are_counted_after_it(
    tmp_path: Path, registry_database: str
) -> None:
    # No periodic write (an hour): what reaches the database before the restart is what
    # the worker writes when it shuts down.
    with registry(tmp_path, SYSEXT_WORKERS="1", SYSEXT_FLEET_FLUSH="3600") as reg:
        first = hosts(0, 120)
        assert set(poll_all(reg, first, image=True)) <= {200, 302}
        reg.stop()
        reg.start()
        view = fleet(reg)
        assert view["hosts"] == 120
        assert view["dropped_sightings"] == 0
        # Every host fetched the newest image its bucket lists: 1.1 in offered buckets.
        assert sum(v["hosts"] for v in view["versions"].values()) == 120
        assert set(view["versions"]) <= {"1.0", "1.1"}
        # The same hosts again (manifest only) plus new ones: each host is one row, and a
        # manifest-only poll keeps the version its image fetch recorded.
        more = hosts(120, 30)
        assert set(poll_all(reg, first + more)) == {200}
        again = fleet(reg)
        assert again["hosts"] == 150
        assert again["versions"]["none"]["hosts"] == 30
        before = {k: v["hosts"] for k, v in view["versions"].items()}
        assert {k: v["hosts"] for k, v in again["versions"].items() if k != "none"} == before


def test_every_worker_writes_its_sightings_without_being_asked(
    tmp_path: Path, registry_database: str
) -> None:
    # Two workers, each with its own queue; the fleet view's request flushes only the
    # worker that answers it, so the count reaching 200 shows both flushing threads run.
    with registry(tmp_path, SYSEXT_WORKERS="2", SYSEXT_FLEET_FLUSH="1") as reg:
        ids = hosts(0, 200)
        assert set(poll_all(reg, ids)) == {200}
        wait_for(lambda: fleet(reg)["hosts"] == 200, "200 hosts in the fleet view")


def test_a_full_queue_drops_sightings_counts_them_and_never_fails_a_poll(
    tmp_path: Path, registry_database: str
) -> None:
    env = {"SYSEXT_WORKERS": "1", "SYSEXT_FLEET_FLUSH": "3600", "SYSEXT_FLEET_QUEUE": "10"}
    with registry(tmp_path, **env) as reg:
        ids = hosts(0, 25)
        # One at a time, so exactly the first ten are queued.
        assert [poll(reg, h) for h in ids] == [200] * 25
        view = fleet(reg)
        assert view["hosts"] == 10
        assert view["dropped_sightings"] == 15
        # The queue has room again after the write; the count stays registry-wide.
        assert [poll(reg, h) for h in hosts(25, 5)] == [200] * 5
        view = fleet(reg)
        assert (view["hosts"], view["dropped_sightings"]) == (15, 15)
