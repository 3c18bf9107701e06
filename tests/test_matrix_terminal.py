"""The matrix build as a user sees it: the real `sysext build R1 R2 …` on a real
pseudo-terminal of a fixed size (TIOCSWINSZ, TERM=xterm-256color), its whole output read
and replayed into a VT terminal emulator (pyte), and the same command with pipes.

On the terminal: while images are being packed (the packer waits at a gate file, see
tests/test_matrix.Matrix) the live view lists the unfinished rows with their states; when
the run ends the view is gone, the summary table lists every row with its outcome, the
exit status is right, and the cursor the live view hid is shown again, also when the run
is interrupted with SIGINT in the middle of packing. Without a terminal, and on a terminal
that cannot redraw (TERM=dumb): one plain line per row and no escape sequences at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyte
import pytest

from tests.servers import StaticServer
from tests.test_matrix import Matrix, expected_images, no_leftovers
from tests.upstream_fixtures import Upstream

ROWS, COLUMNS = 40, 120
HIDE_CURSOR, SHOW_CURSOR = b"\x1b[?25l", b"\x1b[?25h"
# A guard against a hung command, not a measurement: every wait ends on what is seen.
PATIENCE = 60.0
# Variables by which rich (or a CI) would override what it detects on the terminal.
DETECTION = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
NAMES = ("k3s", "tailscale")
LABELS = {
    "k3s 0.0.4+k3s1 x86-64",
    "k3s 0.0.4+k3s1 arm64",
    "tailscale 0.0.6 x86-64",
    "tailscale 0.0.6 arm64",
}
LIVE_ROW = re.compile(r"^(\S+ \S+ (?:x86-64|arm64))  +(\w[\w ]*\w)\s*$")


def terminal_env(matrix: Matrix, term: str = "xterm-256color") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DETECTION}
    return {**env, **matrix.env(), "TERM": term}


class Terminal:
    """`sysext ARGS…` with stdin, stdout and stderr on a pseudo-terminal of ROWS×COLUMNS,
    in a session of its own (so that a SIGINT to its process group is what a terminal's
    Ctrl-C sends). Everything it writes is kept and fed to a pyte screen."""

    def __init__(self, argv: list[str | Path], env: dict[str, str], cwd: Path) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sysext.cli.main", *map(str, argv)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.closed = False

    def lines(self) -> list[str]:
        """The screen as it shows now, trailing blanks removed."""
        return [line.rstrip() for line in self.screen.display]

    def read_until(self, seen: Callable[[Terminal], bool]) -> None:
        """Read output until `seen(self)` holds (checked after each chunk) or it ends."""
        deadline = time.monotonic() + PATIENCE
        while not seen(self):
            if self.closed:
                raise AssertionError("output ended before it was seen:\n" + self.text())
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("not seen in time:\n" + "\n".join(self.lines()))
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError as exc:  # EIO: every holder of the terminal's other side is gone
                if exc.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:
                self.closed = True
                continue
            self.output += chunk
            self.stream.feed(chunk)

    def finish(self) -> int:
        """Read to the end of the output; the exit status."""
        self.read_until(lambda t: t.closed)
        os.close(self.master)
        return self.proc.wait(timeout=PATIENCE)

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def cursor_restored(self) -> bool:
        """The live view hid the cursor, and the last word on it was to show it again."""
        hidden = self.output.rfind(HIDE_CURSOR)
        return hidden >= 0 and self.output.rfind(SHOW_CURSOR) > hidden


def live_rows(terminal: Terminal) -> dict[str, str]:
    """The rows the live view lists on the screen now, with their states."""
    found = {}
    for line in terminal.lines():
        match = LIVE_ROW.match(line)
        if match and match.group(1) in LABELS:
            found[match.group(1)] = match.group(2)
    return found


def summary(terminal: Terminal) -> dict[str, str]:
    """The summary table's rows on the screen: `recipe version arch` → result."""
    found = {}
    for line in terminal.lines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 8 and " ".join(cells[1:4]) in LABELS:
            found[" ".join(cells[1:4])] = cells[4]
    return found


@contextlib.contextmanager
def running(matrix: Matrix, term: str = "xterm-256color") -> Iterator[Terminal]:
    terminal = Terminal(matrix.argv(), terminal_env(matrix, term), matrix.tmp)
    try:
        yield terminal
    finally:
        if terminal.proc.poll() is None:
            terminal.proc.kill()
            terminal.proc.wait()
        # A failed test must not leave gated packers waiting for ever: open the gate.
        matrix.gate.touch()


