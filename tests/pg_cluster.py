"""A throw-away PostgreSQL cluster for tests: Debian's `postgresql` binaries, a private
directory, 127.0.0.1 on a free port, a socket in its own directory; stopped by PID.

    cluster = start_cluster()
    url = cluster.create_database()      # postgresql+psycopg://…/t_<random>
    cluster.restart()                    # same data, same port (fault tests)
    cluster.stop()

As root the server runs as the `postgres` user (initdb refuses root); the directory is
made for it under /tmp, since pytest's own temporary directories are 0700 root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.registry_server import free_port

USER = "sysext"


def postgres_bindir() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def _as_server_user() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


@dataclass
class PostgresCluster:
    base: Path
    bindir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "run"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        argv = [self.bindir / "initdb", "-D", self.data, "-U", USER, "--auth=trust"]
        subprocess.run(
            [*argv, "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True,
            capture_output=True,
            **_as_server_user(),
        )

    def start(self, timeout: float = 60) -> None:
        import psycopg

        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child process)
        argv = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        # A test database: durability off (each test makes its own), connections for
        # two replicas × workers × pools.
        for setting in (
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self.socket_dir}",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=300",
            "shared_buffers=32MB",
        ):
            argv += ["-c", setting]
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=log, start_new_session=True, **_as_server_user()
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.log_path.read_text()}")
            try:
                with psycopg.connect(self.url().replace("+psycopg", ""), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"postgres did not start:\n{self.log_path.read_text()}")

    def stop(self, kill: bool = False) -> None:
        """Fast shutdown (SIGINT: roll back sessions, stop), or SIGKILL for a crash."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if kill:
            # The postmaster's children notice its death themselves; give them a moment.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_cluster() -> PostgresCluster:
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: run scripts/setup.sh --test")
    base = Path(tempfile.mkdtemp(prefix="sysext-pg-"))
    (base / "run").mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(base / "run", "postgres", "postgres")
    cluster = PostgresCluster(base=base, bindir=bindir)
    cluster.init()
    cluster.start()
    return cluster


def remove_cluster(cluster: PostgresCluster) -> None:
    cluster.stop()
    shutil.rmtree(cluster.base, ignore_errors=True)
