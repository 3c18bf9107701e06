"""How a matrix build shows itself: a live table on a terminal that can redraw, plain lines
otherwise (pipes, TERM=dumb, --verbose), and the summary table at the end."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sysext.build.matrix import Outcome, Row, RowResult, summary_counts
from sysext.core.steps import console

_STYLE = {
    Outcome.BUILT: "green",
    Outcome.UNCHANGED: "cyan",
    Outcome.SKIPPED: "cyan",
    Outcome.PUBLISHED: "green",
    Outcome.ALREADY_PUBLISHED: "cyan",
    Outcome.FAILED: "red",
}


class MatrixProgress:
    """Thread-safe progress of the rows: `with MatrixProgress(rows) as view: …`."""

    def __init__(self, rows: Sequence[Row], *, live: bool | None = None) -> None:
        self.rows = list(rows)
        # A dumb terminal (TERM=dumb: editors' shells, some CI runners) cannot redraw: rich
        # would show nothing of a live view there, so it gets the plain lines too. So does
        # --verbose: its log lines go straight to stderr, under a live view's redrawing.
        redraws = (
            sys.stderr.isatty()
            and not console.is_dumb_terminal
            and not logging.getLogger("sysext").isEnabledFor(logging.INFO)
        )
        self.live = redraws if live is None else live
        self._state: dict[int, str] = {id(r): "queued" for r in self.rows}
        self._started: dict[int, float] = {}
        self._done = 0
        self._lock = threading.Lock()
        self._display: Live | None = None

    def __enter__(self) -> MatrixProgress:
        if self.live:
            self._display = Live(
                get_renderable=self._render, console=console, refresh_per_second=4, transient=True
            )
            self._display.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._display is not None:
            self._display.__exit__(kind, value, traceback)

    def stage(self, row: Row, stage: str) -> None:
        with self._lock:
            self._state[id(row)] = stage
            self._started.setdefault(id(row), time.monotonic())

    def finished(self, result: RowResult) -> None:
        with self._lock:
            self._state[id(result.row)] = result.outcome.value
            self._done += 1
            done = self._done
        if not self.live:
            # One line per finished row: readable in CI logs and when piped.
            width = len(str(len(self.rows)))
            console.print(
                f"[{done:>{width}}/{len(self.rows)}] {result.row.label}: "
                f"{result.outcome.value} ({result.seconds:.1f} s) {result.detail}",
                soft_wrap=True,
                markup=False,
            )

    def _render(self) -> RenderableType:
        table = Table(box=None, pad_edge=False, show_header=False)
        for column in ("row", "state"):
            table.add_column(column, no_wrap=True)
        with self._lock:
            states = [(r.label, self._state[id(r)]) for r in self.rows]
            done = self._done
        for label, state in states:
            if state in ("queued", *(o.value for o in Outcome)):
                continue  # finished and waiting rows are counted, not listed
            table.add_row(label, state)
        header = Text(f"{done}/{len(self.rows)} done, {len(self.rows) - done} to go")
        return Group(header, table)


def summary_table(results: Sequence[RowResult], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("recipe", "version", "arch", "result", "time"):
        table.add_column(column, no_wrap=True)
    table.add_column("details", overflow="fold")
    for item in results:
        outcome = item.outcome
        table.add_row(
            item.row.recipe.name,
            item.row.version,
            item.row.arch.systemd_name,
            Text(outcome.value, style=_STYLE[outcome]),
            f"{item.seconds:.1f} s",
            item.detail,
        )
    return table


def summary_line(results: Sequence[RowResult]) -> str:
    counts = summary_counts(results)
    return ", ".join(f"{n} {o.value}" for o, n in counts.items() if n) or "nothing to build"
