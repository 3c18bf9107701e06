"""The in-memory cache of small public files (registry/http/files.py `SmallFileCache`).

A real `sysext serve` on 127.0.0.1 and a real HTTP client: every request after the first
is answered from memory, so these prove that cached answers stay byte-exact, follow each
publish/yank at once, and keep the HTTP semantics sysupdate relies on (spec §5).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from registry.http.files import SmallFileCache, open_public_file
from sysext.trust.signing import verify_detached
from tests.registry_server import RegistryServer, build_image, listing, running_registry


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("images")
    for version in ("1.0", "1.1"):
        build_image(out, "cached", version)
    return out


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, registry_database: str
) -> Iterator[RegistryServer]:
    # Requesting `registry_database` (conftest.py) makes one server per database engine.
    with running_registry(tmp_path_factory.mktemp("reg") / "data") as reg:
        yield reg


def _publish(server: RegistryServer, image: Path) -> None:
    response = requests.put(
        f"{server.url}/api/v1/extensions/cached/images/{image.name}",
        data=image.read_bytes(),
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text


def _served_manifest(server: RegistryServer, base: str) -> list[str]:
    """GET the manifest twice (the second from memory); both must be the file on disk,
    and its signature must verify with the registry's keyring."""
    on_disk = (server.data / "public" / base.lstrip("/") / "SHA256SUMS").read_bytes()
    first = requests.get(f"{server.url}{base}/SHA256SUMS", timeout=10)
    second = requests.get(f"{server.url}{base}/SHA256SUMS", timeout=10)
    assert first.content == second.content == on_disk
    assert first.headers["etag"] == second.headers["etag"]
    assert int(second.headers["content-length"]) == len(on_disk)
    signature = requests.get(f"{server.url}{base}/SHA256SUMS.gpg", timeout=10).content
    verify_detached(server.keyring(), second.content, signature)
    return [entry.filename for entry in listing(second.content)]


def test_cached_manifest_follows_publish_and_yank(server: RegistryServer, images: Path) -> None:
    _publish(server, images / "cached-1.0-x86-64.raw")
    assert _served_manifest(server, "/extensions/cached") == ["cached-1.0-x86-64.raw"]
    etag_one = requests.head(f"{server.url}/extensions/cached/SHA256SUMS", timeout=10).headers[
        "etag"
    ]

    _publish(server, images / "cached-1.1-x86-64.raw")
    assert _served_manifest(server, "/extensions/cached") == [
        "cached-1.0-x86-64.raw",
        "cached-1.1-x86-64.raw",
    ]
    etag_two = requests.head(f"{server.url}/extensions/cached/SHA256SUMS", timeout=10).headers[
        "etag"
    ]
    assert etag_two != etag_one
    # The old validator no longer matches: a polling host gets the new manifest, not a 304.
    again = requests.get(
        f"{server.url}/extensions/cached/SHA256SUMS",
        headers={"If-None-Match": etag_one},
        timeout=10,
    )
    assert again.status_code == 200 and b"cached-1.1-x86-64.raw" in again.content

    yanked = requests.post(
        f"{server.url}/api/v1/extensions/cached/versions/1.1/yank",
        headers=server.headers(),
        timeout=30,
    )
    assert yanked.status_code == 200, yanked.text
    assert _served_manifest(server, "/extensions/cached") == ["cached-1.0-x86-64.raw"]
    conf = requests.get(f"{server.url}/extensions/cached/cached.conf", timeout=10)
    assert conf.content == (server.data / "public/extensions/cached/cached.conf").read_bytes()


