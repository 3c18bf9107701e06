"""One writer per extension at a time, across threads, worker processes and replicas.

Publishing, yanking and promoting hold the lock of one extension name from before the
blob is stored until its directories are materialized; start-up (migrations, garbage
collection, rematerialization of everything) holds the lock of everything. Readers never
lock: they only see complete snapshots (materialize.py) or whole objects (storage/s3.py).

- SQLite (one machine): an exclusive `flock` on `DATA/.lock` for every write; a new file
  description per use makes it exclude threads of the same process too.
- PostgreSQL (any number of replicas): session-level advisory locks on the connection the
  write's own ORM session uses, so a waiting writer never needs a second pooled connection.
  Everything = exclusive lock on one key; an extension = that key shared plus an exclusive
  lock on a key derived from its name. A publish that creates an extension takes the lock
  of everything instead (service.py `_publishing`: the squatting check reads across
  extensions). A replica that dies (kill -9, lost network) loses its connection and
  PostgreSQL releases its locks with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

log = logging.getLogger("registry")

# Advisory lock keys are one bigint namespace per database; this one is "sysext" in ASCII.
EVERYTHING_KEY = 0x737973657874


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def name_key(name: str) -> int:
    """A signed 64-bit advisory lock key for an extension name (never EVERYTHING_KEY)."""
    digest = hashlib.sha256(b"sysext-extension\0" + name.encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    return key if key != EVERYTHING_KEY else key - 1


@contextlib.contextmanager
def advisory_session(engine: Engine, name: str | None) -> Iterator[Session]:
    """A session on its own connection holding the lock of `name` (None: everything)."""
    connection = engine.connect()
    try:
        if name is None:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": EVERYTHING_KEY})
        else:
            connection.execute(text("SELECT pg_advisory_lock_shared(:k)"), {"k": EVERYTHING_KEY})
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": name_key(name)})
        # Session-level locks outlive this transaction; end it so the session starts clean.
        connection.commit()
        with Session(bind=connection, expire_on_commit=False) as session:
            yield session
    finally:
        try:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock_all()"))
            connection.commit()
            connection.close()
        except DBAPIError:
            # The server went away (restart, network): it dropped the locks with the
            # connection; throw the connection away instead of returning it to the pool.
            log.warning("event=lock-connection-lost")
            connection.invalidate()
            connection.close()
