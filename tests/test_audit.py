"""The audit trail (issue 14): every write through the API appears exactly once, with the
principal that made it and where it came from; nothing can edit it, neither through the
API nor with SQL on the database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import requests

from tests.conftest import run_cli
from tests.registry_server import build_image, running_registry


def test_every_write_is_recorded_once_with_its_principal(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    first = build_image(images, "podman", "1.0")
    other = build_image(images, "crio", "1.0")
    with running_registry(tmp_path / "data") as reg:
        api = f"{reg.url}/api/v1"
        admin = reg.headers()
        created = requests.post(
            f"{api}/tokens",
            json={"scopes": ["podman"], "description": "ci-podman"},
            headers=admin,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        token_id, token = created.json()["id"], created.json()["token"]
        scoped = {"Authorization": f"Bearer {token}"}
        env = {"SYSEXT_TOKEN": token}

        assert run_cli("publish", first, "--registry", reg.url, env=env).returncode == 0
        # The same bytes again: an accepted (idempotent) write, recorded as such.
        assert run_cli("publish", first, "--registry", reg.url, env=env).returncode == 0
        yank = requests.post(
            f"{api}/extensions/podman/versions/1.0/yank", headers=scoped, timeout=10
        )
        assert yank.status_code == 200
        unyank = f"{api}/extensions/podman/versions/1.0/unyank"
        assert requests.post(unyank, headers=scoped, timeout=10).status_code == 200
        promote = f"{api}/extensions/podman/versions/1.0/promote"
        assert (
            requests.post(
                promote, params={"channel": "beta"}, headers=admin, timeout=10
            ).status_code
            == 200
        )
        # Refused writes change nothing and leave no entry.
        refused = run_cli("publish", other, "--registry", reg.url, env=env)
        assert refused.returncode == 2 and "403" in refused.stderr
        assert requests.post(unyank, timeout=10).status_code == 401
        revoke = requests.delete(f"{api}/tokens/{token_id}", headers=admin, timeout=10)
        assert revoke.status_code == 200
        rotate = requests.post(f"{api}/keys/rotate", headers=admin, timeout=60)
        assert rotate.status_code == 200, rotate.text

        trail = requests.get(f"{api}/audit", headers=admin, timeout=10)
        assert trail.status_code == 200
        entries = list(reversed(trail.json()))  # oldest first
        got = [(e["action"], e["target"], e["token_id"], e["principal"]) for e in entries]
        new_key = rotate.json()["rotation"]["other"]
        assert got == [
            ("token.create", f"token {token_id}", None, "admin"),
            ("image.publish", "podman-1.0-x86-64.raw", token_id, "ci-podman"),
            ("image.publish", "podman-1.0-x86-64.raw", token_id, "ci-podman"),
            ("image.yank", "podman-1.0-x86-64.raw", token_id, "ci-podman"),
            ("image.unyank", "podman-1.0-x86-64.raw", token_id, "ci-podman"),
            ("image.promote", "podman-1.0-x86-64.raw", None, "admin"),
            ("token.revoke", f"token {token_id}", None, "admin"),
            ("key.rotate", new_key, None, "admin"),
        ]
        assert [e["detail"].get("created") for e in entries[1:3]] == [True, False]
        assert entries[5]["detail"]["channel"] == "beta"
        assert entries[0]["detail"] == {"description": "ci-podman", "scopes": ["podman"]}
        assert {e["client"] for e in entries} == {"127.0.0.1"}
        assert len({e["id"] for e in entries}) == len(entries)

        # Only the admin reads it.
        assert requests.get(f"{api}/audit", timeout=10).status_code == 401
        assert requests.get(f"{api}/audit", headers=scoped, timeout=10).status_code == 401
        other_token = requests.post(
            f"{api}/tokens", json={"scopes": ["*"]}, headers=admin, timeout=10
        ).json()["token"]
        forbidden = requests.get(
            f"{api}/audit", headers={"Authorization": f"Bearer {other_token}"}, timeout=10
        )
        assert forbidden.status_code == 403

        # The CLI shows the same trail.
        shown = run_cli(
            "audit",
            "--json",
            "--action",
            "image.yank",
            "--registry",
            reg.url,
            env={"SYSEXT_TOKEN": reg.admin_token},
        )
        assert shown.returncode == 0, shown.stderr
        lines = [json.loads(line) for line in shown.stdout.splitlines()]
        assert [(e["action"], e["principal"]) for e in lines] == [("image.yank", "ci-podman")]
        table = run_cli("audit", "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token})
        assert table.returncode == 0 and "ci-podman (#" in table.stdout


def test_the_trail_cannot_be_edited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_registry(data) as reg:
        api = f"{reg.url}/api/v1"
        admin = reg.headers()
        made = requests.post(f"{api}/tokens", json={"scopes": ["a"]}, headers=admin, timeout=10)
        assert made.status_code == 201
        before = requests.get(f"{api}/audit", headers=admin, timeout=10).json()
        assert len(before) == 1
        entry = before[0]["id"]
        # No route writes to the trail: every method on it is refused.
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            for path in (f"{api}/audit", f"{api}/audit/{entry}"):
                answer = requests.request(method, path, headers=admin, json={}, timeout=10)
                assert answer.status_code in (404, 405), (method, path, answer.status_code)
        assert requests.get(f"{api}/audit", headers=admin, timeout=10).json() == before

    # Not even SQL on the database file: the migration's triggers refuse it.
    with sqlite3.connect(data / "registry.db") as db:
        for statement in (
            "UPDATE audit_log SET principal = 'someone else'",
            "DELETE FROM audit_log",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(statement)
        assert db.execute("SELECT principal FROM audit_log").fetchall() == [("admin",)]