def test_live_view_then_summary_on_a_terminal(tmp_path: Path, static_server: StaticServer) -> None:
    matrix = Matrix(tmp_path, static_server, NAMES, gated=True)
    # The arm64 tarball no longer matches its upstream checksum file: that row fails.
    tarball = static_server.root / "ts/stable/tailscale_0.0.6_arm64.tgz"
    tarball.write_bytes(tarball.read_bytes() + b"tampered")

    with running(matrix) as terminal:
        # While the packers wait at the gate, the live view lists the three unfinished rows
        # under its count: packing, or staged and waiting for a packing slot (as many slots
        # as cores). The failed row is counted, not listed.
        def packing(t: Terminal) -> bool:
            states = live_rows(t)
            return (
                "1/4 done, 3 to go" in t.lines()
                and set(states) == LABELS - {"tailscale 0.0.6 arm64"}
                and set(states.values()) <= {"packing", "waiting to pack"}
                and "packing" in states.values()
            )

        terminal.read_until(packing)
        assert matrix.packs() >= 1
        assert terminal.screen.cursor.hidden
        matrix.gate.touch()
        status = terminal.finish()

    assert status == 1, terminal.text()
    assert summary(terminal) == {
        "k3s 0.0.4+k3s1 x86-64": "built",
        "k3s 0.0.4+k3s1 arm64": "built",
        "tailscale 0.0.6 x86-64": "built",
        "tailscale 0.0.6 arm64": "failed",
    }
    screen = "\n".join(terminal.lines())
    assert "sha256 mismatch" in screen
    assert "3 built, 1 failed" in screen
    assert live_rows(terminal) == {}, screen  # the live view cleared itself
    assert terminal.cursor_restored() and not terminal.screen.cursor.hidden
    assert matrix.images() == sorted(set(expected_images(NAMES)) - {"tailscale-0.0.6-arm64.raw"})

    # Upstream fixed: the missing row is built, the others are unchanged, exit status 0.
    Upstream(
        {k: v for k, v in matrix.upstream.files.items() if "tailscale_0.0.6_arm64" in k}
    ).publish(static_server)
    with running(matrix) as again:
        status = again.finish()
    assert status == 0, again.text()
    assert summary(again) == {
        "k3s 0.0.4+k3s1 x86-64": "unchanged",
        "k3s 0.0.4+k3s1 arm64": "unchanged",
        "tailscale 0.0.6 x86-64": "unchanged",
        "tailscale 0.0.6 arm64": "built",
    }
    assert "1 built, 3 unchanged" in "\n".join(again.lines())
    assert again.cursor_restored() and not again.screen.cursor.hidden
    assert matrix.images() == expected_images(NAMES)


def test_interrupt_while_packing_restores_the_terminal_and_leaves_nothing(
    tmp_path: Path, static_server: StaticServer
) -> None:
    matrix = Matrix(tmp_path, static_server, NAMES, gated=True)
    with running(matrix) as terminal:
        # Interrupt when every packing slot (one per core, at most one per row) is held by a
        # packer waiting at the gate, each with its scratch directory in the output
        # directory; the other rows wait for a slot. The signal ends those packers and
        # frees their slots, possibly before the build's main thread has acted on it: a
        # waiting row may then start one more packer, which the signal never reached and
        # which would wait at the gate for ever. The build must end it too.
        slots = min(os.cpu_count() or 1, len(LABELS))
        terminal.read_until(
            lambda t: (
                "packing" in live_rows(t).values()
                and matrix.packs() == slots
                and sum(p.name.startswith(".#sysext-pack.") for p in matrix.out.iterdir()) == slots
            )
        )
        packs = matrix.packs()
        os.killpg(terminal.proc.pid, signal.SIGINT)
        status = terminal.finish()

    assert status == 130, terminal.text()
    assert terminal.cursor_restored() and not terminal.screen.cursor.hidden
    assert f"interrupted: rows in progress stopped and left nothing in {matrix.out}" in (
        terminal.text()
    )
    assert live_rows(terminal) == {}, "\n".join(terminal.lines())
    # Rows waiting for a packing slot did not pack after the interrupt: at most one late
    # start per freed slot, and no packer of this build is left running.
    assert packs <= matrix.packs() <= 2 * packs
    assert running_packers(matrix) == []
    assert matrix.images() == []
    no_leftovers(matrix.out)
    assert list((tmp_path / "cache/downloads/partial").glob("*")) == []


