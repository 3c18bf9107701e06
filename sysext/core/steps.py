"""Named, timed steps of long work, shown on stderr and in --verbose logs.

`with step("Packing podman…"):` logs the start, the duration, and a failure; `progress()`
gives a rich progress bar that is quiet when stderr is not a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger("sysext")
console = Console(stderr=True, highlight=False)
# Set while a view of its own (sysext.matrix) owns the terminal: steps only log, and no
# download bar competes with it (rich allows one live display at a time).
_quiet = threading.Event()


@contextlib.contextmanager
def quiet_steps() -> Iterator[None]:
    _quiet.set()
    try:
        yield
    finally:
        _quiet.clear()


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Log and time one named piece of work."""
    started = time.monotonic()
    log.info("%s", title)
    if not log.isEnabledFor(logging.INFO) and not _quiet.is_set():
        console.print(f"[bold]•[/bold] {title}")
    try:
        yield
    except BaseException:
        log.info("%s failed after %.1f s", title, time.monotonic() - started)
        raise
    log.info("%s done in %.1f s", title, time.monotonic() - started)


def byte_progress() -> Progress:
    """A progress bar for downloads and uploads; add tasks with `total` bytes (or None)."""
    # Imported here: every CLI command imports this module for `console`, few show a bar.
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not sys.stderr.isatty() or _quiet.is_set(),
    )
