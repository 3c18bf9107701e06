"""How long a no-op rebuild of the catalogue takes: `sysext build R… --arch x86-64 --arch
arm64` when every image is already in the output directory and the sources are cached.

Every recipe with an upstream-shaped fixture (tests/upstream_fixtures.py) that builds for
both architectures without a lock file is served from 127.0.0.1 through the mirror
setting, built once for both architectures (cold: downloads, staging, packing), then built
again several times; the rebuilds must report every image "unchanged". What a rebuild
still does per image: resolve its sources (read a pin or fetch the upstream checksum file,
a few bytes), compute the build key, read the provenance file. It neither reads nor hashes
payloads, so the figure does not depend on how large the real downloads are.

Goal (issue 11): under 10 s on a 2-core machine. Each run is a fresh `sysext` process, as a
nightly job would start it, so interpreter start-up and imports are included.

Usage: python bench/rebuild.py [--runs 3] [--payload-mib 0]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.recipe_cases import (  # noqa: E402
    BOTH,
    CASES,
    Case,
    mirrors_env,
    publish_cases,
    recipe_copies,
)
from tests.servers import StaticServer  # noqa: E402
from tests.upstream_fixtures import SigningKey  # noqa: E402


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def catalogue_cases() -> tuple[list[Case], list[str]]:
    """One fixture release per recipe, for both architectures, buildable without a lock
    file (lock-only recipes would need `sysext lock` first): the one at the recipe's
    default version if there is one. Returns the cases and the recipes left out."""
    chosen: dict[str, Case] = {}
    left_out = set()
    for case in CASES:
        left_out.add(case.recipe)
        if case.locked or tuple(case.arches) != BOTH:
            continue
        chosen.setdefault(case.recipe, case)
    return list(chosen.values()), sorted(left_out - set(chosen))


def prepare(work: Path, server: StaticServer) -> tuple[Path, list[str], list[str]]:
    """Serve the chosen fixture releases; recipe copies default to their versions."""
    cases, left_out = catalogue_cases()
    key = SigningKey()
    publish_cases(cases, server.root, key)
    recipes = recipe_copies(work / "recipes", key.fingerprint)
    for case in cases:
        path = recipes / f"{case.recipe}.toml"
        text = re.sub(r'(?m)^version = "[^"]*"', f'version = "{case.version}"', path.read_text())
        path.write_text(text)
    return recipes, [c.recipe for c in cases], left_out


def run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"build failed ({proc.returncode}):\n{proc.stderr}")
    lines = proc.stderr.strip().splitlines()
    return elapsed, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sysext-rebuild-") as tmp:
        work = Path(tmp)
        (work / "www").mkdir()
        handler = functools.partial(_Quiet, directory=str(work / "www"))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        server = StaticServer(work / "www", f"http://127.0.0.1:{httpd.server_address[1]}")
        try:
            recipes, names, left_out = prepare(work, server)
            argv = [sys.executable, "-m", "sysext.cli.main", "build", *names]
            argv += ["--recipes-dir", str(recipes), "--cache-dir", str(work / "cache")]
            argv += ["--arch", "x86-64", "--arch", "arm64", "--output", str(work / "out")]
            env = {**os.environ, **mirrors_env(server), "PYTHONPATH": str(ROOT)}
            print(f"catalogue: {len(names)} recipes × 2 architectures = {2 * len(names)} images")
            print(f"left out (lock-only or one architecture only): {', '.join(left_out)}")
            print(f"cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}")
            cold, summary = run(argv, env)
            print(f"cold build (download, stage, pack): {cold:.2f} s — {summary}")
            times = []
            for _ in range(args.runs):
                elapsed, summary = run(argv, env)
                if "unchanged" not in summary or "built" in summary:
                    sys.exit(f"a rebuild was not a no-op: {summary}")
                times.append(elapsed)
            startup, _ = run([sys.executable, "-m", "sysext.cli.main", "--version"], env)
            print(
                f"no-op rebuild: median {statistics.median(times):.2f} s "
                f"(runs: {', '.join(f'{t:.2f}' for t in times)}) — {summary}; "
                f"goal < 10 s: {'met' if statistics.median(times) < 10 else 'missed'}"
            )
            print(f"of which interpreter start-up and `sysext --version`: {startup:.2f} s")
            print(f"load average at end: {os.getloadavg()[0]:.2f}")
        finally:
            httpd.shutdown()
            httpd.server_close()


if __name__ == "__main__":
    main()
