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
  for `sysext serve` and for nginx.

wrk runs on the same machine: compare the ratios, not the absolute figures.
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
from collections.abc import Iterator
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.serve import WrkResult, _ms, _size, nginx
from sysext.core.rollout import app_specific_id
from sysext.provision import ExtensionRef, HttpCatalog, ProvisionOptions, generate_config
from sysext.provision.model import InlineContents
from sysext.provision.rollout_identity import TEMPLATE_DIR
from tests.registry_server import RegistryServer, build_image, running_registry
from tests.servers import run_cli
from tests.sysupdate_client import follow_mkdir_instruction, run_sysupdate

PLAIN_LUA = r"""
-- The same per-request work on the client as LUA, for today's one manifest path.
local distinct = tonumber(os.getenv("DISTINCT"))
math.randomseed(os.time())
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
def registry(scratch: Path, fleet_flush: int) -> Iterator[RegistryServer]:
    env = {"SYSEXT_FLEET_FLUSH": str(fleet_flush), "SYSEXT_ROLLOUT_TICK": "3600"}
    with running_registry(scratch / "data", env=env, args=("--workers", "2")) as reg:
        images = scratch / "images"
        images.mkdir()
        admin(reg, "publish", str(build_image(images, "hello", "1.0")))
        admin(reg, "rollout", "set", "hello", "1.1", "--percent", "50")
        admin(reg, "publish", str(build_image(images, "hello", "1.1")))
        yield reg


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
    parser.add_argument(
        "--rounds", type=int, default=3, help="wrk runs per path (medians are printed)"
    )
    args = parser.parse_args()
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
            with nginx(reg.data / "public", reg.url, 2, scratch / "nginx") as nginx_url:
                # Rounds alternate the two paths, so a neighbour's burst of load on a
                # shared machine falls on both sides rather than on one.
                for _ in range(args.rounds):
                    for label, url in (("sysext serve", reg.url), ("nginx", nginx_url)):
                        for kind, lua in (("one manifest", plain), ("per host", script)):
                            result = wrk_lua(url, lua, lua_env, args.connections, args.duration)
                            runs.setdefault(f"{label}, {kind}", []).append(result)
            load_after = os.getloadavg()
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
    for server in ("sysext serve", "nginx"):
        one, per_host = results[f"{server}, one manifest"], results[f"{server}, per host"]
        for label, r in (("one manifest", one), ("per host", per_host)):
            print(
                f"  {server:12} {label:12} {r.requests_per_s:9.0f} req/s  p50 {r.p50_ms:6.1f} ms"
                f"  p99 {r.p99_ms:7.1f} ms  non-2xx {r.errors}"
            )
        print(
            f"  {server:12} per host / one manifest: "
            f"{per_host.requests_per_s / one.requests_per_s:.2f}x req/s, "
            f"p99 {per_host.p99_ms / max(one.p99_ms, 0.001):.2f}x"
        )
    print(
        f"fleet view after the run: {fleet['hosts']:,} hosts recorded, "
        f"{fleet['dropped_sightings']:,} sightings dropped (full queue)"
    )


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
