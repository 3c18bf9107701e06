"""Noticing Ctrl-C in any thread at the moment it reaches the process.

Python turns SIGINT into KeyboardInterrupt in the main thread only, and only once that
thread runs again. A terminal's Ctrl-C also reaches the tools the worker threads run (they
are in the same process group), so a worker can see its tool die *before* the main thread
has acted on the signal; on a busy machine that gap is long enough for the worker to hand
its packing slot to a waiting row, which then starts a new pack after the user pressed
Ctrl-C. `InterruptWatch` closes the gap: the interpreter's C-level signal handler writes
the signal number to a wakeup pipe as soon as the signal arrives, and any thread can read
it from there.
"""

from __future__ import annotations

import os
import signal
import threading
from types import TracebackType

# The signals the CLI treats as "stop": Ctrl-C, and SIGTERM (which the CLI maps onto the
# same path when it installs a handler for it).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class InterruptWatch:
    """While active (a `with` block entered in the main thread), `seen()` is true in every
    thread once SIGINT or SIGTERM reached the process. Outside the main thread, or where
    the signal has no Python handler (ignored, so no interruption), it never fires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = False
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        self._previous = -1

    def __enter__(self) -> InterruptWatch:
        if threading.current_thread() is not threading.main_thread():
            return self
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._read_fd, self._write_fd = read_fd, write_fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._read_fd is None or self._write_fd is None:
            return
        signal.set_wakeup_fd(self._previous)
        with self._lock:
            os.close(self._read_fd)
            os.close(self._write_fd)
            self._read_fd = self._write_fd = None

    def seen(self) -> bool:
        with self._lock:
            if self._seen or self._read_fd is None:
                return self._seen
            try:
                arrived = os.read(self._read_fd, 512)
            except BlockingIOError:
                return False
            # Another handled signal (SIGCHLD with a handler, say) is read and forgotten:
            # the pipe is ours while the watch is active, nobody else waits on it.
            self._seen = any(number in STOP_SIGNALS for number in arrived)
            return self._seen
