"""What a signed verity DDI costs against the plain image of the same tree: size and
build time, squashfs (the default, xz) and erofs (lz4hc).

Trees are bench/build.py's (`stdlib`: many small files; `elf+stdlib`: shared objects plus
the standard library). Each round packs every (tree, format) plain and as a DDI
(`sysext.build.pack.pack(…, verity_signer=…)`: the file system, then its hash tree, the
signature and the GPT), alternating which goes first; the table shows medians. The
DDI's extra bytes are its hash tree (1/128 of the data plus a 4 KiB superblock block and
the upper levels), the 4 KiB signature partition, the 4 KiB-aligned GPT and padding; the
extra time is one SHA-256 pass over the file system image for the salt and one for the
tree, plus the copy into the partition; the "DDI step" column times that alone
(`write_ddi` on the plain image, medians), which machine load disturbs far less than the
whole builds.

Usage: python bench/verity.py [--size-mib 60] [--elf-mib 60] [--rounds 2]
       [--trees stdlib,elf+stdlib]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sysext.build.pack import pack  # noqa: E402
from sysext.image.ddi import write_ddi  # noqa: E402
from sysext.image.formats import ImageFormat  # noqa: E402
from sysext.systemd.architecture import Architecture  # noqa: E402
from sysext.systemd.extension_release import ExtensionRelease  # noqa: E402
from sysext.trust.x509 import Signer, generate_signer  # noqa: E402


def _build_bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_build", ROOT / "bench" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one(tree: Path, out: Path, fmt: ImageFormat, signer: Signer | None) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    release = ExtensionRelease("bench", "1.0", Architecture.X86_64)
    started = time.perf_counter()
    built = pack(tree, release, out, image_format=fmt, verity_signer=signer)
    return time.perf_counter() - started, built.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=60)
    parser.add_argument("--elf-mib", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trees", default="stdlib,elf+stdlib")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="sysext-bench-verity-") as name:
        work = Path(name)
        signer = generate_signer(work / "v.key", work / "v.crt", "bench")
        trees = _build_bench().make_trees(work, args)  # type: ignore[attr-defined]
        rows = []
        for label, (tree, size, files) in trees.items():
            for fmt in (ImageFormat.SQUASHFS, ImageFormat.EROFS):
                times: dict[str, list[float]] = {"plain": [], "ddi": [], "step": []}
                sizes: dict[str, int] = {}
                for round_ in range(args.rounds):
                    order = ["plain", "ddi"] if round_ % 2 == 0 else ["ddi", "plain"]
                    for mode in order:
                        seconds, bytes_ = one(
                            tree, work / "out", fmt, signer if mode == "ddi" else None
                        )
                        times[mode].append(seconds)
                        sizes[mode] = bytes_
                        if mode == "plain":
                            image = work / "out" / "bench-1.0-x86-64.raw"
                            started = time.perf_counter()
                            write_ddi(image, work / "wrapped.raw", Architecture.X86_64, signer)
                            times["step"].append(time.perf_counter() - started)
                plain_t = statistics.median(times["plain"])
                ddi_t = statistics.median(times["ddi"])
                step_t = statistics.median(times["step"])
                rows.append(
                    (label, size, files, fmt.value, sizes["plain"], sizes["ddi"], plain_t, ddi_t,
                     step_t)
                )  # fmt: skip
        print(f"load average at end:   {os.getloadavg()[0]:.2f}")
        print()
        print(
            "| tree | input | format | plain image | signed DDI | size ratio | plain build "
            "| DDI build | time ratio | DDI step |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, size, files, fmt_name, plain, ddi, plain_t, ddi_t, step_t in rows:
            print(
                f"| {label} | {size / 2**20:.0f} MiB, {files} files | {fmt_name} "
                f"| {plain / 2**20:.2f} MiB | {ddi / 2**20:.2f} MiB | {ddi / plain:.3f}× "
                f"| {plain_t:.1f} s | {ddi_t:.1f} s | {ddi_t / plain_t:.2f}× "
                f"| {step_t:.2f} s ({step_t / plain_t:.3f}×) |"
            )


if __name__ == "__main__":
    main()
