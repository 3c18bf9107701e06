"""Issue 13's resource attacks and issue 19's slow clients, against a real `sysext serve`.

    .venv/bin/python bench/exhaustion.py [--entries 500000] [--only memory|slow]
                                         [--connections 2000] [--seconds 60]
                                         [--nofile-hard N]

1. Upload validation of a squashfs with ENTRIES symlinks (the finding: 2.3 MB, 500k
   entries, 608–714 MB server RSS). Reference: `unsquashfs -lls` on the same image, run
   here too, and the in-process listing (what the validation child process costs).
2. Five unfinished 50 MiB headers; 180 idle connections under a 200-descriptor limit;
   50 slow-header (slowloris) connections — is a new request still answered?

3. Slow clients (issue 19, finding 2): `--connections` (2,000) slow connections, a third
   each trickling a body (one byte every 3 s) into a GET of a public file that declares
   `Content-Length: 1000000000`, into an unauthenticated PUT after its 401, and never
   reading a 16 MiB image (4 KiB receive buffer); the attacker reopens every connection
   the server cuts, for `--seconds`. Meanwhile 100 honest requests, one at a time on fresh
   connections, must be answered within 2 s (goal: >= 95 %).

Prints peak RSS (VmHWM of the server process) before and after each attack of 1-2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.registry_server import RegistryServer, build_image, free_port  # noqa: E402


def many_entries_image(out: Path, entries: int) -> Path:
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "release").write_text("ID=_any\nARCHITECTURE=x86-64\nSYSEXT_VERSION_ID=1.0\n")
    lines = [
        "dir /usr 0755 0 0",
        "dir /usr/lib 0755 0 0",
        "dir /usr/lib/extension-release.d 0755 0 0",
        f"file /usr/lib/extension-release.d/extension-release.many 0644 0 0 {src}/release",
        "dir /usr/share 0755 0 0",
    ]
    per_dir = 1000
    for d in range((entries + per_dir - 1) // per_dir):
        lines.append(f"dir /usr/share/d{d} 0755 0 0")
        lines += [f"slink /usr/share/d{d}/l{i} 0777 0 0 ../x" for i in range(per_dir)]
    (src / "pack").write_text("\n".join(lines) + "\n")
    image = out / "many-1.0-x86-64.raw"
    subprocess.run(
        ["gensquashfs", "--pack-file", str(src / "pack"), "-q", "-c", "xz", str(image)],
        check=True,
    )
    return image


def measured(argv: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one child process."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, argv
    return time.monotonic() - started, usage.ru_maxrss


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


# --- 2,000 slow clients (issue 19, finding 2) ---------------------------------------------

SLOW_KINDS = ("get-trickle", "put-after-401", "slow-reader")
TRICKLE_EVERY = 3.0  # seconds between two body bytes, as in the finding


def _attack_request(kind: str, image_path: str) -> bytes:
    if kind == "get-trickle":  # a public file, a body that never ends
        head = b"GET /extensions/hello/SHA256SUMS HTTP/1.1\r\nHost: x\r\n"
        return head + b"Content-Length: 1000000000\r\n\r\n"
    if kind == "put-after-401":  # no token: answered 401 at once, then the body trickles
        head = b"PUT /api/v1/extensions/hello/images/hello-9.0-x86-64.raw HTTP/1.1\r\nHost: x\r\n"
        return head + b"Content-Length: 1000000000\r\n\r\n"
    return f"GET {image_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()  # never read


def _established(sock: socket.socket) -> bool:
    # tcpi_state is the first byte of struct tcp_info; 1 = ESTABLISHED. Reading the socket
    # would defeat a slow reader, so its state tells whether the server cut it off.
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1


def attack(
    port: int, image_path: str, mix: dict[str, int], seconds: float, max_opens: int,
    report: Any,
) -> None:  # fmt: skip
    """Keep `mix` slow connections open (reopening the ones the server cuts) for `seconds`,
    opening at most `max_opens` in all. Runs in its own process; puts counts on `report`."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns: list[tuple[socket.socket, str, float]] = []
    opened = {kind: 0 for kind in mix}
    cut = {kind: 0 for kind in mix}
    failed = 0

    def open_one(kind: str) -> tuple[socket.socket, str, float] | None:
        nonlocal failed
        if sum(opened.values()) >= max_opens:
            return None
        sock = socket.socket()
        if kind == "slow-reader":  # a tiny window: the server's buffers fill at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(_attack_request(kind, image_path))
        except OSError:
            failed += 1
            sock.close()
            return None
        sock.setblocking(False)
        opened[kind] += 1
        return sock, kind, time.monotonic() + TRICKLE_EVERY * random.random()

    started = time.monotonic()
    for kind, count in mix.items():
        for _ in range(count):
            if (conn := open_one(kind)) is not None:
                conns.append(conn)
    report.put(("ramped", time.monotonic() - started, len(conns)))
    while time.monotonic() - started < seconds:
        time.sleep(0.2)
        now = time.monotonic()
        kept = []
        for sock, kind, due in conns:
            alive = _established(sock)
            if alive and kind != "slow-reader" and now >= due:
                try:
                    sock.send(b"x")
                    due = now + TRICKLE_EVERY
                except OSError:
                    alive = False
            if alive:
                kept.append((sock, kind, due))
                continue
            sock.close()
            cut[kind] += 1
            if (conn := open_one(kind)) is not None:
                kept.append(conn)
        conns = kept
    report.put(("done", opened, cut, failed, len(conns)))
    for sock, _, _ in conns:
        sock.close()


