"""bench/build.py --read refuses to print cold-read figures it cannot measure (issue 23): as
a user, or as root where the page cache cannot be dropped (a read-only /proc/sys, as in a
container), it stops before building anything, with a one-line reason and no table.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.servers import ROOT

BENCH = str(ROOT / "bench" / "build.py")
# Small enough that a bench which failed to refuse would finish quickly (and then fail the
# test by printing its table and exiting 0).
TINY = ["--read", "--trees", "stdlib", "--size-mib", "1", "--rounds", "1", "--read-rounds", "1",
        "--refs", "bakery", "--squashfs", "none", "--erofs", "none"]  # fmt: skip


def run_bench(prefix: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, BENCH, *TINY], capture_output=True, text=True, timeout=300
    )


def test_read_refused_as_a_user() -> None:
    # As root, become nobody for the run; as a user, the test already is one.
    prefix = (
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    )
    proc = run_bench(prefix)
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "--read mounts the images and drops the page cache: run it as root"
    )
    assert "tree stdlib" not in proc.stdout and "bakery" not in proc.stdout


@pytest.mark.root(reason="needs root: a private mount namespace with a read-only drop_caches")
def test_read_refused_when_the_page_cache_cannot_be_dropped() -> None:
    drop = "/proc/sys/vm/drop_caches"
    shell = (
        f"mount --bind {drop} {drop} && mount -o remount,bind,ro {drop} && exec \"$@\""
    )  # fmt: skip
    proc = run_bench(["unshare", "-m", "--propagation", "private", "sh", "-c", shell, "sh"])
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        f"--read cannot drop the page cache ({drop}: Read-only file system); run it as root "
        "on the host, not in a container or user namespace"
    )
    assert "tree stdlib" not in proc.stdout and "bakery" not in proc.stdout
