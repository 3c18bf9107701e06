"""The registry end to end: a real `sysext serve` (uvicorn) on 127.0.0.1, real images,
the real CLI and a real HTTP client."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import shlex
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sysext.systemd.manifest import best_before_markers, parse_manifest, without_markers
from sysext.trust import signing
from sysext.trust.signing import verify_detached
from tests.registry_server import (
    RegistryServer,
    build_image,
    database_dump,
    listing,
    running_registry,
)
from tests.servers import run_cli


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("images")
    for version in ("1.0", "1.9", "1.10"):
        build_image(out, "hello", version)
    build_image(out, "hello", "1.10", "arm64")
    build_image(out, "other", "2.0")
    return out


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, registry_database: str
) -> Iterator[RegistryServer]:
    # Requesting `registry_database` (conftest.py) makes a server per database engine.
    data = tmp_path_factory.mktemp("reg") / "data"
    # A small upload limit so the oversize test needs no huge file.
    with running_registry(data, args=("--max-upload", str(256 << 10))) as reg:
        yield reg


def _env(server: RegistryServer, token: str | None = None) -> dict[str, str]:
    return {"SYSEXT_TOKEN": token or server.admin_token, "SYSEXT_REGISTRY": server.url}


def _put(
    server: RegistryServer, name: str, filename: str, body: bytes, **kw: object
) -> requests.Response:
    headers = kw.pop("headers", server.headers())
    return requests.put(
        f"{server.url}/api/v1/extensions/{name}/images/{filename}",
        data=body,
        headers=headers,  # type: ignore[arg-type]
        timeout=30,
        **kw,  # type: ignore[arg-type]
    )


def _snapshot_state(server: RegistryServer) -> dict[str, object]:
    """Everything an upload could leave behind: store blobs, temporaries, public files."""
    data = server.data
    return {
        "store": sorted(p.name for p in (data / "store").rglob("*") if p.is_file()),
        "tmp": sorted(p.name for p in (data / "tmp").iterdir()),
        "public": sorted(
            (
                str(p.relative_to(data / "public")),
                p.read_bytes() if p.name.startswith("SHA") else b"",
            )
            for p in (data / "public").rglob("*")
            if p.is_file()
        ),
        "api": requests.get(f"{server.url}/api/v1/extensions", timeout=10).json(),
    }


def test_publish_then_check_with_registry_keyring(
    server: RegistryServer, images: Path, tmp_path: Path
) -> None:
    image = images / "hello-1.0-x86-64.raw"
    result = run_cli("publish", image, env=_env(server))
    assert result.returncode == 0, result.stderr
    assert "published: hello-1.0-x86-64.raw" in result.stdout

    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(server.keyring())
    check = run_cli("check", f"{server.url}/extensions/hello", "--keyring", keyring)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "signature: OK" in check.stdout
    assert "1.0" in check.stdout and "hello-1.0-x86-64.raw" in check.stdout

    served = requests.get(f"{server.url}/extensions/hello/hello-1.0-x86-64.raw", timeout=10)
    assert served.content == image.read_bytes()
    # The same tree under the explicit stable channel path.
    alias = requests.get(f"{server.url}/channels/stable/extensions/hello/SHA256SUMS", timeout=10)
    assert (
        alias.content
        == requests.get(f"{server.url}/extensions/hello/SHA256SUMS", timeout=10).content
    )


def test_keyring_binary_and_armored_and_gpg_verifies(
    server: RegistryServer, tmp_path: Path
) -> None:
    binary = server.keyring()
    assert binary[:1] != b"-"
    armored = requests.get(f"{server.url}/keyring.asc", timeout=10).text
    assert armored.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    run_cli("publish", *[], env=_env(server))  # no-op guard: never crashes without images
    manifest = requests.get(f"{server.url}/extensions/hello/SHA256SUMS", timeout=10).content
    signature = requests.get(f"{server.url}/extensions/hello/SHA256SUMS.gpg", timeout=10).content
    (tmp_path / "kr.gpg").write_bytes(binary)
    (tmp_path / "sig").write_bytes(signature)
    (tmp_path / "home").mkdir(mode=0o700)
    # The exact gpg invocation systemd-pull uses (spec §3.4).
    gpg = subprocess.run(
        [
            "gpg",
            "--no-options",
            "--no-default-keyring",
            "--no-auto-key-locate",
            "--no-auto-check-trustdb",
            "--batch",
            "--trust-model=always",
            f"--homedir={tmp_path / 'home'}",
            f"--keyring={tmp_path / 'kr.gpg'}",
            "--verify",
            str(tmp_path / "sig"),
            "-",
        ],
        input=manifest,
        capture_output=True,
        check=False,
    )
    assert gpg.returncode == 0, gpg.stderr.decode()


def test_manifest_version_order_and_transfer_file(server: RegistryServer, images: Path) -> None:
    for name in ("hello-1.10-x86-64.raw", "hello-1.9-x86-64.raw", "hello-1.10-arm64.raw"):
        assert run_cli("publish", images / name, env=_env(server)).returncode == 0
    base = f"{server.url}/extensions/hello"
    manifest = requests.get(f"{base}/SHA256SUMS", timeout=10).content
    names = [e.filename for e in parse_manifest(manifest)]
    assert names[:-1] == [
        "hello-1.0-x86-64.raw",
        "hello-1.9-x86-64.raw",
        "hello-1.10-arm64.raw",
        "hello-1.10-x86-64.raw",
    ]
    for entry in without_markers(parse_manifest(manifest)):
        assert entry.sha256 == hashlib.sha256((images / entry.filename).read_bytes()).hexdigest()
    # One signature, under the name systemd 252–257 fetch and the one 258+ fetch first;
    # every other name 258+ might try answers a plain 404 (they move on only after one).
    signature = requests.get(f"{base}/SHA256SUMS.gpg", timeout=10)
    newer = requests.get(f"{base}/SHA256SUMS.sha256.asc", timeout=10)
    assert newer.content == signature.content
    assert newer.headers["content-type"] == signature.headers["content-type"]
    assert signature.headers["content-type"] == "application/pgp-signature"
    for other in ("SHA256SUMS.sha256.gpg", "SHA256SUMS.asc"):
        assert requests.get(f"{base}/{other}", timeout=10).status_code == 404
    info = signing.verify_signature(server.keyring(), manifest, signature.content)
    # The last line is the BEST-BEFORE marker of the signature's expiry day (default
    # lifetime 7d), with the empty file's hash, served as that empty file.
    (marker,) = best_before_markers(parse_manifest(manifest))
    assert names[-1] == marker.filename and marker.hash_warning is None
    assert info.expires is not None and marker.date == info.expires.date()
    assert marker.deadline <= info.expires < marker.deadline + dt.timedelta(days=1)
    assert requests.get(f"{base}/{marker.filename}", timeout=10).content == b""
    for suffix in ("conf", "transfer"):
        text = requests.get(f"{server.url}/extensions/hello/hello.{suffix}", timeout=10).text
        assert "Verify=yes" in text
        assert f"Path={server.url}/extensions/hello" in text
        assert "MatchPattern=hello-@v-%a.raw" in text


def test_http_semantics_for_sysupdate(server: RegistryServer) -> None:
    url = f"{server.url}/extensions/hello/hello-1.0-x86-64.raw"
    full = requests.get(url, headers={"Accept-Encoding": "gzip, br"}, timeout=10)
    assert full.status_code == 200
    assert "content-encoding" not in full.headers
    assert int(full.headers["content-length"]) == len(full.content)
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert full.headers["last-modified"].endswith("GMT")
    etag = full.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")

    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == full.headers["content-length"]
    assert head.headers["etag"] == etag

    assert requests.get(url, headers={"If-None-Match": etag}, timeout=10).status_code == 304
    assert requests.get(url, headers={"If-None-Match": '"other"'}, timeout=10).status_code == 200

    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206 and part.content == full.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(full.content)}"
    tail = requests.get(url, headers={"Range": "bytes=-5"}, timeout=10)
    assert tail.status_code == 206 and tail.content == full.content[-5:]
    stale = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'}, timeout=10)
    assert stale.status_code == 200 and stale.content == full.content
    beyond = requests.get(url, headers={"Range": f"bytes={len(full.content)}-"}, timeout=10)
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(full.content)}"

    manifest = requests.get(
        f"{server.url}/extensions/hello/SHA256SUMS", headers={"Accept-Encoding": "gzip"}, timeout=10
    )
    assert "content-encoding" not in manifest.headers
    assert manifest.headers["cache-control"].startswith("public, max-age=30")


@pytest.mark.parametrize(
    "path",
    [
        "/extensions/hello/missing-1-x86-64.raw",
        "/extensions/hello/",
        "/extensions/hello",
        "/extensions/nothing/SHA256SUMS",
        "/extensions/%2e%2e/%2e%2e/registry.db",
        "/extensions/hello/..%2f..%2f..%2fregistry.db",
        "/extensions/hello/.%23x",
        "/channels/beta/extensions/hello/SHA256SUMS",
        "/registry.db",
    ],
)
def test_real_404s(server: RegistryServer, path: str) -> None:
    for method in ("GET", "HEAD"):
        response = requests.request(method, server.url + path, timeout=10)
        assert response.status_code == 404, (method, path)
        if method == "GET":
            assert response.json() == {"detail": "Not Found"}


def test_idempotent_and_immutable(server: RegistryServer, images: Path, tmp_path: Path) -> None:
    image = images / "hello-1.0-x86-64.raw"
    again = _put(server, "hello", image.name, image.read_bytes())
    assert again.status_code == 200 and again.json()["created"] is False
    before = _snapshot_state(server)
    other = build_image(tmp_path, "hello", "1.0", payload="different bytes")
    assert other.read_bytes() != image.read_bytes()
    result = run_cli("publish", other, env=_env(server))
    assert result.returncode == 2
    assert (
        "error: registry answered 409: hello-1.0-x86-64.raw is already published" in result.stderr
    )
    assert "hint: published versions are immutable" in result.stderr
    assert _snapshot_state(server) == before


def _tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("usr/lib/extension-release.d/extension-release.hello")
        payload = b"ID=_any\nARCHITECTURE=x86-64\n"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("case", "status", "detail"),
    [
        ("no-token", 401, "authentication required"),
        ("bad-token", 401, "invalid or revoked token"),
        ("garbage", 422, "hello-3.0-x86-64.raw: not a readable extension image"),
        ("tarball", 422, "hello-3.0-x86-64.raw: not a readable extension image"),
        (
            "mismatched-release",
            422,
            "holds extension-release.other, expected extension-release.hello",
        ),
        ("wrong-arch", 422, "has ARCHITECTURE=arm64, the file name says x86-64"),
        ("wrong-version", 422, "has SYSEXT_VERSION_ID=1.0, the file name says 3.0"),
        # %2F decodes to '/', so no upload route matches at all.
        ("traversal-name", 404, "Not Found"),
        ("traversal-file", 422, "invalid file name"),
        ("dotdot-name", 422, "invalid extension name '..'"),
        ("bad-version", 422, "sysupdate allows only [A-Za-z0-9.,_+-]"),
        ("bad-arch", 422, "systemd architecture"),
        ("bad-channel", 422, "unknown channel 'nightly'"),
        ("oversize", 413, "limit of 262144"),
        ("empty", 422, "empty upload"),
    ],
)
def test_bad_uploads_are_clear_4xx_and_write_nothing(
    server: RegistryServer, images: Path, tmp_path: Path, case: str, status: int, detail: str
) -> None:
    good = (images / "hello-1.0-x86-64.raw").read_bytes()
    name, filename, body, kw = "hello", "hello-3.0-x86-64.raw", good, {}
    if case == "no-token":
        kw = {"headers": {}}
    elif case == "bad-token":
        kw = {"headers": server.headers("sxt_1_wrong")}
    elif case == "garbage":
        body = b"\x00garbage" * 1000
    elif case == "tarball":
        body = _tarball()
    elif case == "mismatched-release":
        body = build_image(tmp_path, "hello", "3.0", release_name="other").read_bytes()
    elif case == "wrong-arch":
        body = build_image(tmp_path, "hello", "3.0", "arm64").read_bytes()
    elif case == "wrong-version":
        pass  # hello 1.0's bytes under the name hello-3.0-x86-64.raw
    elif case == "traversal-name":
        name = "..%2F..%2Fetc"
    elif case == "traversal-file":
        filename = "%2E%2Ehello-3.0-x86-64.raw"
    elif case == "dotdot-name":
        name, filename = "%2E%2E", "%2E%2E-3.0-x86-64.raw"
    elif case == "bad-version":
        filename = "hello-3.0~rc1-x86-64.raw"
    elif case == "bad-arch":
        filename = "hello-3.0-x86_64.raw"
    elif case == "bad-channel":
        kw = {"params": {"channel": "nightly"}}
    elif case == "oversize":
        body = good + b"\0" * (300 << 10)
    elif case == "empty":
        body = b""
    before = _snapshot_state(server)
    response = _put(server, name, filename, body, **kw)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert "\n" not in response.json()["detail"]
    assert _snapshot_state(server) == before


def test_oversize_streamed_upload_stops_at_the_limit(server: RegistryServer) -> None:
    """No Content-Length (chunked): the limit is enforced while streaming."""
    before = _snapshot_state(server)

    def body() -> Iterator[bytes]:
        for _ in range(8):
            yield b"\0" * (64 << 10)

    response = _put(server, "hello", "hello-4.0-x86-64.raw", body())  # type: ignore[arg-type]
    assert response.status_code == 413
    assert response.json()["detail"] == "upload larger than this registry's limit of 262144 bytes"
    assert _snapshot_state(server) == before


def test_tokens_scopes_and_revocation(server: RegistryServer, images: Path) -> None:
    created = run_cli("token", "create", "--scope", "hel*", "--description", "ci", env=_env(server))
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("sxt_")
    # Stored hashed: the secret appears nowhere in the database.
    assert token.split("_", 2)[2].encode() not in database_dump(server)

    ok = run_cli("publish", images / "hello-1.0-x86-64.raw", env=_env(server, token))
    assert ok.returncode == 0, ok.stderr
    before = _snapshot_state(server)
    denied = run_cli("publish", images / "other-2.0-x86-64.raw", env=_env(server, token))
    assert denied.returncode == 2
    assert (
        "error: registry answered 403: this token may not write extension 'other'" in denied.stderr
    )
    assert _snapshot_state(server) == before
    # A scoped token cannot manage tokens.
    assert run_cli("token", "list", env=_env(server, token)).returncode == 2

    listing = run_cli("token", "list", env=_env(server))
    assert listing.returncode == 0 and "hel*" in listing.stderr + listing.stdout
    token_id = token.split("_")[1]
    assert run_cli("token", "revoke", token_id, env=_env(server)).returncode == 0
    revoked = run_cli("publish", images / "hello-1.0-x86-64.raw", env=_env(server, token))
    assert revoked.returncode == 2 and "401: invalid or revoked token" in revoked.stderr


def test_publish_cli_errors(server: RegistryServer, images: Path, tmp_path: Path) -> None:
    image = images / "hello-1.0-x86-64.raw"
    no_token = run_cli("publish", image, "--registry", server.url, env={"SYSEXT_TOKEN": ""})
    assert no_token.returncode == 2
    assert "error: SYSEXT_TOKEN is not set" in no_token.stderr and "hint:" in no_token.stderr
    missing = run_cli("publish", tmp_path / "nope.raw", env=_env(server))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    renamed = tmp_path / "wrong-1.0-x86-64.raw"
    renamed.write_bytes(image.read_bytes())
    bad_name = run_cli("publish", renamed, env=_env(server))
    assert bad_name.returncode == 2 and "not named hello-VERSION-ARCH.raw" in bad_name.stderr
    big = tmp_path / "hello-9.0-x86-64.raw"
    with open(big, "wb") as f:
        f.truncate(300 << 10)  # over the test server's 256 KiB limit
    too_big = run_cli("publish", big, env=_env(server))
    assert too_big.returncode == 2
    assert "more than the registry accepts (262144 bytes)" in too_big.stderr
    down = run_cli("publish", image, "--registry", "http://127.0.0.1:9", env={"SYSEXT_TOKEN": "x"})
    assert down.returncode == 2 and "cannot reach the registry" in down.stderr
    for result in (no_token, missing, bad_name, too_big, down):
        assert "Traceback" not in result.stderr


def test_channels_promote_and_yank(server: RegistryServer, images: Path) -> None:
    image = images / "other-2.0-x86-64.raw"
    beta = run_cli("publish", image, "--channel", "beta", env=_env(server))
    assert beta.returncode == 0, beta.stderr
    beta_url = f"{server.url}/channels/beta/extensions/other"
    assert [
        e.filename for e in listing(requests.get(f"{beta_url}/SHA256SUMS", timeout=10).content)
    ] == [image.name]
    assert "Path=" + beta_url in requests.get(f"{beta_url}/other.conf", timeout=10).text
    assert requests.get(f"{server.url}/extensions/other/SHA256SUMS", timeout=10).status_code == 404

    promoted = run_cli("promote", "other", "2.0", "--to", "stable", env=_env(server))
    assert promoted.returncode == 0, promoted.stderr
    stable = requests.get(f"{server.url}/extensions/other/SHA256SUMS", timeout=10).content
    assert [e.filename for e in listing(stable)] == [image.name]

    yanked = run_cli("yank", "other", "2.0", env=_env(server))
    assert yanked.returncode == 0, yanked.stderr
    for base in (f"{server.url}/extensions/other", beta_url):
        manifest = requests.get(f"{base}/SHA256SUMS", timeout=10).content
        # Not empty (252–256 would fail the download): one line no pattern matches.
        assert [(e.filename, e.sha256) for e in listing(manifest)] == [
            ("NO-PUBLISHED-IMAGES", hashlib.sha256(b"").hexdigest())
        ]
        assert requests.get(f"{base}/NO-PUBLISHED-IMAGES", timeout=10).content == b""
        verify_detached(
            server.keyring(), manifest, requests.get(f"{base}/SHA256SUMS.gpg", timeout=10).content
        )
        # Yanked: gone from the manifest, still there for direct links.
        assert requests.get(f"{base}/{image.name}", timeout=10).content == image.read_bytes()
    info = requests.get(f"{server.url}/api/v1/extensions/other", timeout=10).json()
    assert info["images"][0]["yanked"] is True and info["images"][0]["channels"] == [
        "beta",
        "stable",
    ]

    assert run_cli("yank", "other", "2.0", "--undo", env=_env(server)).returncode == 0
    assert (
        image.name.encode()
        in requests.get(f"{server.url}/extensions/other/SHA256SUMS", timeout=10).content
    )
    missing = run_cli("yank", "other", "9.9", env=_env(server))
    assert missing.returncode == 2 and "404: no published image of other 9.9" in missing.stderr
    bad = run_cli("promote", "other", "2.0", "--to", "nightly", env=_env(server))
    assert bad.returncode == 2 and "unknown channel 'nightly'" in bad.stderr


def test_json_api_and_search(server: RegistryServer) -> None:
    listing = requests.get(f"{server.url}/api/v1/extensions", timeout=10).json()
    hello = next(e for e in listing if e["name"] == "hello")
    assert hello["latest_version"] == "1.10" and hello["arches"] == ["arm64", "x86-64"]
    found = requests.get(f"{server.url}/api/v1/search", params={"q": "HEL"}, timeout=10).json()
    assert [e["name"] for e in found] == ["hello"]
    detail = requests.get(f"{server.url}/api/v1/extensions/hello", timeout=10).json()
    first = detail["images"][0]
    assert first["version"] == "1.10"
    assert set(first) >= {"arch", "size", "sha256", "channels", "created", "yanked"}
    assert first["created"].endswith(("Z", "+00:00"))
    assert requests.get(f"{server.url}/api/v1/extensions/nope", timeout=10).status_code == 404
    schema = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert "/api/v1/extensions/{name}/images/{filename}" in schema["paths"]


def test_web_catalogue(server: RegistryServer) -> None:
    index = requests.get(server.url + "/", timeout=10)
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert 'href="/catalog/hello"' in index.text
    assert "No extension matches" in requests.get(server.url + "/?q=zzz", timeout=10).text
    page = requests.get(server.url + "/catalog/hello", timeout=10).text
    assert "1.10" in page and "arm64" in page and "Verify=yes" in page
    assert "/api/v1/extensions/hello/butane" in page
    # The provisioning routes are mounted and read the same tree.
    butane = requests.get(server.url + "/api/v1/extensions/hello/butane", timeout=10)
    assert butane.status_code == 200 and "hello-1.10-x86-64.raw" in butane.text
    assert requests.get(server.url + "/catalog/nope", timeout=10).status_code == 404
    assert requests.get(server.url + "/static/style.css", timeout=10).status_code == 200


def test_request_log_is_structured(server: RegistryServer) -> None:
    requests.get(f"{server.url}/keyring.gpg", timeout=10)
    requests.get(f"{server.url}/extensions/hello/no such file", timeout=10)
    # The access line is written after the response is sent: wait for it to reach the file.
    for _ in range(100):
        lines = [line for line in server.log().splitlines() if "path=" in line]
        if any("no such file" in line for line in lines):
            break
        time.sleep(0.05)
    parsed = [dict(field.split("=", 1) for field in shlex.split(line)) for line in lines]
    assert all(
        {"time", "level", "method", "path", "status", "bytes", "duration_ms"} <= set(p)
        for p in parsed
    )
    by_path = {p["path"]: p for p in parsed}
    assert by_path["/keyring.gpg"]["method"] == "GET" and by_path["/keyring.gpg"]["status"] == "200"
    assert by_path["/extensions/hello/no such file"]["status"] == "404"


def test_signing_key_created_once_and_private(server: RegistryServer) -> None:
    key = server.data / "keys" / "signing.pgp"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.parent.stat().st_mode & 0o777 == 0o700
    fingerprint = requests.get(f"{server.url}/api/v1/status", timeout=10).json()["fingerprint"]
    assert f"signing key {fingerprint} (created" in server.log().replace("\n", " ")


def test_config_file_channels_and_restart_rematerializes(tmp_path: Path, images: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "registry.toml").write_text('public_url = "https://ext.example.com"\n')
    image = images / "hello-1.0-x86-64.raw"
    with running_registry(data, env={"SYSEXT_CHANNELS": "stable,edge"}) as reg:
        env = _env(reg)
        assert run_cli("publish", image, "--channel", "edge", env=env).returncode == 0
        refused = run_cli("publish", image, "--channel", "beta", env=env)
        assert refused.returncode == 2 and "unknown channel 'beta'" in refused.stderr
        edge = f"{reg.url}/channels/edge/extensions/hello"
        conf = requests.get(f"{edge}/hello.conf", timeout=10).text
        assert "Path=https://ext.example.com/channels/edge/extensions/hello" in conf
        manifest = requests.get(f"{edge}/SHA256SUMS", timeout=10).content
        fingerprint = reg.keyring()
        reg.stop()
        # Same data, another public URL: the tree is rematerialized from the database.
        reg.start(env={"SYSEXT_PUBLIC_URL": "https://mirror.example.org"})
        conf = requests.get(f"{edge}/hello.conf", timeout=10).text
        assert "Path=https://mirror.example.org/channels/edge/extensions/hello" in conf
        assert requests.get(f"{edge}/SHA256SUMS", timeout=10).content == manifest
        assert reg.keyring() == fingerprint  # the key survives restarts
        verify_detached(
            reg.keyring(), manifest, requests.get(f"{edge}/SHA256SUMS.gpg", timeout=10).content
        )


class _FlakyProxy:
    """A TCP proxy to the registry that drops the first upload connection mid-request."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dropped = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        first = client.recv(65536)
        if first.startswith(b"PUT") and not self.dropped:
            self.dropped += 1
            client.close()  # as if the network failed during the upload
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        upstream.sendall(first)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def close(self) -> None:
        self.listener.close()


def test_publish_retries_a_dropped_upload(server: RegistryServer, tmp_path: Path) -> None:
    image = build_image(tmp_path, "retry", "1.0")
    proxy = _FlakyProxy(server.port)
    try:
        result = run_cli(
            "publish",
            image,
            env={**_env(server), "SYSEXT_REGISTRY": f"http://127.0.0.1:{proxy.port}"},
        )
    finally:
        proxy.close()
    assert proxy.dropped == 1
    assert result.returncode == 0, result.stderr
    assert "published: retry-1.0-x86-64.raw" in result.stdout
    listed = requests.get(f"{server.url}/api/v1/extensions/retry", timeout=10).json()["images"]
    assert [i["filename"] for i in listed] == [image.name]