def test_cached_small_file_http_semantics(server: RegistryServer) -> None:
    url = f"{server.url}/keyring.gpg"
    on_disk = (server.data / "public" / "keyring.gpg").read_bytes()
    miss, hit = requests.get(url, timeout=10), requests.get(url, timeout=10)
    for response in (miss, hit):
        assert response.status_code == 200 and response.content == on_disk
        assert int(response.headers["content-length"]) == len(on_disk)
        assert "content-encoding" not in response.headers
        assert response.headers["cache-control"] == "public, max-age=30, must-revalidate"
        assert response.headers["content-type"] == "application/pgp-keys"
    etag = hit.headers["etag"]
    assert etag == miss.headers["etag"] and etag.startswith('"')
    assert hit.headers["last-modified"] == miss.headers["last-modified"]

    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(on_disk))
    assert head.headers["etag"] == etag

    for validator in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        unchanged = requests.get(url, headers={"If-None-Match": validator}, timeout=10)
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert unchanged.headers["etag"] == etag
    assert requests.get(url, headers={"If-None-Match": '"nope"'}, timeout=10).content == on_disk

    part = requests.get(url, headers={"Range": "bytes=3-9"}, timeout=10)
    assert part.status_code == 206 and part.content == on_disk[3:10]
    assert part.headers["content-range"] == f"bytes 3-9/{len(on_disk)}"
    assert part.headers["content-length"] == "7"
    tail = requests.get(url, headers={"Range": "bytes=-4"}, timeout=10)
    assert tail.status_code == 206 and tail.content == on_disk[-4:]
    head_part = requests.head(url, headers={"Range": "bytes=0-0"}, timeout=10)
    assert head_part.status_code == 206 and head_part.headers["content-length"] == "1"
    matching = requests.get(url, headers={"Range": "bytes=0-1", "If-Range": etag}, timeout=10)
    assert matching.status_code == 206 and matching.content == on_disk[:2]
    stale = requests.get(url, headers={"Range": "bytes=0-1", "If-Range": '"old"'}, timeout=10)
    assert stale.status_code == 200 and stale.content == on_disk
    beyond = requests.get(url, headers={"Range": f"bytes={len(on_disk)}-"}, timeout=10)
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(on_disk)}"


def test_cache_follows_renames_and_removal_in_the_tree(server: RegistryServer) -> None:
    # The materializer changes the tree only by renaming new files into place; the very
    # same must hold for anything else that writes it (a sync, an operator).
    target = server.data / "public" / "extensions" / "notes.txt"
    url = f"{server.url}/extensions/notes.txt"
    try:
        target.write_bytes(b"first\n")
        assert requests.get(url, timeout=10).content == b"first\n"
        assert requests.get(url, timeout=10).content == b"first\n"
        replacement = target.with_name(".#notes.txt.new")
        replacement.write_bytes(b"second, longer\n")
        os.replace(replacement, target)
        swapped = requests.get(url, timeout=10)
        assert swapped.content == b"second, longer\n"
        assert swapped.headers["content-length"] == str(len(b"second, longer\n"))
        target.unlink()
        assert requests.get(url, timeout=10).status_code == 404
        assert requests.head(url, timeout=10).status_code == 404
    finally:
        target.unlink(missing_ok=True)


def _load(cache: SmallFileCache, root: Path, name: str) -> bytes:
    opened = open_public_file(root, name)
    assert opened is not None
    fd, st = opened
    try:
        return cache.load(name, fd, st).body
    finally:
        os.close(fd)


def test_cache_budget_and_validation(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    cache = SmallFileCache(tmp_path, budget=250)
    assert _load(cache, tmp_path, "a") == b"a" * 100
    _load(cache, tmp_path, "b")
    _load(cache, tmp_path, "c")  # over budget: the oldest entry goes
    assert list(cache.entries) == ["b", "c"] and cache.used == 200
    assert cache.lookup("a") is None
    hit = cache.lookup("b")
    assert hit is not None and hit.body == b"b" * 100
    assert dict(hit.full_headers)[b"content-length"] == b"100"

    (tmp_path / ".new").write_bytes(b"B" * 10)
    os.replace(tmp_path / ".new", tmp_path / "b")
    assert cache.lookup("b") is None  # another inode: re-read, never the old bytes
    assert list(cache.entries) == ["c"] and cache.used == 100
    (tmp_path / "c").unlink()
    assert cache.lookup("c") is None and cache.used == 0


def test_download_stops_when_the_client_goes_away(server: RegistryServer) -> None:
    # uvicorn's send() returns at once for a gone client; the stream must notice and stop
    # instead of reading the rest of a big image into nothing on the event loop.
    size = 96 << 20
    target = server.data / "public" / "extensions" / "big-1-x86-64.raw"
    try:
        with open(target, "wb") as f:
            f.truncate(size)  # sparse: large but cheap
        with requests.get(
            f"{server.url}/extensions/big-1-x86-64.raw", stream=True, timeout=10
        ) as r:
            assert r.status_code == 200 and r.headers["content-length"] == str(size)
            assert len(r.raw.read(1 << 16)) == 1 << 16
        lines: list[str] = []
        for _ in range(200):  # the access line is written when the response ends
            lines = [line for line in server.log().splitlines() if "big-1-x86-64.raw" in line]
            if lines:
                break
            time.sleep(0.05)
        assert len(lines) == 1, server.log()[-2000:]
        sent = int(lines[0].split(" bytes=", 1)[1].split(" ", 1)[0])
        assert 1 << 16 <= sent < size
        # And the worker still answers.
        assert requests.get(f"{server.url}/keyring.gpg", timeout=10).status_code == 200
    finally:
        target.unlink(missing_ok=True)
