"""User-facing messages found by the documentation audit: one line, a hint that fits."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.registry_server import running_registry
from tests.servers import run_cli


def test_serve_on_a_busy_port_fails_in_one_line_without_writing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli("serve", "--data", data, "--port", str(port))
    assert result.returncode == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "hint: another process may be using the port: pass --port N" in result.stderr
    assert "Traceback" not in result.stderr and "ERROR:" not in result.stderr
    assert not data.exists()  # refused before the data directory or a key is created


def test_serve_on_an_unknown_host_fails_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_cli("serve", "--data", data, "--host", "no-such-host.invalid")
    assert result.returncode == 2
    assert "error: cannot listen on no-such-host.invalid:8080:" in result.stderr
    assert "hint: pass --host with an address of this machine" in result.stderr
    assert not data.exists()


def test_revoking_an_unknown_token_hints_at_token_list(tmp_path: Path) -> None:
    with running_registry(tmp_path / "data") as registry:
        env = {"SYSEXT_TOKEN": registry.admin_token}
        result = run_cli("token", "revoke", "99", "-r", registry.url, env=env)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "error: registry answered 404: no token with id 99",
            "hint: see the ids with `sysext token list`",
        ]
