"""Closure size and build time of an apt recipe against an empty base and Debian bases.

Bases, all Debian 12 (bookworm) for x86-64:

* `empty`: a merged-/usr root whose dpkg database lists one unrelated package, so the
  closure is everything the recipe needs down to libc6 — the reference of every ratio;
* `minimal`: the named release's default minimal install (`--base debian:12`, Priority
  required and important with their dependencies);
* `root`: the debootstrapped Debian 12 root of the booted tests (minbase + systemd, dbus,
  gpg), when it exists on this machine.

For each base, `sysext build RECIPE --base B --compression zstd` runs in a fresh child
process with a fresh download cache that holds only the suites' indices (fetched once,
the same for every base), so each build downloads its .debs: the time is resolving,
downloading, checking, laying out and packing. The table gives the closure (packages,
total .deb size), the image size and the wall time, and their ratios to the empty base.
An image for an empty base is a measurement, not something to ship: its recipe copy lists
the whole closure in `skip_scripts` (libc6, dpkg, base-files… all have maintainer scripts).

The archive is the mirror of this machine's apt sources (or SYSEXT_MIRRORS' `apt://` rules).
Usage: python bench/apt_closure.py [--recipe git] [--rounds 1]
Timings depend on the machine's load and the mirror; the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sysext.boot.rootfs import Base, cached_root  # noqa: E402
from sysext.build.sources.apt import plan_closure  # noqa: E402
from sysext.core.config import load_settings  # noqa: E402
from sysext.core.download import Downloader  # noqa: E402
from sysext.recipe.model import bundled_recipes_dir, load_recipe  # noqa: E402
from tests.apt_fixtures import Deb, make_root  # noqa: E402


def sysext(*args: str | Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSEXT_CACHE_DIR": str(cache), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sysext.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=ROOT,
    )


def closure_names(recipe: Path, base: str, cache: Path) -> list[str]:
    loaded = load_recipe(recipe)
    spec = loaded.package_source
    assert spec is not None
    settings = load_settings(cache_dir=cache)
    plan = plan_closure(
        loaded,
        spec,
        Downloader(settings.cache_dir, settings.mirrors),
        arch="amd64",
        requested="latest",
        base_arg=base,
    )
    return [d.name for d in plan.debs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="git")
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="bench-apt-"))
    try:
        indices = work / "indices"
        listed = sysext("versions", options.recipe, cache=indices)
        if listed.returncode != 0:
            print(listed.stderr, file=sys.stderr)
            return 1
        bases: dict[str, str] = {
            "empty": str(make_root(work / "empty", [Deb("sysext-bench-nothing", "0")])),
            "minimal": "debian:12",
        }
        booted = cached_root(Base.DEBIAN_12)
        if booted is not None:
            bases["root"] = str(booted)
        recipe = bundled_recipes_dir() / f"{options.recipe}.toml"
        rows: dict[str, dict[str, float]] = {}
        for label, base in bases.items():
            used = recipe
            if label == "empty":
                names = closure_names(recipe, base, indices)
                used = work / f"{options.recipe}.toml"
                used.write_text(
                    recipe.read_text().replace(
                        'kind = "apt"', f'kind = "apt"\nskip_scripts = {json.dumps(names)}'
                    )
                )
            seconds = []
            for round_ in range(options.rounds):
                cache = work / f"cache-{label}-{round_}"
                shutil.copytree(indices, cache, copy_function=os.link)
                out = work / f"out-{label}-{round_}"
                started = time.monotonic()
                built = sysext(
                    "build", used, "--base", base, "-o", out, "--compression", "zstd",
                    "--recipes-dir", recipe.parent, cache=cache,
                )  # fmt: skip
                seconds.append(time.monotonic() - started)
                if built.returncode != 0:
                    print(f"{label}: {built.stderr.strip().splitlines()[-2:]}", file=sys.stderr)
                    return 1
            (provenance,) = out.glob("*.provenance.json")
            record = json.loads(provenance.read_text())
            (source,) = record["inputs"]["sources"]
            rows[label] = {
                "packages": len(source["parts"]),
                "debs_mib": sum(p["size"] for p in source["parts"]) / 2**20,
                "image_mib": record["image"]["size"] / 2**20,
                "seconds": statistics.median(seconds),
            }
        reference = rows["empty"]
        print(f"\n{options.recipe} for Debian 12, x86-64 (zstd images; median of {options.rounds})")
        print(f"{'base':8} {'packages':>8} {'.debs MiB':>10} {'image MiB':>10} {'build s':>8}"
              f"   ratios to empty (packages, .debs, image, time)")  # fmt: skip
        for label, row in rows.items():
            ratios = ", ".join(
                f"{row[k] / reference[k]:.2f}"
                for k in ("packages", "debs_mib", "image_mib", "seconds")
            )
            print(
                f"{label:8} {row['packages']:8.0f} {row['debs_mib']:10.1f} "
                f"{row['image_mib']:10.1f} {row['seconds']:8.1f}   {ratios}"
            )
        print(f"\nload average at end: {os.getloadavg()}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
