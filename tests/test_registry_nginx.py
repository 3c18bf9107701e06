"""nginx serving the registry's DATA/public with the shipped config, read like a host."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from registry.http.nginx_conf import server_block, standalone_config
from sysext.systemd.manifest import parse_manifest
from sysext.trust.signing import verify_detached
from tests.registry_server import build_image, free_port, running_nginx, running_registry
from tests.servers import run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test nginx config runs as root")


def test_nginx_serves_the_same_tree(tmp_path: Path) -> None:
    image = build_image(tmp_path / "images", "hello", "1.0")
    with running_registry(tmp_path / "data") as reg:
        env = {"SYSEXT_TOKEN": reg.admin_token, "SYSEXT_REGISTRY": reg.url}
        assert run_cli("publish", image, env=env).returncode == 0
        prefix = tmp_path / "nginx"
        port = free_port()
        block = server_block(reg.data / "public", f"127.0.0.1:{port}", reg.url)
        prefix.mkdir()
        (prefix / "nginx.conf").write_text(standalone_config(prefix, block))
        proc = subprocess.Popen(
            ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                with contextlib.suppress(requests.ConnectionError):
                    requests.get(url + "/keyring.gpg", timeout=2)
                    break
                time.sleep(0.05)
            keyring = tmp_path / "keyring.gpg"
            keyring.write_bytes(requests.get(url + "/keyring.gpg", timeout=10).content)
            assert keyring.read_bytes() == reg.keyring()

            check = run_cli("check", f"{url}/extensions/hello", "--keyring", keyring)
            assert check.returncode == 0, check.stdout + check.stderr
            assert "signature: OK" in check.stdout and "hello-1.0-x86-64.raw" in check.stdout

            base = f"{url}/extensions/hello"
            manifest = requests.get(f"{base}/SHA256SUMS", timeout=10)
            assert (
                manifest.content
                == requests.get(f"{reg.url}/extensions/hello/SHA256SUMS", timeout=10).content
            )
            verify_detached(
                keyring.read_bytes(),
                manifest.content,
                requests.get(f"{base}/SHA256SUMS.gpg", timeout=10).content,
            )
            assert "max-age=30" in manifest.headers["cache-control"]
            body = requests.get(
                f"{base}/hello-1.0-x86-64.raw", headers={"Accept-Encoding": "gzip"}, timeout=10
            )
            assert "content-encoding" not in body.headers
            assert "immutable" in body.headers["cache-control"]
            assert (
                hashlib.sha256(body.content).hexdigest()
                == parse_manifest(manifest.content)[0].sha256
            )
            assert body.content == image.read_bytes()
            # Real 404s, hidden files included; the catalogue and API are proxied.
            for path in (
                "/extensions/hello/nope.raw",
                "/extensions/nothing/SHA256SUMS",
                "/.lock",
                "/extensions/hello/.x",
            ):
                assert requests.get(url + path, timeout=10).status_code == 404, path
            assert requests.get(url + "/api/v1/extensions", timeout=10).json()[0]["name"] == "hello"
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
            assert b"emerg" not in err, err.decode()


def test_rollout_polls_answered_while_the_app_hangs(tmp_path: Path) -> None:
    """A managed host's poll is answered by nginx from disk while `sysext serve` is stopped
    (SIGSTOP: its socket accepts connections, nothing answers). nginx's copy of the request
    for the fleet view times out and is dropped; the next request on the same kept-alive
    connection, which waits for that, is answered too. At most 32 copies are in flight:
    the rest are dropped at once. The copy's location is internal."""
    image = build_image(tmp_path / "images", "hello", "1.0")
    with running_registry(tmp_path / "data", env={"SYSEXT_FLEET_FLUSH": "0"}) as reg:
        env = {"SYSEXT_TOKEN": reg.admin_token, "SYSEXT_REGISTRY": reg.url}
        assert run_cli("publish", image, env=env).returncode == 0
        public = reg.data / "public"
        with running_nginx(
            tmp_path / "nginx", lambda listen: server_block(public, listen, reg.url)
        ) as url:
            assert requests.get(f"{url}/_sysext_fleet", timeout=10).status_code == 404
            # No rollout tree yet: the bucket path reads the channel directory.
            on_disk = (reg.data / "public/channels/stable/extensions/hello/SHA256SUMS").read_bytes()
            host = f"{url}/rollouts/stable/hello/07/{'ab' * 16}"
            assert reg.process is not None
            os.killpg(reg.process.pid, signal.SIGSTOP)
            try:
                with requests.Session() as session:
                    for _ in range(2):
                        got = session.get(f"{host}/SHA256SUMS", timeout=30)
                        assert got.status_code == 200 and got.content == on_disk
                    got = session.get(
                        f"{host}/hello-1.0-x86-64.raw", allow_redirects=False, timeout=30
                    )
                    assert got.status_code == 302
                    assert got.headers["location"].endswith(
                        "/channels/stable/extensions/hello/hello-1.0-x86-64.raw"
                    )
                # 64 hosts at once: every one answered, copies beyond 32 dropped.
                with ThreadPoolExecutor(64) as pool:
                    answers = list(
                        pool.map(
                            lambda n: requests.get(
                                f"{url}/rollouts/stable/hello/07/{n:032x}/SHA256SUMS", timeout=30
                            ),
                            range(64),
                        )
                    )
                assert all(a.status_code == 200 and a.content == on_disk for a in answers)
            finally:
                os.killpg(reg.process.pid, signal.SIGCONT)
        errors = (tmp_path / "nginx/error.log").read_text()
        assert "upstream timed out" in errors and 'subrequest: "/_sysext_fleet"' in errors
        assert 'limiting connections by zone "sysext_fleet"' in errors
