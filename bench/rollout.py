"""Staged rollouts at fleet scale (issue 21): what managed hosts cost the registry.

    .venv/bin/python bench/rollout.py [--hosts 25] [--polls 4] [--distinct 1000000]
                                      [--duration 8] [--connections 100]

In one run, against one `sysext serve` (2 workers) and the shipped nginx block over the
same DATA/public, with hello 1.0 released and 1.1 rolling out at 50 %:

* real systemd-sysupdate 254 polls (tests/sysupdate_client.py, root): HOSTS managed hosts
  (their own machine IDs, the provisioning's transfer file) polled POLLS times each,
  against an unmanaged host's channel path polled as often: wall time per poll and
  requests per poll (from the server's access log);
* the manifest path with wrk and a Lua script: requests/s and p99 at CONNECTIONS
  connections, each request a random one of DISTINCT host IDs
  (`rollouts/stable/hello/BB/HOSTID/SHA256SUMS`, what managed hosts fetch, each recorded
  for the fleet view), against today's one-manifest path `extensions/hello/SHA256SUMS`,
  for `sysext serve`, for nginx (the shipped block, which copies each per-host request to
  the app for the fleet view: `mirror`) and for the same block without its `mirror` lines.
  Printed as well: how many of nginx's copies the app logged (the rest timed out or were
  refused while it was saturated).

wrk runs on the same machine: compare the ratios, not the absolute figures. `--skip-polls`
leaves out the real-client polls, `--skip-nginx` the nginx side of the wrk runs.

    .venv/bin/python bench/rollout.py --through nginx,bucket [--fleet-polls 1000]
                                      [--fleet-hosts 50] [--parallel 4]

instead polls with the real client through the shipped nginx block (sysext-registry.conf
over the registry's public tree) and straight from an S3 bucket (a single-node Ceph radosgw,
tests/ceph_rgw.py; hosts use `--static` bucket paths): FLEET_POLLS polls on the managed
(bucket) path and as many on the unmanaged (channel) path, by FLEET_HOSTS hosts each, PARALLEL
at a time, the two paths alternating round by round. Printed: wall time, median and p90 per
poll, and for nginx the requests per poll (its access log; the bucket serves the same files).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.serve import WrkResult, _ms, _size, nginx
from registry.http.nginx_conf import server_block
from sysext.core.rollout import app_specific_id
from sysext.provision import ExtensionRef, HttpCatalog, ProvisionOptions, generate_config
from sysext.provision.model import InlineContents
from sysext.provision.rollout_identity import TEMPLATE_DIR
from sysext.trust.signing import generate_key
from tests.registry_server import RegistryServer, build_image, running_nginx, running_registry
from tests.servers import run_cli
from tests.sysupdate_client import follow_mkdir_instruction, run_sysupdate

PLAIN_LUA = r"""
-- The same per-request work on the client as LUA, for today's one manifest path.
local distinct = tonumber(os.getenv("DISTINCT"))
-- Each wrk thread its own seed (os.time() alone can seed both threads alike).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  math.randomseed(os.time() * 1000 + id)
end
request = function()
  local n = math.random(0, distinct - 1)
  local id = string.format("%08x%08x%08x%08x", n, (n * 7919) % 4294967296,
                           (n * 104729) % 4294967296, 3735928559)
  return wrk.format("GET", "/extensions/hello/SHA256SUMS")
end
"""
LUA = r"""
-- A random one of DISTINCT managed hosts per request; bucket = first 32 bits mod 100,
-- as the first-boot script computes it.
local distinct = tonumber(os.getenv("DISTINCT"))
local base = os.getenv("BASE")
math.randomseed(os.time())
request = function()
  local n = math.random(0, distinct - 1)
  local id = string.format("%08x%08x%08x%08x", n, (n * 7919) % 4294967296,
                           (n * 104729) % 4294967296, 3735928559)
  return wrk.format("GET", string.format("%s/%02d/%s/SHA256SUMS", base, n % 100, id))