def server_cuts(log: str) -> dict[str, int]:
    """Sum of the server's `event=connections-cut` lines (registry/http/guard.py)."""
    total: dict[str, int] = {}
    for line in log.splitlines():
        if "event=connections-cut" in line:
            for field in line.split("event=connections-cut", 1)[1].split()[1:]:
                phase, _, count = field.partition("=")
                total[phase] = total.get(phase, 0) + int(count)
    return total


def slow_clients(
    base: Path, connections: int, seconds: float, honest: int, nofile_hard: int | None
) -> None:
    """The finding's attack with the shipped defaults: 2 workers, a soft descriptor limit
    of 1024 (systemd's default for services; the hard one is this shell's), every other
    limit as shipped. `--nofile-hard 1024`: a host whose hard limit is 1024 too (the
    server cannot raise its soft one, so it keeps 368 connections per worker). Honest
    clients: fresh connections, one at a time, each needing an answer within 2 s
    (SHA256SUMS and /api/v1/status alternately)."""
    import multiprocessing
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    reg = RegistryServer(data=base / "slow-data", port=free_port(), args=("--workers", "2"),
                         nofile=1024, nofile_hard=nofile_hard or hard)  # fmt: skip
    reg.start()
    try:
        small = build_image(base / "images", "hello", "1.0")
        big = build_image(base / "images", "big", "1.0", filler=16 << 20)
        for image, name in ((small, "hello"), (big, "big")):
            with open(image, "rb") as body:
                requests.put(
                    f"{reg.url}/api/v1/extensions/{name}/images/{image.name}",
                    data=body,
                    headers=reg.headers(),
                    timeout=120,
                ).raise_for_status()
        image_path = f"/extensions/big/{big.name}"
        share = connections // len(SLOW_KINDS)
        mix = {kind: share for kind in SLOW_KINDS}
        mix[SLOW_KINDS[0]] += connections - share * len(SLOW_KINDS)
        report: Any = multiprocessing.Queue()
        attacker = multiprocessing.Process(
            target=attack,
            args=(reg.port, image_path, mix, seconds, connections * 20, report),
        )
        attacker.start()
        try:
            _, ramp, open_now = report.get(timeout=120)
            print(f"attack: {open_now} slow connections open after {ramp:.1f} s "
                  f"({', '.join(f'{n} {k}' for k, n in mix.items())})")  # fmt: skip
            time.sleep(5)
            answered, latencies, statuses = 0, [], {}
            for index in range(honest):
                path = "/extensions/hello/SHA256SUMS" if index % 2 else "/api/v1/status"
                began = time.monotonic()
                try:
                    status = requests.get(reg.url + path, timeout=2).status_code
                except requests.RequestException as exc:
                    status = type(exc).__name__
                took = time.monotonic() - began
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200 and took <= 2:
                    answered += 1
                    latencies.append(took)
                time.sleep(max(0.0, 0.25 - took))
            latencies.sort()
            p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
            print(f"honest requests answered 200 within 2 s: {answered}/{honest} "
                  f"({100 * answered / honest:.0f} %, goal >= 95 %); p50 {p50:.0f} ms; "
                  f"outcomes {statuses}")  # fmt: skip
        finally:
            done = report.get(timeout=seconds + 120)
            attacker.join(timeout=30)
        _, opened, cut, failed, still = done
        print(f"attack connections opened {sum(opened.values())} ({opened}); closed by the "
              f"server (cut off or refused) {sum(cut.values())} ({cut}); failed opens "
              f"{failed}; open at the end {still}")  # fmt: skip
        print(f"server cut-offs by phase: {server_cuts(reg.log())}")
    finally:
        reg.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--only", choices=("memory", "slow"))
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--nofile-hard", type=int, help="the server's hard descriptor limit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if args.only != "memory":
            slow_clients(base, args.connections, args.seconds, 100, args.nofile_hard)
        if args.only != "slow":
            memory_attacks(base, args.entries)


