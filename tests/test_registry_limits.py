"""Issue 13, finding 2 and issue 19, findings 2, 3 and 15: `sysext serve` facing hostile
clients directly.

Each attack of the findings against a real server with its shipped limits (only deadlines
shortened to keep the tests short): half-sent headers are cut off, oversized headers
refused without being buffered (and whatever the read boundaries), idle connections
cannot starve new requests even when file descriptors run short, kept-alive connections
are recycled; slow bodies (answered or not) and slow readers are cut off, the connection
cap evicts answered trickling connections first, and a token revoked or expired while its
upload streams publishes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.registry_server import RegistryServer, build_image, free_port

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

    for flag in ("--header-timeout", "--min-rate", "--stall-timeout", "--upload-timeout"):
        result = run_cli("serve", "--data", tmp_path / "d", flag, "0")
        assert result.returncode == 2, flag
        assert "invalid value" in result.stdout + result.stderr
    assert not (tmp_path / "d").exists()


# --- issue 19: every phase after the headers has a deadline too --------------------------
#
# Small deadlines keep these short: a body must keep up with 100 bytes/s after 2 s of
# grace and be complete within 6 s, the rest of a body after the answer is read for at
# most 4 s, a response must be taken at 100 bytes/s after 2 s. The clients trickle one
# byte a second (the finding: one every 3 s, which the shipped 1 KiB/s after 10 s cuts
# the same way).

SLOW_ARGS = ("--stall-timeout", "2", "--min-rate", "100", "--upload-timeout", "6")
TCP_ESTABLISHED, TCP_CLOSE = 1, 7


def _tcp_state(sock: socket.socket) -> int:
    # The first byte of struct tcp_info: tells a reset from a close without reading.
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def _trickle(sock: socket.socket, rounds: int = 40, byte: bytes = b"x") -> tuple[bytes, bool]:
    """Send `byte` about once a second, collecting the answer, until the server closes the
    connection (True) or `rounds` went out with the connection still open (False)."""
    received = b""
    for _ in range(rounds):
        try:
            sock.sendall(byte)
        except OSError:  # reset by the server
            return received, True
        sock.settimeout(1)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def _closed_by_server(sock: socket.socket, timeout: float = 5) -> bool:
    """True if the server closed (or reset) `sock`; unread answers are skipped."""
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(65536):
            del chunk
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.fixture(scope="module")
def slow_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Small body, linger and send deadlines; one published image of 8 MiB."""
    base = tmp_path_factory.mktemp("slow")
    big = build_image(base / "images", "big", "1.0", filler=8 << 20)
    with serving(base, *SLOW_ARGS, SYSEXT_LINGER_TIMEOUT="4") as reg:
        with open(big, "rb") as body:
            requests.put(
                f"{reg.url}/api/v1/extensions/big/images/{big.name}",
                data=body,
                headers=reg.headers(),
                timeout=60,
            ).raise_for_status()
        yield reg


