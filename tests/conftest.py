"""Shared fixtures: the CLI as a subprocess, and a local HTTP server for upstream files.

Upstream sites are unreachable from test machines, so tests serve upstream-shaped files
from 127.0.0.1 and point recipes at them through the builder's mirror setting.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (loop mounts in a private mount namespace)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


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
    """Run `sysext ARGS…` as a user would, in a subprocess."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
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


@pytest.fixture
def cli() -> object:
    return run_cli


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class StaticServer:
    root: Path
    url: str


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[StaticServer]:
    """Serve tmp_path/www over HTTP on 127.0.0.1 (random port) for upstream-shaped files."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StaticServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def boot_root() -> Path:
    """The cached Debian 12 root with systemd 254 that booted tests boot (tests/booted.py)."""
    from sysext.boot.rootfs import Base, ensure_root

    return ensure_root(Base.DEBIAN_12)


@pytest.fixture(scope="session")
def boot_root_newest() -> Path:
    """The cached Debian 13 root with systemd 257, the newest that boots here."""
    from sysext.boot.rootfs import Base, ensure_root

    return ensure_root(Base.DEBIAN_13)
