"""Atomic file output: nothing half-written ever becomes visible.

Every file a user or a host may read (images, SHA256SUMS, signatures, provenance) is
written to a hidden temporary file in the same directory, fsynced, and renamed into place.
Temporary names start with `.#` — the prefix systemd itself uses, which sysext and sysupdate
never treat as images (spec §1.7).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it over `target`.

    The caller (or a tool it runs) writes the temporary path. On any exception the
    temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".#{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(target: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `target` atomically with permissions `mode`."""
    # mkstemp creates the temporary file 0600, so a key is never readable by others, not
    # even before the final chmod.
    with atomic_path(target, mode) as tmp, open(tmp, "wb") as f:
        f.write(data)


def remove_stale_temporaries(directory: Path) -> None:
    """Delete `.#*` leftovers of interrupted writes (what sysupdate does too, §2.2)."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.name.startswith(".#") and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