def memory_attacks(base: Path, entries: int) -> None:
    started = time.monotonic()
    image = many_entries_image(base, entries)
    print(f"image: {entries} entries, {image.stat().st_size / 1e6:.1f} MB "
          f"(built in {time.monotonic() - started:.0f} s)")  # fmt: skip

    ref_s, ref_kib = measured(["unsquashfs", "-lls", str(image)])
    print(f"reference unsquashfs -lls: {ref_s:.1f} s, peak {mib(ref_kib)}")
    child = [sys.executable, "-m", "registry.service.validation", str(image), "many", image.name]
    child_s, child_kib = measured(child)
    print(f"validation child (what an upload runs): {child_s:.1f} s "
          f"({child_s / ref_s:.2f}x unsquashfs), peak {mib(child_kib)} "
          f"({child_kib / ref_kib:.2f}x unsquashfs)")  # fmt: skip

    reg = RegistryServer(data=base / "data", port=free_port(), nofile=200)
    reg.start()
    try:
        idle = reg.rss_kib()
        print(f"server idle: {mib(idle)}")
        started = time.monotonic()
        answer = requests.put(
            f"{reg.url}/api/v1/extensions/many/images/{image.name}",
            data=image.read_bytes(),
            headers=reg.headers(),
            timeout=600,
        )
        took = time.monotonic() - started
        print(f"upload of the {entries}-entry image: {answer.status_code} in "
              f"{took:.1f} s ({took / ref_s:.1f}x unsquashfs); server peak "
              f"{mib(reg.rss_kib('VmHWM'))}")  # fmt: skip

        socks = []
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", reg.port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            with contextlib.suppress(OSError):
                for _chunk in range(800):
                    sock.sendall(b"a" * 65536)
            socks.append(sock)
        print(f"5 unfinished 50 MiB headers: server peak {mib(reg.rss_kib('VmHWM'))}")
        for sock in socks:
            sock.close()

        idle_socks = [socket.create_connection(("127.0.0.1", reg.port)) for _ in range(180)]
        ok = sum(
            requests.get(f"{reg.url}/api/v1/status", timeout=10).status_code == 200
            for _ in range(20)
        )
        print(f"180 idle connections, 200 fds: {ok}/20 new requests answered; "
              f"server peak {mib(reg.rss_kib('VmHWM'))}")  # fmt: skip
        for sock in idle_socks:
            sock.close()

        slow = []
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", reg.port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        ok = sum(
            requests.get(f"{reg.url}/api/v1/status", timeout=10).status_code == 200
            for _ in range(20)
        )
        time.sleep(11)
        closed = 0
        for sock in slow:
            sock.settimeout(1)
            with contextlib.suppress(OSError):
                if sock.recv(100).startswith(b"HTTP/1.1 408"):
                    closed += 1
            sock.close()
        print(f"50 slow-header connections: {ok}/20 new requests answered, "
              f"{closed}/50 cut off with 408 after the 10 s deadline; server peak "
              f"{mib(reg.rss_kib('VmHWM'))}")  # fmt: skip
    finally:
        reg.stop()


if __name__ == "__main__":
    main()
