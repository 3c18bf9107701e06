"""Benchmark `sysext pack` against the community bakery's, an expert's and fedora-sysexts'
image commands, on two trees, in alternating runs.

Trees (built once per run):

* `stdlib`: the running interpreter's library (sorted walk, up to --size-mib): Python
  source, bytecode, extension modules, data files — many small files;
* `elf+stdlib`: ~150 MiB of ELF shared objects from the host's multiarch library directory
  plus the standard library (without tests, site-packages, static library) — what a
  runtime extension (podman, containerd, a language runtime) looks like.

Commands measured on each tree, in the same run:

* `bakery`: `mksquashfs TREE OUT -all-root -noappend` (sysext-bakery; gzip, 128 KiB blocks):
  the reference every ratio is against;
* `expert`: `mksquashfs … -comp zstd -Xcompression-level 15 -b 1M`;
* `erofs`: `mkfs.erofs -zlz4hc --all-root OUT TREE` (fedora-sysexts);
* `sysext zstd-N`: `sysext.build.pack()` (scan, pack file, gensquashfs, hashing, manifest,
  provenance) at each level of --levels, 1 MiB blocks; with --order also the default level
  with the content-kind sort file (sysext.formats.squashfs.sort_file).

Each command runs in a fresh child process, once per round; rounds alternate the order
(forward, then backward…) so that a change in the machine's load hits every command alike;
the tables show medians. Python's own time (everything in pack() but gensquashfs) is given
as seconds per 10,000 files. Targets (issue 11): image ≤ 0.85× the bakery's size at ≤ 1.0×
its wall time. The default zstd level (sysext.formats.squashfs.DEFAULT_ZSTD_LEVEL) is the
one meeting both on both trees with the smallest total wall time.

Usage: python bench/build.py [--size-mib 150] [--elf-mib 150] [--levels 12,15,16]
       [--rounds 2] [--order] [--trees stdlib,elf+stdlib]
Timings depend on the machine's load; the load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, subprocess, sys, time
from pathlib import Path
mode, tree, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
result = {}

def cold_read(image):
    # Read every file of the image through the kernel, from a cold page cache: what a host
    # pays the first time it runs the extension's programs after boot.
    import os, tempfile
    mnt = tempfile.mkdtemp(dir=out)
    subprocess.run(["mount", "-o", "loop,ro", str(image), mnt], check=True)
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        start = time.perf_counter()
        for dirpath, _, names in os.walk(mnt):
            for n in names:
                p = os.path.join(dirpath, n)
                if not os.path.islink(p):
                    with open(p, "rb", buffering=0) as f:
                        while f.read(1 << 20):
                            pass
        return time.perf_counter() - start
    finally:
        subprocess.run(["umount", mnt], check=True)

if mode in ("bakery", "expert", "erofs"):
    image = out / "image.raw"
    argv = {
        "bakery": ["mksquashfs", str(tree), str(image), "-all-root", "-noappend"],
        "expert": ["mksquashfs", str(tree), str(image), "-all-root", "-noappend",
                   "-comp", "zstd", "-Xcompression-level", "15", "-b", "1M"],
        "erofs": ["mkfs.erofs", "-zlz4hc", "--all-root", "--quiet", str(image), str(tree)],
    }[mode]
    if mode != "erofs":
        argv += ["-quiet", "-no-progress"]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    result["wall"] = time.perf_counter() - start
    result["size"] = image.stat().st_size
else:
    spec, order = sys.argv[4], sys.argv[5] == "order"
    import sysext.image.formats.squashfs as sq
    from sysext.systemd.architecture import Architecture
    from sysext.systemd.extension_release import ExtensionRelease
    from sysext.image.formats import Compression, ImageFormat
    from sysext.build.pack import pack
    sq.ORDER_BY_CONTENT = order
    tool_time = [0.0]
    real_run = sq.run
    def timed_run(argv, **k):
        t = time.perf_counter()
        try:
            return real_run(argv, **k)
        finally:
            tool_time[0] += time.perf_counter() - t
    sq.run = timed_run
    import sysext.image.formats.erofs as ef
    ef.run = timed_run
    fmt, _, rest = spec.partition(":")
    comp, _, block = rest.partition("@")
    name, _, level = comp.rpartition("-") if comp[-1:].isdigit() else (comp, "", "")
    release = ExtensionRelease("bench", "1.0", Architecture.X86_64)
    start = time.perf_counter()
    built = pack(
        tree, release, out,
        image_format=ImageFormat(fmt),
        compression=Compression(name) if name else None,
        level=int(level) if level else None,
        block_size=int(block) << 10 if block else None,
    )
    result["wall"] = time.perf_counter() - start
    result["tool"] = tool_time[0]
    result["size"] = built.size
    image = built.path
if "--read" in sys.argv:
    result["read"] = cold_read(image)
print(json.dumps(result))
"""


