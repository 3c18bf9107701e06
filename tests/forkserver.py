"""The inner loop's shortcut for starting the CLI: fork it from a process that has already
imported it.

The suite runs `sysext …` as a subprocess several hundred times and starts the registry
(`sysext serve`) about seventy times. Each fresh interpreter spends 0.2-0.4 s of CPU (the
registry 1 s) importing typer, rich, pydantic, FastAPI, SQLAlchemy and the project before
doing anything, which was over half of what `scripts/test.sh --fast` cost on two cores.
Here one long-lived process per pytest worker (the "zygote") imports all of that once;
each run is then a fork of it that takes the caller's argv, environment, working
directory, stdio, umask and time zone and runs `python -m MODULE` from there, exiting as
the interpreter would (threads joined, atexit handlers run, SystemExit and
KeyboardInterrupt as usual) except that it does not free the heap it was forked with.

A run is only forked when a fresh interpreter could not have behaved differently:

- the environment variables the interpreter reads at start (PYTHON*, the locale's) must
  equal the zygote's, since they decide stdio encodings, buffering and hash seeding;
- every variable a preloaded module read while it was imported must have the same value
  (a module that builds a rich Console at import time has read COLUMNS, NO_COLOR, TERM…);
  the zygote records those reads;
- the caller's stdio must not be a terminal (the zygote's preloaded consoles saw pipes).

Anything else runs as a real subprocess, as does everything outside the inner loop:
`scripts/test.sh` (CI) execs every CLI run, and tests about start-up itself (which modules
a command imports) always exec. Only `pytest --fork` enables this (tests/conftest.py),
which `scripts/test.sh --fast` passes unless SYSEXT_TEST_FORK=0.

Protocol, one connection per run: the caller sends a JSON request with its three stdio
descriptors (SCM_RIGHTS); the zygote forks a waiter, the waiter forks the run and answers
with the run's PID, then with its exit status as Popen reports it (negative: a signal).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# What the zygote imports: the whole project (every command's lazy imports included) and
# the libraries they need. Project modules are found by walking these packages.
PRELOAD_PACKAGES = ("sysext", "registry")
# Entry points: importing them runs the CLI.
SKIP_MODULES = ("sysext.__main__", "sysext.cli.main")

_enabled = False
_zygotes: list[_Zygote] = []
MAX_ZYGOTES = 3
_lock = threading.Lock()


def enable() -> None:
    """Fork CLI runs from a zygote from now on, in this process (pytest --fork)."""
    global _enabled
    _enabled = True


def _interpreter_start_keys(env: Mapping[str, str]) -> dict[str, str]:
    return {
        k: v for k, v in env.items() if k.startswith(("PYTHON", "LC_")) or k in ("LANG", "LANGUAGE")
    }


# ---------------------------------------------------------------------------------------
# The zygote's side


class _RecordingEnviron(MutableMapping[str, str]):
    """os.environ while the zygote imports: every variable read is written down, and
    every read and write goes to the real environment (a module may keep this object)."""

    def __init__(self, real: MutableMapping[str, str]) -> None:
        self.real = real
        self.read: set[str] = set()
        self.recording = True

    def _note(self, key: str) -> None:
        if self.recording:
            self.read.add(key)

    def __getitem__(self, key: str) -> str:
        self._note(key)
        return self.real[key]

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self._note(key)
        return self.real.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self._note(key)
        return key in self.real

    def __iter__(self) -> Iterator[str]:
        if self.recording:
            self.read.add("*")  # copied whole: any difference matters
        return iter(self.real)

    def __len__(self) -> int:
        return len(self.real)

    def __setitem__(self, key: str, value: str) -> None:
        self.real[key] = value

    def __delitem__(self, key: str) -> None:
        del self.real[key]

    def copy(self) -> dict[str, str]:
        self._note("*")
        return dict(self.real)


def _preload() -> set[str]:
    """Import the project and its libraries; the environment variables that took."""
    import importlib
    import pkgutil

    real = os.environ
    recorder = _RecordingEnviron(real)
    # Replaced, not cleared: the recorder forwards every read and write to the real one.
    os.environ = recorder  # type: ignore[assignment]  # noqa: B003
    try:
        for package in PRELOAD_PACKAGES:
            module = importlib.import_module(package)
            for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
                if info.name in SKIP_MODULES or ".migrations" in info.name:
                    continue
                importlib.import_module(info.name)
    finally:
        os.environ = real  # noqa: B003
        recorder.recording = False
    return recorder.read


def _reopen_stdio() -> None:
    """New sys.std* over descriptors 0-2, opened as a fresh interpreter opens them
    (CPython's create_stdio): buffering by -u and by whether each is a terminal."""
    buffered = not os.environ.get("PYTHONUNBUFFERED")  # the zygote's too: no -u in either
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, f"__{name}__")
        writing = fd != 0
        # Lives as long as the run, as sys.stdout does: no context manager.
        binary = open(  # noqa: SIM115
            fd, "wb" if writing else "rb", buffering=-1 if buffered or not writing else 0,
            closefd=False,
        )  # fmt: skip
        stream = io.TextIOWrapper(
            binary,
            encoding=old.encoding,
            errors=old.errors,
            newline="\n",
            line_buffering=buffered and (os.isatty(fd) or fd == 2),
            write_through=not buffered,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _run_request(connection: socket.socket, listener: socket.socket) -> dict[str, Any]:
    """In the waiter: fork the run. Returns the request in the run; never returns in the
    waiter (it reports the run's PID and exit status, then exits)."""
    header, fds, _flags, _addr = socket.recv_fds(connection, 8, 3)
    size = int.from_bytes(header, "big")
    body = b""
    while len(body) < size:
        chunk = connection.recv(size - len(body))
        if not chunk:
            os._exit(1)
        body += chunk
    request = json.loads(body)
    pid = os.fork()
    if pid == 0:
        listener.close()
        connection.close()
        if request["new_session"]:
            os.setsid()
        if request["nofile"] is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, tuple(request["nofile"]))
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()  # as a fresh interpreter reads TZ when `time` is first imported
        _reopen_stdio()
        return dict(request)
    for fd in fds:
        os.close(fd)
    try:
        connection.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)


