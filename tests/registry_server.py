"""A real registry for tests: `sysext serve` in a subprocess on 127.0.0.1.

    from tests.registry_server import running_registry
    with running_registry(tmp_path / "data") as reg:
        reg.url, reg.admin_token, reg.keyring()

The pytest fixture `registry_server` (conftest.py) wraps it; `build_image()` packs a tiny
real extension image (usr/bin/NAME printing a line). No pytest here: bench/ uses it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from sysext.systemd.manifest import ManifestEntry, parse_manifest, without_markers
from tests import forkserver

ADMIN_TOKEN = "test-admin-token-0123456789"

# Set by the `registry_database` fixture (conftest.py) while a test runs on PostgreSQL: the
# database URL for a data directory (one database each, so a restart on the same directory
# finds its data again). None: the registry's default SQLite file in the data directory.
database_for: Callable[[Path], str] | None = None


def listing(manifest: bytes) -> list[ManifestEntry]:
    """A served SHA256SUMS without its BEST-BEFORE marker: the images (or placeholder)."""
    return without_markers(parse_manifest(manifest))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RegistryServer:
    data: Path
    port: int
    admin_token: str = ADMIN_TOKEN
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | forkserver.ForkedProcess | None = None
    # RLIMIT_NOFILE for the server (file-descriptor exhaustion tests), None: inherited.
    # Soft and hard, unless nofile_hard sets the hard one (the server raises its soft
    # limit up to the hard one, as on a systemd host: soft 1024, hard much higher).
    nofile: int | None = None
    nofile_hard: int | None = None
    # Worker processes unless the test's flags or environment say otherwise. One by
    # default: a second worker doubles what every start and stop costs (imports, the
    # app's start-up, a graceful shutdown) and only the tests about several workers need
    # it; they pass `--workers`/SYSEXT_WORKERS. None: the server's own default (one per CPU).
    workers: int | None = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: Mapping[str, str] | None = None, timeout: float = 60) -> None:
        """Start (or restart) `sysext serve` on the same data dir and port; wait until ready."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SYSEXT_")}
        if database_for is not None and "SYSEXT_DATABASE_URL" not in self.env:
            self.env["SYSEXT_DATABASE_URL"] = database_for(self.data)
        full_env = {
            **inherited,
            "SYSEXT_ADMIN_TOKEN": self.admin_token,
            # As CLI runs (tests/servers.py): one width and no colour in the server's log,
            # and in the inner loop servers and CLI runs fork from the same process.
            "COLUMNS": "200",
            "NO_COLOR": "1",
            **({"SYSEXT_WORKERS": str(self.workers)} if self.workers is not None else {}),
            **self.env,
            **(env or {}),
        }
        self.log_path = self.log_path or self.data.parent / f"registry-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child process)
        args = ["serve", "--data", str(self.data), "--port", str(self.port), *self.args]
        # Own process group: a crash test kills the supervisor and every worker at once.
        nofile, nofile_hard = self.nofile, self.nofile_hard

        def limit_fds() -> None:
            if nofile is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile_hard or nofile))

        with open(os.devnull, "rb") as devnull:
            forked = forkserver.start(
                "sysext.cli.main",
                args,
                env=full_env,
                cwd=None,
                stdio=(devnull.fileno(), log.fileno(), log.fileno()),
                new_session=True,
                nofile=(nofile, nofile_hard or nofile) if nofile is not None else None,
            )
        self.process = forked or subprocess.Popen(
            [sys.executable, "-m", "sysext.cli.main", *args],
            env=full_env,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=limit_fds if nofile is not None else None,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sysext serve exited {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.url}/api/v1/status", timeout=5).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sysext serve did not become ready:\n{self.log()}")

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (graceful) or SIGKILL to every process (a crash)."""
        if self.process is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        elif self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # Workers left behind by a crashed supervisor must not keep answering.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def rss_kib(self, field: str = "VmRSS") -> int:
        """The server process's resident memory (VmRSS) or its peak (VmHWM), in KiB."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for {self.process.pid}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    @property
    def database_url(self) -> str:
        return self.env.get("SYSEXT_DATABASE_URL") or f"sqlite:///{self.data / 'registry.db'}"

    def keyring(self) -> bytes:
        response = requests.get(f"{self.url}/keyring.gpg", timeout=10)
        response.raise_for_status()
        return response.content

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}


