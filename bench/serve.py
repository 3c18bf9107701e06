"""Serving throughput of `sysext serve` against nginx on the very same DATA/public.

    .venv/bin/python bench/serve.py [--size-mib 272] [--duration 10] [--workers 1,2]

Publishes one ≥256 MiB image (incompressible payload) to a fresh registry, starts nginx
(Debian package, 127.0.0.1) with the shipped config over the same files, and measures
with `wrk`, in one run:

* image throughput with 20 concurrent clients: ours / nginx (target ≥ 0.8);
* SHA256SUMS with 100 concurrent clients: requests/s and p99 latency, ours / nginx.

Both servers get the same number of worker processes (each count of --workers is
measured in turn, default 1 then 2; nginx keeps the shipped config otherwise). wrk runs
on the same machine, so the figures are relative, not absolute: compare the ratios.

`--object-store` adds the scale-out read path in the same run: a single-node Ceph radosgw
(tests/ceph_rgw.py, root, Debian's ceph packages) with the image published into a bucket
by `sysext serve` with SYSEXT_S3_*, read straight from RGW and through the shipped
replicas nginx config (registry/http/nginx/sysext-replicas.conf), against the same plain
nginx on local files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registry.http.nginx_conf import replicas_block, server_block
from sysext.build.pack import pack
from sysext.image.formats import Compression
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease
from tests.registry_server import RegistryServer, running_nginx, running_registry

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    bytes_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _size(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)([KMGT]?)B?", text)
    if not match:
        raise ValueError(text)
    return float(match[1]) * UNITS[match[2]]


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match[1]) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[match[2]]


def wrk(url: str, connections: int, duration: int, threads: int = 2) -> WrkResult:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "30s",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    transfer = _size(re.search(r"Transfer/sec:\s+(\S+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:
        print(f"  wrk socket errors on {url}: {socket_errors[1]}", file=sys.stderr)
    return WrkResult(rps, transfer, p50, p99, int(errors[1]) if errors else 0)


def make_image(directory: Path, size_mib: int) -> Path:
    tree = directory / "tree"
    (tree / "usr" / "lib" / "bench").mkdir(parents=True)
    with open(tree / "usr" / "lib" / "bench" / "payload", "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    release = ExtensionRelease(name="bench", version="1.0", arch=Architecture.X86_64)
    built = pack(tree, release, directory / "out", compression=Compression.ZSTD, level=1)
    shutil.rmtree(tree)
    return built.path


def nginx(
    public: Path, upstream: str, workers: int, prefix: Path, block: str | None = None
) -> contextlib.AbstractContextManager[str]:
    """nginx with the shipped block in front of `upstream` serving `public`, or with
    `block` (its `listen PORT;` filled in)."""

    def block_for(listen: str) -> str:
        if block is None:
            return server_block(public, listen, upstream)
        return block.replace("listen PORT;", f"listen {listen};")

    return running_nginx(prefix, block_for, workers=workers)


def upload(reg: RegistryServer, image: Path) -> None:
    with open(image, "rb") as body:
        response = requests.put(
            f"{reg.url}/api/v1/extensions/bench/images/{image.name}",
            data=body,
            headers=reg.headers(),
            timeout=600,
        )
    response.raise_for_status()


def measure(
    scratch: Path, image: Path, workers: int, duration: int, threads: int
) -> dict[str, dict[str, WrkResult]]:
    """A fresh registry and nginx with `workers` processes each, over the same files."""
    size = image.stat().st_size
    data = scratch / f"data-{workers}"
    with running_registry(data, args=("--workers", str(workers))) as reg:
        upload(reg, image)
        path_image = f"/extensions/bench/{image.name}"
        path_manifest = "/extensions/bench/SHA256SUMS"
        with nginx(reg.data / "public", reg.url, workers, scratch / f"nginx-{workers}") as ngx:
            for base in (reg.url, ngx):  # same bytes from both, and warm the page cache
                got = requests.get(base + path_image, timeout=600)
                assert len(got.content) == size, base
                assert requests.get(base + path_manifest, timeout=10).status_code == 200
            results: dict[str, dict[str, WrkResult]] = {}
            for label, base in (("sysext serve", reg.url), ("nginx", ngx)):
                print(f"measuring {label} ({workers} worker(s))…", file=sys.stderr)
                results[label] = {
                    "image": wrk(base + path_image, 20, duration, threads),
                    "manifest": wrk(base + path_manifest, 100, duration, threads),
                }
    return results


def measure_object_store(
    scratch: Path, image: Path, workers: int, duration: int, threads: int
) -> dict[str, dict[str, WrkResult]]:
    """The same image published into a radosgw bucket: read from RGW and via nginx."""
    from tests.ceph_rgw import start_rgw, stop_rgw

    print("starting a single-node Ceph radosgw…", file=sys.stderr)
    rgw = start_rgw()
    try:
        bucket = "sysext-bench"
        env = {
            "SYSEXT_S3_ENDPOINT": rgw.endpoint,
            "SYSEXT_S3_BUCKET": bucket,
            "AWS_ACCESS_KEY_ID": rgw.access_key,
            "AWS_SECRET_ACCESS_KEY": rgw.secret_key,
        }
        size = image.stat().st_size
        with running_registry(scratch / "data-s3", env=env, args=("--workers", "1")) as reg:
            upload(reg, image)
            bucket_url = f"{rgw.endpoint}/{bucket}"
            block = replicas_block("PORT", [f"127.0.0.1:{reg.port}"], bucket_url)
            path_image = f"/extensions/bench/{image.name}"
            path_manifest = "/extensions/bench/SHA256SUMS"
            with nginx(Path(), reg.url, workers, scratch / "nginx-s3", block=block) as ngx:
                results: dict[str, dict[str, WrkResult]] = {}
                for label, base in (("RGW (bucket)", bucket_url), ("nginx -> RGW", ngx)):
                    got = requests.get(base + path_image, timeout=600)
                    assert len(got.content) == size, base
                    print(f"measuring {label}…", file=sys.stderr)
                    results[label] = {
                        "image": wrk(base + path_image, 20, duration, threads),
                        "manifest": wrk(base + path_manifest, 100, duration, threads),
                    }
        return results
    finally:
        stop_rgw(rgw)


def report(
    results: dict[str, dict[str, WrkResult]], size: int, workers: int, duration: int, threads: int
) -> None:
    ours, ref = results["sysext serve"], results["nginx"]
    gib = 1 << 30
    print(
        f"image: {size / (1 << 20):.0f} MiB, 20 clients, {duration} s; "
        f"SHA256SUMS: 100 clients; {workers} worker process(es) each; {os.cpu_count()} CPUs; "
        f"wrk -t{threads}"
    )
    print(f"{'':28}{'sysext serve':>14}{'nginx':>14}{'ratio':>8}")
    print(
        f"{'image throughput (GiB/s)':28}{ours['image'].bytes_per_s / gib:14.2f}"
        f"{ref['image'].bytes_per_s / gib:14.2f}"
        f"{ours['image'].bytes_per_s / ref['image'].bytes_per_s:8.2f}"
    )
    print(
        f"{'SHA256SUMS requests/s':28}{ours['manifest'].requests_per_s:14.0f}"
        f"{ref['manifest'].requests_per_s:14.0f}"
        f"{ours['manifest'].requests_per_s / ref['manifest'].requests_per_s:8.2f}"
    )
    for label, attr in (("p50", "p50_ms"), ("p99", "p99_ms")):
        mine, theirs = getattr(ours["manifest"], attr), getattr(ref["manifest"], attr)
        print(
            f"{'SHA256SUMS ' + label + ' latency (ms)':28}{mine:14.1f}{theirs:14.1f}"
            f"{mine / theirs:8.2f}"
        )
    for label in [k for k in results if k not in ("sysext serve", "nginx")]:
        other = results[label]
        print(f"{label + ' vs nginx on local files':36}")
        print(
            f"  image throughput (GiB/s) {other['image'].bytes_per_s / gib:8.2f}"
            f"  ratio {other['image'].bytes_per_s / ref['image'].bytes_per_s:5.2f}"
        )
        print(
            f"  SHA256SUMS requests/s   {other['manifest'].requests_per_s:9.0f}"
            f"  ratio {other['manifest'].requests_per_s / ref['manifest'].requests_per_s:5.2f}"
            f"  p99 {other['manifest'].p99_ms:.1f} ms"
        )
    errors = {k: {m: r.errors for m, r in v.items()} for k, v in results.items()}
    if any(n for v in errors.values() for n in v.values()):
        print(f"non-2xx responses: {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=272)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument(
        "--workers",
        default="1,2",
        help="worker processes of both servers; a comma list measures each (default 1,2)",
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=2,
        help="wrk threads; with 2 CPUs, 1 leaves a CPU to the server (steadier p99)",
    )
    parser.add_argument(
        "--object-store",
        action="store_true",
        help="also read the image from a Ceph radosgw bucket, directly and through nginx",
    )
    args = parser.parse_args()
    try:
        counts = [int(n) for n in args.workers.split(",")]
    except ValueError:
        sys.exit(f"--workers: expected numbers separated by commas, got {args.workers!r}")
    if not counts or min(counts) < 1:
        sys.exit("--workers: every count must be at least 1")
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/serve.py needs {tool} (apt-get install {tool})")

    with tempfile.TemporaryDirectory(prefix="sysext-bench-") as scratch_name:
        scratch = Path(scratch_name)
        print(f"building a {args.size_mib} MiB image…", file=sys.stderr)
        image = make_image(scratch, args.size_mib)
        size = image.stat().st_size
        measured = [
            (n, measure(scratch, image, n, args.duration, args.wrk_threads)) for n in counts
        ]
        if args.object_store:
            n, results = measured[-1]
            results.update(measure_object_store(scratch, image, n, args.duration, args.wrk_threads))
    for n, results in measured:
        report(results, size, n, args.duration, args.wrk_threads)


if __name__ == "__main__":
    main()
