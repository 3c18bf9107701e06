"""OpenAPI-driven fuzzing (schemathesis) of a real registry: no input may cause a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.registry_server import build_image, running_registry
from tests.servers import run_cli

pytestmark = pytest.mark.slow


def test_no_server_errors(tmp_path: Path) -> None:
    image = build_image(tmp_path / "images", "hello", "1.0")
    with running_registry(tmp_path / "data") as reg:
        env = {"SYSEXT_TOKEN": reg.admin_token, "SYSEXT_REGISTRY": reg.url}
        assert run_cli("publish", image, env=env).returncode == 0
        st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
        # Authenticated, so the write paths run their validation too; bounded examples
        # keep it well under a minute.
        proc = subprocess.run(
            [
                st,
                "run",
                f"{reg.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "15",
                "--phases",
                "examples,coverage,fuzzing",
                "--seed",
                "1",
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "-H",
                f"Authorization: Bearer {reg.admin_token}",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,  # schemathesis keeps a cache directory in its working directory
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:] + reg.log()[-3000:]
        summary = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
        assert summary, proc.stdout[-2000:]
        assert int(summary[2]) == int(summary[1]) >= 100  # it really sent many requests
        # The fuzzer's garbage left nothing half-written behind.
        assert list((reg.data / "tmp").iterdir()) == []


# --- our own generators: raw requests (paths, headers, tokens) and mutated images ----------

import contextlib  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

import requests  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.registry_server import RegistryServer  # noqa: E402

_SEGMENTS = st.one_of(
    st.sampled_from(
        ["extensions", "hello", "SHA256SUMS", "SHA256SUMS.gpg", "hello-1.0-x86-64.raw",
         "api", "v1", "tokens", "catalog", "static", "channels", "beta", "..", ".", "",
         "%00", "%0a", "%0d%0a", "%ff", "%2e%2e", "%2f", "%25", "\u00e9", "\u00b2",
         ".#x", "keyring.gpg", "a" * 300]
    ),
    st.text(min_size=0, max_size=12),
)  # fmt: skip
_TOKENS = st.one_of(
    st.builds(
        lambda ident, secret: f"sxt_{ident}_{secret}",
        st.text(alphabet="0123456789\u00b2\u0663\u096b_x", max_size=12),
        st.text(max_size=20),
    ),
    st.text(max_size=40),
)
_HEADERS = st.lists(
    st.one_of(
        st.builds(lambda v: ("Range", v), st.from_regex(r"bytes=[0-9-,]{0,20}|[a-z=0-9-]{0,12}")),
        st.builds(lambda v: ("If-None-Match", v), st.text(max_size=30)),
        st.builds(lambda v: ("If-Range", v), st.text(max_size=30)),
        st.builds(lambda v: ("Authorization", "Bearer " + v), _TOKENS),
        st.builds(lambda v: ("Content-Length", v), st.from_regex(r"-?[0-9]{0,20}|x")),
        st.builds(lambda v: ("Content-Type", v), st.text(max_size=20)),
        st.builds(lambda v: ("X-" + v[:1].isalpha() * "a", v), st.text(max_size=50)),
    ),
    max_size=5,
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    base = tmp_path_factory.mktemp("fuzz")
    images = [
        build_image(base / "images", "hello", "1.0"),
        build_image(base / "images", "big", "1.0", filler=4 << 20),  # for slow readers
    ]
    # Short deadlines (issue 19): a body or a response at less than 100 bytes/s after 2 s
    # is cut, the rest of an answered request's body is read for 4 s at most.
    with running_registry(
        base / "data",
        args=("--header-timeout", "5", "--stall-timeout", "2", "--min-rate", "100"),
        env={"SYSEXT_LINGER_TIMEOUT": "4"},
    ) as reg:
        for image in images:
            name = image.name.split("-", 1)[0]
            with open(image, "rb") as body:
                requests.put(
                    f"{reg.url}/api/v1/extensions/{name}/images/{image.name}",
                    data=body,
                    headers=reg.headers(),
                    timeout=60,
                ).raise_for_status()
        yield reg


def _send(server: RegistryServer, raw: bytes) -> int | None:
    """Status of the answer to `raw`, or None when the server closed without one."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    if not data:
        return None
    return int(data.split(b" ", 2)[1])


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    segments=st.lists(_SEGMENTS, max_size=6),
    query=st.one_of(st.just(""), st.text(max_size=20).map(lambda q: "?q=" + q)),
    headers=_HEADERS,
    body=st.binary(max_size=64),
)
def test_raw_paths_headers_and_tokens_never_5xx(
    fuzz_server: RegistryServer,
    method: str,
    segments: list[str],
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    target = ("/" + "/".join(segments) + query).encode("utf-8", "surrogateescape")
    lines = [method.encode() + b" " + target.replace(b" ", b"%20") + b" HTTP/1.1", b"Host: x"]
    lines += [k.encode() + b": " + v.encode("utf-8", "replace") for k, v in headers
              if "\r" not in v and "\n" not in v]  # fmt: skip
    if not any(k == "Content-Length" for k, _ in headers):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    status = _send(fuzz_server, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    assert status is None or status < 500, (target, headers, fuzz_server.log()[-2000:])


def _mutations(image: bytes, seed: int, count: int) -> Iterator[bytes]:
    import random

    rng = random.Random(seed)
    for index in range(count):
        data = bytearray(image)
        kind = index % 4
        if kind == 0:  # flip bytes in the superblock and the tables behind it
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(min(len(data), 2048))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # random bytes anywhere
            for _ in range(rng.randint(1, 32)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 2:  # truncated
            del data[rng.randrange(64, len(data)) :]
        else:  # a run of 0xff (huge counts, offsets and sizes)
            start = rng.randrange(len(data))
            data[start : start + 8] = b"\xff" * 8
        yield bytes(data)


@pytest.mark.parametrize("image_format", ["squashfs", "erofs"])
def test_mutated_images_never_5xx_hang_or_grow(
    fuzz_server: RegistryServer, tmp_path: Path, image_format: str
) -> None:
    from sysext.build.pack import pack
    from sysext.image.formats import ImageFormat
    from sysext.systemd.architecture import Architecture
    from sysext.systemd.extension_release import ExtensionRelease

    tree = tmp_path / "tree" / "usr" / "bin"
    tree.mkdir(parents=True)
    for index in range(20):
        (tree / f"tool{index}").write_text(f"#!/bin/sh\necho {index}\n" * (index + 1))
        (tree / f"tool{index}").chmod(0o755)
    release = ExtensionRelease(name="mut", version="1.0", arch=Architecture.parse("x86-64"))
    built = pack(
        tmp_path / "tree", release, tmp_path / "out", image_format=ImageFormat(image_format)
    )
    original = built.path.read_bytes()
    baseline = fuzz_server.rss_kib("VmHWM")
    statuses: dict[int, int] = {}
    for mutated in _mutations(original, seed=13, count=40):
        answer = requests.put(
            f"{fuzz_server.url}/api/v1/extensions/mut/images/mut-1.0-x86-64.raw",
            data=mutated,
            headers=fuzz_server.headers(),
            params={"channel": "alpha"},
            timeout=150,  # the validation child's own limit is 120 s: no hang
        )
        assert answer.status_code < 500, answer.text
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        if answer.status_code == 200:  # a harmless mutation was published: take it back
            requests.post(
                f"{fuzz_server.url}/api/v1/extensions/mut/versions/1.0/yank",
                headers=fuzz_server.headers(),
                timeout=30,
            )
    # Refused cleanly, or (data-only mutations) valid: published once, then 409 (immutable).
    assert set(statuses) <= {200, 409, 422} and statuses.get(422, 0) >= 10, statuses
    assert fuzz_server.rss_kib("VmHWM") - baseline < 48 * 1024
    assert list((fuzz_server.data / "tmp").iterdir()) == []


# --- slow clients (issue 19, finding 2): whatever they send, every one is cut off ---------

_SLOW_CLIENT = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE"]),
        "path": st.sampled_from(
            ["/keyring.gpg", "/extensions/hello/SHA256SUMS", "/extensions/big/big-1.0-x86-64.raw",
             "/api/v1/status", "/api/v1/extensions/hello/images/hello-2.0-x86-64.raw",
             "/api/v1/tokens", "/nowhere", "/catalog/"]
        ),
        "token": st.sampled_from([None, "admin", "sxt_1_bogus"]),
        "declared": st.one_of(st.integers(0, 100), st.integers(10**6, 10**9)),
        "sent": st.integers(0, 64),  # body bytes sent with the headers
        "trickle": st.booleans(),  # then one more byte a second, or nothing
        "reads": st.booleans(),  # reads its answers, or never (a 4 KiB receive window)
    }
)  # fmt: skip


def _slow_client(server: RegistryServer, spec: dict[str, Any], rounds: int = 40) -> bytes | None:
    """Play one slow client; what it read once the server closed the connection, None if
    the connection was still open after `rounds` seconds."""
    sock = socket.socket()
    if not spec["reads"]:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    head = f"{spec['method']} {spec['path']} HTTP/1.1\r\nHost: x\r\n"
    if spec["token"]:
        token = server.admin_token if spec["token"] == "admin" else spec["token"]
        head += f"Authorization: Bearer {token}\r\n"
    head += f"Content-Length: {spec['declared']}\r\n\r\n"
    received = b""
    try:
        sock.sendall(head.encode() + b"x" * spec["sent"])
        for _ in range(rounds):
            if spec["trickle"]:
                sock.sendall(b"x")
            if spec["reads"]:
                sock.settimeout(1)
                with contextlib.suppress(TimeoutError):
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        return received
                    received += chunk
            else:
                time.sleep(1)
                if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != 1:
                    return received  # no longer ESTABLISHED: closed or reset
        return None
    except (ConnectionResetError, BrokenPipeError):
        return received
    finally:
        sock.close()


@settings(
    max_examples=4,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(clients=st.lists(_SLOW_CLIENT, min_size=4, max_size=8))
def test_slow_bodies_and_slow_readers_are_always_cut_off(
    fuzz_server: RegistryServer, clients: list[dict[str, Any]]
) -> None:
    with ThreadPoolExecutor(len(clients)) as pool:
        outcomes = list(pool.map(lambda spec: _slow_client(fuzz_server, spec), clients))
    for spec, received in zip(clients, outcomes, strict=True):
        assert received is not None, ("still connected", spec, fuzz_server.log()[-2000:])
        for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", received):
            assert int(status) < 500, (spec, received[:300])
    assert requests.get(f"{fuzz_server.url}/api/v1/status", timeout=10).status_code == 200


# --- issue 19, findings 8 and 9: capability and symlink-chain images -----------------------


def _refused(server: RegistryServer, image: Path, name: str, code: str) -> str:
    """Upload `image` as NAME-1.0-x86-64.raw: a 422 naming `code`, nothing changed."""
    from tests.test_registry_hardening import state

    before = state(server)
    answer = requests.put(
        f"{server.url}/api/v1/extensions/{name}/images/{name}-1.0-x86-64.raw",
        data=image.read_bytes(),
        headers=server.headers(),
        timeout=60,
    )
    assert answer.status_code == 422, answer.text
    detail = str(answer.json()["detail"])
    assert f"[{code}]" in detail, detail
    assert state(server) == before
    assert list((server.data / "tmp").iterdir()) == []
    return detail


@pytest.mark.root(reason="setcap needs root")
@pytest.mark.parametrize("image_format", ["squashfs", "erofs"])
def test_capability_images_are_refused(
    fuzz_server: RegistryServer, tmp_path: Path, image_format: str
) -> None:
    """The finding's binary (cap_setuid,cap_setgid=ep), built with mksquashfs/mkfs.erofs
    from a tree the real setcap marked: refused like a setuid program."""
    from tests.test_image_xattrs import build, capability_tree

    image = build(capability_tree(tmp_path), image_format, tmp_path / "out")
    detail = _refused(fuzz_server, image, "caps", "tree-capability")
    assert "usr/bin/capcat carries file capabilities (cap_setgid,cap_setuid=ep)" in detail


CHAINS = [
    ("dir-etc", ("slink /usr/lib/hostetc 0777 0 0 /etc",)),
    ("dir-root", ("slink /usr/lib/hostroot 0777 0 0 /",)),
    ("two-hop", ("slink /usr/lib/a 0777 0 0 ../../etc", "slink /usr/lib/b 0777 0 0 a/shadow")),
    ("through-dir-link", ("slink /usr/lib/up 0777 0 0 ..",
                          "slink /usr/lib/esc 0777 0 0 up/../etc/shadow")),
    ("host-var-run", ("slink /usr/lib/run 0777 0 0 /var/run/../etc/sudoers",)),
]  # fmt: skip


@pytest.mark.parametrize(("case", "lines"), CHAINS, ids=[c[0] for c in CHAINS])
def test_symlink_chain_images_are_refused(
    fuzz_server: RegistryServer, tmp_path: Path, case: str, lines: tuple[str, ...]
) -> None:
    from tests.test_lint import good_fields, make_image

    image = make_image(tmp_path, "chain", good_fields(SYSEXT_ID="chain"), extra_lines=lines)
    detail = _refused(fuzz_server, image, "chain", "tree-symlink-sensitive")
    assert "host secret" in detail
