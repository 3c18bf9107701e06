"""One writer at a time across threads and uvicorn worker processes.

Publishing, yanking, promoting and the start-up rematerialization take an exclusive
`flock` on `DATA/.lock`; a new file description per use makes it exclude threads of the
same process too. Readers never lock: they only see complete snapshots (materialize.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
