"""Pure parts of the registry: names, ranges, settings, scopes, manifest order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from registry.db.models import Image
from registry.http.files import parse_range
from registry.service.auth import Principal, bearer_token, scope_problem
from registry.service.names import ImageName, name_problem, parse_image_filename
from registry.settings import Settings, load_settings, settings_env
from registry.storage.materialize import (
    manifest_bytes,
    marker_files,
    served_manifest,
    split_served,
)
from sysext.core.errors import SysextError
from sysext.systemd.manifest import parse_manifest


@pytest.mark.parametrize(
    ("name", "filename", "expected"),
    [
        ("podman", "podman-5.3.1-x86-64.raw", ImageName("podman", "5.3.1", "x86-64")),
        ("podman", "podman-5.3.1-x86.raw", ImageName("podman", "5.3.1", "x86")),
        (
            "docker-compose",
            "docker-compose-2.1-rc1-arm64.raw",
            ImageName("docker-compose", "2.1-rc1", "arm64"),
        ),
        ("k", "k-1_2+3,4-ppc64-le.raw", ImageName("k", "1_2+3,4", "ppc64-le")),
    ],
)
def test_parse_image_filename(name: str, filename: str, expected: ImageName) -> None:
    assert parse_image_filename(name, filename) == expected
    assert expected.filename == filename


@pytest.mark.parametrize(
    ("name", "filename", "reason"),
    [
        ("podman", "podman-5.3.1-x86_64.raw", "systemd architecture"),
        ("podman", "podman-5.3.1-amd64.raw", "systemd architecture"),
        ("podman", "docker-5.3.1-x86-64.raw", "is not named podman-VERSION-ARCH.raw"),
        ("podman", "podman-5.3.1-x86-64.img", "end in .raw"),
        ("podman", "podman-x86-64.raw", "does not end in -ARCH.raw"),
        ("podman", "podman-5~rc1-x86-64.raw", "'~'"),
        ("podman", "podman-1 2-x86-64.raw", "' '"),
        ("podman", "../podman-1-x86-64.raw", "invalid file name"),
        ("..", "..-1-x86-64.raw", "invalid extension name"),
        ("a/b", "a/b-1-x86-64.raw", "invalid extension name"),
        (".hidden", ".hidden-1-x86-64.raw", "invalid extension name"),
    ],
)
def test_parse_image_filename_rejects(name: str, filename: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_image_filename(name, filename)
    assert reason in str(info.value)


def test_name_problem() -> None:
    assert name_problem("docker-compose") is None
    assert name_problem("a..b") is not None
    assert name_problem("x" * 129) is not None
    assert name_problem("") is not None


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 100)),
        ("bytes=-10", 100, (90, 100)),
        ("bytes=-1000", 100, (0, 100)),
        ("bytes=95-1000", 100, (95, 100)),
        ("bytes=100-", 100, "unsatisfiable"),
        ("bytes=-0", 100, "unsatisfiable"),
        ("bytes=5-2", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
        ("bytes=abc", 100, None),
    ],
)
def test_parse_range(header: str, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected


def test_settings_precedence(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "registry.toml").write_text('public_url = "https://file.example"\nport = 9000\n')
    env = {"SYSEXT_DATA": str(data), "SYSEXT_PORT": "9100", "SYSEXT_CHANNELS": "beta,edge"}
    settings = load_settings({"port": 9200}, env=env)
    assert settings.public_url == "https://file.example"  # file only
    assert settings.port == 9200  # flag > env > file
    assert settings.channels == ("stable", "beta", "edge")  # stable always exists
    assert settings.base_url == "https://file.example"
    again = load_settings(env=settings_env(settings))
    assert again.port == settings.port and again.channels == settings.channels
    assert Settings(host="0.0.0.0", port=8080).base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SYSEXT_PORT": "eighty"}, "SYSEXT_PORT: invalid value 'eighty' for port"),
        ({"SYSEXT_CHANNELS": "stable,a/b"}, "invalid value 'stable,a/b' for channels"),
    ],
)
def test_settings_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SysextError, match=message):
        load_settings(env=env)


def test_settings_unknown_key_in_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(SysextError, match="unknown setting 'prot'"):
        load_settings(env={}, config_file=config)


def test_scopes() -> None:
    token = Principal(3, ("podman", "k*"))
    assert token.may_write("podman") and token.may_write("kubernetes")
    assert not token.may_write("podman-compose") and not token.may_write("docker")
    assert Principal(None, ("*",)).may_write("anything")
    assert scope_problem("k*") is None and scope_problem("a b") and scope_problem("")
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None


def _image(version: str, arch: str = "x86-64", yanked: bool = False) -> Image:
    return Image(
        name="x",
        version=version,
        arch=arch,
        filename=f"x-{version}-{arch}.raw",
        sha256=f"{len(version):064x}",
        size=1,
        format="squashfs",
        created_at=dt.datetime.now(dt.UTC),
        yanked=yanked,
    )


def test_manifest_in_version_order_without_yanked() -> None:
    images = [_image("1.10"), _image("1.9"), _image("1.9", "arm64"), _image("2.0", yanked=True)]
    data = manifest_bytes(images)
    names = [e.filename for e in parse_manifest(data)]
    # systemd's order (1.9 < 1.10), not byte order; yanked 2.0 absent.
    assert names == ["x-1.9-arm64.raw", "x-1.9-x86-64.raw", "x-1.10-x86-64.raw"]


def test_manifest_with_everything_yanked_is_not_empty() -> None:
    data = manifest_bytes([_image("1.0", yanked=True)])
    assert len(data) >= 6  # systemd 252–256 fail shorter downloads
    assert [e.filename for e in parse_manifest(data)] == ["NO-PUBLISHED-IMAGES"]


def test_serve_refuses_bad_settings_without_writing(tmp_path: Path) -> None:
    from tests.servers import run_cli

    data = tmp_path / "data"
    bad_port = run_cli("serve", "--data", data, env={"SYSEXT_PORT": "x"})
    assert bad_port.returncode == 2
    assert "error: SYSEXT_PORT: invalid value 'x' for port" in bad_port.stderr
    assert not data.exists()
    afile = tmp_path / "file"
    afile.write_text("")
    not_dir = run_cli("serve", "--data", afile)
    assert not_dir.returncode == 2
    assert f"error: cannot use data directory {afile}" in not_dir.stderr
    assert "hint:" in not_dir.stderr and "Traceback" not in not_dir.stderr


@pytest.mark.parametrize(
    ("lifetime", "interval", "listed"),
    [
        ("7d", "1d", True),  # the default: the marker lands 6 days after each re-signing
        ("2d", "12h", True),
        ("36h", "12h", False),  # a day's resolution could bite before the next re-signing
        ("30s", "3s", False),
        ("never", "1d", False),  # no expiry to follow
    ],
)
def test_best_before_follows_the_signature_policy(
    lifetime: str, interval: str, listed: bool
) -> None:
    policy = load_settings(
        env={"SYSEXT_SIGNATURE_LIFETIME": lifetime, "SYSEXT_RESIGN_INTERVAL": interval}
    ).signing_policy
    assert policy.lists_best_before is listed
    now = dt.datetime(2026, 12, 6, 23, 30, tzinfo=dt.UTC)
    date = policy.best_before(now)
    if not listed:
        assert date is None
        return
    assert policy.lifetime is not None and date is not None
    deadline = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
    # Never after the signature expires, and not before the re-signing after next.
    assert now + 2 * policy.resign_interval < deadline <= now + policy.lifetime


def test_served_manifest_keeps_the_listing_and_adds_one_marker() -> None:
    listing = manifest_bytes([_image("1.0")])
    served = served_manifest(listing, dt.date(2026, 12, 13))
    assert served.startswith(listing)
    assert served.endswith(b"  BEST-BEFORE-2026-12-13\n")
    assert split_served(served) == (listing, [dt.date(2026, 12, 13)])
    assert marker_files(served) == ["BEST-BEFORE-2026-12-13"]
    assert served_manifest(listing, None) == listing and split_served(listing) == (listing, [])


def test_serve_starts_one_worker_per_usable_cpu_by_default(tmp_path: Path) -> None:
    import os

    from tests.registry_server import RegistryServer, free_port

    # The test harness starts one worker unless asked (tests/registry_server.py); this is
    # the server's own default, with neither --workers nor SYSEXT_WORKERS.
    server = RegistryServer(data=tmp_path / "data", port=free_port(), workers=None)
    server.start()
    try:
        expected = len(os.sched_getaffinity(0))
        assert f"({expected} worker{'s' if expected != 1 else ''})" in server.log()
    finally:
        server.stop()


def test_an_outside_sqlite_connection_never_takes_the_servers_writes(tmp_path: Path) -> None:
    """An operator's `sqlite3 registry.db` (or any second connection) that closes while the
    server runs must not delete the -wal file the server writes into (it did, when the
    server's start-up had closed a descriptor of registry.db and so dropped SQLite's locks:
    a publish after that was gone after a restart)."""
    import os
    import sqlite3

    import requests

    from tests.registry_server import build_image, running_registry
    from tests.servers import run_cli

    data = tmp_path / "data"
    images = tmp_path / "images"
    images.mkdir()
    with running_registry(data) as reg:  # one worker: the app runs in the starting process
        assert reg.process is not None
        outside = sqlite3.connect(data / "registry.db")
        assert outside.execute("SELECT count(*) FROM images").fetchone() == (0,)
        outside.close()
        published = run_cli(
            "publish", build_image(images, "hello", "1.0"), "--registry", reg.url,
            env={"SYSEXT_TOKEN": reg.admin_token},
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        fd_dir = Path(f"/proc/{reg.process.pid}/fd")
        open_files = [os.readlink(fd) for fd in fd_dir.iterdir() if fd.is_symlink()]
        assert not [f for f in open_files if "registry.db" in f and f.endswith("(deleted)")]
        port = reg.port
    with running_registry(data, port=port) as reg:
        listing = requests.get(f"{reg.url}/api/v1/extensions", timeout=10).json()
        assert [e["name"] for e in listing] == ["hello"]
