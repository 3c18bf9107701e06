"""Safe mode with host reports (issue 21, item 5): `sysext rollout set … --canary N
--canary-activated` ends the canary phase only when N canary hosts fetched the image from
the registry AND reported it activated; the auto-pause window counts the same way.

Containment (item 4): a report of success without the same host's fetch never counts, and
a reported failure is shown but halts nothing. A real `sysext serve` (uvicorn, one worker
whose rollout job runs every second) and a real HTTP client."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import requests

from sysext.core.rollout import app_specific_id, host_bucket
from tests.registry_server import RegistryServer
from tests.servers import run_cli
from tests.test_host_reports import fleet, good, report_url, sampled
from tests.test_rollout_policy import (
    NAME,
    audit_actions,
    cli,
    fetch,
    hello_registry,
    host_ids,
    status,
    wait_for,
)


def report(reg: RegistryServer, host: str, **fields: Any) -> None:
    sent = requests.post(report_url(reg), json=good(host, **fields), timeout=30)
    assert sent.status_code == 202, sent.text


def rounds_after_now(reg: RegistryServer, tag: str) -> None:
    """Return once the rollout job checked the rollouts after everything stored so far.

    Each step: a new host fetches 1.0 (written by the fleet view's flush), then a fleet
    sample counting it shows a round that sampled after it. The job checks the rollouts
    before it samples, so the round after that one (the second step) checked them after
    the first new host, i.e. after everything the test stored before this call."""
    for step in range(2):
        late = app_specific_id(f"{tag}{step:x}".ljust(32, "e")[:32])
        base = f"{reg.url}/rollouts/stable/{NAME}/{host_bucket(late):02d}/{late}"
        assert requests.get(f"{base}/hello-1.0-x86-64.raw", timeout=30).status_code == 200
        expected = int(fleet(reg)["versions"]["1.0"]["hosts"])

        def sampled_it(n: int = expected) -> bool:
            return sampled(reg, "1.0") == n

        wait_for(sampled_it, "a round of the rollout job")


def test_canary_needs_fetch_and_activation_of_the_same_hosts(
    tmp_path: Path, registry_database: str
) -> None:
    with hello_registry(tmp_path) as reg:
        hosts = host_ids(60)
        for host in hosts:  # the fleet as the registry knows it before the rollout
            assert fetch(reg, host) == "1.0"
        result = cli(
            reg, "rollout", "set", NAME, "1.1", "--canary", "2", "--canary-activated",
            "--percent", "100",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "canary: waiting for 2 host(s) to fetch and activate it" in result.stdout
        assert "canary 2 (waiting; gate: fetched and reported activated)" in result.stdout
        assert status(reg)["canary_activated"] is True
        canary = {int(b) for b in status(reg)["canary_buckets"]}  # type: ignore[attr-defined]
        offered = [h for h in hosts if fetch(reg, h) == "1.1"]
        assert len(offered) >= 2 and {host_bucket(h) for h in offered} <= canary
        others = [h for h in hosts if h not in offered]

        # The canary hosts fetched 1.1 but reported nothing; two hosts that never fetched
        # 1.1 (one of the fleet, one made up) report it activated: enough reports to pass
        # a gate of 2 if reports alone counted. A third host reports a failure.
        report(reg, others[0])
        report(reg, app_specific_id("d" * 32))
        report(reg, others[1], result="failed", reason="systemd-sysupdate exited with status 1")
        assert fleet(reg)["reports"]["hosts"] == 3  # stored (the view flushes first)
        rounds_after_now(reg, "a")
        stage = status(reg)
        assert stage["canary_done"] is False and stage["halted"] is False, stage
        assert stage["canary_fetched"] == len(offered)
        assert (stage["canary_reported_activated"], stage["failure_reports"]) == (0, 1)
        assert fetch(reg, others[2]) == "1.0"  # the percentage does not apply yet
        shown = run_cli("rollout", "status", NAME, "--registry", reg.url)
        assert f"canary hosts so far: {len(offered)} fetched, 0 of them reported activated" in (
            shown.stdout
        )
        assert "1 host(s) reported a failure (not acted on)" in shown.stdout

        # One canary host reports activated, then somebody posts a failure under its ID:
        # the newest report shows the failure, the activation still counts (1 of 2).
        report(reg, offered[0])
        report(reg, offered[0], result="failed", reason="made up")
        assert fleet(reg)["reports"]["hosts"] == 4
        rounds_after_now(reg, "b")
        stage = status(reg)
        assert stage["canary_done"] is False and stage["halted"] is False, stage
        assert (stage["canary_reported_activated"], stage["failure_reports"]) == (1, 2)

        # A second one reports activated, and on its next run `unchanged` (its newest
        # report): the gate opens and the percentage (100 %) applies, with both failure
        # reports still on file.
        report(reg, offered[1])
        report(reg, offered[1], result="unchanged")
        wait_for(lambda: bool(status(reg)["canary_done"]), "the canary gate to open")
        stage = status(reg)
        assert stage["stage"] == "complete" and stage["halted"] is False, stage
        assert stage["failure_reports"] == 2
        wait_for(lambda: fetch(reg, others[2]) == "1.1", "the percentage to apply")
        actions = audit_actions(reg)
        assert actions.count("rollout.canary-passed") == 1
        entries = requests.get(
            f"{reg.url}/api/v1/audit", headers=reg.headers(), params={"limit": 100}, timeout=10
        ).json()
        (passed,) = [e for e in entries if e["action"] == "rollout.canary-passed"]
        assert passed["detail"]["activated"] == 2 and passed["detail"]["failure_reports"] == 2
        (created,) = [e for e in entries if e["action"] == "rollout.set" and e["detail"]["before"]]
        assert created["detail"]["before"]["canary_activated"] is False
        assert created["detail"]["after"]["canary_activated"] is True


def test_window_with_fetches_only_pauses_and_says_reports_were_missing(
    tmp_path: Path, registry_database: str
) -> None:
    with hello_registry(tmp_path) as reg:
        hosts = host_ids(20)
        for host in hosts:
            assert fetch(reg, host) == "1.0"
        result = cli(
            reg, "rollout", "set", NAME, "1.1", "--canary", "1", "--canary-activated",
            "--percent", "50", "--window", "5s",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "auto-pause after 5s without a fetch and an activation report" in result.stdout
        # Right away (well within the 5 s) the canary hosts fetch 1.1, which without the
        # flag would keep the rollout going (test_host_reports.py); they report nothing.
        offered = [h for h in hosts if fetch(reg, h) == "1.1"]
        assert offered
        wait_for(lambda: bool(status(reg)["halted"]), "the auto-pause")
        reason = str(status(reg)["halted_reason"])
        assert reason.startswith(
            "auto-paused: no host both fetched 1.1 and reported it activated within 5s"
        ), reason
        found = re.search(r": (\d+) host\(s\) fetched it, activation reports were missing", reason)
        assert found and int(found.group(1)) == len(offered), reason
        assert "rollout.auto-paused" in audit_actions(reg)
        shown = run_cli("rollout", "status", NAME, "--registry", reg.url)
        assert "activation reports were missing" in shown.stdout


def test_the_flag_needs_a_canary_and_changes_nothing_without_one(
    tmp_path: Path, registry_database: str
) -> None:
    with hello_registry(tmp_path) as reg:
        sets = audit_actions(reg).count("rollout.set")
        for args in (["--canary-activated"], ["--percent", "10", "--canary-activated"]):
            refused = cli(reg, "rollout", "set", NAME, "1.1", *args)
            assert refused.returncode != 0
            first, *rest = refused.stderr.strip().splitlines()
            assert first.startswith("error:") and "canary_activated needs a canary" in first
            assert rest == [
                "hint: add --canary N (how many canary hosts), or leave out --canary-activated"
            ]
        api = requests.put(
            f"{reg.url}/api/v1/extensions/{NAME}/rollouts/1.1",
            headers=reg.headers(),
            json={"canary": 0, "canary_activated": True},
            timeout=10,
        )
        assert api.status_code == 422 and "needs a canary" in api.json()["detail"]
        stage = status(reg)
        assert (stage["percent"], stage["canary"], stage["canary_activated"]) == (0, 0, False)
        assert audit_actions(reg).count("rollout.set") == sets  # the refusals wrote none
        # With a canary it is accepted; --canary 0 later drops it with the canary.
        accepted = cli(reg, "rollout", "set", NAME, "1.1", "--canary", "2", "--canary-activated")
        assert accepted.returncode == 0, accepted.stderr
        assert status(reg)["canary_activated"] is True
        assert cli(reg, "rollout", "set", NAME, "1.1", "--canary", "0").returncode == 0
        assert (status(reg)["canary"], status(reg)["canary_activated"]) == (0, False)


def test_window_is_kept_open_by_activations_and_made_up_failures_undo_none(
    tmp_path: Path, registry_database: str
) -> None:
    """Past the canary, the hosts of the percentage fetch 1.1 and report it activated,
    then somebody posts a failure under each of their IDs: the window still sees them
    as successful (activations are insert-only) and nothing pauses."""
    with hello_registry(tmp_path) as reg:
        hosts = host_ids(40)
        for host in hosts:
            assert fetch(reg, host) == "1.0"
        result = cli(
            reg, "rollout", "set", NAME, "1.1", "--canary", "1", "--canary-activated",
            "--percent", "50", "--window", "10s",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        offered = [h for h in hosts if fetch(reg, h) == "1.1"]
        report(reg, offered[0])
        wait_for(lambda: bool(status(reg)["canary_done"]), "the canary gate to open")
        # The window now counts from the canary's end: the half of the fleet offered 1.1
        # fetches it and reports it activated, then the made-up failures follow.
        opened = time.monotonic()
        rest = [h for h in hosts if h not in offered]
        updated: list[str] = []

        def offered_more() -> bool:  # the tree follows right after the commit
            updated[:] = [h for h in rest if fetch(reg, h) == "1.1"]
            return bool(updated)

        wait_for(offered_more, "the percentage to apply")
        for host in updated:
            report(reg, host)
        for host in updated:
            report(reg, host, result="failed", reason="made up")
        assert fleet(reg)["reports"]["hosts"] == 1 + len(updated)
        time.sleep(max(0.0, opened + 11 - time.monotonic()))
        rounds_after_now(reg, "c")
        stage = status(reg)
        assert stage["halted"] is False, stage
        assert stage["failure_reports"] == len(updated)
