"""Benchmark `sysext pack` against the community bakery's `mksquashfs` command.

Builds a ~250 MiB tree of mixed, real content (the running interpreter's standard library
and its extension modules: Python source, bytecode, shared objects, data files), then
measures in the same run, on the same tree:

* reference: `mksquashfs TREE OUT -all-root -noappend` (sysext-bakery's command; default
  gzip), wall time, image size, peak RSS of the child;
* `sysext.image.pack()` with zstd at several levels (and xz, gzip for context): wall time,
  the share spent outside gensquashfs (tree scan, pack-file generation, hashing, manifest,
  provenance), image size, peak RSS of gensquashfs and of the Python process.

Each measurement runs in a fresh child process, so peak RSS figures are per run. Targets
from issue 2: image ≤ 0.90× the bakery's size at ≤ 1.0× its wall time, Python part ≤ 5%,
peak RSS ≤ 150 MB. The default zstd level (sysext.formats.squashfs.DEFAULT_ZSTD_LEVEL) is
chosen from these figures.

Figures of one run (2 shared cores, other engineers' tests running: wall times are noisy,
mksquashfs varied from 23 s to 52 s between runs), reference 75.0 MiB / 46.0 s / 420 MB:

    sysext pack     wall s  × ref  size MiB  × ref  python %  tool RSS MB  py RSS MB
    zstd-9             6.0   0.13      63.5   0.85       9.5           66         56
    zstd-12            7.3   0.16      63.1   0.84       8.4           66         56
    zstd-13           19.6   0.43      63.0   0.84       2.5           74         56
    zstd-15           18.3   0.40      62.9   0.84       3.0           74         56  (default)
    zstd-19           67.4   1.47      58.9   0.78       0.8           75         56
    zstd-13/128K      20.4   0.44      70.1   0.93       3.7           24         56
    xz                80.5   1.75      55.6   0.74       0.8           68         56
    gzip/128K         30.5   0.66      74.9   1.00       2.3           20         56

Usage: python bench/build.py [--size-mib 250] [--levels 3,9,15,19] [--keep DIR]
Timings depend on the machine's load; run it on an otherwise idle machine for firm numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, subprocess, sys, time
from pathlib import Path
mode, tree, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
rss_file = out / "tool-rss"
# /usr/bin/time reports the tool's own peak RSS; RUSAGE_CHILDREN would also count the pages
# a forked child shares with this process before it execs.
TIME = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)]
result = {}
if mode == "mksquashfs":
    start = time.perf_counter()
    subprocess.run([*TIME, "mksquashfs", str(tree), str(out / "bakery.raw"), "-all-root",
                    "-noappend", "-quiet", "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    result["wall"] = time.perf_counter() - start
    result["size"] = (out / "bakery.raw").stat().st_size
else:
    comp, level, block = sys.argv[4], sys.argv[5], sys.argv[6]
    import sysext.formats.squashfs as sq
    from sysext.architecture import Architecture
    from sysext.extension_release import ExtensionRelease
    from sysext.formats import Compression
    from sysext.image import pack
    tool_time = [0.0]
    real_run = sq.run
    def timed_run(argv, **k):
        t = time.perf_counter()
        try:
            return real_run([*TIME, *argv], **k)
        finally:
            tool_time[0] += time.perf_counter() - t
    sq.run = timed_run
    release = ExtensionRelease("bench", "1.0", Architecture.X86_64)
    start = time.perf_counter()
    built = pack(tree, release, out, compression=Compression(comp),
                 level=None if level == "-" else int(level),
                 block_size=None if block == "-" else int(block))
    result["wall"] = time.perf_counter() - start
    result["tool"] = tool_time[0]
    result["size"] = built.size
    result["self_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result["child_rss_kib"] = int(rss_file.read_text().split()[-1])
print(json.dumps(result))
"""


def make_tree(root: Path, size_mib: int) -> tuple[int, int]:
    """Copy the interpreter's library (sorted walk) into root/usr/lib/pythonX until full."""
    source = Path(sysconfig.get_paths()["stdlib"])
    budget = size_mib << 20
    total = files = 0
    dest_base = root / "usr/lib" / source.name
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for name in sorted(filenames):
            src = Path(dirpath) / name
            if src.is_symlink() or not src.is_file():
                continue
            size = src.stat().st_size
            if total + size > budget:
                continue
            dest = dest_base / src.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            os.chmod(dest, 0o755 if name.endswith(".so") else 0o644)
            total += size
            files += 1
        if total >= budget * 0.999:
            break
    return total, files


def measure(mode: str, tree: Path, work: Path, *extra: str) -> dict[str, float]:
    out = work / f"out-{mode}-{'-'.join(extra)}"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(tree), str(out), *extra],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    shutil.rmtree(out)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=250)
    parser.add_argument("--levels", default="3,9,12,13,15,19")
    parser.add_argument("--no-context", action="store_true", help="skip the xz and gzip runs")
    args = parser.parse_args()
    for tool in ("mksquashfs", "gensquashfs"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    with tempfile.TemporaryDirectory(prefix="sysext-bench-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        total, files = make_tree(tree, args.size_mib)
        print(f"tree: {total / 2**20:.0f} MiB in {files} files (copied from the Python stdlib)")
        print(f"cores: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.2f}")
        ref = measure("mksquashfs", tree, work)
        print(
            f"\nreference mksquashfs -all-root -noappend (gzip): {ref['wall']:.1f} s, "
            f"{ref['size'] / 2**20:.1f} MiB, peak RSS {ref['child_rss_kib'] / 1024:.0f} MB"
        )
        header = (
            f"\n{'sysext pack':<14}{'wall s':>8}{'× ref':>7}{'size MiB':>10}{'× ref':>7}"
            f"{'python %':>10}{'tool RSS MB':>13}{'py RSS MB':>11}  targets"
        )
        print(header)
        runs = [("zstd", level, "-") for level in args.levels.split(",")]
        if not args.no_context:
            # The same levels with squashfs's traditional 128 KiB blocks, and other compressors.
            runs += [("zstd", level, "131072") for level in args.levels.split(",")[1:4]]
            runs += [("xz", "-", "-"), ("gzip", "-", "-"), ("gzip", "-", "131072")]
        for comp, level, block in runs:
            r = measure("pack", tree, work, comp, level, block)
            wall_ratio = r["wall"] / ref["wall"]
            size_ratio = r["size"] / ref["size"]
            python_share = (r["wall"] - r["tool"]) / r["wall"] * 100
            tool_rss = r["child_rss_kib"] / 1024
            py_rss = r["self_rss_kib"] / 1024
            ok = (
                size_ratio <= 0.90
                and wall_ratio <= 1.0
                and python_share <= 5
                and max(tool_rss, py_rss) <= 150
            )
            label = (f"{comp}-{level}" if level != "-" else comp) + (
                f"/{int(block) >> 10}K" if block != "-" else ""
            )
            print(
                f"{label:<14}{r['wall']:>8.1f}{wall_ratio:>7.2f}{r['size'] / 2**20:>10.1f}"
                f"{size_ratio:>7.2f}{python_share:>10.1f}{tool_rss:>13.0f}{py_rss:>11.0f}  "
                f"{'met' if ok else 'missed'}"
            )
        print(
            f"\nload average at end: {os.getloadavg()[0]:.2f} (timings are noisy on a busy machine)"
        )


if __name__ == "__main__":
    main()
