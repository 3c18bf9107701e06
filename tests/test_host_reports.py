"""Host reports (issue 21, item 4): a managed host's update script posts its outcome to
POST /api/v1/extensions/NAME/reports; the fleet view shows it and no rollout acts on it.

A real `sysext serve` (uvicorn) and a real HTTP client; the generated update script runs
with the real systemd-sysupdate 254 against it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sysext.core.rollout import app_specific_id, host_bucket
from tests.registry_server import RegistryServer, build_image, running_registry
from tests.servers import run_cli
from tests.sysupdate_client import client_env, require_client
from tests.test_provision import decode_data_url, ignition_validate
from tests.test_rollout_identity import run_rollout_script
from tests.test_rollout_policy import wait_for

NAME = "hello"


@contextlib.contextmanager
def registry(tmp_path: Path, **env: str) -> Iterator[RegistryServer]:
    """hello 1.0 released, 1.1 rolling out at 10 % behind a canary of 2 hosts; one worker,
    whose rollout job runs every second."""
    # One worker: the fleet view's own flush then writes every report it answered 202 to.
    settings = {
        "SYSEXT_ROLLOUT_TICK": "1", "SYSEXT_FLEET_FLUSH": "0", "SYSEXT_WORKERS": "1", **env
    }  # fmt: skip
    with running_registry(tmp_path / "data", env=settings) as reg:
        images = tmp_path / "images"
        images.mkdir()
        token = {"SYSEXT_TOKEN": reg.admin_token}
        staged = (
            "rollout",
            "set",
            NAME,
            "1.1",
            "--percent",
            "10",
            "--canary",
            "2",
        )
        assert run_cli(*staged, "--registry", reg.url, env=token).returncode == 0
        for version in ("1.0", "1.1"):
            image = build_image(images, NAME, version)
            assert run_cli("publish", str(image), "--registry", reg.url, env=token).returncode == 0
        yield reg


def report_url(reg: RegistryServer, name: str = NAME) -> str:
    return f"{reg.url}/api/v1/extensions/{name}/reports"


def good(host: str, **fields: Any) -> dict[str, Any]:
    return {
        "host_id": host, "channel": "stable", "group": None, "image": "hello-1.1-x86-64.raw",
        "result": "activated", "reason": None, "systemd": 257, "os_id": "flatcar",
        "os_version_id": "4081.2.0", **fields,
    }  # fmt: skip


def fleet(reg: RegistryServer) -> dict[str, Any]:
    response = requests.get(f"{reg.url}/api/v1/extensions/{NAME}/fleet", timeout=60)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def rollout(reg: RegistryServer) -> dict[str, Any]:
    response = requests.get(f"{reg.url}/api/v1/extensions/{NAME}/rollouts", timeout=60)
    response.raise_for_status()
    (only,) = response.json()["rollouts"]
    return only  # type: ignore[no-any-return]


def test_reports_are_counted_shown_and_never_acted_on(
    tmp_path: Path, registry_database: str
) -> None:
    hosts = [app_specific_id(f"{n + 1:032x}") for n in range(4)]
    with registry(tmp_path) as reg:
        before = fleet(reg)
        # A 5 s auto-pause window from now, and right away a host fetches the 1.1 image
        # from the registry (which keeps the rollout from pausing), then reports it
        # activated.
        token = {"SYSEXT_TOKEN": reg.admin_token}
        window = run_cli("rollout", "set", NAME, "1.1", "--window", "5s", "--registry", reg.url,
                         env=token)  # fmt: skip
        assert window.returncode == 0, window.stderr
        window_set = time.monotonic()
        fetched = hosts[0]
        base = f"{reg.url}/rollouts/stable/{NAME}/{host_bucket(fetched):02d}/{fetched}"
        got = requests.get(f"{base}/hello-1.1-x86-64.raw", timeout=30)
        assert got.status_code == 200
        sent = requests.post(report_url(reg), json=good(fetched), timeout=30)
        assert sent.status_code == 202, sent.text
        assert sent.json() == {"accepted": True}
        # Hosts of a bucket or mirror (never seen by the registry): one reports 1.1
        # activated, one a failure, one nothing newer in group canary.
        for host, fields in (
            (hosts[1], {"result": "installed"}),
            (hosts[2], {"result": "failed", "reason": "systemd-sysupdate exited with status 1"}),
            (hosts[3], {"result": "unchanged", "group": "canary", "systemd": 254}),
        ):
            sent = requests.post(report_url(reg), json=good(host, **fields), timeout=30)
            assert sent.status_code == 202, sent.text
        # A later report of the same host replaces its first: one row per host.
        sent = requests.post(report_url(reg), json=good(hosts[1]), timeout=30)
        assert sent.status_code == 202
        view = fleet(reg)
        # The existing keys are all there and keep their meaning: hosts seen fetching.
        old_keys = {"name", "hosts", "last_seen", "versions", "groups", "history", "rollouts"}
        assert old_keys | {"dropped_sightings", "reports", "all_hosts"} == set(view)
        assert before["reports"]["hosts"] == 0 and before["all_hosts"] == 0
        assert view["hosts"] == 1 and view["versions"]["1.1"]["hosts"] == 1
        reports = view["reports"]
        assert reports["hosts"] == 4
        assert reports["only_reported"] == 3 and view["all_hosts"] == 4
        assert reports["versions"]["1.1"] == {
            "fetched": 1, "reported": 4, "activated": 2, "installed": 0, "unchanged": 1,
            "failed": 1,
        }  # fmt: skip
        assert reports["failures"] == [
            {"version": "1.1", "reason": "systemd-sysupdate exited with status 1", "hosts": 1}
        ]
        assert reports["systemd"] == {"254": 1, "257": 3}
        assert reports["os"] == {"flatcar 4081.2.0": 4}
        assert reports["groups"] == {"(none)": {"1.1": 3}, "canary": {"1.1": 1}}
        page = requests.get(f"{reg.url}/catalog/{NAME}", timeout=30).text
        assert "4 host(s) reported" in page and "1 failed" in page

        # Containment. The rollout job runs every second here. A reported failure and three
        # reported successes are on file, and nothing moves: no halt (a failure is shown,
        # never acted on; the one real fetch of 1.1 keeps the window open) and the canary
        # gate, which needs 2 hosts that fetched 1.1 from the registry, stays closed
        # although more hosts reported 1.1 working.
        # Past the window, a new host fetches 1.0; a round whose fleet sample (written after
        # the rollouts are checked) counts it ran after the reports and after the window.
        time.sleep(max(0.0, window_set + 6 - time.monotonic()))
        late = app_specific_id("f" * 32)
        base = f"{reg.url}/rollouts/stable/{NAME}/{host_bucket(late):02d}/{late}"
        assert requests.get(f"{base}/hello-1.0-x86-64.raw", timeout=30).status_code == 200
        wait_for(lambda: sampled(reg, "1.0") == 1, "a round of the rollout job")
        stage = rollout(reg)
        assert stage["halted"] is False and stage["canary_done"] is False, stage
        assert stage["percent"] == 10

        # Offered to more hosts, with only reports of success since: the job pauses it
        # (reports never stand in for fetches).
        raised = run_cli("rollout", "set", NAME, "1.1", "--percent", "20", "--registry", reg.url,
                         env=token)  # fmt: skip
        assert raised.returncode == 0, raised.stderr
        for host in hosts:
            assert requests.post(report_url(reg), json=good(host), timeout=30).status_code == 202
        wait_for(lambda: bool(rollout(reg)["halted"]), "the auto-pause")
        reason = str(rollout(reg)["halted_reason"])
        assert reason.startswith("auto-paused: no host fetched 1.1 within 5s"), reason
        assert rollout(reg)["canary_done"] is False


def sampled(reg: RegistryServer, version: str) -> int | None:
    """Hosts on `version` in the newest fleet sample (None: no sample of it yet)."""
    history = [h for h in fleet(reg)["history"] if h["version"] == version]
    return int(history[-1]["hosts"]) if history else None


BAD_REPORTS = [
    (b"not json", 422, "not JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (json.dumps(good("A" * 32)).encode(), 422, "invalid host ID"),
    (json.dumps({**good("a" * 32), "machine_id": "x"}).encode(), 422, "unknown field"),
    (json.dumps(good("a" * 32, result="exploded")).encode(), 422, "result 'exploded'"),
    (json.dumps(good("a" * 32, result="failed")).encode(), 422, "needs a reason"),
    (json.dumps(good("a" * 32, reason="x\ny")).encode(), 422, "reason"),
    (json.dumps(good("a" * 32, image="other-1.0-x86-64.raw")).encode(), 422, "image"),
    (json.dumps(good("a" * 32, channel="nightly")).encode(), 422, "unknown channel"),
    (json.dumps(good("a" * 32, group="Bad_Group")).encode(), 422, "invalid group"),
    (json.dumps(good("a" * 32, systemd="257")).encode(), 422, "systemd"),
    (json.dumps(good("a" * 32, os_id='fl"atcar')).encode(), 422, "os_id"),
    (json.dumps(good("a" * 32, reason="r" * 3000)).encode(), 413, "too large"),
]


def test_bad_reports_are_refused_with_one_line(
    registry_server: RegistryServer, tmp_path: Path
) -> None:
    reg = registry_server
    image = build_image(tmp_path, NAME, "1.0")
    token = {"SYSEXT_TOKEN": reg.admin_token}
    assert run_cli("publish", str(image), "--registry", reg.url, env=token).returncode == 0
    headers = {"Content-Type": "application/json"}
    for body, status, words in BAD_REPORTS:
        answer = requests.post(report_url(reg), data=body, headers=headers, timeout=30)
        assert answer.status_code == status, (body, answer.text)
        detail = answer.json()["detail"]
        assert words in detail and "\n" not in detail, (body, detail)
    assert fleet(reg)["reports"]["hosts"] == 0  # nothing half-written


def test_unknown_extensions_oversized_bodies_and_floods_are_refused(tmp_path: Path) -> None:
    with running_registry(
        tmp_path / "data",
        env={"SYSEXT_REPORT_RATE": "3", "SYSEXT_WORKERS": "1", "SYSEXT_FLEET_FLUSH": "0"},
    ) as reg:
        image = build_image(tmp_path, NAME, "1.0")
        token = {"SYSEXT_TOKEN": reg.admin_token}
        assert run_cli("publish", str(image), "--registry", reg.url, env=token).returncode == 0
        host = app_specific_id("1" * 32)
        body = json.dumps(good(host, image=None)).encode()
        missing = requests.post(report_url(reg, "nosuch"), data=body, timeout=30)
        assert missing.status_code == 404 and "no extension named" in missing.json()["detail"]
        # A declared length over the limit is refused before the body is read.
        big = requests.post(report_url(reg), data=b" " * 100_000, timeout=30)
        assert big.status_code == 413
        # Three a minute from this address (one worker), the two above included: within
        # ten more, one is refused (even if a new minute began half-way, at most three
        # more get through).
        answers = [requests.post(report_url(reg), data=body, timeout=30) for _ in range(10)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused and "SYSEXT_REPORT_RATE" in refused[0].json()["detail"]
        assert sum(a.status_code == 202 for a in answers) <= 4
        assert all(a.status_code in (202, 429) for a in answers)
        assert fleet(reg)["reports"]["hosts"] == 1  # one host, however often


def sysupdate_254(tmp_path: Path) -> Path:
    """The real systemd-sysupdate 254 as a host command (its libraries on the path)."""
    binary = require_client(254)
    env = client_env(254)
    exports = "".join(f"export {k}='{v}'\n" for k, v in env.items() if k == "LD_LIBRARY_PATH")
    wrapper = tmp_path / "systemd-sysupdate"
    wrapper.write_text(f'#!/bin/sh\n{exports}exec "{binary}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.root
def test_generated_update_script_reports_its_outcome_best_effort(tmp_path: Path) -> None:
    """The config of `sysext butane --rollout --group canary` (valid Ignition): its identity
    script derives the host ID, the update script runs the real systemd-sysupdate 254, which
    fails here (this host has no transfer for the component), and reports that failure
    under the derived ID; the script's exit status stays sysupdate's own, also when the
    registry cannot be reached."""
    with registry(tmp_path) as reg:
        generated = run_cli(
            "butane", NAME, "--registry", reg.url, "--ignition", "--group", "canary"
        )
        assert generated.returncode == 0, generated.stderr
        assert ignition_validate(generated.stdout, tmp_path) == ""
        files = {
            f["path"]: decode_data_url(f["contents"]["source"])
            for f in json.loads(generated.stdout)["storage"]["files"]
            if f["contents"]["source"].startswith("data:")
        }
        conf = files[f"/etc/sysext/rollout/{NAME}.report"].decode()
        assert f"url={reg.url}\nchannel=stable\ngroup=canary\n" in conf
        root = tmp_path / "host"
        for path in (f"/etc/sysext/rollout/{NAME}.conf.in", f"/etc/sysext/rollout/{NAME}.report"):
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.lstrip("/")).write_bytes(files[path])
        (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        identity = tmp_path / "rollout-transfer"
        identity.write_bytes(files["/etc/sysext/rollout-transfer"])
        written = run_rollout_script(root, identity)
        assert written.returncode == 0, written.stderr
        host = app_specific_id("0123456789abcdef0123456789abcdef")
        assert (root / "run/sysext/rollout-host-id").read_text() == host + "\n"
        (root / "etc/os-release").write_text('ID=flatcar\nVERSION_ID="4081.2.0"\n')
        (root / "opt/extensions").mkdir(parents=True)
        link = root / "etc/extensions/hello.raw"
        link.parent.mkdir(parents=True)
        link.symlink_to("/opt/extensions/hello/hello-1.0-x86-64.raw")
        script = tmp_path / "update-extension"
        script.write_bytes(files["/etc/sysext/update-extension"])
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "SYSEXT_ROOT": str(root),
            "SYSEXT_SYSUPDATE": str(sysupdate_254(tmp_path)),
        }

        def run_update() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["sh", str(script), NAME, str(link), "restart"],
                env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip

        failed = run_update()
        assert failed.returncode not in (0, 64, 65), failed.stderr
        assert f"{NAME}: update FAILED: systemd-sysupdate exited with status" in failed.stderr
        assert f"{NAME}: reported failed to {reg.url}" in failed.stdout, failed.stderr
        reports = fleet(reg)["reports"]
        assert reports["hosts"] == 1 and reports["only_reported"] == 1
        reason = f"systemd-sysupdate exited with status {failed.returncode}"
        assert reports["failures"] == [{"version": "1.0", "reason": reason, "hosts": 1}]
        assert reports["systemd"] == {"254": 1}
        assert reports["os"] == {"flatcar 4081.2.0": 1}
        assert reports["groups"] == {"canary": {"1.0": 1}}
        status = failed.returncode

    # The registry is gone: the run fails exactly as before and says the report was lost.
    down = run_update()
    assert down.returncode == status
    assert "could not report the outcome" in down.stderr


def test_report_options_refuse_what_cannot_work() -> None:
    """Checked before the registry is asked: one line and a hint each."""
    base = ("butane", NAME, "--registry", "http://127.0.0.1:9")
    cases = [
        ((*base, "--rollout", "--report-to", "http://r", "--no-report"), "contradict"),
        ((*base, "--report-to", "http://r"), "needs a managed host"),
        ((*base, "--rollout", "--report-to", "ftp://r"), "is not an http(s) URL"),
        ((*base, "--rollout", "--report-to", "http://r/a b"), "is not an http(s) URL"),
    ]
    for argv, words in cases:
        result = run_cli(*argv)
        assert result.returncode != 0 and result.stdout == ""
        first, *rest = result.stderr.strip().splitlines()
        assert first.startswith("error:") and words in first, result.stderr
        assert rest and all(line.startswith("hint:") for line in rest)
