"""Content-addressed image store: `DATA/store/sha256/ab/abcdef…`, one file per content.

The public tree hard-links these files into snapshots, so a published image is written
once and never copied. Uploads are first streamed into `DATA/tmp` and renamed in here only
after validation; both live on the same file system, so the rename is atomic.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from registry.errors import RegistryError

CHUNK = 1 << 20


def blob_path(store_dir: Path, sha256: str) -> Path:
    return store_dir / "sha256" / sha256[:2] / sha256


@contextlib.contextmanager
def _tmp_guard(tmp_dir: Path, mode: int) -> Iterator[None]:
    """Shared: creating an upload file; exclusive: sweeping abandoned ones."""
    fd = os.open(
        tmp_dir.parent / f"{tmp_dir.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


class StagedUpload:
    """An upload being streamed to a temporary file, hashed and size-checked as it comes.

    Use as a context manager: the temporary file is removed on exit unless it was moved
    into the store (`ingest`), so a rejected or interrupted upload leaves nothing behind.
    The file stays `flock`ed while its upload lives, so a worker (re)starting meanwhile
    sweeps only files whose process died (`remove_abandoned_uploads`).
    """

    def __init__(self, tmp_dir: Path, max_bytes: int) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with _tmp_guard(tmp_dir, fcntl.LOCK_SH):
            fd, name = tempfile.mkstemp(prefix=".#upload.", dir=tmp_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise RegistryError(
                413, f"upload larger than this registry's limit of {self.max_bytes} bytes"
            )
        self._hash.update(data)
        self._file.write(data)

    def finish(self) -> str:
        """Flush to disk; returns the SHA-256 of everything written (the file stays locked)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._hash.hexdigest()

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> StagedUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def remove_abandoned_uploads(tmp_dir: Path) -> int:
    """Delete upload files of dead processes (kill -9 mid-upload); live ones are locked."""
    removed = 0
    if not tmp_dir.is_dir():
        return 0
    with _tmp_guard(tmp_dir, fcntl.LOCK_EX):
        for path in tmp_dir.iterdir():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # an upload in progress in another worker
            else:
                path.unlink(missing_ok=True)
                removed += 1
            finally:
                os.close(fd)
    return removed


def ingest(store_dir: Path, staged: Path, sha256: str) -> Path:
    """Move a validated staged file into the store (or drop it: same content is there)."""
    target = blob_path(store_dir, sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        staged.unlink()
    else:
        os.chmod(staged, 0o644)
        os.replace(staged, target)
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target


def collect_garbage(store_dir: Path, referenced: set[str]) -> int:
    """Delete blobs no image row references (left by a crash between store and commit)."""
    removed = 0
    root = store_dir / "sha256"
    if not root.is_dir():
        return 0
    for blob in root.glob("*/*"):
        if blob.name not in referenced:
            blob.unlink()
            removed += 1
    return removed
