"""`sysext check` against a directory served over real HTTP on 127.0.0.1 (spec §3–§5)."""

from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sysext.build.pack import pack
from sysext.client.checker import CheckError, check_remote
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease
from sysext.systemd.manifest import ManifestEntry, ManifestError, format_manifest, sha256_file
from sysext.systemd.patterns import HostInfo
from sysext.systemd.transfer import TransferSpec, render_transfer
from sysext.trust.signing import (
    SignatureError,
    export_public_key,
    generate_key,
    sign_detached,
    sign_directory,
)
from tests.servers import StaticServer, run_cli, serve_http

HOST = HostInfo(arch="x86-64", os_release={"ID": "flatcar", "VERSION_ID": "3815.2.0"})


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("check-keys")
    key = base / "registry.key"
    generate_key(key, "Registry <registry@example.test>")
    keyring = base / "import-pubring.gpg"
    keyring.write_bytes(export_public_key(key))
    return key, keyring


@pytest.fixture(scope="module")
def real_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real squashfs extension image made by the builder (hello 1.1)."""
    base = tmp_path_factory.mktemp("check-image")
    tree = base / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/hello").write_text("#!/bin/sh\necho hello\n")
    (tree / "usr/bin/hello").chmod(0o755)
    release = ExtensionRelease(name="hello", version="1.1", arch=Architecture.X86_64)
    built = pack(tree, release, base / "out")
    assert built.path.name == "hello-1.1-x86-64.raw"
    return built.path


def publish(
    server: StaticServer,
    name: str,
    files: dict[str, bytes],
    key: Path | None,
    *,
    real: Path | None = None,
) -> str:
    directory = server.root / "extensions" / name
    directory.mkdir(parents=True)
    for file_name, data in files.items():
        (directory / file_name).write_bytes(data)
    if real is not None:
        (directory / real.name).write_bytes(real.read_bytes())
    if key is not None:
        sign_directory(directory, key)
    return f"{server.url}/extensions/{name}"


def test_signed_registry_directory(
    static_server: StaticServer, signing: tuple[Path, Path], real_image: Path
) -> None:
    key, keyring = signing
    url = publish(
        static_server,
        "hello",
        {"hello-1.0-x86-64.raw": b"old", "hello-1.2-arm64.raw": b"arm"},
        key,
        real=real_image,
    )
    report = check_remote(url, keyring=keyring, patterns=None, host=HOST, verify_payload=True)
    assert report.ok and report.signer
    assert report.patterns == ("hello-@v-x86-64.raw",)
    assert [a.version for a in report.available] == ["1.1", "1.0"]
    assert report.ignored == ("hello-1.2-arm64.raw",)
    assert report.selection.candidate == "1.1"
    assert report.candidate is not None
    assert report.candidate.url == f"{url}/hello-1.1-x86-64.raw"
    assert report.payload_verified == "hello-1.1-x86-64.raw"

    result = run_cli("check", url, "--keyring", keyring, "--arch", "x86-64", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["candidate"] == "1.1" and data["ok"] and data["verified_by"]

    text = run_cli("check", url + "/?token=ignored#x", "--keyring", keyring, "--arch", "x86-64")
    assert text.returncode == 0, text.stderr
    assert "1.1" in text.stdout and "<- candidate" in text.stdout


def test_arm64_host_sees_its_own_build(
    static_server: StaticServer, signing: tuple[Path, Path]
) -> None:
    key, keyring = signing
    url = publish(static_server, "hello", {"hello-1.2-arm64.raw": b"arm"}, key)
    arm = HostInfo(arch="arm64", os_release={})
    assert check_remote(url, keyring=keyring, patterns=None, host=arm).selection.candidate == "1.2"
    with pytest.raises(CheckError, match=r"no entry of .* matches hello-@v-x86-64\.raw") as info:
        check_remote(url, keyring=keyring, patterns=None, host=HOST)
    assert "hello-1.2-arm64.raw" in info.value.message and info.value.hint


def test_tampered_manifest(static_server: StaticServer, signing: tuple[Path, Path]) -> None:
    key, keyring = signing
    url = publish(static_server, "hello", {"hello-1.0-x86-64.raw": b"x"}, key)
    manifest = static_server.root / "extensions/hello/SHA256SUMS"
    evil = format_manifest([ManifestEntry("hello-9.9-x86-64.raw", "f" * 64)])
    manifest.write_bytes(evil)
    with pytest.raises(SignatureError, match="BAD signature"):
        check_remote(url, keyring=keyring, patterns=None, host=HOST)
    result = run_cli("check", url, "--keyring", keyring, "--arch", "x86-64")
    assert result.returncode == 2 and "BAD signature" in result.stderr
    assert "Traceback" not in result.stderr
    # Without a keyring (Verify=no) the same directory "works": that is the risk.
    assert check_remote(url, keyring=None, patterns=None, host=HOST).selection.candidate == "9.9"


def test_unsigned_directory_with_keyring(
    static_server: StaticServer, signing: tuple[Path, Path]
) -> None:
    _, keyring = signing
    directory = static_server.root / "extensions/hello"
    directory.mkdir(parents=True)
    (directory / "hello-1.0-x86-64.raw").write_bytes(b"x")
    (directory / "SHA256SUMS").write_bytes(
        format_manifest(
            [ManifestEntry("hello-1.0-x86-64.raw", sha256_file(directory / "hello-1.0-x86-64.raw"))]
        )
    )
    url = f"{static_server.url}/extensions/hello"
    with pytest.raises(CheckError, match=r"signature: .*SHA256SUMS.gpg: HTTP 404") as info:
        check_remote(url, keyring=keyring, patterns=None, host=HOST)
    assert info.value.hint and "mandatory" in info.value.hint


def test_foreign_signature(
    static_server: StaticServer, signing: tuple[Path, Path], tmp_path: Path
) -> None:
    _, keyring = signing
    other = tmp_path / "other.key"
    generate_key(other, "Other")
    url = publish(static_server, "hello", {"hello-1.0-x86-64.raw": b"x"}, other)
    with pytest.raises(SignatureError, match="no public key"):
        check_remote(url, keyring=keyring, patterns=None, host=HOST)


def test_armored_keyring_is_refused(
    static_server: StaticServer, signing: tuple[Path, Path], tmp_path: Path
) -> None:
    key, _ = signing
    url = publish(static_server, "hello", {"hello-1.0-x86-64.raw": b"x"}, key)
    armored = tmp_path / "pubring.asc"
    armored.write_bytes(export_public_key(key, armor=True))
    result = run_cli("check", url, "--keyring", armored, "--arch", "x86-64")
    assert result.returncode == 2 and "ASCII-armored" in result.stderr


def test_manifest_404(static_server: StaticServer) -> None:
    with pytest.raises(CheckError, match="HTTP 404"):
        check_remote(f"{static_server.url}/extensions/nope", keyring=None, patterns=None, host=HOST)
    result = run_cli("check", f"{static_server.url}/extensions/nope", "--arch", "x86-64")
    assert result.returncode == 2
    assert "SHA256SUMS: HTTP 404" in result.stderr and "hint:" in result.stderr


def test_crlf_manifest(static_server: StaticServer, signing: tuple[Path, Path]) -> None:
    key, keyring = signing
    directory = static_server.root / "extensions/hello"
    directory.mkdir(parents=True)
    manifest = f"{'a' * 64}  hello-1.0-x86-64.raw\r\n".encode()
    (directory / "SHA256SUMS").write_bytes(manifest)
    (directory / "SHA256SUMS.gpg").write_bytes(sign_detached(key, manifest))
    url = f"{static_server.url}/extensions/hello"
    with pytest.raises(ManifestError, match=r"line 1: .*control character"):
        check_remote(url, keyring=keyring, patterns=None, host=HOST)


def test_empty_manifest_is_an_error_not_no_versions(static_server: StaticServer) -> None:
    directory = static_server.root / "extensions/hello"
    directory.mkdir(parents=True)
    (directory / "SHA256SUMS").write_bytes(b"")
    url = f"{static_server.url}/extensions/hello"
    with pytest.raises(CheckError, match="0 bytes; systemd 252–256 fail"):
        check_remote(url, keyring=None, patterns=None, host=HOST)


def test_docker_compose_trap(static_server: StaticServer, signing: tuple[Path, Path]) -> None:
    key, keyring = signing
    shared = {
        "docker-24.0.5-x86-64.raw": b"docker",
        "docker-compose-2.20.0-x86-64.raw": b"compose",
    }
    url = publish(static_server, "shared", shared, key)
    report = check_remote(url, keyring=keyring, patterns=["docker-@v-%a.raw"], host=HOST)
    assert [a.version for a in report.available] == ["24.0.5", "compose-2.20.0"]
    assert report.ok and report.selection.candidate == "24.0.5"
    assert any("docker/docker-compose trap" in w for w in report.warnings)

    only_compose = publish(
        static_server, "compose-only", {"docker-compose-2.20.0-x86-64.raw": b"c"}, key
    )
    result = run_cli(
        "check", only_compose, "--keyring", keyring, "--pattern", "docker-@v-%a.raw",
        "--arch", "x86-64",
    )  # fmt: skip
    assert result.returncode == 2
    assert "would install docker-compose-2.20.0-x86-64.raw" in result.stderr


def test_sidecar_in_manifest(static_server: StaticServer, signing: tuple[Path, Path]) -> None:
    """A signature file that extends an image name would be installed as the extension."""
    key, keyring = signing
    directory = static_server.root / "extensions/hello"
    directory.mkdir(parents=True)
    files = {"hello-1.0-x86-64.raw": b"img", "hello-1.1-x86-64.raw.sig": b"sig"}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    manifest = format_manifest([ManifestEntry(n, sha256_file(directory / n)) for n in files])
    (directory / "SHA256SUMS").write_bytes(manifest)
    (directory / "SHA256SUMS.gpg").write_bytes(sign_detached(key, manifest))
    url = f"{static_server.url}/extensions/hello"
    report = check_remote(url, keyring=keyring, patterns=None, host=HOST)
    assert report.selection.candidate == "1.1"
    assert not report.ok
    assert "hello-1.1-x86-64.raw.sig" in str(report.problem)


def test_installed_newer_never_downgrades(
    static_server: StaticServer, signing: tuple[Path, Path], tmp_path: Path
) -> None:
    key, keyring = signing
    url = publish(
        static_server, "hello", {"hello-1.0-x86-64.raw": b"a", "hello-1.1-x86-64.raw": b"b"}, key
    )
    installed = tmp_path / "opt-extensions-hello"
    installed.mkdir()
    (installed / "hello-2.0-x86-64.raw").write_bytes(b"newer")
    (installed / "hello-9.0-x86-64.raw").symlink_to("hello-2.0-x86-64.raw")  # ignored
    (installed / ".#sysupdatehello-8.0-x86-64.raw1234").write_bytes(b"tmp")  # ignored
    report = check_remote(url, keyring=keyring, patterns=None, host=HOST, installed_dir=installed)
    assert report.installed == ("2.0",)
    assert report.selection.candidate is None and report.ok
    assert "never downgrades" in report.selection.reason
    result = run_cli(
        "check", url, "--keyring", keyring, "--installed", installed, "--arch", "x86-64"
    )
    assert result.returncode == 0 and "up to date" in result.stdout

    (installed / "hello-2.0-x86-64.raw").unlink()
    (installed / "hello-1.0-x86-64.raw").write_bytes(b"a")
    upgrade = check_remote(url, keyring=keyring, patterns=None, host=HOST, installed_dir=installed)
    assert upgrade.selection.candidate == "1.1"


def test_min_version(static_server: StaticServer, signing: tuple[Path, Path]) -> None:
    key, keyring = signing
    url = publish(
        static_server, "hello", {"hello-1.0-x86-64.raw": b"a", "hello-1.1-x86-64.raw": b"b"}, key
    )
    report = check_remote(url, keyring=keyring, patterns=None, host=HOST, min_version="2.0")
    assert report.selection.obsolete and not report.ok
    result = run_cli("check", url, "--keyring", keyring, "--min-version", "2.0", "--arch", "x86-64")
    assert result.returncode == 2 and "older than MinVersion=2.0" in result.stderr
    ok = check_remote(url, keyring=keyring, patterns=None, host=HOST, min_version="1.1")
    assert ok.selection.candidate == "1.1"


def test_payload_hash_mismatch(static_server: StaticServer, signing: tuple[Path, Path]) -> None:
    key, keyring = signing
    url = publish(static_server, "hello", {"hello-1.0-x86-64.raw": b"a"}, key)
    (static_server.root / "extensions/hello/hello-1.0-x86-64.raw").write_bytes(b"replaced")
    with pytest.raises(CheckError, match="SHA-256 mismatch"):
        check_remote(url, keyring=keyring, patterns=None, host=HOST, verify_payload=True)


def test_os_bound_pattern_with_os_release(
    static_server: StaticServer, signing: tuple[Path, Path], tmp_path: Path
) -> None:
    key, keyring = signing
    url = publish(
        static_server,
        "docker",
        {"docker-24.0.5-3815.2.0-x86-64.raw": b"a", "docker-24.0.6-3975.0.0-x86-64.raw": b"b"},
        key,
    )
    os_release = tmp_path / "os-release"
    os_release.write_text("ID=flatcar\nVERSION_ID=3815.2.0\n")
    result = run_cli(
        "check", url, "--keyring", keyring, "--pattern", "docker-@v-%w-%a.raw",
        "--os-release", os_release, "--arch", "x86-64", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["patterns"] == ["docker-@v-3815.2.0-x86-64.raw"]
    assert data["candidate"] == "24.0.5"


def test_file_url(tmp_path: Path, signing: tuple[Path, Path]) -> None:
    key, keyring = signing
    directory = tmp_path / "hello"
    directory.mkdir()
    (directory / "hello-1.0-x86-64.raw").write_bytes(b"a")
    sign_directory(directory, key)
    report = check_remote(f"file://{directory}", keyring=keyring, patterns=None, host=HOST)
    assert report.selection.candidate == "1.0"


def test_bad_pattern_and_help() -> None:
    result = run_cli("check", "http://127.0.0.1:9/x", "--pattern", "foo.raw", "--arch", "x86-64")
    assert result.returncode == 2 and "no '@v'" in result.stderr
    helped = run_cli("check", "--help")
    assert helped.returncode == 0 and "Example" in helped.stdout


class _QuirkyHandler(http.server.BaseHTTPRequestHandler):
    """Serves what real-world misconfigured servers answer (§5)."""

    body = f"{'a' * 64}  hello-1.0-x86-64.raw\n".encode()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        route = self.path.split("/")[1]
        if route == "moved":  # a redirect to the real directory: followed, like libcurl
            self.send_response(302)
            self.send_header("Location", "/ok/SHA256SUMS")
            self.end_headers()
            return
        if route == "forbidden":  # S3 without ListBucket
            self.send_response(403)
            self.end_headers()
            return
        self.send_response(200)
        if route == "gzip":
            self.send_header("Content-Encoding", "gzip")
        if route == "short":
            self.send_header("Content-Length", str(len(self.body) + 10))
        else:
            self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)
        if route == "short":
            self.wfile.flush()
            self.close_connection = True


@pytest.fixture
def quirky_server() -> Iterator[str]:
    with serve_http(_QuirkyHandler) as url:
        yield url


def test_http_quirks(quirky_server: str) -> None:
    ok = check_remote(f"{quirky_server}/ok", keyring=None, patterns=["hello-@v-%a.raw"], host=HOST)
    assert ok.selection.candidate == "1.0"
    moved = check_remote(
        f"{quirky_server}/moved", keyring=None, patterns=["hello-@v-%a.raw"], host=HOST
    )
    assert moved.selection.candidate == "1.0"
    with pytest.raises(CheckError, match=r"HTTP 403 .*accepts only 2xx"):
        check_remote(f"{quirky_server}/forbidden", keyring=None, patterns=None, host=HOST)
    with pytest.raises(CheckError, match="Content-Encoding: gzip"):
        check_remote(f"{quirky_server}/gzip", keyring=None, patterns=None, host=HOST)
    with pytest.raises(CheckError, match=r"Content-Length|download failed"):
        check_remote(f"{quirky_server}/short", keyring=None, patterns=None, host=HOST)


def test_unreachable_server() -> None:
    with pytest.raises(CheckError, match="cannot connect"):
        check_remote("http://127.0.0.1:9/x", keyring=None, patterns=["x-@v.raw"], host=HOST)


def test_check_reads_a_transfer_file(
    static_server: StaticServer, signing: tuple[Path, Path], tmp_path: Path
) -> None:
    """`sysext check --transfer FILE` sees what the host's own transfer file describes."""
    key, keyring = signing
    publish(
        static_server, "hello", {"hello-1.0-x86-64.raw": b"a", "hello-1.1-x86-64.raw": b"b"}, key
    )
    target = tmp_path / "opt-extensions-hello"
    target.mkdir()
    (target / "hello-1.0-x86-64.raw").write_bytes(b"a")
    spec = TransferSpec("hello", static_server.url, target_dir=str(target))
    conf = tmp_path / "hello.conf"
    conf.write_text(render_transfer(spec))
    result = run_cli(
        "check", "--transfer", conf, "--keyring", keyring, "--arch", "x86-64", "--json"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["installed"] == ["1.0"] and data["candidate"] == "1.1" and data["verified_by"]

    # MinVersion with a specifier is ignored by 252–256 (validated before expansion).
    conf.write_text(render_transfer(spec).replace("[Transfer]", "[Transfer]\nMinVersion=%A"))
    warned = run_cli("check", "--transfer", conf, "--keyring", keyring, "--arch", "x86-64")
    assert warned.returncode == 0 and "MinVersion=%A is ignored" in warned.stdout

    conf.write_text(render_transfer(spec).replace("[Transfer]", "[Transfer]\nMinVersion=5"))
    obsolete = run_cli("check", "--transfer", conf, "--keyring", keyring, "--arch", "x86-64")
    assert obsolete.returncode == 2 and "MinVersion=5" in obsolete.stderr

    broken = render_transfer(spec).replace(
        "MatchPattern=hello-@v-%a.raw", "MatchPattern=h_@v_%Z.raw"
    )
    conf.write_text(broken)
    lacking = run_cli("check", "--transfer", conf, "--keyring", keyring, "--arch", "x86-64")
    assert lacking.returncode == 2 and "lacks MatchPattern=" in lacking.stderr

    both = run_cli("check", static_server.url, "--transfer", conf)
    assert both.returncode == 2 and "not both" in both.stderr
    missing = run_cli("check", "--transfer", tmp_path / "nope.conf")
    assert missing.returncode == 2 and "no such transfer file" in missing.stderr


def test_transfer_file_vacuum_plan(
    static_server: StaticServer, signing: tuple[Path, Path], tmp_path: Path
) -> None:
    """InstancesMax= and ProtectVersion= from the host's transfer file (§4.3 vacuum)."""
    key, keyring = signing
    publish(static_server, "hello", {"hello-1.3-x86-64.raw": b"new"}, key)
    target = tmp_path / "target"
    target.mkdir()
    for version in ("1.0", "1.1", "1.2"):
        (target / f"hello-{version}-x86-64.raw").write_bytes(version.encode())
    spec = TransferSpec("hello", static_server.url, target_dir=str(target), instances_max=2)
    text = render_transfer(spec).replace(
        "[Transfer]", "[Transfer]\nProtectVersion=1.0\nProtectVersion=%A"
    )
    conf = tmp_path / "hello.conf"
    conf.write_text(text)
    os_release = tmp_path / "os-release"
    os_release.write_text("ID=flatcar\n")  # no IMAGE_VERSION: %A expands to "" → ignored
    result = run_cli(
        "check", "--transfer", conf, "--keyring", keyring, "--arch", "x86-64",
        "--os-release", os_release, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["candidate"] == "1.3"
    assert data["would_remove"] == ["1.1", "1.2"]  # 1.0 is protected; room for 1.3
    assert any("ProtectVersion=%A ignored" in w for w in data["warnings"])
    # Nothing on the host was touched by checking.
    assert sorted(p.name for p in target.iterdir()) == [
        "hello-1.0-x86-64.raw",
        "hello-1.1-x86-64.raw",
        "hello-1.2-x86-64.raw",
    ]
