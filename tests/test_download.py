"""Downloads, the cache, mirrors and settings, against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from sysext.core.config import load_settings
from sysext.core.download import Downloader, DownloadError
from sysext.core.errors import SysextError
from sysext.core.mirrors import MirrorMap, parse_mirror_spec
from tests.servers import StaticServer, serve_http

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def downloader(tmp_path: Path, **kwargs: object) -> Downloader:
    return Downloader(cache_dir=tmp_path / "cache", **kwargs)  # type: ignore[arg-type]


def cache_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "cache"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_fetch_verifies_caches_and_reuses(tmp_path: Path, static_server: StaticServer) -> None:
    (static_server.root / "tool.tar.gz").write_bytes(PAYLOAD)
    url = f"{static_server.url}/tool.tar.gz"
    path = downloader(tmp_path).fetch(url, PAYLOAD_SHA)
    assert path.read_bytes() == PAYLOAD
    assert cache_files(tmp_path) == [f"downloads/sha256/{PAYLOAD_SHA}"]
    # Served no more: the cached, verified blob is used.
    (static_server.root / "tool.tar.gz").unlink()
    assert downloader(tmp_path).fetch(url, PAYLOAD_SHA) == path


def test_corrupt_cache_entry_is_detected_and_refetched(
    tmp_path: Path, static_server: StaticServer
) -> None:
    (static_server.root / "tool.tar.gz").write_bytes(PAYLOAD)
    url = f"{static_server.url}/tool.tar.gz"
    path = downloader(tmp_path).fetch(url, PAYLOAD_SHA)
    path.write_bytes(b"bit rot")
    again = downloader(tmp_path).fetch(url, PAYLOAD_SHA)
    assert again.read_bytes() == PAYLOAD


def test_checksum_mismatch_names_the_url_and_keeps_nothing(
    tmp_path: Path, static_server: StaticServer
) -> None:
    (static_server.root / "tool.tar.gz").write_bytes(PAYLOAD)
    url = f"{static_server.url}/tool.tar.gz"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        downloader(tmp_path).fetch(url, wrong)
    assert info.value.message == (f"{url}: sha256 mismatch (expected {wrong}, got {PAYLOAD_SHA})")
    assert "--refresh" in (info.value.hint or "")
    assert cache_files(tmp_path) == []


def test_http_404_names_the_url(tmp_path: Path, static_server: StaticServer) -> None:
    url = f"{static_server.url}/missing.tar.gz"
    with pytest.raises(DownloadError) as info:
        downloader(tmp_path).fetch(url, PAYLOAD_SHA)
    assert info.value.message == f"{url}: HTTP 404 File not found"
    assert cache_files(tmp_path) == []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_host_names_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/tool.tar.gz"
    with pytest.raises(DownloadError) as info:
        downloader(tmp_path, retries=1, backoff=0.01).fetch(url, PAYLOAD_SHA)
    assert info.value.message.startswith(f"{url}: cannot connect")
    assert "connection refused" in info.value.message


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_timeout_names_the_url(tmp_path: Path, silent_server: str) -> None:
    url = f"{silent_server}/tool.tar.gz"
    slow = downloader(tmp_path, retries=0, read_timeout=0.2, connect_timeout=0.2)
    with pytest.raises(DownloadError) as info:
        slow.fetch(url, PAYLOAD_SHA)
    assert info.value.message.startswith(f"{url}: ")
    assert "timed out" in info.value.message


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD with Range support; the first full GET breaks off half-way."""

    ranges: ClassVar[list[str | None]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        if header is None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        start = int(header.removeprefix("bytes=").rstrip("-"))
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start:])


