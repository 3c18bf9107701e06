"""Concurrency and crash safety of publishing, against a real `sysext serve`."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from sysext.core.errors import SysextError
from sysext.systemd.manifest import best_before_date, parse_manifest
from sysext.trust.signing import verify_detached
from tests.registry_server import RegistryServer, build_image, free_port, listing

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("images")
    for minor in range(20):
        build_image(out, "conc", f"1.{minor}")
    build_image(out, "crash", "1.0")
    build_image(out, "crash", "2.0")
    return out


def _upload(
    server: RegistryServer, image: Path, name: str, timeout: float = 60
) -> requests.Response:
    with open(image, "rb") as body:
        return requests.put(
            f"{server.url}/api/v1/extensions/{name}/images/{image.name}",
            data=body,
            headers=server.headers(),
            timeout=timeout,
        )


def _consistent_view(base: str, keyring: bytes) -> list[str]:
    """Fetch the manifest + signature like a host; assert it verifies and every file downloads."""
    manifest = requests.get(f"{base}/SHA256SUMS", timeout=30).content
    signature = requests.get(f"{base}/SHA256SUMS.gpg", timeout=30).content
    verify_detached(keyring, manifest, signature)
    names = []
    for entry in parse_manifest(manifest):
        body = requests.get(f"{base}/{entry.filename}", timeout=30)
        assert body.status_code == 200, entry.filename
        assert hashlib.sha256(body.content).hexdigest() == entry.sha256
        if best_before_date(entry.filename) is None:  # the marker file downloads too
            names.append(entry.filename)
    return names


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RegistryServer]:
    # Two worker processes where writers contend (the flock must hold across processes).
    workers = "2" if "parallel" in request.node.name else "1"
    reg = RegistryServer(data=tmp_path / "data", port=free_port(), args=("--workers", workers))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


def test_parallel_uploads_while_readers_poll(server: RegistryServer, images: Path) -> None:
    seed = images / "conc-1.0-x86-64.raw"
    first = _upload(server, seed, "conc")
    assert first.status_code == 200, first.text + server.log()[-3000:]
    keyring = server.keyring()
    base = f"{server.url}/extensions/conc"
    stop = threading.Event()
    verified: list[int] = []
    raced: list[int] = []
    failures: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            before = requests.get(f"{base}/SHA256SUMS", timeout=30).content
            signature = requests.get(f"{base}/SHA256SUMS.gpg", timeout=30).content
            after = requests.get(f"{base}/SHA256SUMS", timeout=30).content
            if before != after:
                # A publish landed between the two requests: the pair is from two
                # snapshots (documented; sysupdate retries on its next run). Not a snapshot
                # inconsistency, so it is not what this test judges.
                raced.append(1)
                continue
            try:
                verify_detached(keyring, before, signature)
                for entry in parse_manifest(before):
                    body = requests.get(f"{base}/{entry.filename}", timeout=30)
                    if hashlib.sha256(body.content).hexdigest() != entry.sha256:
                        failures.append(f"{entry.filename}: {body.status_code}")
            except SysextError as exc:
                failures.append(str(exc))
            verified.append(len(listing(before)))

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    uploads = sorted(images.glob("conc-*.raw"))
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(pool.map(lambda p: _upload(server, p, "conc").status_code, uploads))
    finally:
        time.sleep(0.5)
        stop.set()
        for thread in readers:
            thread.join()
    assert statuses == [200] * 20
    assert not failures, failures[:5]
    assert len(verified) >= 3
    assert max(verified) == 20  # readers saw the final state too
    assert sorted(_consistent_view(base, keyring)) == sorted(p.name for p in uploads)


def _state_is_consistent(server: RegistryServer, expect: set[str]) -> None:
    base = f"{server.url}/extensions/crash"
    assert set(_consistent_view(base, server.keyring())) == expect
    listed = {
        i["filename"]
        for i in requests.get(f"{server.url}/api/v1/extensions/crash", timeout=10).json()["images"]
    }
    assert listed == expect
    blobs = {p.name for p in (server.data / "store").rglob("*") if p.is_file()}
    assert len(blobs) == len(expect)  # no orphan blob
    assert list((server.data / "tmp").iterdir()) == []
    assert not [p for p in (server.data / "public").rglob(".#*")]


@pytest.mark.parametrize("point", ["after-store", "after-commit", "before-swap", "between-swaps"])
def test_kill_mid_publish_keeps_a_consistent_state(
    server: RegistryServer, images: Path, point: str
) -> None:
    first, second = images / "crash-1.0-x86-64.raw", images / "crash-2.0-x86-64.raw"
    assert _upload(server, first, "crash").status_code == 200
    server.stop()
    server.start(env={"SYSEXT_FAILPOINT": point})
    with pytest.raises(requests.ConnectionError):
        _upload(server, second, "crash")
    server.stop(kill=True)  # the other worker and the supervisor go down too
    server.start()
    committed = point != "after-store"
    expect = {first.name, second.name} if committed else {first.name}
    _state_is_consistent(server, expect)
    # Publishing again converges: created if the crash lost it, idempotent otherwise.
    again = _upload(server, second, "crash")
    assert again.status_code == 200 and again.json()["created"] is (not committed)
    _state_is_consistent(server, {first.name, second.name})


def test_kill_mid_upload_leaves_nothing(server: RegistryServer, images: Path) -> None:
    first = images / "crash-1.0-x86-64.raw"
    assert _upload(server, first, "crash").status_code == 200
    sent = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"\0" * (1 << 20)
        sent.set()
        for _ in range(200):
            time.sleep(0.05)
            yield b"\0" * (1 << 16)

    def upload() -> None:
        # The server dies mid-request: a connection error is the expected outcome.
        with contextlib.suppress(requests.RequestException):
            requests.put(
                f"{server.url}/api/v1/extensions/crash/images/crash-3.0-x86-64.raw",
                data=slow_body(),
                headers=server.headers(),
                timeout=60,
            )

    thread = threading.Thread(target=upload)
    thread.start()
    assert sent.wait(30)
    deadline = time.monotonic() + 30
    while not list((server.data / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((server.data / "tmp").iterdir()), "the upload never reached the disk"
    server.stop(kill=True)
    thread.join()
    server.start()
    _state_is_consistent(server, {first.name})
