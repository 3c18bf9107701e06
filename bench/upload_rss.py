"""Peak server memory while `sysext publish` uploads a 2 GiB image.

    .venv/bin/python bench/upload_rss.py [--size-gib 2]

The image is a real tiny squashfs extension followed by zero padding up to the size
(squashfs readers ignore bytes past the superblock's bytes_used, so it validates like any
image). The file is sparse, so the client side costs no disk. The server streams it to
disk, hashes it, validates and publishes it; the script prints the server's peak RSS
(VmHWM) before and after. Target: < 150 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.registry_server import build_image, running_registry


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sysext-rss-") as scratch_name:
        scratch = Path(scratch_name)
        small = build_image(scratch / "images", "big", "1.0")
        image = scratch / "big-1.0-x86-64.raw"
        shutil.copyfile(small, image)
        with open(image, "r+b") as f:
            f.truncate(int(args.size_gib * (1 << 30)))
        with running_registry(scratch / "data") as reg:
            assert reg.process is not None
            before = peak_rss_kib(reg.process.pid)
            started = time.monotonic()
            env = {**os.environ, "SYSEXT_TOKEN": reg.admin_token, "SYSEXT_REGISTRY": reg.url}
            subprocess.run(
                [sys.executable, "-m", "sysext.cli.main", "publish", str(image)],
                env=env,
                check=True,
            )
            elapsed = time.monotonic() - started
            after = peak_rss_kib(reg.process.pid)
            stored = sum(p.stat().st_size for p in (reg.data / "store").rglob("*") if p.is_file())
    size = int(args.size_gib * (1 << 30))
    print(
        f"uploaded {size / (1 << 30):.1f} GiB in {elapsed:.1f} s "
        f"({size / elapsed / (1 << 20):.0f} MiB/s), stored {stored / (1 << 30):.2f} GiB"
    )
    print(
        f"server peak RSS: {before / 1024:.0f} MiB after start, {after / 1024:.0f} MiB after "
        f"the upload (target < 150 MB)"
    )


if __name__ == "__main__":
    main()