def database_dump(server: RegistryServer) -> bytes:
    """Every row the registry's database holds, table by table (SQLite or PostgreSQL).

    Audit entries of refused writes (`write.denied`) are left out: recording who was
    refused is the one thing a refused write is meant to change (issue 19, finding 15).
    """
    out = bytearray()

    def add(table: str, rows: list[tuple[object, ...]], columns: list[str]) -> None:
        action = columns.index("action") if table == "audit_log" and "action" in columns else None
        for row in rows:
            if action is not None and row[action] == "write.denied":
                continue
            out.extend(f"{table}: {row!r}\n".encode())

    if "SYSEXT_DATABASE_URL" not in server.env:
        import sqlite3

        with contextlib.closing(sqlite3.connect(server.data / "registry.db")) as db:
            tables = [
                t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            for table in sorted(tables):
                cursor = db.execute(f'SELECT * FROM "{table}" ORDER BY rowid')
                add(table, cursor.fetchall(), [d[0] for d in cursor.description])
        return bytes(out)
    import psycopg

    dsn = server.env["SYSEXT_DATABASE_URL"].replace("+psycopg", "")
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in sorted(tables):
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            rows = sorted(cursor.fetchall(), key=repr)
            add(table, rows, [d.name for d in cursor.description or ()])
    return bytes(out)


@contextlib.contextmanager
def running_registry(
    data: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    port: int | None = None,
) -> Iterator[RegistryServer]:
    server = RegistryServer(data=data, port=port or free_port(), env=dict(env or {}), args=args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def build_image(
    output: Path,
    name: str,
    version: str,
    arch: str = "x86-64",
    *,
    payload: str = "",
    release_name: str | None = None,
    filler: int = 0,
) -> Path:
    """Pack a tiny real squashfs extension NAME-VERSION-ARCH.raw into `output`.

    `release_name` names the extension-release file differently (a mismatched image);
    the file is still called NAME-VERSION-ARCH.raw. `filler`: that many random
    (incompressible) bytes in usr/share/NAME/filler, for an image of about that size.
    """
    from sysext.build.pack import pack
    from sysext.systemd.architecture import Architecture
    from sysext.systemd.extension_release import ExtensionRelease

    tree = output / f".tree-{name}-{version}-{arch}"
    (tree / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    script = tree / "usr" / "bin" / name
    script.write_text(f"#!/bin/sh\necho {name} {version} {payload}\n")
    script.chmod(0o755)
    if filler:
        (tree / "usr" / "share" / name).mkdir(parents=True, exist_ok=True)
        (tree / "usr" / "share" / name / "filler").write_bytes(os.urandom(filler))
    scratch = output / f".pack-{name}-{version}-{arch}"
    release = ExtensionRelease(
        name=release_name or name, version=version, arch=Architecture.parse(arch)
    )
    built = pack(tree, release, scratch)
    target = output / f"{name}-{version}-{arch}.raw"
    os.replace(built.path, target)
    return target


@contextlib.contextmanager
def running_nginx(
    prefix: Path,
    block_for: Callable[[str], str],
    *,
    workers: int = 1,
    access_log: Path | None = None,
) -> Iterator[str]:
    """nginx run from `prefix` with the server block `block_for("127.0.0.1:PORT")` (one of the
    shipped blocks, registry/http/nginx_conf.py) and `workers` processes, logging requests
    to `access_log` if given (the shipped blocks log none); yields its URL once it answers,
    stops it afterwards and fails when its error output has an `emerg`. Tests and bench/
    start nginx only through this."""
    from registry.http.nginx_conf import standalone_config

    port = free_port()
    prefix.mkdir()
    listen = f"127.0.0.1:{port}"
    config = standalone_config(prefix, block_for(listen), workers=workers)
    if access_log is not None:
        config = config.replace("access_log off;", f"access_log {access_log};")
    (prefix / "nginx.conf").write_text(config)
    proc = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://{listen}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                requests.get(f"{url}/keyring.gpg", timeout=2)
                break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        assert b"emerg" not in err, err.decode()