def _tree(reg: RegistryServer) -> dict[str, bytes]:
    public = reg.data / "public"
    return {
        str(p.relative_to(public)): p.read_bytes() if p.is_file() else b"->" + str(p).encode()
        for p in sorted(public.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


@pytest.mark.parametrize(
    "byte",
    [b"x", b"x" * 300],  # 1 byte/s: under the rate; 300 bytes/s: over it, but for too long
    ids=["under-min-rate", "over-upload-timeout"],
)
def test_slow_body_is_cut_off_with_408_and_nothing_kept(
    slow_limited: RegistryServer, byte: bytes
) -> None:
    reg = slow_limited
    sock = socket.create_connection(("127.0.0.1", reg.port))
    sock.sendall(
        b"PUT /api/v1/extensions/slow/images/slow-1.0-x86-64.raw HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + reg.admin_token.encode() + b"\r\n"
        b"Content-Length: 100000\r\n\r\n" + b"x" * 10
    )
    answer, closed = _trickle(sock, byte=byte)
    assert closed and answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request body not received in time" in answer
    # The staged part of the upload is gone once the app has seen the disconnect.
    for _ in range(50):
        if not list((reg.data / "tmp").iterdir()):
            break
        time.sleep(0.1)
    assert list((reg.data / "tmp").iterdir()) == []
    assert requests.get(f"{reg.url}/api/v1/extensions/slow", timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("request_head", "status", "byte"),
    [
        # A public file answers at once; the declared gigabyte then trickles (the finding).
        (b"GET /keyring.gpg HTTP/1.1\r\nHost: x\r\n", b"200", b"x"),
        # No token: 401 before a byte of the body is read; the body keeps trickling.
        (b"PUT /api/v1/extensions/big/images/big-2.0-x86-64.raw HTTP/1.1\r\nHost: x\r\n",
         b"401", b"x"),
        # Fast enough for the rate (200 bytes/s), but after the answer only linger_timeout.
        (b"GET /keyring.gpg HTTP/1.1\r\nHost: x\r\n", b"200", b"x" * 200),
    ],
    ids=["get-then-trickle", "put-401-then-trickle", "answered-fast-body"],
)  # fmt: skip
def test_answered_connection_still_sending_a_body_is_closed(
    slow_limited: RegistryServer, request_head: bytes, status: bytes, byte: bytes
) -> None:
    reg = slow_limited
    sock = socket.create_connection(("127.0.0.1", reg.port))
    sock.sendall(request_head + b"Content-Length: 1000000000\r\n\r\n")
    answer, closed = _trickle(sock, byte=byte)
    assert answer.startswith(b"HTTP/1.1 " + status), answer
    assert closed, "the server kept reading the body of an answered request"
    assert requests.get(f"{reg.url}/keyring.gpg", timeout=10).status_code == 200


def test_slow_reader_is_reset(slow_limited: RegistryServer) -> None:
    reg = slow_limited
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, never read
    reader.connect(("127.0.0.1", reg.port))
    reader.sendall(b"GET /extensions/big/big-1.0-x86-64.raw HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(60):
        if _tcp_state(reader) != TCP_ESTABLISHED:
            break
        time.sleep(0.5)
    # Reset (not a polite close the kernel would keep trying to deliver for minutes).
    assert _tcp_state(reader) == TCP_CLOSE
    reader.close()
    # A client that reads gets the whole image.
    got = requests.get(f"{reg.url}/extensions/big/big-1.0-x86-64.raw", timeout=60)
    assert got.status_code == 200 and len(got.content) > 8 << 20


def test_headers_over_the_limit_get_431_whatever_the_read_boundaries(
    slow_limited: RegistryServer,
) -> None:
    reg = slow_limited

    def status_of(raw: bytes) -> bytes:
        sock = socket.create_connection(("127.0.0.1", reg.port))
        sock.sendall(raw)  # one write: on loopback it arrives in one read (the finding)
        return _read_all(sock, 10)[:12]

    big_header = b"GET /keyring.gpg HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000
    assert status_of(big_header + b"\r\nConnection: close\r\n\r\n") == b"HTTP/1.1 431"
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(70))
    assert status_of(b"GET /keyring.gpg HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n") == (
        b"HTTP/1.1 431"
    )
    long_url = b"GET /keyring.gpg?" + b"q" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert status_of(long_url) == b"HTTP/1.1 431"
    # Under the limit is fine.
    fits = b"GET /keyring.gpg HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000
    assert status_of(fits + b"\r\nConnection: close\r\n\r\n") == b"HTTP/1.1 200"


def test_cap_evicts_answered_trickling_connections_before_idle_ones(tmp_path: Path) -> None:
    with serving(tmp_path, "--workers", "1", "--max-connections", "2") as reg:
        idle = socket.create_connection(("127.0.0.1", reg.port))  # oldest, sent nothing
        trickling = socket.create_connection(("127.0.0.1", reg.port))
        trickling.sendall(b"GET /keyring.gpg HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n")
        trickling.settimeout(10)
        assert trickling.recv(12) == b"HTTP/1.1 200"  # answered; its body never comes
        newcomer = socket.create_connection(("127.0.0.1", reg.port))
        assert _closed_by_server(trickling)
        for sock in (idle, newcomer):  # both still served
            sock.sendall(b"GET /keyring.gpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_all(sock, 10).startswith(b"HTTP/1.1 200")


# --- issue 19, finding 3: a token revoked while its upload streams publishes nothing ---


def _create_token(reg: RegistryServer, **fields: object) -> tuple[int, str]:
    answer = requests.post(
        f"{reg.url}/api/v1/tokens",
        json={"scopes": ["hello"], "description": "ci", **fields},
        headers=reg.headers(),
        timeout=10,
    )
    answer.raise_for_status()
    return int(answer.json()["id"]), str(answer.json()["token"])


def _put_head(name: str, filename: str, token: str, size: int) -> bytes:
    return (
        f"PUT /api/v1/extensions/{name}/images/{filename} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_token_revoked_or_expired_mid_upload_publishes_nothing(tmp_path: Path, how: str) -> None:
    from tests.registry_server import database_dump

    image = build_image(tmp_path / "images", "hello", "1.0").read_bytes()
    with serving(tmp_path) as reg:
        expiry = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
        token_id, token = _create_token(
            reg, **({"expires_at": expiry.isoformat()} if how == "expired" else {})
        )
        sock = socket.create_connection(("127.0.0.1", reg.port))
        sock.sendall(_put_head("hello", "hello-1.0-x86-64.raw", token, len(image)))
        half = len(image) // 2
        sock.sendall(image[:half])
        # Authenticated and streaming once the upload's staging file exists: only then is a
        # revocation "mid-upload" (before, the request itself is refused at its start).
        deadline = time.monotonic() + 30
        while not any((reg.data / "tmp").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any((reg.data / "tmp").glob("*")), "the upload never started streaming"
        if how == "revoked":
            revoked = requests.delete(
                f"{reg.url}/api/v1/tokens/{token_id}", headers=reg.headers(), timeout=10
            )
            assert revoked.status_code == 200
        else:
            while dt.datetime.now(dt.UTC) <= expiry + dt.timedelta(seconds=1):
                time.sleep(0.2)
        database, tree = database_dump(reg), _tree(reg)
        sock.sendall(image[half:])
        answer = _read_all(sock, 60)
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert f"token {token_id}".encode() in answer and b"nothing was changed" in answer
        assert database_dump(reg) == database and _tree(reg) == tree
        assert requests.get(f"{reg.url}/api/v1/extensions/hello", timeout=10).status_code == 404


def test_token_revoked_just_before_the_commit_publishes_nothing(tmp_path: Path) -> None:
    """The re-check runs in the transaction that commits: a revocation that lands after
    the upload was received, validated and stored, while the publish waits for the
    database's write lock, still refuses it (SQLite: the test holds the lock meanwhile)."""
    import sqlite3

    image = build_image(tmp_path / "images", "hello", "1.0").read_bytes()
    with serving(tmp_path) as reg:
        token_id, token = _create_token(reg)
        tree = _tree(reg)
        writer = sqlite3.connect(reg.data / "registry.db", timeout=30, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # the one write lock: the publish will wait for it
        sock = socket.create_connection(("127.0.0.1", reg.port))
        sock.sendall(_put_head("hello", "hello-1.0-x86-64.raw", token, len(image)) + image)
        # Its blob reaches the store only after the early check passed.
        blobs = reg.data / "store" / "sha256"
        for _ in range(300):
            if blobs.is_dir() and any(blobs.rglob("*")):
                break
            time.sleep(0.1)
        assert any(blobs.rglob("*")), reg.log()[-2000:]
        writer.execute(
            "UPDATE tokens SET revoked_at = '2020-01-01 00:00:00.000000' WHERE id = ?",
            (token_id,),
        )
        writer.execute("COMMIT")
        writer.close()
        answer = _read_all(sock, 60)
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert b"was revoked" in answer
        assert _tree(reg) == tree
        assert requests.get(f"{reg.url}/api/v1/extensions/hello", timeout=10).status_code == 404
        with sqlite3.connect(reg.data / "registry.db") as db:
            assert db.execute("SELECT count(*) FROM images").fetchone() == (0,)
            published = db.execute(
                "SELECT count(*) FROM audit_log WHERE action = 'image.publish'"
            ).fetchone()
            assert published == (0,)
