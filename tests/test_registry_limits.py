"""Issue 13, finding 2: `sysext serve` facing hostile clients directly (no token needed).

Each attack of the finding against a real server with its shipped limits (only the header
deadline shortened to keep the test short): half-sent headers are cut off, oversized
headers refused without being buffered, idle connections cannot starve new requests even
when file descriptors run short, kept-alive connections are recycled.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.registry_server import RegistryServer, free_port

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def serving(
    tmp_path: Path, *args: str, nofile: int | None = None, **env: str
) -> Iterator[RegistryServer]:
    reg = RegistryServer(
        data=tmp_path / "data", port=free_port(), args=args, env=env, nofile=nofile
    )
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(4096):
            out += chunk
    return out


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Shipped limits, but a 1 s header deadline and 3 requests per connection."""
    with serving(
        tmp_path_factory.mktemp("limits"), "--header-timeout", "1",
        SYSEXT_MAX_KEEPALIVE_REQUESTS="3",
    ) as reg:  # fmt: skip
        yield reg


def test_half_sent_headers_are_cut_off(limited: RegistryServer) -> None:
    reg = limited
    slow = socket.create_connection(("127.0.0.1", reg.port))
    slow.sendall(b"GET /keyring.gpg HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    idle = socket.create_connection(("127.0.0.1", reg.port))
    # Trickling bytes does not extend the deadline (it used to, forever).
    answer = b""
    for _ in range(40):
        with contextlib.suppress(OSError):
            slow.sendall(b"a")
        slow.settimeout(0.25)
        with contextlib.suppress(TimeoutError):
            answer = slow.recv(4096)
        if answer:
            break
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert _read_all(idle, 30) == b""  # closed silently, never answered
    assert requests.get(f"{reg.url}/keyring.gpg", timeout=10).status_code == 200


def test_oversized_headers_are_refused_in_bounded_memory(limited: RegistryServer) -> None:
    reg = limited
    before = reg.rss_kib()
    answers = []
    for _ in range(5):  # the finding: five unfinished 50 MiB headers, +257 MiB RSS
        sock = socket.create_connection(("127.0.0.1", reg.port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(OSError):
            for _chunk in range(50 * 16):
                sock.sendall(b"a" * 65536)
        answers.append(_read_all(sock, 10))
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 431") for a in answers), answers
    assert reg.rss_kib("VmHWM") - before < 32 * 1024
    assert requests.get(f"{reg.url}/api/v1/status", timeout=10).status_code == 200


def test_idle_connections_cannot_starve_new_requests(tmp_path: Path) -> None:
    # The finding's setting: 200 file descriptors, 180 idle connections.
    with serving(tmp_path, nofile=200) as reg:
        idle = [socket.create_connection(("127.0.0.1", reg.port)) for _ in range(180)]
        try:
            for _ in range(20):
                answer = requests.get(f"{reg.url}/api/v1/status", timeout=10)
                assert answer.status_code == 200
            # The oldest idle connections were closed to make room.
            assert _read_all(idle[0], 5) == b""
        finally:
            for sock in idle:
                sock.close()
        assert "Too many open files" not in reg.log()


def test_keep_alive_connections_are_recycled(limited: RegistryServer) -> None:
    reg = limited
    session = requests.Session()
    closing = [
        session.get(f"{reg.url}/api/v1/status", timeout=10).headers.get("connection")
        for _ in range(4)
    ]
    assert closing[:3] == [None, None, "close"], closing


def test_limits_are_configurable_and_checked(tmp_path: Path) -> None:
    from tests.servers import run_cli

    result = run_cli("serve", "--data", tmp_path / "d", "--header-timeout", "0")
    assert result.returncode == 2
    assert "invalid value" in result.stdout + result.stderr
