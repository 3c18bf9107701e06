"""Ctrl-C seen from a worker thread before the main thread acts on it (sysext/core/interrupts.py).

The matrix build relies on this: a pack killed by the terminal's Ctrl-C frees its slot at
once, and the row waiting for that slot must see the interrupt although the main thread
has not yet raised KeyboardInterrupt (tests/test_matrix_terminal.py interrupts a real build).
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from sysext.core.interrupts import InterruptWatch


def test_a_worker_sees_sigint_before_the_main_thread_handles_it() -> None:
    seen_in_worker: list[bool] = []
    release = threading.Event()

    def worker() -> None:
        seen_in_worker.append(watch.seen())  # nothing yet
        os.kill(os.getpid(), signal.SIGINT)
        # The main thread is blocked in join() below and has not run Python code since.
        seen_in_worker.append(watch.seen())
        release.set()

    with InterruptWatch() as watch:
        thread = threading.Thread(target=worker)
        with pytest.raises(KeyboardInterrupt):
            thread.start()
            release.wait(10)
            thread.join(10)
        thread.join(10)
        assert watch.seen()  # and it stays seen
    assert seen_in_worker == [False, True]


def test_other_signals_and_an_inactive_watch_do_not_count() -> None:
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        with InterruptWatch() as watch:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert not watch.seen()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not InterruptWatch().seen()  # never entered
