"""Peak server RSS under issue 13's resource attacks, against a real `sysext serve`.

    .venv/bin/python bench/exhaustion.py [--entries 500000]

1. Upload validation of a squashfs with ENTRIES symlinks (the finding: 2.3 MB, 500k
   entries, 608–714 MB server RSS). Reference: `unsquashfs -lls` on the same image, run
   here too, and the in-process listing (what the validation child process costs).
2. Five unfinished 50 MiB headers; 180 idle connections under a 200-descriptor limit;
   50 slow-header (slowloris) connections — is a new request still answered?

Prints peak RSS (VmHWM of the server process) before and after each attack.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.registry_server import RegistryServer, free_port  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=500_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        started = time.monotonic()
        image = many_entries_image(base, args.entries)
        print(f"image: {args.entries} entries, {image.stat().st_size / 1e6:.1f} MB "
              f"(built in {time.monotonic() - started:.0f} s)")  # fmt: skip

        ref_s, ref_kib = measured(["unsquashfs", "-lls", str(image)])
        print(f"reference unsquashfs -lls: {ref_s:.1f} s, peak {mib(ref_kib)}")
        child = [
            sys.executable,
            "-m",
            "registry.service.validation",
            str(image),
            "many",
            image.name,
        ]
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
            print(f"upload of the {args.entries}-entry image: {answer.status_code} in "
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
