"""Benchmark `sysext pack` against the community bakery's, an expert's and fedora-sysexts'
image commands: image size, build time and — with --read, as root — cold reads through the
kernel, on three trees, in alternating runs.

Trees (built once per run):

* `stdlib`: the running interpreter's library (sorted walk, up to --size-mib): Python
  source, bytecode, extension modules, data files — many small files;
* `elf+stdlib`: ~150 MiB of ELF shared objects from the host's multiarch library directory
  plus the standard library (without tests, site-packages, static library) — what a
  runtime extension (podman, a language runtime) looks like;
* `bin+stdlib`: the `stdlib` tree plus one big executable in usr/bin (--binary; by default
  the Go program of 20–100 MiB on $PATH closest to 60 MiB) — a container runtime's daemon
  (dockerd, containerd, kubelet are 40–100 MiB Go programs) among small files.

Commands measured on each tree, in the same run:

* `bakery`: `mksquashfs TREE OUT -all-root -noappend` (sysext-bakery; gzip, 128 KiB blocks):
  the reference every ratio is against;
* `expert`: `mksquashfs … -comp zstd -Xcompression-level 15 -b 1M`;
* `erofs`: `mkfs.erofs -zlz4hc --all-root OUT TREE` (fedora-sysexts);
* `gensquashfs`: `gensquashfs --pack-dir TREE --all-root -c zstd -X level=16 -b 1048576`,
  sysext's squashfs writer before issue 23 (squashfs-tools-ng 1.2 writes no directory
  index, which slows lookups in big directories);
* `sysext sq SPEC` / `sysext erofs SPEC`: `sysext.build.pack()` (scan, private view,
  mksquashfs or mkfs.erofs, hashing, manifest, provenance) with each setting of --squashfs
  and --erofs. SPEC is `default` or `COMP[-LEVEL][@BLOCK_KIB]`.

Builds run in fresh child processes, once per round; rounds alternate the order (forward,
then backward…) so that a change in the machine's load hits every command alike. The image
of each command is kept, and with --read every image is then read in --read-rounds
alternating rounds, each read from a fresh loop mount after dropping the page cache: the
whole tree (every file once, in `os.walk` order: a directory's files, then its
subdirectories) and the tree's largest file alone (a daemon's first start). The tables show
medians. --read refuses to run unless it can drop the page cache (root, and a writable
/proc/sys/vm/drop_caches): warm reads would look fast and mean nothing.

The RSS column is the packing tool's peak resident memory in MiB (matrix builds pack several
images at once). Targets (issue 23), for the default setting on every tree: image ≤ 0.85×
the bakery's size, both cold reads ≤ 1.0× the bakery's image, build time ≤ 1.5× the
bakery's. --json FILE writes every figure for bench/frontier.py (the plot in
docs/catalogue.md).

Usage: python bench/build.py [--trees stdlib,elf+stdlib,bin+stdlib] [--size-mib 150]
       [--elf-mib 150] [--binary PATH] [--squashfs default,zstd-15,xz] [--erofs default|none]
       [--refs bakery,expert,erofs,gensquashfs] [--rounds 2] [--read] [--read-rounds 3]
       [--json FILE]
The defaults are the run in docs/catalogue.md: `python bench/build.py --read --json F`.
Timings depend on the machine's load; the load average is printed at start and end. Sizes
are exact.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
GO_BUILD_INFO = b"\xff Go buildinf:"  # the magic of a Go program's .go.buildinfo section
SIZE_TARGET, READ_TARGET, BUILD_TARGET = 0.85, 1.0, 1.5
CHILD = r"""
import json, subprocess, sys, time
from pathlib import Path
mode, tree, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
result = {}
if mode in ("bakery", "expert", "erofs", "gensquashfs"):
    image = out / "image.raw"
    argv = {
        "bakery": ["mksquashfs", str(tree), str(image), "-all-root", "-noappend"],
        "expert": ["mksquashfs", str(tree), str(image), "-all-root", "-noappend",
                   "-comp", "zstd", "-Xcompression-level", "15", "-b", "1M"],
        "erofs": ["mkfs.erofs", "-zlz4hc", "--all-root", "--quiet", str(image), str(tree)],
        "gensquashfs": ["gensquashfs", "--pack-dir", str(tree), "--all-root", "-c", "zstd",
                        "-X", "level=16", "-b", "1048576", "-q", str(image)],
    }[mode]
    if mode in ("bakery", "expert"):
        argv += ["-quiet", "-no-progress"]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    result["wall"] = time.perf_counter() - start
    result["size"] = image.stat().st_size
