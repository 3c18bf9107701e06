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

from tests.registry_server import RegistryServer, build_image, free_port
from tests.servers import run_cli
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


def _inject_legacy_row(
    server: RegistryServer, name: str, filename: str, version: str, *, blob_of: str | None = None
) -> None:
    """What an older registry committed before failing to materialize it (finding 1), or
    (`blob_of`: the extension whose stored file the row reuses) before refusing squatting."""
    with sqlite3.connect(server.data / "registry.db") as db:
        sha, size = db.execute(
            "SELECT sha256, size FROM images WHERE name = ? LIMIT 1", (blob_of or name,)
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


def test_registry_check_reports_and_repairs_tree_drift(
    server: RegistryServer, tmp_path: Path
) -> None:
    image = build_image(tmp_path, "drift", "1.0")
    assert upload(server, image, "drift").status_code == 200
    server.stop()
    try:
        manifest = server.data / "public" / "extensions" / "drift" / "SHA256SUMS"
        manifest.resolve().write_bytes(b"tampered\n")
        stray = server.data / "public" / "extensions" / "ghost"
        stray.mkdir()
        checked = run_cli("registry", "check", "--data", server.data)
        assert checked.returncode == 1
        assert "differs from the database" in checked.stdout
        assert "ghost (stable): published but unknown" in checked.stdout
        repaired = run_cli("registry", "repair", "--data", server.data)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert run_cli("registry", "check", "--data", server.data).returncode == 0
        assert b"drift-1.0-x86-64.raw" in manifest.read_bytes()
        assert not stray.exists()
    finally:
        server.start()
    missing = run_cli("registry", "check", "--data", tmp_path / "nowhere")
    assert missing.returncode == 2 and "no registry database" in missing.stdout + missing.stderr


# --- finding 4: the upload check is `sysext validate`'s -------------------------------------

HOST_REFUSES = [
    ("no-id", good_fields(ID="<drop>", SYSEXT_LEVEL="<drop>"), (), "id-missing"),
    ("empty-id", good_fields(ID="", SYSEXT_LEVEL="<drop>"), (), "id-missing"),
    ("os-release", good_fields(), ("file /usr/lib/os-release 0644 0 0 {src}/hello",),
     "tree-os-release"),
    ("initrd-scope", good_fields(SYSEXT_SCOPE="initrd"), (), "scope-no-system"),
    ("etc", good_fields(), ("dir /etc 0755 0 0", "file /etc/x 0644 0 0 {src}/hello"),
     "tree-toplevel"),
    ("root", good_fields(), ("dir /root 0700 0 0",), "tree-toplevel"),
    ("owner", good_fields(), ("file /usr/bin/mine 0755 1000 1000 {src}/hello",), "tree-owner"),
    ("device", good_fields(), ("nod /usr/bin/mem 0644 0 0 c 1 1",), "tree-special"),
    ("fifo", good_fields(), ("pipe /usr/bin/fifo 0644 0 0",), "tree-special"),
    ("socket", good_fields(), ("sock /usr/bin/sock 0644 0 0",), "tree-special"),
    ("setuid", good_fields(), ("file /usr/bin/su2 4755 0 0 {src}/hello",), "tree-setuid"),
    ("shadow-link", good_fields(), ("slink /usr/bin/pw 0777 0 0 /etc/shadow",),
     "tree-symlink-sensitive"),
    ("relative-shadow", good_fields(),
     ("slink /usr/bin/pw 0777 0 0 ../../etc/shadow",), "tree-symlink-sensitive"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "fields", "lines", "code"), HOST_REFUSES, ids=[c[0] for c in HOST_REFUSES]
)
def test_finding_4_uploads_get_the_lint_of_sysext_validate(
    server: RegistryServer,
    tmp_path: Path,
    case: str,
    fields: dict[str, str],
    lines: tuple[str, ...],
    code: str,
) -> None:
    image = make_image(tmp_path, "lint", fields, extra_lines=lines)
    validate = run_cli("validate", image)
    assert validate.returncode == 1 and f"[{code}]" in validate.stdout, validate.stdout
    before = state(server)
    answer = upload(server, image, "lint", "lint-1.0-x86-64.raw")
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert f"[{code}]" in detail and detail.startswith("lint-1.0-x86-64.raw: ")
    # The lint's own message, word for word.
    message = next(line for line in validate.stdout.splitlines() if f"[{code}]" in line)
    assert message.split(": ", 1)[1].removesuffix(f" [{code}]") in detail
    assert state(server) == before


def test_finding_11_no_server_paths_and_unreadable_release(
    server: RegistryServer, tmp_path: Path
) -> None:
    image = make_image(tmp_path, "latin", good_fields(SYSEXT_ID="latin"))
    # A release file that is not UTF-8: rebuild it with a latin-1 byte.
    release = tmp_path / "src" / "release"
    release.write_bytes(release.read_bytes() + b"X_SYSEXT_DESCRIPTION=caf\xe9\n")
    pack = (tmp_path / "src" / "pack").read_text()
    image.unlink()
    import subprocess

    (tmp_path / "src" / "pack").write_text(pack)
    subprocess.run(
        ["gensquashfs", "--pack-file", str(tmp_path / "src" / "pack"), "-q", str(image)],
        check=True,
    )
    answer = upload(server, image, "latin")
    assert answer.status_code == 422
    assert "extension-release.latin cannot be read: not UTF-8" in answer.json()["detail"]
    truncated = tmp_path / "latin-1.0-x86-64.raw"
    truncated.write_bytes(image.read_bytes()[:300])
    for body in (truncated, tmp_path / "src" / "pack"):
        answer = upload(server, body, "latin", "latin-1.0-x86-64.raw")
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"]
        assert str(server.data) not in detail and ".#upload" not in detail, detail
        assert "/tmp" not in detail, detail


# --- findings 3 and 9: file names belong to one extension; equal versions ----------------


def test_finding_3_no_squatting_across_extensions(server: RegistryServer, tmp_path: Path) -> None:
    hello = build_image(tmp_path, "sq", "1.0")
    assert upload(server, hello, "sq").status_code == 200
    # A token for sq publishes sq-x-1.0 (release extension-release.sq, version x-1.0)…
    squat = hello_image(tmp_path, "x-1.0", name="sq")
    before = state(server)
    answer = upload(server, squat, "sq", "sq-x-1.0-x86-64.raw")
    assert answer.status_code == 422 and "start with a digit" in answer.json()["detail"]
    assert state(server) == before
    # …so the owner of sq-x publishes its own 1.0 (was: 409).
    own = build_image(tmp_path, "sq-x", "1.0")
    assert upload(server, own, "sq-x").status_code == 200, upload(server, own, "sq-x").text
    # sq-1 would be matched by sq's pattern sq-@v-%a.raw (version 1-2): refused both ways.
    before = state(server)
    clash = build_image(tmp_path, "sq-1", "2")
    answer = upload(server, clash, "sq-1")
    assert answer.status_code == 409, answer.text
    assert "sq-@v-%a.raw" in answer.json()["detail"]
    assert state(server) == before


def test_finding_3_registry_check_reports_squatted_rows(tmp_path: Path) -> None:
    """Rows committed before the rule (or let through by a race) are reported, both ways."""
    reg = RegistryServer(data=tmp_path / "data", port=free_port())
    reg.start()
    try:
        assert upload(reg, build_image(tmp_path, "lgc", "1.0"), "lgc").status_code == 200
    finally:
        reg.stop()
    assert run_cli("registry", "check", "--data", reg.data).returncode == 0
    # lgc-1's version 2 is lgc's version 1-2, and lgc's 1-3 is lgc-1's 3.
    _inject_legacy_row(reg, "lgc-1", "lgc-1-2-x86-64.raw", "2", blob_of="lgc")
    _inject_legacy_row(reg, "lgc", "lgc-1-3-x86-64.raw", "1-3")
    checked = run_cli("registry", "check", "--data", reg.data)
    assert checked.returncode == 1
    assert (
        "lgc-1: lgc-1-2-x86-64.raw would also match extension lgc's transfer pattern "
        "lgc-@v-%a.raw" in checked.stdout
    ), checked.stdout
    assert (
        "lgc: lgc-1-3-x86-64.raw would also match extension lgc-1's transfer pattern "
        "lgc-1-@v-%a.raw" in checked.stdout
    ), checked.stdout
    assert "lgc-1.0-x86-64.raw would" not in checked.stdout
    # Nothing repair could do on its own: it says so and fails.
    repaired = run_cli("registry", "repair", "--data", reg.data)
    assert repaired.returncode == 1
    assert "NOT FIXED lgc-1: lgc-1-2-x86-64.raw would also match" in repaired.stdout


@pytest.mark.parametrize("twin", ["08.0", "8.00", "8.0+", "8.0_", "8.0.0"])
def test_finding_9_versions_systemd_orders_as_equal(
    server: RegistryServer, tmp_path: Path, twin: str
) -> None:
    first = build_image(tmp_path, "eq", "8.0")
    assert upload(server, first, "eq").status_code in (200,)
    image = hello_image(tmp_path, twin, name="eq")
    before = state(server)
    answer = upload(server, image, "eq", f"eq-{twin}-x86-64.raw")
    if twin == "8.0.0":  # newer than 8.0 for systemd: a normal publish
        assert answer.status_code == 200, answer.text
        requests.post(
            f"{server.url}/api/v1/extensions/eq/versions/8.0.0/yank",
            headers=server.headers(),
            timeout=30,
        )
        return
    assert answer.status_code == 409, answer.text
    assert "eq-8.0-x86-64.raw" in answer.json()["detail"]
    assert state(server) == before


# --- findings 5 and 6: bounded validation, superblock sanity -------------------------------


def _patched(image: Path, target: Path, offset: int, fmt: str, value: int) -> Path:
    import struct

    data = bytearray(image.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize(
    ("field", "offset", "fmt", "value", "words"),
    [
        ("bytes_used", 40, "<Q", 1 << 40, "claims 1099511627776 bytes"),
        ("block_size", 12, "<I", 1 << 16, "does not match block_log"),
        ("block_log", 22, "<H", 25, "does not match block_log"),
        ("id_table", 48, "<Q", 1 << 39, "id table out of range"),
    ],
)
def test_finding_6_corrupt_superblocks_are_refused_like_unsquashfs(
    server: RegistryServer, tmp_path: Path, field: str, offset: int, fmt: str, value: int,
    words: str,
) -> None:  # fmt: skip
    import subprocess

    good = build_image(tmp_path, "sb", "1.0")
    bad = _patched(good, tmp_path / f"bad-{field}.raw", offset, fmt, value)
    assert subprocess.run(["unsquashfs", "-l", str(bad)], capture_output=True).returncode != 0
    before = state(server)
    answer = upload(server, bad, "sb", "sb-1.0-x86-64.raw")
    assert answer.status_code == 422, answer.text
    assert words in answer.json()["detail"]
    assert state(server) == before
    validate = run_cli("validate", bad)
    assert validate.returncode == 2 and words in validate.stdout + validate.stderr


def test_finding_5_many_entries_do_not_grow_the_server(tmp_path: Path) -> None:
    """50k symlinks (the finding used 500k: bench/exhaustion.py) validate in a bounded
    child process: the server's peak RSS does not grow with the entry count."""
    import subprocess

    src = tmp_path / "src"
    src.mkdir()
    (src / "release").write_text("ID=_any\nARCHITECTURE=x86-64\nSYSEXT_VERSION_ID=1.0\n")
    lines = ["dir /usr 0755 0 0", "dir /usr/lib 0755 0 0",
             "dir /usr/lib/extension-release.d 0755 0 0",
             f"file /usr/lib/extension-release.d/extension-release.many 0644 0 0 {src}/release",
             "dir /usr/share 0755 0 0"]  # fmt: skip
    for d in range(50):
        lines.append(f"dir /usr/share/d{d} 0755 0 0")
        lines += [f"slink /usr/share/d{d}/l{i} 0777 0 0 ../x" for i in range(1000)]
    (src / "pack").write_text("\n".join(lines) + "\n")
    image = tmp_path / "many-1.0-x86-64.raw"
    subprocess.run(["gensquashfs", "--pack-file", str(src / "pack"), "-q", str(image)], check=True)
    reg = RegistryServer(data=tmp_path / "data", port=free_port())
    reg.start()
    try:
        requests.get(f"{reg.url}/api/v1/extensions", timeout=10)
        before = reg.rss_kib("VmHWM")
        answer = upload(reg, image, "many")
        assert answer.status_code == 200, answer.text
        assert reg.rss_kib("VmHWM") - before < 24 * 1024
    finally:
        reg.stop()


# --- findings 7, 8, 10, 12: no 5xx from any input; auth first; logs; catalogue URLs ------


def raw_request(server: RegistryServer, request: bytes) -> tuple[int, bytes]:
    """Send exact bytes (no client-side quoting) and return (status, body)."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "path",
    ["/extensions/hello/%00", "/api/v1/extensions/%00", "/catalog/a%00b", "/%0d%0a",
     "/api/v1/search?q=%00", "/extensions/hello/SHA256SUMS%00.gpg"],
)  # fmt: skip
def test_finding_7_nul_and_control_characters_in_paths(server: RegistryServer, path: str) -> None:
    status, body = raw_request(
        server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert status == 400, body
    assert b"control characters" in body


@pytest.mark.parametrize("token", ["sxt_\u00b2_x", "sxt_\u0663_x", "sxt_1\u00b9_secret", "sxt__"])
def test_finding_7_token_ids_with_unicode_digits(server: RegistryServer, token: str) -> None:
    status, body = raw_request(
        server,
        b"POST /api/v1/extensions/hello/versions/1.0/yank HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status == 401, body


def test_finding_8_log_lines_cannot_be_forged(server: RegistryServer) -> None:
    forged = "time=2026-01-01T00:00:00.000Z level=INFO method=GET path=/forged status=200"
    raw_request(
        server,
        b"GET /x%0A" + forged.replace(" ", "%20").encode()
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )  # fmt: skip
    lines = [line for line in server.log().splitlines() if "path=/forged" in line]
    assert lines and all(line.startswith("time=") and "\\x0a" in line for line in lines), lines
    assert not any(line.startswith(forged) for line in server.log().splitlines())


def test_finding_10_catalogue_urls_ignore_the_host_header(
    server: RegistryServer, tmp_path: Path
) -> None:
    assert upload(server, build_image(tmp_path, "host", "1.0"), "host").status_code == 200
    for page in ("/", "/catalog/host"):
        answer = requests.get(f"{server.url}{page}", headers={"Host": "evil.example"}, timeout=10)
        assert answer.status_code == 200
        assert "evil.example" not in answer.text
    assert server.url in answer.text


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Bearer sxt_99_nope", "Basic x"])
def test_finding_12_auth_before_the_body_is_parsed(
    server: RegistryServer, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    for method, path in (
        ("POST", "/api/v1/tokens"),
        ("POST", "/api/v1/extensions/hello/versions/1.0/promote?channel=beta"),
        ("DELETE", "/api/v1/tokens/1"),
        ("PUT", "/api/v1/extensions/hello/images/hello-9.0-x86-64.raw"),
    ):
        answer = requests.request(
            method, f"{server.url}{path}", data=b"{garbage", headers=headers, timeout=10
        )
        assert answer.status_code == 401, (method, path, answer.text)


# --- finding 13: tokens that fit a release process; private data files ---------------------


def test_finding_13_token_expiry_and_channel_scopes(server: RegistryServer, tmp_path: Path) -> None:
    import stat
    import time

    env = {"SYSEXT_TOKEN": server.admin_token, "SYSEXT_REGISTRY": server.url}
    made = run_cli("token", "create", "--scope", "rel", "--channel", "beta", "--expires", "30d",
                   env=env)  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    ci = made.stdout.strip().splitlines()[-1]
    assert "in beta" in made.stderr and "expires" in made.stderr
    listed = run_cli("token", "list", env=env)
    row = next(line for line in listed.stderr.splitlines() if "│ rel " in line)
    assert "beta" in row and str(time.gmtime().tm_year) in row and "never" not in row

    image = build_image(tmp_path, "rel", "1.0")
    before = state(server)
    stable = upload(server, image, "rel", token=ci)  # straight to stable: refused
    assert stable.status_code == 403 and "only in beta" in stable.json()["detail"]
    assert state(server) == before
    assert upload(server, image, "rel", token=ci, channel="beta").status_code == 200

    def act(action: str, token: str, **params: str) -> requests.Response:
        return requests.post(
            f"{server.url}/api/v1/extensions/rel/versions/1.0/{action}",
            headers=server.headers(token),
            params=params,
            timeout=30,
        )

    before = state(server)
    assert act("promote", ci, channel="stable").status_code == 403
    assert state(server) == before
    assert act("yank", ci).status_code == 200 and act("unyank", ci).status_code == 200
    assert act("promote", server.admin_token, channel="stable").status_code == 200
    before = state(server)
    refused = act("yank", ci)  # 1.0 is in stable too now: outside the CI token
    assert refused.status_code == 403 and "stable" in refused.json()["detail"]
    assert state(server) == before

    short = requests.post(
        f"{server.url}/api/v1/tokens",
        json={"scopes": ["rel"], "expires_at": "2000-01-01T00:00:00Z"},
        headers=server.headers(),
        timeout=10,
    )
    assert short.status_code == 422 and "in the past" in short.json()["detail"]
    soon = time.time() + 2
    short = requests.post(
        f"{server.url}/api/v1/tokens",
        json={"scopes": ["rel"], "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                            time.gmtime(soon + 1))},
        headers=server.headers(),
        timeout=10,
    )  # fmt: skip
    assert short.status_code == 201, short.text
    while time.time() < soon + 2:
        time.sleep(0.5)
    expired = act("yank", short.json()["token"])
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    bad = run_cli("token", "create", "--scope", "x", "--expires", "soon", env=env)
    assert bad.returncode == 2 and "--expires" in bad.stdout + bad.stderr

    for name in ("registry.db", "registry.db-wal", "served-base-url"):
        path = server.data / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


# -- round two (issue 19) ----------------------------------------------------------------


def _beta_token(server: RegistryServer, scope: str) -> str:
    made = requests.post(
        f"{server.url}/api/v1/tokens",
        json={"scopes": [scope], "channels": ["beta"], "description": f"ci {scope}"},
        headers=server.headers(),
        timeout=10,
    )
    assert made.status_code == 201, made.text
    token: str = made.json()["token"]
    return token


def _act(server: RegistryServer, name: str, version: str, action: str, token: str,
         query: str = "") -> requests.Response:  # fmt: skip
    return requests.post(
        f"{server.url}/api/v1/extensions/{name}/versions/{version}/{action}{query}",
        headers=server.headers(token),
        timeout=30,
    )


@pytest.mark.parametrize("query", ["?arch=", "?arch=x86_64", "?arch=%20", "?arch=all"])
def test_round2_finding_1_empty_or_unknown_arch_never_widens_a_write(
    server: RegistryServer, tmp_path: Path, query: str
) -> None:
    """A beta-only token can neither yank nor un-yank a stable version by adding an empty
    or unknown `arch`: such values are refused (422), and nothing changes."""
    name = "scoped" + hashlib.sha256(query.encode()).hexdigest()[:6]
    image = build_image(tmp_path, name, "2.0")
    assert upload(server, image, name).status_code == 200  # admin → stable
    beta = _beta_token(server, name)
    before = state(server)
    for action in ("yank", "unyank"):
        answer = _act(server, name, "2.0", action, beta, query)
        assert answer.status_code == 422, (action, answer.status_code, answer.text)
        assert "architecture" in answer.json()["detail"]
    assert state(server) == before
    # Without the query the channel check applies, as it always did.
    refused = _act(server, name, "2.0", "yank", beta)
    assert refused.status_code == 403 and "stable" in refused.json()["detail"]
    # The admin's yank cannot be undone by the beta token either.
    assert _act(server, name, "2.0", "yank", server.admin_token).status_code == 200
    before = state(server)
    for q in (query, "", "?arch=x86-64"):
        assert _act(server, name, "2.0", "unyank", beta, q).status_code in (403, 422)
    assert state(server) == before


def test_round2_finding_1_channels_are_checked_under_the_writer_lock(
    server: RegistryServer, tmp_path: Path
) -> None:
    """The set of channels a yank touches is what the database holds when the write runs:
    a version promoted to stable after the token was read is still protected."""
    image = build_image(tmp_path, "lockcheck", "1.0")
    beta = _beta_token(server, "lockcheck")
    assert upload(server, image, "lockcheck", token=beta, channel="beta").status_code == 200
    assert _act(server, "lockcheck", "1.0", "promote", server.admin_token,
                "?channel=stable").status_code == 200  # fmt: skip
    before = state(server)
    answer = _act(server, "lockcheck", "1.0", "yank", beta, "?arch=x86-64")
    assert answer.status_code == 403 and "stable" in answer.json()["detail"]
    assert state(server) == before


def test_round2_finding_3_a_revoked_token_commits_nothing(
    server: RegistryServer, tmp_path: Path
) -> None:
    """Revocation is read again by the write itself: a revoked token's yank or promote is 401
    and leaves the database and the public tree unchanged."""
    image = build_image(tmp_path, "revoked", "1.0")
    made = requests.post(
        f"{server.url}/api/v1/tokens",
        json={"scopes": ["revoked"]},
        headers=server.headers(),
        timeout=10,
    ).json()
    assert upload(server, image, "revoked", token=made["token"]).status_code == 200
    gone = requests.delete(
        f"{server.url}/api/v1/tokens/{made['id']}", headers=server.headers(), timeout=10
    )
    assert gone.status_code == 200
    before = state(server)
    for action, query in (("yank", ""), ("promote", "?channel=beta")):
        answer = _act(server, "revoked", "1.0", action, made["token"], query)
        assert answer.status_code == 401, answer.text
    assert state(server) == before
