"""How long a no-op rebuild of the catalogue takes: `sysext build R… --arch x86-64 --arch
arm64` when every image is already in the output directory and the sources are cached.

The recipes that have upstream-shaped fixtures (tests/test_recipes_catalog.py: docker,
containerd, crio, k3s, kubernetes, tailscale; tests/test_build.py: podman — all but the
PyPI-based shellcheck, which needs the real index) are served from 127.0.0.1 through the mirror
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hashlib  # noqa: E402

from tests.conftest import StaticServer  # noqa: E402
from tests.test_build import PODMAN_MEMBERS, upstream_tarball  # noqa: E402
from tests.test_recipes_catalog import ARM, CASES, RECIPES, X86, Upstream, mirrors_env  # noqa: E402


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def prepare(work: Path, server: StaticServer) -> tuple[Path, list[str]]:
    """Serve every fixture release for both architectures; recipes pinned to them."""
    recipes = work / "recipes"
    recipes.mkdir()
    up = Upstream()
    names = []
    for case in CASES:
        pins: dict[str, str] = {}
        for arch in (X86, ARM):
            pins.update(case.upstream(up, case.version, arch))
        text = (RECIPES / f"{case.name}.toml").read_text()
        text = text.replace('\nversion = "', f'\nversion = "{case.version}"\n# was "', 1)
        if pins:
            text += f'\n[sources.sha256."{case.version}"]\n'
            text += "".join(f'{arch} = "{digest}"\n' for arch, digest in pins.items())
        (recipes / f"{case.name}.toml").write_text(text)
        names.append(case.name)
    up.publish(server)
    # podman's fixture lives in tests/test_build.py; pinned like docker (no checksum file).
    version, pins = "0.0.1", []
    for arch in (X86, ARM):
        tarball = upstream_tarball(PODMAN_MEMBERS, f"podman-linux-{arch.debian_name}")
        asset = server.root / (
            f"gh/mgoltzsche/podman-static/releases/download/v{version}/"
            f"podman-linux-{arch.debian_name}.tar.gz"
        )
        asset.parent.mkdir(parents=True, exist_ok=True)
        asset.write_bytes(tarball)
        pins.append(f'{arch.systemd_name} = "{hashlib.sha256(tarball).hexdigest()}"\n')
    text = (RECIPES / "podman.toml").read_text()
    text = text.replace('\nversion = "', f'\nversion = "{version}"\n# was "', 1)
    (recipes / "podman.toml").write_text(text + f'\n[sources.sha256."{version}"]\n' + "".join(pins))
    names.append("podman")
    return recipes, names


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
            recipes, names = prepare(work, server)
            argv = [sys.executable, "-m", "sysext.cli.main", "build", *names]
            argv += ["--recipes-dir", str(recipes), "--cache-dir", str(work / "cache")]
            argv += ["--arch", "x86-64", "--arch", "arm64", "--output", str(work / "out")]
            env = {**os.environ, **mirrors_env(server), "PYTHONPATH": str(ROOT)}
            print(f"catalogue: {len(names)} recipes × 2 architectures = {2 * len(names)} images")
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
