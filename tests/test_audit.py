"""The audit trail (issue 14): every write through the API appears exactly once, with the
principal that made it and where it came from; nothing can edit it, neither through the
API nor with SQL on the database. Runs on SQLite and on PostgreSQL (conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import sqlalchemy

from tests.registry_server import build_image, running_registry
from tests.servers import run_cli


def put_image(api: str, image: Path, headers: dict[str, str]) -> requests.Response:
    name = image.name.split("-")[0]
    with image.open("rb") as body:
        return requests.put(
            f"{api}/extensions/{name}/images/{image.name}", data=body, headers=headers, timeout=60
        )


def test_every_write_is_recorded_once_and_cannot_be_edited(tmp_path: Path) -> None:
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

        assert put_image(api, first, scoped).status_code == 200
        # The same bytes again: an accepted (idempotent) write, recorded as such.
        assert put_image(api, first, scoped).status_code == 200
        version = f"{api}/extensions/podman/versions/1.0"
        assert requests.post(f"{version}/yank", headers=scoped, timeout=10).status_code == 200
        assert requests.post(f"{version}/unyank", headers=scoped, timeout=10).status_code == 200
        promoted = requests.post(
            f"{version}/promote", params={"channel": "beta"}, headers=admin, timeout=10
        )
        assert promoted.status_code == 200
        # Refused writes change nothing; they are recorded as refused (issue 19, finding 15).
        assert put_image(api, other, scoped).status_code == 403
        assert requests.post(f"{version}/yank", timeout=10).status_code == 401
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
            (
                "write.denied",
                f"PUT /api/v1/extensions/crio/images/{other.name}",
                token_id,
                "ci-podman",
            ),
            ("write.denied", "POST /api/v1/extensions/podman/versions/1.0/yank", None, "anonymous"),
            ("token.revoke", f"token {token_id}", None, "admin"),
            ("key.rotate", new_key, None, "admin"),
        ]
        assert [e["detail"].get("created") for e in entries[1:3]] == [True, False]
        assert entries[5]["detail"]["channel"] == "beta"
        assert entries[0]["detail"] == {
            "description": "ci-podman",
            "scopes": ["podman"],
            "channels": None,  # token policy (issue 13): every channel, never expires
            "expires_at": None,
        }
        assert {e["client"] for e in entries} == {"127.0.0.1"}
        assert len({e["id"] for e in entries}) == len(entries)

        # Only the admin reads it.
        assert requests.get(f"{api}/audit", timeout=10).status_code == 401
        assert requests.get(f"{api}/audit", headers=scoped, timeout=10).status_code == 401
        everything = requests.post(
            f"{api}/tokens", json={"scopes": ["*"]}, headers=admin, timeout=10
        ).json()["token"]
        forbidden = requests.get(
            f"{api}/audit", headers={"Authorization": f"Bearer {everything}"}, timeout=10
        )
        assert forbidden.status_code == 403

        # No route writes to the trail: every other method on it is refused.
        before = requests.get(f"{api}/audit", headers=admin, timeout=10).json()
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            for path in (f"{api}/audit", f"{api}/audit/{before[0]['id']}"):
                answer = requests.request(method, path, headers=admin, json={}, timeout=10)
                assert answer.status_code in (404, 405), (method, path, answer.status_code)
        assert requests.get(f"{api}/audit", headers=admin, timeout=10).json() == before

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
        database_url = reg.database_url

    # Not even SQL on the database (SQLite or PostgreSQL): migration 0005's triggers refuse.
    engine = sqlalchemy.create_engine(database_url)
    try:
        for statement in (
            "UPDATE audit_log SET principal = 'someone else'",
            "DELETE FROM audit_log",
        ):
            with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):  # noqa: SIM117
                with engine.begin() as connection:
                    connection.execute(sqlalchemy.text(statement))
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text("SELECT count(*) FROM audit_log"))
            assert rows.scalar_one() == len(before)
    finally:
        engine.dispose()