end
"""


def wrk_lua(
    url: str, script: Path | None, env: dict[str, str], connections: int, duration: int
) -> WrkResult:
    """wrk with 2 threads; `script`: a Lua script choosing each request's path."""
    lua = ["-s", str(script)] if script is not None else []
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "30s",
         *lua, url],
        capture_output=True, text=True, check=True, env={**os.environ, **env},
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    transfer = _size(re.search(r"Transfer/sec:\s+(\S+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(rps, transfer, p50, p99, int(errors[1]) if errors else 0)


def admin(reg: RegistryServer, *args: str) -> None:
    result = run_cli(*args, "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token})
    if result.returncode != 0:
        raise SystemExit(result.stderr)


def hosts(reg: RegistryServer, base: Path, count: int) -> list[Path]:
    """Managed host roots with the provisioning's transfer file for their own machine ID
    (filled in as the first-boot script does; tests/test_rollout_identity.py proves the
    script writes exactly this)."""
    config = generate_config(
        HttpCatalog(reg.url), [ExtensionRef("hello")], options=ProvisionOptions(rollout=True)
    )
    template = next(f.contents for f in config.files if f.path == f"{TEMPLATE_DIR}/hello.conf.in")
    assert isinstance(template, InlineContents)
    roots = []
    for number in range(count):
        root = base / f"host{number}"
        machine_id = hashlib.sha256(f"bench {number}".encode()).hexdigest()[:32]
        host_id = app_specific_id(machine_id)
        text = (
            template.data.decode()
            .replace("@BUCKET@", f"{int(host_id[:8], 16) % 100:02d}")
            .replace("@HOST_ID@", host_id)
        )
        (root / "etc/sysupdate.hello.d").mkdir(parents=True)
        (root / "etc/sysupdate.hello.d/hello.conf").write_text(text)
        (root / "etc/os-release").write_text("ID=flatcar\nVERSION_ID=4081.2.0\n")
        follow_mkdir_instruction(root, text)
        roots.append(root)
    return roots


def unmanaged(reg: RegistryServer, root: Path) -> Path:
    text = requests.get(f"{reg.url}/extensions/hello/hello.conf", timeout=10).text
    (root / "etc/sysupdate.hello.d").mkdir(parents=True)
    (root / "etc/sysupdate.hello.d/hello.conf").write_text(text)
    (root / "etc/os-release").write_text("ID=flatcar\nVERSION_ID=4081.2.0\n")
    follow_mkdir_instruction(root, text)
    return root


def polls(
    reg: RegistryServer, roots: list[Path], rounds: int, keyring: bytes
) -> tuple[float, float]:
    """(median seconds per poll, requests per poll) over `rounds` polls of every root."""
    before = len(reg.log().splitlines())
    times = []
    for _ in range(rounds):
        for root in roots:
            started = time.monotonic()
            result = run_sysupdate(root, ["-C", "hello", "update"], keyring)
            times.append(time.monotonic() - started)
            if result.returncode != 0:
                raise SystemExit(result.stderr)
    lines = reg.log().splitlines()[before:]
    served = [line for line in lines if "method=GET" in line and "/api/" not in line]
    return statistics.median(times), len(served) / len(times)


@contextlib.contextmanager
def registry(
    scratch: Path,
    fleet_flush: int,
    extra: dict[str, str] | None = None,
    data: Path | None = None,
) -> Iterator[RegistryServer]:
    env = {"SYSEXT_FLEET_FLUSH": str(fleet_flush), "SYSEXT_ROLLOUT_TICK": "3600", **(extra or {})}
    scratch.mkdir(parents=True, exist_ok=True)
    with running_registry(data or scratch / "data", env=env, args=("--workers", "2")) as reg:
        images = scratch / "images"
        images.mkdir()
        admin(reg, "publish", str(build_image(images, "hello", "1.0")))
        admin(reg, "rollout", "set", "hello", "1.1", "--percent", "50")
        admin(reg, "publish", str(build_image(images, "hello", "1.1")))
        yield reg


@dataclass(frozen=True)
class PollFigures:
    polls: int
    wall_s: float
    median_s: float
    p90_s: float
    requests: int | None  # None: not counted


def transfer_root(root: Path, registry_url: str, host_id: str | None, static: bool) -> Path:
    """A host whose transfer file is what `sysext transfer` prints for it (the file the
    provisioning's first-boot script writes: tests/test_rollout_identity.py)."""
    argv = ["transfer", "hello", "--registry", registry_url, "--any-os"]
    if host_id is not None:
        argv += ["--host-id", host_id, *(["--static"] if static else [])]
    result = run_cli(*argv)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    (root / "etc/sysupdate.hello.d").mkdir(parents=True)
    (root / "etc/sysupdate.hello.d/hello.conf").write_text(result.stdout)
    (root / "etc/os-release").write_text("ID=flatcar\nVERSION_ID=4081.2.0\n")
    follow_mkdir_instruction(root, result.stdout)
    return root


def fleet_polls(
    paths: dict[str, list[Path]],
    rounds: int,
    parallel: int,
    keyring: bytes,
    count: Callable[[], int] | None,
) -> dict[str, PollFigures]:
    """Every host of each path polled `rounds` times, `parallel` at a time (never one root
    twice at once); the paths alternate round by round so load falls on both alike."""
    times: dict[str, list[float]] = {label: [] for label in paths}
    walls = dict.fromkeys(paths, 0.0)
    requests_seen = dict.fromkeys(paths, 0)

    def one(root: Path) -> float:
        started = time.monotonic()
        result = run_sysupdate(root, ["-C", "hello", "update"], keyring)
        if result.returncode != 0:
            raise SystemExit(result.stderr)
        return time.monotonic() - started

    with ThreadPoolExecutor(parallel) as pool:
        for _ in range(rounds):
            for label, roots in paths.items():
                before = count() if count is not None else 0
                started = time.monotonic()
                times[label] += pool.map(one, roots)
                walls[label] += time.monotonic() - started
                if count is not None:
                    requests_seen[label] += count() - before
    figures = {}
    for label, found in times.items():
        found.sort()
        figures[label] = PollFigures(
            len(found),
            walls[label],
            statistics.median(found),
            found[int(len(found) * 0.9)],
            requests_seen[label] if count is not None else None,
        )
    return figures


@contextlib.contextmanager
def logging_nginx(public: Path, upstream: str, prefix: Path) -> Iterator[tuple[str, Path]]:
    """The shipped block (sysext-registry.conf) with an access log, to count requests."""
    log = prefix / "access.log"
    with running_nginx(
        prefix, lambda listen: server_block(public, listen, upstream), workers=2, access_log=log
    ) as url:
        yield url, log


def lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def host_ids(count: int) -> list[str]:
    return [
        app_specific_id(hashlib.sha256(f"bench {n}".encode()).hexdigest()[:32])
        for n in range(count)
    ]


def through(args: argparse.Namespace, scratch: Path) -> None:
    rounds = max(1, args.fleet_polls // args.fleet_hosts)
    ids = host_ids(args.fleet_hosts)
    results: dict[str, dict[str, PollFigures]] = {}
    loads: dict[str, tuple[float, float]] = {}
    fleet_seen: dict[str, int] = {}
    if "nginx" in args.through:
        with (
            registry(scratch / "nginx-registry", args.fleet_flush) as reg,
            logging_nginx(reg.data / "public", reg.url, scratch / "nginx") as (url, log),
        ):
            paths = {
                "managed (bucket path)": [
                    transfer_root(scratch / f"nm{n}", url, h, False) for n, h in enumerate(ids)
                ],
                "unmanaged (channel path)": [
                    transfer_root(scratch / f"nu{n}", url, None, False) for n in range(len(ids))
                ],
            }
            load = os.getloadavg()[0]
            results["nginx"] = fleet_polls(
                paths, rounds, args.parallel, reg.keyring(), lambda: lines(log)
            )
            loads["nginx"] = (load, os.getloadavg()[0])
            # nginx copies each managed poll to the app (`mirror`): the fleet view counts
            # them once every worker wrote what it queued.
            time.sleep(min(args.fleet_flush, 30) + 1)
            seen = requests.get(f"{reg.url}/api/v1/extensions/hello/fleet", timeout=120).json()
            fleet_seen["nginx"] = int(seen["hosts"])
    if "bucket" in args.through:
        from tests.ceph_rgw import start_rgw, stop_rgw
        from tests.test_registry_scale import s3_env

        rgw = start_rgw()
        try:
            key = scratch / "key" / "signing.pgp"
            key.parent.mkdir(mode=0o700)
            generate_key(key, "sysext bench registry <bench@localhost>")
            data = scratch / "s3-registry" / "data"
            data.mkdir(parents=True)
            env = s3_env(rgw, "rollout-bench", f"sqlite:///{data / 'registry.db'}", key)
            with registry(scratch / "s3-registry", args.fleet_flush, env, data) as reg:
                bucket_url = f"{rgw.endpoint}/rollout-bench"
                paths = {
                    "managed (bucket path)": [
                        transfer_root(scratch / f"bm{n}", bucket_url, h, True)
                        for n, h in enumerate(ids)
                    ],
                    "unmanaged (channel path)": [
                        transfer_root(scratch / f"bu{n}", bucket_url, None, False)
                        for n in range(len(ids))
                    ],
                }
                load = os.getloadavg()[0]
                results["bucket (Ceph RGW)"] = fleet_polls(
                    paths, rounds, args.parallel, reg.keyring(), None
                )
                loads["bucket (Ceph RGW)"] = (load, os.getloadavg()[0])
        finally:
            stop_rgw(rgw)
    print(
        f"real systemd-sysupdate 254, {args.fleet_hosts} hosts per path x {rounds} polls, "
        f"{args.parallel} at a time, hello 1.0 released and 1.1 at 50 %:"
    )
    for where, figures in results.items():
        before, after = loads[where]
        print(f"  {where} (load average {before:.1f} before, {after:.1f} after):")
        for label, f in figures.items():
            per_poll = f"{f.requests / f.polls:.2f} requests/poll" if f.requests else "n/a"
            print(
                f"    {label:26} {f.polls:5d} polls in {f.wall_s:6.1f} s, "
                f"{f.median_s * 1000:5.0f} ms median, {f.p90_s * 1000:5.0f} ms p90, {per_poll}"
            )
        if where in fleet_seen:
            print(f"    fleet view: {fleet_seen[where]} of {args.fleet_hosts} managed hosts seen")
        managed, plain = figures["managed (bucket path)"], figures["unmanaged (channel path)"]
        print(
            f"    managed / unmanaged: {managed.wall_s / plain.wall_s:.2f}x wall time, "
            f"{managed.median_s / plain.median_s:.2f}x median"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=25)
    parser.add_argument("--polls", type=int, default=4, help="polls per host")
    parser.add_argument("--distinct", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument(
        "--fleet-flush", type=int, default=5, help="SYSEXT_FLEET_FLUSH of the server (seconds)"
    )
    parser.add_argument("--skip-polls", action="store_true", help="only the wrk part")
    parser.add_argument("--skip-nginx", action="store_true", help="wrk against sysext serve only")
    parser.add_argument(
        "--through",
        default="",
        help="nginx,bucket: only the real-client polls through these (see the module doc)",
    )
    parser.add_argument("--fleet-polls", type=int, default=1000, help="polls per path")
    parser.add_argument("--fleet-hosts", type=int, default=50, help="hosts per path")
    parser.add_argument("--parallel", type=int, default=4, help="clients at a time")
    parser.add_argument(
        "--rounds", type=int, default=3, help="wrk runs per path (medians are printed)"
    )
    args = parser.parse_args()
    if args.through:
        args.through = {t.strip() for t in args.through.split(",")}
        if not args.through <= {"nginx", "bucket"}:
            parser.error("--through takes nginx, bucket or both")
        with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
            through(args, Path(tmp))
        return
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        scratch = Path(tmp)
        with registry(scratch, args.fleet_flush) as reg:
            keyring = reg.keyring()
            managed = hosts(reg, scratch / "hosts", args.hosts)
            legacy = [unmanaged(reg, scratch / f"legacy{i}") for i in range(args.hosts)]
            poll_managed = poll_legacy = (0.0, 0.0)
            if not args.skip_polls:
                poll_managed = polls(reg, managed, args.polls, keyring)
                poll_legacy = polls(reg, legacy, args.polls, keyring)
            script = scratch / "hosts.lua"
            script.write_text(LUA)
            plain = scratch / "plain.lua"
            plain.write_text(PLAIN_LUA)
            lua_env = {"DISTINCT": str(args.distinct), "BASE": "/rollouts/stable/hello"}
            runs: dict[str, list[WrkResult]] = {}
            load_before = os.getloadavg()
            copies_before = copies(reg)
            no_mirror = server_block(reg.data / "public", "PORT", reg.url, fleet_mirror=False)
            with contextlib.ExitStack() as fronts:
                servers = [("sysext serve", reg.url)]
                if not args.skip_nginx:
                    nginx_url = fronts.enter_context(
                        nginx(reg.data / "public", reg.url, 2, scratch / "nginx")
                    )
                    plain_url = fronts.enter_context(
                        nginx(reg.data / "public", reg.url, 2, scratch / "plain", no_mirror)
                    )
                    servers += [("nginx", nginx_url), (NO_MIRROR, plain_url)]
                # Rounds alternate the paths, so a neighbour's burst of load on a shared
                # machine falls on every side rather than on one.
                for _ in range(args.rounds):
                    for label, url in servers:
                        for kind, lua in (("one manifest", plain), ("per host", script)):
                            result = wrk_lua(url, lua, lua_env, args.connections, args.duration)
                            runs.setdefault(f"{label}, {kind}", []).append(result)
            load_after = os.getloadavg()
            # Every request of the mirrored per-host runs had a copy sent to the app.
            sent = sum(r.requests_per_s * args.duration for r in runs.get("nginx, per host", []))
            logged = copies(reg) - copies_before
            results = {label: _median(found) for label, found in runs.items()}
            # The other worker writes what it queued within one flush interval.
            time.sleep(min(args.fleet_flush, 30) + 1)
            fleet = requests.get(f"{reg.url}/api/v1/extensions/hello/fleet", timeout=120).json()
    total = args.hosts * args.polls
    print(f"real systemd-sysupdate 254, {total} polls each ({args.hosts} hosts x {args.polls}):")
    for label, (median, per_poll) in (("managed (bucket path)", poll_managed),
                                     ("unmanaged (channel path)", poll_legacy)):  # fmt: skip
        print(
            f"  {label:26} {median * 1000:7.0f} ms per poll (median), "
            f"{per_poll:.2f} requests per poll"
        )
    print(
        f"manifest path, wrk -t2 -c{args.connections} -d{args.duration}s, "
        f"{args.distinct:,} distinct host IDs on the per-host path, median of "
        f"{args.rounds} alternating runs, load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after:"
    )
    for server in ("sysext serve", *(() if args.skip_nginx else ("nginx", NO_MIRROR))):
        one, per_host = results[f"{server}, one manifest"], results[f"{server}, per host"]
        for label, r in (("one manifest", one), ("per host", per_host)):
            print(
                f"  {server:16} {label:12} {r.requests_per_s:9.0f} req/s  p50 {r.p50_ms:6.1f} ms"
                f"  p99 {r.p99_ms:7.1f} ms  non-2xx {r.errors}"
            )
        print(
            f"  {server:16} per host / one manifest: "
            f"{per_host.requests_per_s / one.requests_per_s:.2f}x req/s, "
            f"p99 {per_host.p99_ms / max(one.p99_ms, 0.001):.2f}x"
        )
    if not args.skip_nginx:
        mirrored, bare = results["nginx, per host"], results[f"{NO_MIRROR}, per host"]
        print(
            f"  nginx per host, with / without mirror: "
            f"{mirrored.requests_per_s / bare.requests_per_s:.2f}x req/s, "
            f"p99 {mirrored.p99_ms / max(bare.p99_ms, 0.001):.2f}x; the app logged "
            f"{logged:,.0f} of ~{sent:,.0f} copies ({logged / max(sent, 1):.0%})"
        )
    print(
        f"fleet view after the run: {fleet['hosts']:,} hosts recorded, "
        f"{fleet['dropped_sightings']:,} sightings dropped (full queue)"
    )


NO_MIRROR = "nginx, no mirror"


def copies(reg: RegistryServer) -> int:
    """Requests nginx copied to the app for the fleet view, as the app logged them (HEADs
    of rollout paths: hosts and wrk ask GET)."""
    return sum(1 for line in reg.log().splitlines() if "method=HEAD path=/rollouts/" in line)


def _median(results: list[WrkResult]) -> WrkResult:
    """Per figure, the median over the runs."""
    return WrkResult(
        statistics.median(r.requests_per_s for r in results),
        statistics.median(r.bytes_per_s for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


if __name__ == "__main__":
    main()