def test_broken_transfer_resumes_with_range(tmp_path: Path) -> None:
    _FlakyHandler.ranges = []
    with serve_http(_FlakyHandler) as base:
        path = downloader(tmp_path, backoff=0.01).fetch(f"{base}/tool.tar.gz", PAYLOAD_SHA)
    assert path.read_bytes() == PAYLOAD
    assert _FlakyHandler.ranges[0] is None
    # The second request continues from what the first one delivered.
    assert len(_FlakyHandler.ranges) == 2
    start = int((_FlakyHandler.ranges[1] or "").removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= len(PAYLOAD) // 2


def test_mirror_rewrite_reaches_the_local_server(
    tmp_path: Path, static_server: StaticServer
) -> None:
    asset = static_server.root / "gh/owner/tool/releases/download/v1.0/tool.tar.gz"
    asset.parent.mkdir(parents=True)
    asset.write_bytes(PAYLOAD)
    upstream = "https://github.com/owner/tool/releases/download/v1.0/tool.tar.gz"
    mirrors = MirrorMap({"https://github.com/": f"{static_server.url}/gh/"})
    assert (
        downloader(tmp_path, mirrors=mirrors).fetch(upstream, PAYLOAD_SHA).read_bytes() == PAYLOAD
    )
    with pytest.raises(DownloadError) as info:
        downloader(tmp_path, mirrors=mirrors).fetch(upstream.replace("v1.0", "v9"), "2" * 64)
    # Both the upstream URL and where it was actually fetched from are named.
    assert info.value.message.startswith(
        "https://github.com/owner/tool/releases/download/v9/tool.tar.gz (via mirror "
        f"{static_server.url}/gh/owner/tool/releases/download/v9/tool.tar.gz): HTTP 404"
    )


def test_local_paths_and_file_urls(tmp_path: Path) -> None:
    local = tmp_path / "tool.tar.gz"
    local.write_bytes(PAYLOAD)
    assert downloader(tmp_path).fetch(str(local), PAYLOAD_SHA) == local
    assert downloader(tmp_path).fetch(f"file://{local}", PAYLOAD_SHA) == local
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        downloader(tmp_path).fetch(f"file://{local}", "1" * 64)
    assert downloader(tmp_path).fetch_bytes(f"file://{local}") == PAYLOAD


def test_longest_mirror_prefix_wins() -> None:
    mirrors = parse_mirror_spec(
        "https://github.com/=http://a/gh/ https://github.com/special/=http://b/",
        source="SYSEXT_MIRRORS",
    )
    assert mirrors.rewrite("https://github.com/x/y") == "http://a/gh/x/y"
    assert mirrors.rewrite("https://github.com/special/y") == "http://b/y"
    assert mirrors.rewrite("https://example.org/z") == "https://example.org/z"


def test_bad_mirror_spec_is_a_clear_error() -> None:
    with pytest.raises(
        SysextError, match=r"SYSEXT_MIRRORS: mirror rule 'https://github\.com/' is not"
    ):
        parse_mirror_spec("https://github.com/", source="SYSEXT_MIRRORS")


def test_settings_from_config_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "config" / "sysext" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        'cache_dir = "/srv/cache"\n[mirrors]\n"https://github.com/" = "http://file/gh/"\n'
        '"https://example.org/" = "http://file/ex/"\n'
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    settings = load_settings(env=env)
    assert settings.cache_dir == Path("/srv/cache")
    assert settings.mirrors.rewrite("https://github.com/a") == "http://file/gh/a"
    env["SYSEXT_MIRRORS"] = "https://github.com/=http://env/gh/"
    env["SYSEXT_CACHE_DIR"] = str(tmp_path / "envcache")
    settings = load_settings(env=env)
    assert settings.mirrors.rewrite("https://github.com/a") == "http://env/gh/a"
    assert settings.mirrors.rewrite("https://example.org/a") == "http://file/ex/a"
    assert settings.cache_dir == tmp_path / "envcache"
    assert load_settings(cache_dir=tmp_path / "opt", env=env).cache_dir == tmp_path / "opt"
    env.pop("SYSEXT_CACHE_DIR")
    env.pop("XDG_CONFIG_HOME")
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env["SYSEXT_CONFIG"] = str(tmp_path / "none.toml")
    assert load_settings(env=env).cache_dir == tmp_path / "xdg" / "sysext"


def test_bad_config_file_names_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[mirrors]\n"https://github.com/" = 3\n')
    with pytest.raises(SysextError) as info:
        load_settings(env={"SYSEXT_CONFIG": str(config)})
    assert info.value.message == (
        f"config {config}: mirrors.'https://github.com/': expected a non-empty replacement "
        "URL string, got 3"
    )
    config.write_text('cache-dir = "x"\n')
    with pytest.raises(SysextError, match="unknown key 'cache-dir'"):
        load_settings(env={"SYSEXT_CONFIG": str(config)})


def test_unwritable_cache_dir_is_a_clear_error(tmp_path: Path, static_server: StaticServer) -> None:
    (static_server.root / "tool.tar.gz").write_bytes(PAYLOAD)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    broken = Downloader(cache_dir=blocker / "cache")
    with pytest.raises(SysextError) as info:
        broken.fetch(f"{static_server.url}/tool.tar.gz", PAYLOAD_SHA)
    assert info.value.message.startswith(f"cache directory {blocker}/cache/downloads/")
    assert "Not a directory" in info.value.message
