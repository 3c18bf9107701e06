"""Issue 19, round two: findings 6, 7, 10-15 replayed against a real `sysext serve` (and the
shipped nginx block, and PostgreSQL where the finding is PostgreSQL's). Each attack now gets
the right answer and leaves the database and the public tree as they were."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy

from registry.http.nginx_conf import server_block
from sysext.systemd.extension_release import bound_name_problem
from sysext.systemd.patterns import HostInfo, expand_specifiers, match_pattern
from sysext.systemd.transfer import TransferSpec
from tests.conftest import run_cli
from tests.registry_server import (
    RegistryServer,
    build_image,
    free_port,
    running_nginx,
    running_registry,
)
from tests.test_lint import good_fields, make_image
from tests.test_os_bound import assert_one_error, make_tree
from tests.test_registry_hardening import state, upload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with running_registry(tmp_path_factory.mktemp("hardening2") / "data") as reg:
        yield reg


def audit_trail(server: RegistryServer, **params: str) -> list[dict[str, object]]:
    answer = requests.get(
        f"{server.url}/api/v1/audit", params=params, headers=server.headers(), timeout=10
    )
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, object]] = answer.json()
    return entries


def latest_id(server: RegistryServer) -> int:
    entries = audit_trail(server, limit="1")
    return int(str(entries[0]["id"])) if entries else 0


def token_for(server: RegistryServer, scope: str, **extra: object) -> tuple[int, str]:
    made = requests.post(
        f"{server.url}/api/v1/tokens",
        json={"scopes": [scope], **extra},
        headers=server.headers(),
        timeout=10,
    )
    assert made.status_code == 201, made.text
    return int(made.json()["id"]), str(made.json()["token"])


def bound_image(tmp: Path, name: str, version: str, version_id: str) -> Path:
    """An image whose release pins VERSION_ID (made with gensquashfs, as a hostile or
    hand-rolled uploader would: `sysext pack` refuses the ambiguous ones)."""
    fields = good_fields(
        SYSEXT_ID=name, SYSEXT_VERSION_ID=version, VERSION_ID=version_id, SYSEXT_LEVEL="<drop>"
    )
    tag = hashlib.sha256(f"{version}/{version_id}".encode()).hexdigest()[:8]
    return make_image(tmp / f"{name}-{tag}", name, fields, filename=f"{name}-{tag}.raw")


# --- finding 6: one OS-bound file name, one meaning ---------------------------------------


def test_finding_6_bound_names_that_read_two_ways_are_refused(
    server: RegistryServer, tmp_path: Path
) -> None:
    """`hello-9.0-3815-2-x86-64.raw` is 9.0 for VERSION_ID=3815-2 and 9.0-3815 for
    VERSION_ID=2; both readings were accepted and the registry's Butane for os_version=2
    installed the 3815-2 image. Now neither is published."""
    filename = "osb-9.0-3815-2-x86-64.raw"
    for version, version_id, words in (
        ("9.0", "3815-2", "VERSION_ID 3815-2 contains '-'"),
        ("9.0-3815", "2", "version 9.0-3815 contains '-'"),
    ):
        image = bound_image(tmp_path, "osb", version, version_id)
        before = state(server)
        answer = upload(server, image, "osb", filename)
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"]
        assert words in detail and "\n" not in detail, detail
        assert state(server) == before
    butane = requests.get(
        f"{server.url}/api/v1/extensions/osb/butane", params={"os_version": "2"}, timeout=10
    )
    assert butane.status_code == 404, butane.text


def test_finding_6_a_pinned_image_is_never_served_to_every_os(
    server: RegistryServer, tmp_path: Path
) -> None:
    """An image whose release says VERSION_ID=2, uploaded as NAME-1.0-ARCH.raw, was served
    with NAME-@v-%a.raw to every host and listed as "any OS"."""
    image = bound_image(tmp_path, "pinned", "1.0", "2")
    before = state(server)
    answer = upload(server, image, "pinned", "pinned-1.0-x86-64.raw")
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "\n" not in detail
    assert "VERSION_ID=2, so it is OS-bound and must be published as pinned-1.0-2-x86-64.raw" in (
        detail
    )
    assert state(server) == before
    # Under the name it asks for, it is published OS-bound, with the %w pattern.
    answer = upload(server, image, "pinned", "pinned-1.0-2-x86-64.raw")
    assert answer.status_code == 200, answer.text
    assert answer.json()["image"]["os_version_id"] == "2"
    conf = requests.get(f"{server.url}/extensions/pinned/pinned.conf", timeout=10).text
    assert "MatchPattern=pinned-@v-%w-%a.raw" in conf


def test_finding_6_butane_refuses_an_os_version_with_a_dash(
    server: RegistryServer, tmp_path: Path
) -> None:
    image = bound_image(tmp_path, "osdash", "1.0", "3815")
    assert upload(server, image, "osdash", "osdash-1.0-3815-x86-64.raw").status_code == 200
    answer = requests.get(
        f"{server.url}/api/v1/extensions/osdash/butane",
        params={"os_version": "1.0-3815"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert "contains '-'" in answer.json()["detail"]
    good = requests.get(
        f"{server.url}/api/v1/extensions/osdash/butane", params={"os_version": "3815"}, timeout=30
    )
    assert good.status_code == 200 and "osdash-1.0-3815-x86-64.raw" in good.text


@pytest.mark.parametrize(
    ("version", "version_id", "message"),
    [
        ("9.0", "3815-2", "error: VERSION_ID 3815-2 contains '-'"),
        ("9.0-3815", "2", "error: version 9.0-3815 contains '-'"),
    ],
)
def test_finding_6_pack_refuses_the_same_names(
    tmp_path: Path, version: str, version_id: str, message: str
) -> None:
    tree = make_tree(tmp_path, "kmod", "x")
    out = tmp_path / "out"
    result = run_cli(
        "pack", tree, "--name", "kmod", "--version", version, "--os", "flatcar",
        "--os-version-id", version_id, "--output", out,
    )  # fmt: skip
    assert_one_error(result, message)
    assert not out.exists()


def test_finding_6_what_the_rule_guarantees_for_every_host() -> None:
    """With no '-' in either part, a host's `NAME-@v-%w-%a.raw` (sysupdate's matching, no
    backtracking) takes a bound image exactly when the VERSION_IDs are equal, and reads
    the version the registry stored; the refused names are matched by two hosts."""
    pattern = TransferSpec(name="k", base_url="http://r", os_bound=True).match_pattern
    hosts = ["2", "3815", "3815.2", "3815-2", "2-x86", "9.0-3815-2", "3815.2.0", "1_2"]
    for version in ("9.0", "1.0+k3s1", "2024.05.1", "1_2"):
        for version_id in ("2", "3815", "3815.2.0", "1_2"):
            assert bound_name_problem(version, version_id) is None
            filename = f"k-{version}-{version_id}-x86-64.raw"
            for host in hosts:
                expanded = expand_specifiers(
                    pattern, HostInfo(arch="x86-64", os_release={"VERSION_ID": host})
                )
                match = match_pattern(expanded, filename)
                assert (match is not None) == (host == version_id), (filename, host)
                assert match is None or match.version == version
    ambiguous = "k-9.0-3815-2-x86-64.raw"
    readings = {}
    for host in ("2", "3815-2"):
        expanded = expand_specifiers(
            pattern, HostInfo(arch="x86-64", os_release={"VERSION_ID": host})
        )
        found = match_pattern(expanded, ambiguous)
        assert found is not None
        readings[host] = found.version
    assert readings == {"2": "9.0-3815", "3815-2": "9.0"}
    assert bound_name_problem("9.0", "3815-2") and bound_name_problem("9.0-3815", "2")


# --- finding 7: X-Forwarded-For names nobody unless a proxy is named ------------------------

FORGED = "203.0.113.9 level=ERROR event=extension-broken name=hello"


def _yank_with(server: RegistryServer, url: str, forwarded: str, name: str) -> None:
    answer = requests.post(
        f"{url}/api/v1/extensions/{name}/versions/1.0/yank",
        headers={**server.headers(), "X-Forwarded-For": forwarded},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def _no_forged_field(log: str) -> None:
    for line in log.splitlines():
        # Quoted, the words are part of one value; unquoted, they would be fields.
        unquoted = line.split('"')[::2]
        assert not any("event=extension-broken" in part for part in unquoted), line


def test_finding_7_forwarded_for_is_ignored_by_default(
    server: RegistryServer, tmp_path: Path
) -> None:
    assert upload(server, build_image(tmp_path, "xff", "1.0"), "xff").status_code == 200
    since = latest_id(server)
    _yank_with(server, server.url, FORGED, "xff")
    _yank_with(server, server.url, "203.0.113.9", "xff")
    entries = audit_trail(server, after=str(since))
    assert [e["client"] for e in entries] == ["127.0.0.1", "127.0.0.1"]
    yanks = [line for line in server.log().splitlines() if "/xff/versions/1.0/yank" in line]
    assert len(yanks) == 2 and all(line.endswith("client=127.0.0.1") for line in yanks), yanks
    _no_forged_field(server.log())


def test_finding_7_a_named_proxy_is_believed_and_its_values_escaped(tmp_path: Path) -> None:
    image = build_image(tmp_path, "xffp", "1.0")
    args = ("--forwarded-allow-ips", "127.0.0.1")
    with running_registry(tmp_path / "data", args=args) as reg:
        assert upload(reg, image, "xffp").status_code == 200
        _yank_with(reg, reg.url, "198.51.100.4", "xffp")
        _yank_with(reg, reg.url, FORGED, "xffp")
        _yank_with(reg, reg.url, "x" * 400, "xffp")  # was a 500 on PostgreSQL
        entries = list(reversed(audit_trail(reg, action="image.yank")))
        clients = [str(e["client"]) for e in entries]
        assert clients[0] == "198.51.100.4"
        assert clients[1] == f'"{FORGED}"'
        assert clients[2] == "x" * 254 + "…"  # cut to the column
        log = reg.log()
    assert "client=198.51.100.4" in log
    assert f'client="{FORGED}"' in log
    _no_forged_field(log)


def test_finding_7_forwarded_allow_ips_must_name_addresses(tmp_path: Path) -> None:
    result = run_cli("serve", "--data", tmp_path / "data", "--forwarded-allow-ips", "*")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not an IP address or network" in result.stderr
    assert not (tmp_path / "data").exists()


@contextlib.contextmanager
def shipped_nginx(tmp_path: Path, reg: RegistryServer) -> Iterator[str]:
    with running_nginx(
        tmp_path / "nginx", lambda listen: server_block(reg.data / "public", listen, reg.url)
    ) as url:
        yield url


@pytest.mark.root(reason="the test nginx config runs as root")
def test_finding_7_behind_the_shipped_nginx_block(tmp_path: Path) -> None:
    """nginx overwrites X-Forwarded-For with the address it saw, so a client's own header
    never reaches the registry, on the API and on the pages alike."""
    image = build_image(tmp_path, "xffn", "1.0")
    args = ("--forwarded-allow-ips", "127.0.0.1")
    with running_registry(tmp_path / "data", args=args) as reg, shipped_nginx(tmp_path, reg) as url:
        assert upload(reg, image, "xffn").status_code == 200
        since = latest_id(reg)
        _yank_with(reg, url, FORGED, "xffn")
        _yank_with(reg, url, "198.51.100.4", "xffn")
        page = requests.get(f"{url}/catalog/xffn", headers={"X-Forwarded-For": FORGED}, timeout=30)
        assert page.status_code == 200
        entries = audit_trail(reg, after=str(since))
        assert [e["client"] for e in entries] == ["127.0.0.1", "127.0.0.1"]
        log = reg.log()
    assert "198.51.100.4" not in log and "203.0.113.9" not in log
    _no_forged_field(log)


# --- finding 10: no Host header in any Location -------------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/api/v1/extensions/", "/api/v1/extensions"),
        ("/api/v1/extensions/?q=he", "/api/v1/extensions?q=he"),
        ("/api/v1/keys/", "/api/v1/keys"),
        ("/catalog/host10/", "/catalog/host10"),
    ],
)
def test_finding_10_slash_redirects_are_relative(
    server: RegistryServer, path: str, location: str
) -> None:
    status, head = _head_of(server, f"GET {path} HTTP/1.1\r\nHost: evil.example\r\n")
    assert status == 307, head
    assert f"location: {location}\r\n" in head.lower()
    assert "evil.example" not in head


@pytest.mark.parametrize("path", ["//evil.example/", "/nothing-here/", "/api/v1/nope/"])
def test_finding_10_no_redirect_elsewhere(server: RegistryServer, path: str) -> None:
    status, head = _head_of(server, f"GET {path} HTTP/1.1\r\nHost: evil.example\r\n")
    assert status == 404, head
    assert "location" not in head.lower()


def _head_of(server: RegistryServer, request: str) -> tuple[int, str]:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall((request + "Connection: close\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1") + "\r\n"
    return int(head.split(" ", 2)[1]), head


# --- findings 11 and 15: key rotation under the lock, audited with the change ---------------


def _advance_all(url: str, headers: dict[str, str], params: dict[str, str], n: int) -> list[int]:
    barrier = threading.Barrier(n)

    def one(_: int) -> int:
        barrier.wait()
        answer = requests.post(
            f"{url}/api/v1/keys/advance", params=params, headers=headers, timeout=120
        )
        return answer.status_code

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(one, range(n)))


def test_finding_11_concurrent_advances_move_one_phase(tmp_path: Path) -> None:
    with running_registry(tmp_path / "data", args=("--workers", "2")) as reg:
        base = f"{reg.url}/api/v1/keys"
        assert requests.post(f"{base}/rotate", headers=reg.headers(), timeout=120).ok
        # Four advances of the introducing phase at once: one moves it, three are refused.
        assert _advance_all(reg.url, reg.headers(), {"phase": "introducing"}, 4) == [
            200, 409, 409, 409,
        ]  # fmt: skip
        assert requests.get(base, timeout=10).json()["rotation"]["phase"] == "retiring"
        # The same without naming a phase, in the retiring phase: one completes the
        # rotation; the others find none in progress (were: 200, audited as phase null).
        assert _advance_all(reg.url, reg.headers(), {}, 4) == [200, 409, 409, 409]
        assert requests.get(base, timeout=10).json()["rotation"] is None
        entries = list(reversed(audit_trail(reg)))
        keys = [
            (e["action"], e["principal"], e["detail"])
            for e in entries
            if e["action"] != "write.denied"
        ]
        assert [(a, p) for a, p, _ in keys] == [
            ("key.rotate", "admin"), ("key.advance", "admin"), ("key.advance", "admin"),
        ]  # fmt: skip
        assert [d.get("phase") for _, _, d in keys[1:]] == ["retiring", "done"]  # type: ignore[union-attr]


def test_finding_15_automatic_rotation_phases_are_audited(tmp_path: Path) -> None:
    reg = RegistryServer(data=tmp_path / "data", port=free_port())
    reg.start(env={"SYSEXT_KEY_OVERLAP": "1s"})
    try:
        rotated = requests.post(f"{reg.url}/api/v1/keys/rotate", headers=reg.headers(), timeout=120)
        assert rotated.ok, rotated.text
        reg.stop()
        # Start-up advances a phase that is due (overlap 1 s): wait until it is.
        due = dt.datetime.fromisoformat(rotated.json()["rotation"]["advance_at"])
        while dt.datetime.now(dt.UTC) <= due:
            time.sleep(0.1)
        reg.start(env={"SYSEXT_KEY_OVERLAP": "1s"})
        entries = list(reversed(audit_trail(reg)))
        got = [(e["action"], e["principal"], e["token_id"]) for e in entries]
        # `sysext serve` and then each worker run the start-up: with 1 s phases a later
        # one may find the retiring phase due as well. Every phase entered is one entry.
        rotation = requests.get(f"{reg.url}/api/v1/keys", timeout=10).json()["rotation"]
        chain = [("introducing", "retiring"), ("retiring", "done")]
        entered = chain[:1] if rotation is not None else chain
        assert got == [("key.rotate", "admin", None)] + [("key.advance", "registry", None)] * len(
            entered
        )
        assert [(e["detail"]["from"], e["detail"]["phase"]) for e in entries[1:]] == entered  # type: ignore[index]
        assert all(e["detail"]["automatic"] is True for e in entries[1:])  # type: ignore[index]
    finally:
        reg.stop()


# --- finding 12: admin inputs are validated, never a 500 ------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"expires_at": "9999-12-31T23:59:59-12:00"}, "outside the years"),
        ({"expires_at": "0001-01-01T00:00:00+14:00"}, "outside the years"),
        ({"description": "d" * 256}, "255"),
        ({"scopes": ["s" * 129]}, "128"),
    ],
)
def test_finding_12_token_inputs_out_of_range_are_422(
    server: RegistryServer, body: dict[str, object], words: str
) -> None:
    before = _tokens(server)
    answer = requests.post(
        f"{server.url}/api/v1/tokens",
        json={"scopes": ["x"], **body},
        headers=server.headers(),
        timeout=10,
    )
    assert answer.status_code == 422, answer.text
    assert words in json.dumps(answer.json()), answer.text
    assert _tokens(server) == before


def _tokens(server: RegistryServer) -> list[tuple[object, ...]]:
    with sqlite3.connect(server.data / "registry.db") as db:
        return db.execute("SELECT * FROM tokens ORDER BY id").fetchall()


# --- finding 13: the trail cannot be rewritten; no input makes a write fail ----------------


def test_finding_13_sqlite_replace_cannot_rewrite_the_trail(server: RegistryServer) -> None:
    token_for(server, "audited")  # at least one entry
    with sqlite3.connect(server.data / "registry.db") as db:
        before = db.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
        first = before[0][0]
        for statement in (
            "INSERT OR REPLACE INTO audit_log (id, at, principal, action, target, detail, "
            "client) VALUES (?, '2026-01-01', 'nobody', 'x', 'y', '{}', '')",
            "REPLACE INTO audit_log (id, at, principal, action, target, detail, client) "
            "VALUES (?, '2026-01-01', 'nobody', 'x', 'y', '{}', '')",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(statement, (first,))
        assert db.execute("SELECT * FROM audit_log ORDER BY id").fetchall() == before


def test_finding_13_postgresql_truncate_and_long_inputs(tmp_path: Path, pg_cluster: object) -> None:
    url = pg_cluster.create_database()  # type: ignore[attr-defined]
    image = build_image(tmp_path, "pglong", "1.0")
    env = {"SYSEXT_DATABASE_URL": url}
    args = ("--forwarded-allow-ips", "127.0.0.1")
    with running_registry(tmp_path / "data", env=env, args=args) as reg:
        token_id, token = token_for(reg, "pglong", description="d" * 255)
        # A description longer than the trail's varchar(255) (an older registry accepted
        # any): every write of that token was a 500.
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text("UPDATE tokens SET description = :d WHERE id = :i"),
                {"d": "long " * 100, "i": token_id},
            )
        answer = requests.put(
            f"{reg.url}/api/v1/extensions/pglong/images/{image.name}",
            data=image.read_bytes(),
            headers={**reg.headers(token), "X-Forwarded-For": "y" * 400},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        entry = audit_trail(reg, action="image.publish")[0]
        assert (
            str(entry["principal"]).startswith("long long") and len(str(entry["principal"])) == 255
        )
        assert len(str(entry["client"])) == 255
    try:
        with engine.connect() as connection:
            before = connection.execute(sqlalchemy.text("SELECT * FROM audit_log")).all()
        for statement in (
            "TRUNCATE audit_log",
            "INSERT INTO audit_log (id, at, principal, action, target, detail, client) "
            f"VALUES ({before[0][0]}, now(), 'x', 'x', 'x', '{{}}', '') "
            "ON CONFLICT (id) DO UPDATE SET principal = 'nobody'",
        ):
            with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):  # noqa: SIM117
                with engine.begin() as connection:
                    connection.execute(sqlalchemy.text(statement))
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT * FROM audit_log")).all() == before
    finally:
        engine.dispose()


# --- finding 14: provisioning lists are bounded before any work -----------------------------


def test_finding_14_long_provisioning_lists_are_refused_first(server: RegistryServer) -> None:
    url = f"{server.url}/api/v1/provision/butane"
    many = requests.get(url, params=[("ext", "hello")] * 5000, timeout=30)
    assert many.status_code == 422 and "at most 32" in many.json()["detail"], many.text
    over = requests.get(url, params=[("ext", f"e{i}") for i in range(33)], timeout=30)
    assert over.status_code == 422
    # Duplicates are refused before anything is resolved: an unknown name twice is a 400
    # about the duplicate, not a 404 about the name.
    twice = requests.get(url, params=[("ext", "nowhere"), ("ext", "nowhere")], timeout=30)
    assert twice.status_code == 400 and "more than once" in twice.json()["detail"]
    once = requests.get(url, params=[("ext", "nowhere")], timeout=30)
    assert once.status_code == 404


# --- finding 15: auth before validation, messages per action, everything audited -----------


def test_finding_15_admin_reads_authenticate_before_validating(server: RegistryServer) -> None:
    _, scoped = token_for(server, "reader")
    for path in ("/api/v1/audit?limit=abc", "/api/v1/audit?after=-1", "/api/v1/tokens"):
        assert requests.get(f"{server.url}{path}", timeout=10).status_code == 401, path
        refused = requests.get(f"{server.url}{path}", headers=server.headers(scoped), timeout=10)
        assert refused.status_code == 403, (path, refused.text)
    assert (
        requests.get(
            f"{server.url}/api/v1/audit?limit=abc", headers=server.headers(), timeout=10
        ).status_code
        == 422
    )


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        ("POST", "/api/v1/keys/rotate", "may rotate the signing key"),
        ("POST", "/api/v1/keys/advance", "may advance a key rotation"),
        ("GET", "/api/v1/audit", "may read the audit trail"),
        ("POST", "/api/v1/tokens", "may create tokens"),
        ("DELETE", "/api/v1/tokens/1", "may revoke tokens"),
    ],
)
def test_finding_15_each_refusal_names_its_action(
    server: RegistryServer, method: str, path: str, words: str
) -> None:
    _, scoped = token_for(server, "someone")
    answer = requests.request(
        method,
        f"{server.url}{path}",
        json={"scopes": ["x"]},
        headers=server.headers(scoped),
        timeout=30,
    )
    assert answer.status_code == 403, answer.text
    assert words in answer.json()["detail"] and "manage tokens" not in answer.json()["detail"]


def test_finding_15_denied_writes_are_audited(server: RegistryServer, tmp_path: Path) -> None:
    assert upload(server, build_image(tmp_path, "denied", "1.0"), "denied").status_code == 200
    token_id, scoped = token_for(server, "other", description="ci-other")
    since = latest_id(server)
    before = state(server)
    version = f"{server.url}/api/v1/extensions/denied/versions/1.0"
    assert requests.post(f"{version}/yank", timeout=10).status_code == 401
    assert (
        requests.post(
            f"{version}/yank", headers=server.headers("sxt_1_wrong"), timeout=10
        ).status_code
        == 401
    )
    assert (
        requests.post(f"{version}/yank", headers=server.headers(scoped), timeout=10).status_code
        == 403
    )
    assert state(server) == before
    entries = list(reversed(audit_trail(server, after=str(since))))
    got = [(e["action"], e["principal"], e["token_id"], e["target"]) for e in entries]
    target = "POST /api/v1/extensions/denied/versions/1.0/yank"
    assert got == [
        ("write.denied", "anonymous", None, target),
        ("write.denied", "anonymous", None, target),
        ("write.denied", "ci-other", token_id, target),
    ]
    assert [e["detail"]["status"] for e in entries] == [401, 401, 403]  # type: ignore[index]
    assert "may not write extension 'denied'" in entries[2]["detail"]["reason"]  # type: ignore[index]


def test_finding_15_registry_repair_is_audited(server: RegistryServer) -> None:
    since = latest_id(server)
    repaired = run_cli("registry", "repair", "--data", server.data)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    entries = audit_trail(server, after=str(since))
    assert [(e["action"], e["principal"], e["target"]) for e in entries] == [
        ("registry.repair", "registry repair", "registry")
    ]
    assert entries[0]["detail"] == {"deleted_count": 0, "deleted_rows": []}