else:
    spec = sys.argv[4]
    import sysext.image.formats.squashfs as sq
    from sysext.systemd.architecture import Architecture
    from sysext.systemd.extension_release import ExtensionRelease
    from sysext.image.formats import Compression, ImageFormat
    from sysext.build.pack import pack
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
image.rename(out / "kept.raw")
import resource
# Peak resident memory of the packing tool (the largest child of this process): matrix
# builds pack several images at once.
result["rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(result))
"""


def cannot_drop_caches() -> str | None:
    """Why cold reads cannot be measured here, or None when they can.

    Writing to drop_caches is the test: as a user it is refused, and root in a user
    namespace or a container with a read-only /proc passes `geteuid() == 0` and still fails.
    """
    if os.geteuid() != 0:
        return "--read mounts the images and drops the page cache: run it as root"
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
    except OSError as exc:
        return (
            f"--read cannot drop the page cache ({DROP_CACHES}: {exc.strerror or exc}); "
            "run it as root on the host, not in a container or user namespace"
        )
    return None


def cold_read(image: Path, mnt: Path, largest: str | None) -> tuple[float, float]:
    """Seconds (wall, CPU) to read every file (or only `largest`) of `image` from a cold page
    cache: what a host pays the first time after boot. A fresh mount each time, so squashfs's
    own caches (fragments, metadata) start empty too. The kernel decompresses in the reading
    process, so its CPU time is the decompression's, which the machine's load hardly
    changes; the wall time adds the disk and the waits for a core."""
    subprocess.run(["mount", "-o", "loop,ro", str(image), str(mnt)], check=True)
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
        start, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
        if largest is not None:
            read_file(mnt / largest)
        else:
            for dirpath, _, names in os.walk(mnt):
                for name in names:
                    path = os.path.join(dirpath, name)
                    if not os.path.islink(path):
                        read_file(Path(path))
        return time.perf_counter() - start, cpu_seconds(resource.RUSAGE_SELF) - cpu
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def read_file(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


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


def find_binary() -> Path | None:
    """The Go program of 20–100 MiB in $PATH's directories closest to 60 MiB (what container
    runtimes ship), else the ELF executable of that size closest to it."""
    best: tuple[bool, int, str] | None = None
    for directory in dict.fromkeys(os.environ.get("PATH", "").split(os.pathsep)):
        try:
            names = os.listdir(directory or ".")
        except OSError:
            continue
        for name in names:
            path = os.path.realpath(os.path.join(directory, name))
            try:
                size = os.stat(path).st_size
                if not 20 << 20 <= size <= 100 << 20 or not os.access(path, os.X_OK):
                    continue
                with open(path, "rb") as f:
                    head = f.read(4)
                    is_go = head == b"\x7fELF" and GO_BUILD_INFO in f.read()
                if head != b"\x7fELF":
                    continue
            except OSError:
                continue
            if best is None or (is_go, -abs(size - (60 << 20)), path) > best:
                best = (is_go, -abs(size - (60 << 20)), path)
    return Path(best[2]) if best else None


@dataclass(frozen=True)
class Tree:
    path: Path
    size: int
    files: int
    largest: str  # relative path of the largest file


def largest_file(root: Path) -> str:
    sizes = ((p.stat().st_size, str(p.relative_to(root))) for p in root.rglob("*") if p.is_file())
    return max(sizes)[1]


def make_trees(work: Path, args: argparse.Namespace) -> dict[str, Tree]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    trees: dict[str, Tree] = {}
    for name in args.trees.split(","):
        root = work / name.replace("+", "-")
        size = files = 0
        if name in ("stdlib", "bin+stdlib"):
            size, files = copy_tree(
                stdlib, root / "usr/lib" / stdlib.name, args.size_mib << 20, lambda n: True
            )
        if name == "bin+stdlib":
            binary = Path(args.binary) if args.binary else find_binary()
            if binary is None:
                sys.exit("no ELF executable of 20-100 MiB on $PATH: pass --binary PATH")
            target = root / "usr/bin" / binary.name
            target.parent.mkdir(parents=True)
            shutil.copyfile(binary, target)
            os.chmod(target, 0o755)
            size, files = size + target.stat().st_size, files + 1
            print(f"bin+stdlib: {binary.name}, {target.stat().st_size / 2**20:.0f} MiB")
        if name == "elf+stdlib":
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
            size, files = size + more, files + more_files
        if not files:
            sys.exit(f"unknown tree {name!r}: use stdlib, elf+stdlib, bin+stdlib")
        trees[name] = Tree(root, size, files, largest_file(root))
    return trees


def build(mode: str, tree: Path, out: Path, *extra: str) -> dict[str, float]:
    out.mkdir()
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(tree), str(out), *extra],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    # CPU time of the child and the tools it ran: steadier than wall time on a busy machine.
    result["cpu"] = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    return result


@dataclass
class Runs:
    builds: list[dict[str, float]] = field(default_factory=list)
    whole: list[tuple[float, float]] = field(default_factory=list)  # (wall, CPU) seconds
    largest: list[tuple[float, float]] = field(default_factory=list)
    image: Path | None = None


def alternate(items: list[str], rounds: int) -> list[str]:
    """Forward, backward, forward…: each item gets every position in turn."""
    order: list[str] = []
    for round_no in range(rounds):
        order += items if round_no % 2 == 0 else items[::-1]
    return order


def measure_tree(
    name: str, tree: Tree, configs: list[tuple[str, str, tuple[str, ...]]], work: Path,
    args: argparse.Namespace,
) -> dict[str, Runs]:  # fmt: skip
    runs = {label: Runs() for label, _, _ in configs}
    by_label = {label: (mode, extra) for label, mode, extra in configs}
    for n, label in enumerate(alternate(list(by_label), args.rounds)):
        mode, extra = by_label[label]
        out = work / f"out-{name}-{n}".replace("+", "-")
        runs[label].builds.append(build(mode, tree.path, out, *extra))
        kept = out / "kept.raw"
        if runs[label].image is None:
            runs[label].image = kept
        else:
            shutil.rmtree(out)
    if args.read:
        mnt = work / "mnt"
        mnt.mkdir(exist_ok=True)
        for label in alternate(list(by_label), args.read_rounds):
            image = runs[label].image
            assert image is not None
            runs[label].whole.append(cold_read(image, mnt, None))
            runs[label].largest.append(cold_read(image, mnt, tree.largest))
    for r in runs.values():
        if r.image is not None:
            shutil.rmtree(r.image.parent)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=150, help="stdlib tree size")
    parser.add_argument("--elf-mib", type=int, default=150, help="ELF part of elf+stdlib")
    parser.add_argument("--binary", help="the big executable of bin+stdlib")
    parser.add_argument(
        "--squashfs",
        default="default,zstd-15,xz",
        help="sysext squashfs settings: COMP[-LEVEL][@BLOCK_KIB], or `default`",
    )
    parser.add_argument(
        "--erofs", default="default", help="sysext erofs settings (COMP[-LEVEL]), or `none`"
    )
    parser.add_argument("--refs", default="bakery", help="reference commands (bakery always runs)")
    parser.add_argument("--rounds", type=int, default=2, help="builds of each setting")
    parser.add_argument("--read", action="store_true", help="also time cold reads (root)")
    parser.add_argument("--read-rounds", type=int, default=3, help="cold reads of each image")
    parser.add_argument("--trees", default="stdlib,elf+stdlib,bin+stdlib")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    # Refused before any work: a run that cannot drop the page cache would print warm reads.
    if args.read and (reason := cannot_drop_caches()) is not None:
        sys.exit(reason)
    needed = ["mksquashfs", "mkfs.erofs"] + (["gensquashfs"] if "gensquashfs" in args.refs else [])
    for tool in needed:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")

    def spec(fmt: str, text: str) -> str:
        return f"{fmt}:" if text == "default" else f"{fmt}:{text}"

    refs = {"bakery": "bakery", "expert": "expert zstd-15/1M", "erofs": "erofs lz4hc",
            "gensquashfs": "gensquashfs zstd-16/1M"}  # fmt: skip
    configs: list[tuple[str, str, tuple[str, ...]]] = [("bakery", "bakery", ())]
    configs += [(refs[r], r, ()) for r in args.refs.split(",") if r in refs and r != "bakery"]
    configs += [
        (f"sysext sq {text}", "pack", (spec("squashfs", text),))
        for text in args.squashfs.split(",")
        if text != "none"
    ]
    configs += [
        (f"sysext erofs {text}", "pack", (spec("erofs", text),))
        for text in args.erofs.split(",")
        if text != "none"
    ]
    load_start = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()}; load average at start: {load_start:.2f}")
    report: dict[str, object] = {"load_start": load_start, "trees": {}}
    verdicts: dict[str, list[bool]] = {}
    with tempfile.TemporaryDirectory(prefix="sysext-bench-") as tmp:
        work = Path(tmp)
        for name, tree in make_trees(work, args).items():
            print(
                f"\ntree {name}: {tree.size / 2**20:.0f} MiB in {tree.files} files; largest "
                f"{tree.largest} ({(tree.path / tree.largest).stat().st_size / 2**20:.0f} MiB)"
            )
            runs = measure_tree(name, tree, configs, work, args)
            report["trees"][name] = summarize(name, tree, runs, args, verdicts)  # type: ignore[index]
            shutil.rmtree(tree.path)
    print("\nsettings meeting every target on every tree measured:")
    for label, oks in verdicts.items():
        print(f"  {label:<28}{'yes' if all(oks) else 'no'}")
    load_end = os.getloadavg()[0]
    report["load_end"] = load_end
    print(f"load average at end: {load_end:.2f} (timings are noisy on a busy machine)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


def median(values: list[tuple[float, float]], index: int) -> float:
    return statistics.median(v[index] for v in values)


def summarize(
    name: str, tree: Tree, runs: dict[str, Runs], args: argparse.Namespace,
    verdicts: dict[str, list[bool]],
) -> dict[str, object]:  # fmt: skip
    """Print one tree's table (ratios to the bakery's image) and return its figures."""
    ref = runs["bakery"]
    ref_wall = statistics.median(b["wall"] for b in ref.builds)
    ref_cpu = statistics.median(b["cpu"] for b in ref.builds)
    ref_size = ref.builds[0]["size"]
    reads = f"{'tree s':>8}{'×':>6}{'cpu×':>6}{'file s':>8}{'×':>6}{'cpu×':>6}" if args.read else ""
    print(
        f"{'command':<28}{'build s':>8}{'×':>6}{'cpu×':>6}{'RSS':>6}{'MiB':>7}{'×':>6}{reads}"
        f"{'py s/10k':>9}  targets ≤{SIZE_TARGET}× size, ≤{READ_TARGET}× reads, "
        f"≤{BUILD_TARGET}× build"
    )
    rows: dict[str, object] = {}
    for label, r in runs.items():
        wall = statistics.median(b["wall"] for b in r.builds)
        cpu = statistics.median(b["cpu"] for b in r.builds)
        size = r.builds[0]["size"]
        row: dict[str, float] = {"build": wall / ref_wall, "build_cpu": cpu / ref_cpu}
        row |= {"size": size / ref_size, "build_s": wall, "size_bytes": size}
        row["tool_rss_mib"] = max(b["rss"] for b in r.builds)
        read = ""
        if args.read:
            pairs = (("tree", r.whole, ref.whole), ("file", r.largest, ref.largest))
            for key, mine, theirs in pairs:
                row[f"read_{key}_s"] = median(mine, 0)
                row[f"read_{key}"] = median(mine, 0) / median(theirs, 0)
                row[f"read_{key}_cpu"] = median(mine, 1) / max(median(theirs, 1), 1e-6)
                read += (
                    f"{row[f'read_{key}_s']:>8.2f}{row[f'read_{key}']:>6.2f}"
                    f"{row[f'read_{key}_cpu']:>6.2f}"
                )
        python = verdict = ""
        if label.startswith("sysext"):
            py = statistics.median(b["wall"] - b["tool"] for b in r.builds)
            python = f"{py / tree.files * 10_000:.2f}"
            missed = [
                what
                for what, value, limit in (
                    ("size", row["size"], SIZE_TARGET),
                    ("build", row["build"], BUILD_TARGET),
                    ("tree read", row.get("read_tree", 0.0), READ_TARGET),
                    ("file read", row.get("read_file", 0.0), READ_TARGET),
                )
                if value > limit
            ]
            verdict = "missed " + ", ".join(missed) if missed else "met"
            verdicts.setdefault(label, []).append(not missed)
        rows[label] = row
        print(
            f"{label:<28}{wall:>8.1f}{row['build']:>6.2f}{row['build_cpu']:>6.2f}"
            f"{row['tool_rss_mib']:>6.0f}{size / 2**20:>7.1f}{row['size']:>6.2f}{read}"
            f"{python:>9}  {verdict}"
        )
    print(f"load average now: {os.getloadavg()[0]:.2f}")
    return {"size_mib": tree.size / 2**20, "files": tree.files, "largest": tree.largest,
            "load": os.getloadavg()[0], "settings": rows}  # fmt: skip


if __name__ == "__main__":
    main()
