"""Helpers the tests and the benchmarks share: the CLI as a user runs it, and small HTTP
servers on 127.0.0.1 for upstream-shaped files. Only the project's own dependencies (no
pytest), so `bench/` runs without the test extras."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import forkserver

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *args: str | Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> CliResult:
    """Run `sysext ARGS…` as a user would, in a subprocess (in the inner loop forked from
    one that has imported the CLI already, when that cannot change the outcome:
    tests/forkserver.py)."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    forked = forkserver.run(
        "sysext.cli.main", [*map(str, args)], env=full_env, cwd=cwd, input=input
    )
    if forked is not None:
        return CliResult(*forked)
    proc = subprocess.run(
        [sys.executable, "-m", "sysext.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        input=input,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class StaticServer:
    root: Path
    url: str


@contextlib.contextmanager
def serve_http(
    handler: Callable[..., http.server.BaseHTTPRequestHandler], port: int = 0
) -> Iterator[str]:
    """Run `handler` on 127.0.0.1 (a random port unless given) until the block ends; yields
    the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    # shutdown() waits for the loop's next poll: at the default 0.5 s that was half a
    # second at the end of every test serving upstream files.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serve_directory(root: Path, port: int = 0) -> Iterator[StaticServer]:
    """Serve `root` over HTTP on 127.0.0.1 (a random port unless given) until the block ends."""
    with serve_http(functools.partial(_QuietHandler, directory=str(root)), port) as url:
        yield StaticServer(root, url)
