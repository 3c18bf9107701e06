"""Boot-to-ready of the `sysext try` container: the bare cached root (reference) against the
same root with extensions to merge, for each base, measured in the same run.

    .venv/bin/python bench/boot.py [--rounds N] [--extensions N]

Boot-to-ready is from starting systemd-nspawn until `systemctl is-system-running --wait`
returned and the job queue stayed empty for a second (what `sysext try` waits for; that
second is included). Prints the median per base and the ratio to the bare boot. Needs root
and the cached roots (built on first use). Not part of the tests.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sysext.boot.container import Container
from sysext.boot.rootfs import Base, ensure_root
from tests.booted import service_image


def boot_seconds(root: Path, images: list[Path]) -> float:
    with Container(root) as box:
        directory = box.upper / "etc" / "extensions"
        directory.mkdir(parents=True)
        for image in images:
            shutil.copyfile(image, directory / f"{image.name.split('-')[0]}.raw")
        return box.boot().seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extensions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        images = [service_image(Path(scratch), f"bench{i}", "1.0") for i in range(args.extensions)]
        print(f"{'base':<12} {'bare (ref)':>11} {f'{args.extensions} extensions':>14} {'ratio':>6}")
        for base in Base:
            root = ensure_root(base)
            bare = statistics.median(boot_seconds(root, []) for _ in range(args.rounds))
            merged = statistics.median(boot_seconds(root, images) for _ in range(args.rounds))
            print(f"{base.value:<12} {bare:>10.2f}s {merged:>13.2f}s {merged / bare:>6.2f}")


if __name__ == "__main__":
    main()
