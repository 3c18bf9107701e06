"""The one wrapper through which every external tool runs.

It logs the command line, captures stderr, and turns a failure into a `ToolError` carrying
the tool's own last message, so no caller ever parses CalledProcessError by hand.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from sysext.core.errors import ToolError, ToolMissingError

log = logging.getLogger("sysext.core.process")

# Which Debian package provides a tool, for the hint of ToolMissingError.
PACKAGE_OF_TOOL: dict[str, str] = {
    "gensquashfs": "squashfs-tools-ng",
    "sqfs2tar": "squashfs-tools-ng",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "mkfs.erofs": "erofs-utils",
    "dump.erofs": "erofs-utils",
    "fsck.erofs": "erofs-utils",
    "gpg": "gnupg",
    "gpgconf": "gpgconf",
    "gpgv": "gpgv",
    "sqv": "sqv",
    "ignition-validate": "ignition",
    "systemd-sysext": "systemd",
    "systemd-dissect": "systemd-container",
    "apt-get": "apt",
    "nginx": "nginx",
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-nspawn",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "chroot": "coreutils",
}


def require_tool(tool: str) -> str:
    """Return the absolute path of `tool` or raise ToolMissingError."""
    found = shutil.which(tool)
    if found is None:
        raise ToolMissingError(tool, PACKAGE_OF_TOOL.get(tool))
    return found


def run(
    argv: Sequence[str | Path],
    *,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture_stdout: bool = True,
    stdout_to_stderr: bool = False,
    timeout: float | None = None,
    hint: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool; raise ToolError on a non-zero exit when `check` is true.

    stdout is captured unless `capture_stdout` is false (then it is inherited); stderr is
    always captured so that the failure message can name the tool's complaint.
    """
    args = [str(a) for a in argv]
    require_tool(args[0])
    log.debug("run: %s", shlex.join(args))
    # What subprocess.run() does, with the process known to stop_running_tools() meanwhile.
    with subprocess.Popen(
        args,
        stdin=subprocess.PIPE if input is not None else None,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        # stdout_to_stderr: a long tool's own progress lines, shown but kept off our
        # stdout (which may be JSON).
        stdout=_stderr_fd() if stdout_to_stderr else subprocess.PIPE if capture_stdout else None,
        stderr=subprocess.PIPE,
    ) as running:
        with _running_lock:
            _running.add(running)
        try:
            stdout, stderr = running.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            running.kill()
            running.communicate()
            raise ToolError(args[0], -1, f"timed out after {timeout} s", hint) from exc
        except BaseException:
            running.kill()
            raise
        finally:
            with _running_lock:
                _running.discard(running)
    proc = subprocess.CompletedProcess(args, running.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace")
        log.debug("%s failed with %d: %s", args[0], proc.returncode, message)
        raise ToolError(Path(args[0]).name, proc.returncode, message, hint)
    return proc


# The tools run() is waiting for, from every thread: an interrupted build stops them all.
_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def stop_running_tools() -> int:
    """Send SIGTERM to every tool a run() call is waiting for; return how many.

    A terminal's Ctrl-C reaches the tools already running (same process group), but a
    worker thread may start one more after the signal and before the main thread has acted
    on it (it saw a slot freed by a tool the signal ended). The interrupted build calls
    this until its workers are done, so such a latecomer is ended too."""
    with _running_lock:
        alive = [p for p in _running if p.poll() is None]
    for proc in alive:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    return len(alive)


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by something without a file
        return subprocess.PIPE


def start(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a long-running tool (a booted container, a server) and return its process.

    The caller owns the process and must wait for it; `new_session` keeps a terminal's
    Ctrl-C away from it, so the caller decides how it stops.
    """
    args = [str(a) for a in argv]
    require_tool(args[0])
    log.debug("start: %s", shlex.join(args))
    return subprocess.Popen(
        args,
        env=dict(env) if env is not None else None,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=new_session,
    )


def interactive(argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None) -> int:
    """Run a tool on the caller's terminal (a shell) and return its exit code. While it
    runs, Ctrl-C is the tool's: we ignore SIGINT as os.system() does, but only after the
    start, so the tool keeps the default action (an ignored signal would be inherited). Any
    other interruption of the wait (SIGTERM turned into KeyboardInterrupt) kills it."""
    args = [str(a) for a in argv]
    require_tool(args[0])
    log.debug("interactive: %s", shlex.join(args))
    proc = subprocess.Popen(args, env=dict(env) if env is not None else None)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


def tool_version(tool: str, *flags: str) -> str:
    """First line a tool prints about its version, or 'unknown' (for provenance records)."""
    found = shutil.which(tool)
    if found is None:
        return "not installed"
    return _version_of(found, flags or ("--version",))


@functools.cache
def _version_of(executable: str, flags: tuple[str, ...]) -> str:
    # Cached per executable path: a no-op rebuild of a catalogue asks for the packing tool's
    # version once per image (it is part of the build key), not once per process start.
    proc = run([executable, *flags], check=False)
    text = (proc.stdout or b"").decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "unknown"