def _serve(address: str) -> dict[str, Any]:
    """The zygote: preload, then fork a waiter per connection. Returns only in a run."""
    read = _preload()
    import gc

    # Fork-and-run children would otherwise copy most of the heap on their first full
    # collection; frozen objects are never scanned.
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + address)  # Linux's abstract namespace: no file to clean up
    listener.listen(64)
    print(json.dumps({"read": sorted(read)}), flush=True)
    while True:
        connection, _ = listener.accept()
        pid = os.fork()
        if pid == 0:
            return _run_request(connection, listener)
        connection.close()
        # Waiters exit once their run has; reap those that have.
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


def main() -> None:
    # Die with the pytest worker that started us.
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    request = _serve(sys.argv[1])
    # As `python -m MODULE` run from the caller's directory.
    sys.path[0] = os.getcwd()
    sys.argv = [str(a) for a in request["argv"]]
    _exit_as_python_would(_run_main(str(request["module"])))


def _run_main(module: str) -> int | KeyboardInterrupt:
    """Run MODULE as __main__; its exit status as the interpreter would make it."""
    import runpy

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException as exc:  # reported as the interpreter does
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return exc if isinstance(exc, KeyboardInterrupt) else 1
    return 0


def _exit_as_python_would(status: int | KeyboardInterrupt) -> None:
    """What the interpreter does at exit, short of freeing the heap it was forked with
    (tearing down ~100 MB of preloaded modules took longer than the run itself)."""
    threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads
    atexit._run_exitfuncs()
    import gc

    gc.collect()  # the run's own garbage: finalizers that close and flush files
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if isinstance(status, KeyboardInterrupt):
        # An uncaught Ctrl-C ends a Python program by the signal itself.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status if isinstance(status, int) else 1)


# ---------------------------------------------------------------------------------------
# The caller's side