def test_interrupt_that_reaches_the_build_after_its_packers_ends_the_late_ones(
    tmp_path: Path, static_server: StaticServer
) -> None:
    # The race above, made certain: the packers get Ctrl-C, the build does not yet. The
    # rows waiting for a slot start packers the signal never reached; when the build then
    # gets it, it must end them, or it would wait for them for ever.
    matrix = Matrix(tmp_path, static_server, NAMES, gated=True)
    slots = min(os.cpu_count() or 1, len(LABELS))
    if slots >= len(LABELS):
        pytest.skip("no row waits for a packing slot on this many cores")
    with running(matrix) as terminal:
        terminal.read_until(
            lambda t: matrix.packs() == slots and len(running_packers(matrix)) >= slots
        )
        first = running_pids(matrix)
        for pid in first:
            os.kill(pid, signal.SIGINT)
        late = min(len(LABELS), 2 * slots)
        terminal.read_until(lambda t: matrix.packs() == late and running_pids(matrix) - first)
        os.kill(terminal.proc.pid, signal.SIGINT)  # the build alone, not its process group
        status = terminal.finish()

    assert status == 130, terminal.text()
    assert running_packers(matrix) == []
    assert matrix.images() == []
    no_leftovers(matrix.out)


def running_pids(matrix: Matrix) -> set[int]:
    wrapper = str(matrix.tmp / "bin" / "mksquashfs").encode()
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if wrapper in cmdline.read_bytes():
                pids.add(int(cmdline.parent.name))
    return pids


def running_packers(matrix: Matrix) -> list[str]:
    """Command lines of the processes still running this test's packer wrapper."""
    wrapper = str(matrix.tmp / "bin" / "mksquashfs").encode()
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes()
            if wrapper in args:
                found.append(args.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_without_a_terminal_plain_lines_and_no_escapes(
    tmp_path: Path, static_server: StaticServer
) -> None:
    matrix = Matrix(tmp_path, static_server, NAMES)
    env = terminal_env(matrix)  # a terminal type, but pipes: rich must not colour them
    proc = subprocess.run(
        [sys.executable, "-m", "sysext.cli.main", *map(str, matrix.argv())],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert b"\x1b" not in proc.stdout + proc.stderr
    progress = [line for line in stderr.splitlines() if re.match(r"\[\d/4\] ", line)]
    assert sorted(line.split("] ", 1)[1].split(":")[0] for line in progress) == sorted(LABELS)
    assert all(": built (" in line for line in progress)
    assert "4 built" in stderr
    assert sorted(Path(line).name for line in proc.stdout.decode().splitlines()) == (
        expected_images(NAMES)
    )


@pytest.mark.parametrize("case", ["TERM=dumb", "--verbose"])
def test_plain_lines_on_a_terminal_a_live_view_cannot_use(
    tmp_path: Path, static_server: StaticServer, case: str
) -> None:
    """TERM=dumb cannot redraw (a live view would show nothing there until the end);
    --verbose writes log lines that a live view would redraw over."""
    matrix = Matrix(tmp_path, static_server, NAMES)
    argv, term = matrix.argv(), "xterm-256color"
    if case == "TERM=dumb":
        term = "dumb"
    else:
        argv = ["--verbose", *argv]
    terminal = Terminal(argv, terminal_env(matrix, term), matrix.tmp)
    try:
        status = terminal.finish()
    finally:
        if terminal.proc.poll() is None:
            terminal.proc.kill()
    assert status == 0, terminal.text()
    assert HIDE_CURSOR not in terminal.output
    if case == "TERM=dumb":
        assert b"\x1b" not in terminal.output
    else:
        assert "sysext: Packing tailscale-0.0.6-arm64.raw" in terminal.text()
    progress = [line for line in terminal.text().splitlines() if re.match(r"\[\d/4\] ", line)]
    assert sorted(line.split("] ", 1)[1].split(":")[0] for line in progress) == sorted(LABELS)
    assert summary(terminal) == dict.fromkeys(LABELS, "built")
