"""Issue 13: one bad upload never takes the registry down, and only what can be served is
committed. Against a real `sysext serve`, each numbered finding of the issue is replayed
and must now get the right answer with nothing changed in the database or public tree."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import run_cli
from tests.registry_server import RegistryServer, build_image, free_port
from tests.test_lint import good_fields, make_image

pytestmark = pytest.mark.slow

LONG_VERSION = "1." + "9" * 240  # hello-1.<240 nines>-x86-64.raw is 259 bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    base = tmp_path_factory.mktemp("hardening")
    reg = RegistryServer(data=base / "data", port=free_port())
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


def upload(
    server: RegistryServer,
    image: Path,
    name: str,
    filename: str | None = None,
    *,
    token: str | None = None,
    channel: str | None = None,
) -> requests.Response:
    return requests.put(
        f"{server.url}/api/v1/extensions/{name}/images/{filename or image.name}",
        data=image.read_bytes(),
        headers=server.headers(token),
        params={"channel": channel} if channel else None,
        timeout=60,
    )


def state(server: RegistryServer) -> tuple[list[tuple[object, ...]], dict[str, bytes]]:
    """Every database row and every file of the public tree (the 'nothing changed' proof)."""
    with sqlite3.connect(server.data / "registry.db") as db:
        rows = db.execute(
            "SELECT name, version, filename, sha256, yanked FROM images ORDER BY id"
        ).fetchall()
        rows += db.execute("SELECT * FROM image_channels ORDER BY image_id, channel").fetchall()
    files = {}
    public = server.data / "public"
    for path in sorted(public.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(public))] = path.read_bytes()
    return rows, files


def hello_image(tmp: Path, version: str, *, name: str = "hello", **fields: str) -> Path:
    """A valid image whose release says `version`; the file name may exceed what
    `sysext pack` allows (gensquashfs from a pack file, as a hostile uploader would)."""
    release = good_fields(SYSEXT_ID=name, SYSEXT_VERSION_ID=version, **fields)
    return make_image(tmp / f"{name}-{hashlib.sha256(version.encode()).hexdigest()[:8]}", name,
                      release, filename=f"{name}-v.raw")  # fmt: skip


def test_finding_1_long_name_refused_before_commit(server: RegistryServer, tmp_path: Path) -> None:
    good = build_image(tmp_path, "hello", "1.0")
    assert upload(server, good, "hello").status_code == 200
    before = state(server)
    long_name = f"hello-{LONG_VERSION}-x86-64.raw"
    assert len(long_name.encode()) == 259
    image = hello_image(tmp_path, LONG_VERSION)
    for _attempt in range(2):  # the retry used to answer 200 created:false
        answer = upload(server, image, "hello", long_name)
        assert answer.status_code == 422, answer.text
        assert "255" in answer.json()["detail"]
    # An admin yank of that version: nothing of that name exists (was: 500, then no start).
    yank = requests.post(
        f"{server.url}/api/v1/extensions/hello/versions/{LONG_VERSION}/yank",
        headers=server.headers(),
        timeout=30,
    )
    assert yank.status_code == 404
    assert state(server) == before
    # Restart: serves as before (was: exit 2, nothing served).
    server.stop()
    server.start()
    assert state(server) == before
    assert requests.get(f"{server.url}/extensions/hello/SHA256SUMS", timeout=10).status_code == 200
    assert run_cli("registry", "check", "--data", server.data).returncode == 0


def test_pack_refuses_the_long_name_too(tmp_path: Path) -> None:
    """`sysext pack` and the registry share the rule: what one builds, the other serves."""
    tree = tmp_path / "tree" / "usr" / "bin"
    tree.mkdir(parents=True)
    (tree / "hello").write_text("#!/bin/sh\n")
    result = run_cli(
        "pack", tmp_path / "tree", "--name", "hello", "--version", LONG_VERSION,
        "--arch", "x86-64", "--output", tmp_path / "out",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "at most 255" in result.stdout + result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.raw"))


def _inject_legacy_row(server: RegistryServer, name: str, filename: str, version: str) -> None:
    """What an older registry committed before failing to materialize it (finding 1)."""
    with sqlite3.connect(server.data / "registry.db") as db:
        sha, size = db.execute(
            "SELECT sha256, size FROM images WHERE name = ? LIMIT 1", (name,)
        ).fetchone()
        cursor = db.execute(
            "INSERT INTO images (name, version, arch, filename, sha256, size, format, "
            "created_at, yanked) VALUES (?, ?, 'x86-64', ?, ?, ?, 'squashfs', "
            "'2026-01-01 00:00:00', 0)",
            (name, version, filename, sha, size),
        )
        db.execute(
            "INSERT INTO image_channels (image_id, channel, added_at) "
            "VALUES (?, 'stable', '2026-01-01 00:00:00')",
            (cursor.lastrowid,),
        )


def test_finding_1_start_up_survives_a_broken_extension_and_repair_fixes_it(
    tmp_path: Path,
) -> None:
    reg = RegistryServer(data=tmp_path / "data", port=free_port())
    reg.start()
    try:
        for name in ("hello", "other"):
            image = build_image(tmp_path, name, "1.0")
            assert upload(reg, image, name).status_code == 200
        reg.stop()
        _inject_legacy_row(reg, "hello", f"hello-{LONG_VERSION}-x86-64.raw", LONG_VERSION)
        before = state(reg)
        reg.start()  # was: exit 2 and nothing served
        assert "event=extension-broken name=hello channel=stable" in reg.log()
        assert "broken extension" in reg.log()
        for name in ("hello", "other"):
            listed = requests.get(f"{reg.url}/extensions/{name}/SHA256SUMS", timeout=10)
            assert listed.status_code == 200 and f"{name}-1.0-x86-64.raw" in listed.text
        # The admin yank of the good version cannot commit what it could not serve
        # (was: 500, and the next start failed with "File name too long").
        yank = requests.post(
            f"{reg.url}/api/v1/extensions/hello/versions/1.0/yank",
            headers=reg.headers(),
            timeout=30,
        )
        assert yank.status_code == 422, yank.text
        assert "255" in yank.json()["detail"]
        assert state(reg) == before
        checked = run_cli("registry", "check", "--data", reg.data)
        assert checked.returncode == 1
        assert "hello" in checked.stdout and "cannot be served" in checked.stdout
        repaired = run_cli("registry", "repair", "--data", reg.data)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert "deleted row hello" in repaired.stdout
        assert run_cli("registry", "check", "--data", reg.data).returncode == 0
        yank = requests.post(
            f"{reg.url}/api/v1/extensions/hello/versions/1.0/yank",
            headers=reg.headers(),
            timeout=30,
        )
        assert yank.status_code == 200, yank.text
    finally:
        reg.stop()


def test_registry_check_reports_and_repairs_tree_drift(tmp_path: Path) -> None:
    reg = RegistryServer(data=tmp_path / "data", port=free_port())
    reg.start()
    try:
        image = build_image(tmp_path, "drift", "1.0")
        assert upload(reg, image, "drift").status_code == 200
    finally:
        reg.stop()
    manifest = reg.data / "public" / "extensions" / "drift" / "SHA256SUMS"
    manifest.resolve().write_bytes(b"tampered\n")
    stray = reg.data / "public" / "extensions" / "ghost"
    stray.mkdir()
    checked = run_cli("registry", "check", "--data", reg.data)
    assert checked.returncode == 1
    assert "differs from the database" in checked.stdout
    assert "ghost (stable): published but unknown" in checked.stdout
    repaired = run_cli("registry", "repair", "--data", reg.data)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert run_cli("registry", "check", "--data", reg.data).returncode == 0
    assert b"drift-1.0-x86-64.raw" in manifest.read_bytes()
    assert not stray.exists()
    missing = run_cli("registry", "check", "--data", tmp_path / "nowhere")
    assert missing.returncode == 2 and "no registry database" in missing.stdout + missing.stderr