def copy_tree(
    source: Path, dest: Path, budget: int, keep: Callable[[str], bool], skip: tuple[str, ...] = ()
) -> tuple[int, int]:
    """Copy regular files of `source` (sorted walk) into `dest` while they fit in `budget`."""
    total = files = 0
    for dirpath, dirnames, filenames in os.walk(source):
        top = Path(dirpath) == source
        dirnames[:] = sorted(d for d in dirnames if not (top and d.startswith(skip)))
        for name in sorted(filenames):
            src = Path(dirpath) / name
            if src.is_symlink() or not src.is_file() or not keep(name):
                continue
            size = src.stat().st_size
            if total + size > budget:
                continue
            target = dest / src.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            os.chmod(target, 0o755 if ".so" in name else 0o644)
            total += size
            files += 1
    return total, files


def is_shared_object(name: str) -> bool:
    return name.endswith(".so") or ".so." in name


def make_trees(work: Path, args: argparse.Namespace) -> dict[str, tuple[Path, int, int]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    trees: dict[str, tuple[Path, int, int]] = {}
    wanted = args.trees.split(",")
    if "stdlib" in wanted:
        root = work / "stdlib"
        size, files = copy_tree(
            stdlib, root / "usr/lib" / stdlib.name, args.size_mib << 20, lambda n: True
        )
        trees["stdlib"] = (root, size, files)
    if "elf+stdlib" in wanted:
        root = work / "elf"
        multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
        libdir = Path("/usr/lib") / multiarch
        size, files = copy_tree(
            libdir, root / "usr/lib" / multiarch, args.elf_mib << 20, is_shared_object
        )
        more, more_files = copy_tree(
            stdlib,
            root / "usr/lib" / stdlib.name,
            1 << 40,
            lambda n: True,
            # Tests, third-party packages and the static build library are not the stdlib.
            skip=("test", "site-packages", "config-"),
        )
        trees["elf+stdlib"] = (root, size + more, files + more_files)
    return trees


def measure(mode: str, tree: Path, work: Path, *extra: str) -> dict[str, float]:
    out = work / f"out-{mode}-{'-'.join(extra).replace(':', '_')}"
    out.mkdir()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(tree), str(out), *extra],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        shutil.rmtree(out)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=150, help="stdlib tree size")
    parser.add_argument("--elf-mib", type=int, default=150, help="ELF part of elf+stdlib")
    parser.add_argument(
        "--squashfs",
        default="default,zstd-12",
        help="sysext squashfs settings to measure: COMP[-LEVEL][@BLOCK_KIB], or `default`",
    )
    parser.add_argument(
        "--erofs", default="default", help="sysext erofs settings (COMP[-LEVEL]), or `none`"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--order", action="store_true", help="also the content-kind sort file")
    parser.add_argument("--read", action="store_true", help="also time a cold read (root)")
    parser.add_argument("--trees", default="stdlib,elf+stdlib")
    args = parser.parse_args()
    for tool in ("mksquashfs", "gensquashfs", "mkfs.erofs"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    if args.read and os.geteuid() != 0:
        sys.exit("--read mounts the images and drops the page cache: run it as root")

    def spec(fmt: str, text: str) -> str:
        return f"{fmt}:" if text == "default" else f"{fmt}:{text}"

    configs: list[tuple[str, str, tuple[str, ...]]] = [
        ("bakery", "bakery", ()),
        ("expert zstd-15/1M", "expert", ()),
        ("erofs lz4hc", "erofs", ()),
    ]
    configs += [
        (f"sysext sq {text}", "pack", (spec("squashfs", text), "tree"))
        for text in args.squashfs.split(",")
    ]
    configs += [
        (f"sysext erofs {text}", "pack", (spec("erofs", text), "tree"))
        for text in args.erofs.split(",")
        if text != "none"
    ]
    if args.order:
        configs.append(("sysext sq sorted", "pack", ("squashfs:", "order")))
    if args.read:
        configs = [(label, mode, (*extra, "--read")) for label, mode, extra in configs]
    print(f"cores: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.2f}")
    totals: dict[str, float] = {}
    verdicts: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="sysext-bench-") as tmp:
        work = Path(tmp)
        for name, (tree, size, files) in make_trees(work, args).items():
            print(f"\ntree {name}: {size / 2**20:.0f} MiB in {files} files")
            runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in configs}
            for round_no in range(args.rounds):
                ordered = configs if round_no % 2 == 0 else list(reversed(configs))
                for label, mode, extra in ordered:
                    runs[label].append(measure(mode, tree, work, *extra))
            ref = runs["bakery"]
            ref_wall = statistics.median(r["wall"] for r in ref)
            ref_size = ref[0]["size"]
            ref_read = statistics.median(r["read"] for r in ref) if args.read else 0.0
            reads = f"{'read s':>8}{'× ref':>7}" if args.read else ""
            print(
                f"{'command':<24}{'wall s':>8}{'× ref':>7}{'size MiB':>10}{'× ref':>7}{reads}"
                f"{'py s/10k files':>16}  targets (≤0.85× size, ≤1.0× time)"
            )
            for label, _, _ in configs:
                wall = statistics.median(r["wall"] for r in runs[label])
                size_b = runs[label][0]["size"]
                spread = max(r["wall"] for r in runs[label]) - min(r["wall"] for r in runs[label])
                read = ""
                if args.read:
                    cold = statistics.median(r["read"] for r in runs[label])
                    read = f"{cold:>8.1f}{cold / ref_read:>7.2f}"
                python = ""
                verdict = ""
                if label.startswith("sysext"):
                    py = statistics.median(r["wall"] - r["tool"] for r in runs[label])
                    python = f"{py / files * 10_000:.2f}"
                if label.startswith("sysext sq"):
                    ok = size_b / ref_size <= 0.85 and wall / ref_wall <= 1.0
                    verdict = "met" if ok else "missed"
                    totals[label] = totals.get(label, 0.0) + wall
                    verdicts[label] = verdicts.get(label, True) and ok
                print(
                    f"{label:<24}{wall:>8.1f}{wall / ref_wall:>7.2f}{size_b / 2**20:>10.1f}"
                    f"{size_b / ref_size:>7.2f}{read}{python:>16}  {verdict}"
                    f"{f'  (runs spread {spread:.1f} s)' if args.rounds > 1 else ''}"
                )
    print("\ntotal wall time over the trees (choosing the squashfs default):")
    for label, total in totals.items():
        state = "all targets met" if verdicts[label] else "missed a target"
        print(f"  {label:<24}{total:>8.1f} s  {state}")
    print(f"load average at end: {os.getloadavg()[0]:.2f} (timings are noisy on a busy machine)")


if __name__ == "__main__":
    main()