@dataclass
class _Zygote:
    process: subprocess.Popen[bytes]
    address: str
    env: dict[str, str]
    read: frozenset[str]

    def can_fork(self, env: Mapping[str, str]) -> bool:
        if _interpreter_start_keys(env) != _interpreter_start_keys(self.env):
            return False
        if "*" in self.read and dict(env) != self.env:
            return False
        return all(env.get(k) == self.env.get(k) for k in self.read)


def _zygote_for(env: Mapping[str, str], stdio: Sequence[int]) -> _Zygote | None:
    """A zygote this run can be forked from: one already running, or a new one started
    with this run's environment (at most MAX_ZYGOTES per process: the CLI's usual
    environment and the registry's cover nearly every run). None: exec instead."""
    if any(os.isatty(fd) for fd in stdio):
        return None
    with _lock:
        _zygotes[:] = [z for z in _zygotes if z.process.poll() is None]
        for zygote in _zygotes:
            if zygote.can_fork(env):
                return zygote
        if len(_zygotes) >= MAX_ZYGOTES:
            return None
        address = f"sysext-test-forkserver-{os.getpid()}-{time.monotonic_ns()}"
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver", address],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the test fork server exited {process.wait()} while starting")
        zygote = _Zygote(process, address, dict(env), frozenset(json.loads(line)["read"]))
        _zygotes.append(zygote)
        atexit.register(_stop_zygote, process)
        return zygote if zygote.can_fork(env) else None


def _stop_zygote(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


class ForkedProcess:
    """What a test needs of a Popen, for a run forked by the zygote (not our child, so
    its exit status comes over the connection)."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._buffer = b""
        self.pid = int(self._read_line(None))
        self.returncode: int | None = None

    def _read_line(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._connection], [], [], left)
            if not ready:
                raise subprocess.TimeoutExpired(["forked"], timeout or 0)
            chunk = self._connection.recv(64)
            if not chunk:
                raise RuntimeError("the test fork server's waiter went away")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = int(self._read_line(timeout))
            self._connection.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(
    module: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | str | None,
    stdio: Sequence[int],
    new_session: bool = False,
    nofile: tuple[int, int] | None = None,
) -> ForkedProcess | None:
    """Start `python -m MODULE ARGV…` forked from the zygote, or None when this run must
    exec a fresh interpreter (not enabled, or see the module docstring)."""
    if not _enabled:
        return None
    zygote = _zygote_for(env, stdio)
    if zygote is None:
        return None
    request = {
        "module": module,
        "argv": [sys.executable, *argv],
        "env": dict(env),
        "cwd": str(cwd if cwd is not None else os.getcwd()),
        "umask": _current_umask(),
        "new_session": new_session,
        "nofile": list(nofile) if nofile is not None else None,
    }
    body = json.dumps(request).encode()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect("\0" + zygote.address)
    socket.send_fds(connection, [len(body).to_bytes(8, "big")], list(stdio))
    connection.sendall(body)
    return ForkedProcess(connection)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def run(
    module: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | str | None,
    input: str | None,
) -> tuple[int, str, str] | None:
    """subprocess.run(…, capture_output=True, text=True) for a forked run: its exit status,
    stdout and stderr; None when it must exec instead. The run reads and writes unnamed
    files here (no pipes to drain while it runs)."""
    if not _enabled:
        return None
    import locale
    import tempfile

    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:  # fmt: skip
        stdin.write((input or "").encode())
        stdin.seek(0)
        stdio = (stdin.fileno(), out.fileno(), err.fileno())
        process = start(module, argv, env=env, cwd=cwd, stdio=stdio)
        if process is None:
            return None
        code = process.wait()
        texts = []
        for file in (out, err):
            file.seek(0)
            # As subprocess's text mode: the locale's encoding, universal newlines.
            data = file.read().decode(locale.getpreferredencoding(False))
            texts.append(data.replace("\r\n", "\n").replace("\r", "\n"))
    return code, texts[0], texts[1]


if __name__ == "__main__":
    main()
