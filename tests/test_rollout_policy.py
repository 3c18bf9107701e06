"""Rollout policy (issue 21): canary gate, schedule, auto-pause, authorization, audit and
bad input, against a real `sysext serve`. Hosts here are plain HTTP clients fetching what
systemd-sysupdate fetches (their bucket's SHA256SUMS and the image it lists);
tests/test_rollout_sysupdate.py runs the real client."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from registry.http.headers import CONTENT_SECURITY_POLICY
from registry.http.nginx_conf import server_block
from sysext.core.durations import parse_duration
from sysext.core.errors import SysextError
from sysext.core.rollout import app_specific_id, host_bucket
from tests.registry_server import (
    RegistryServer,
    build_image,
    listing,
    running_nginx,
    running_registry,
)
from tests.servers import CliResult, run_cli
from tests.test_web_catalogue import (
    CONTRAST_JS,
    SCREENSHOTS,
    WIDTHS,
    Page,
    axe_violations,
    browser,
    layout_problems,
    page_factory,
)

NAME = "hello"
__all__ = ["browser", "page_factory"]  # fixtures of the catalogue tests, used below


@contextlib.contextmanager
def hello_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry with hello 1.0 released and 1.1 staged at 0 % before it was published."""
    env = {"SYSEXT_WORKERS": "1", "SYSEXT_FLEET_FLUSH": "0", "SYSEXT_ROLLOUT_TICK": "1"}
    with running_registry(tmp_path / "data", env=env) as reg:
        images = tmp_path / "images"
        images.mkdir()
        for version in ("1.0", "1.1"):
            if version == "1.1":
                cli(reg, "rollout", "set", NAME, "1.1", "--percent", "0")
            assert cli(reg, "publish", str(build_image(images, NAME, version))).returncode == 0
        yield reg


@pytest.fixture
def registry(tmp_path: Path, registry_database: str) -> Iterator[RegistryServer]:
    with hello_registry(tmp_path) as reg:
        yield reg


@pytest.fixture(scope="module")
def unchanged(
    tmp_path_factory: pytest.TempPathFactory, registry_database: str
) -> Iterator[RegistryServer]:
    """One registry for the requests that must change nothing."""
    with hello_registry(tmp_path_factory.mktemp("unchanged")) as reg:
        yield reg


def cli(reg: RegistryServer, *args: str, token: str | None = None) -> CliResult:
    return run_cli(*args, "--registry", reg.url, env={"SYSEXT_TOKEN": token or reg.admin_token})


def host_ids(count: int) -> list[str]:
    return [app_specific_id(f"{n + 1:032x}") for n in range(count)]


def fetch(reg: RegistryServer, host: str) -> str | None:
    """What a host's sysupdate does: read its bucket's manifest, fetch the newest image."""
    base = f"{reg.url}/rollouts/stable/{NAME}/{host_bucket(host):02d}/{host}"
    manifest = requests.get(f"{base}/SHA256SUMS", timeout=10)
    assert manifest.status_code == 200
    # The newest image it lists (a BEST-BEFORE marker line comes after the images).
    newest = listing(manifest.content)[-1].filename
    assert requests.get(f"{base}/{newest}", timeout=10).status_code == 200
    return newest.removeprefix(f"{NAME}-").removesuffix("-x86-64.raw")


def status(reg: RegistryServer) -> dict[str, object]:
    info = requests.get(f"{reg.url}/api/v1/extensions/{NAME}/rollouts", timeout=10).json()
    rollouts = {r["version"]: r for r in info["rollouts"]}
    return rollouts["1.1"]  # type: ignore[no-any-return]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def audit_actions(reg: RegistryServer) -> list[str]:
    entries = requests.get(
        f"{reg.url}/api/v1/audit", headers=reg.headers(), params={"limit": 100}, timeout=10
    ).json()
    return [e["action"] for e in entries]


def test_canary_gate_then_schedule_advances_once(registry: RegistryServer) -> None:
    reg = registry
    hosts = host_ids(60)
    for host in hosts:  # the fleet as the registry knows it before the rollout
        assert fetch(reg, host) == "1.0"
    result = cli(
        reg, "rollout", "set", NAME, "1.1", "--canary", "2", "--steps", "10,50,100",
        "--every", "2s",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "canary: waiting for 2 host(s)" in result.stdout
    canary = set(status(reg)["canary_buckets"])  # type: ignore[arg-type]
    # Only hosts of the canary buckets are offered 1.1; the schedule waits for them.
    offered = [h for h in hosts if fetch(reg, h) == "1.1"]
    manifests = [
        requests.get(f"{reg.url}/rollouts/stable/{NAME}/{b:02d}/SHA256SUMS", timeout=10).text
        for b in sorted(canary)
    ]
    assert offered, (canary, sorted(host_bucket(h) for h in hosts), manifests, status(reg))
    assert {host_bucket(h) for h in offered} <= canary
    assert len(offered) >= 2
    # Once they fetched it (above), the gate opens and the schedule runs: 10, 50, 100 %.
    wait_for(lambda: status(reg)["percent"] == 100, "the schedule to reach 100 %")
    assert status(reg)["stage"] == "complete"
    actions = audit_actions(reg)
    assert actions.count("rollout.canary-passed") == 1
    assert actions.count("rollout.advance") == 2  # 10 was the first step: 50, then 100
    # The status is the database's; the tree follows right after the commit.
    wait_for(lambda: all(fetch(reg, h) == "1.1" for h in hosts), "every host to get 1.1")
    assert "1.1" in requests.get(f"{reg.url}/extensions/{NAME}/SHA256SUMS", timeout=10).text
    # The page: the stage and the adoption chart (server-rendered SVG, one line per version).
    wait_for(
        lambda: bool(
            requests.get(f"{reg.url}/api/v1/extensions/{NAME}/fleet", timeout=10).json()["history"]
        ),
        "a fleet sample",
    )
    page = requests.get(f"{reg.url}/catalog/{NAME}", timeout=10).text
    assert "Rollout and fleet" in page and "complete" in page
    assert '<svg class="adoption"' in page and "<title>1.1: 60 host(s)" in page
    assert "60 managed host(s) seen" in page


def test_rollout_section_passes_the_accessibility_audit(
    registry: RegistryServer, page_factory: Callable[..., Page]
) -> None:
    """The page's rollout table and chart under axe-core's WCAG 2.1 A/AA rules, at the
    catalogue's desktop and phone widths (tests/test_web_catalogue.py)."""
    reg = registry
    hosts = host_ids(30)
    for host in hosts:
        fetch(reg, host)
    assert cli(reg, "rollout", "set", NAME, "1.1", "--percent", "40").returncode == 0
    assert cli(reg, "rollout", "set", NAME, "1.1", "--group", "canary", "--percent", "100")
    for host in hosts:
        fetch(reg, host)
    for width in WIDTHS:
        page = page_factory(width)
        assert page.goto(f"{reg.url}/catalog/{NAME}") == 200
        assert page.page.locator("svg.adoption").count() == 1
        assert page.page.locator("form.rollout-admin").is_visible()  # audited with the rest
        page.page.click("#rollout-more summary")  # and its folded fields, unfolded
        assert page.page.locator("#rollout-window").is_visible()
        assert axe_violations(page) == []
        assert page.page.evaluate(CONTRAST_JS) == []  # text and control borders, WCAG AA
        assert layout_problems(page) == []  # no sideways scrolling at phone width either
        SCREENSHOTS.mkdir(exist_ok=True)
        page.page.locator("section[aria-labelledby=rollout]").screenshot(
            path=str(SCREENSHOTS / f"rollout-{width}.png")
        )


def test_rollout_without_fetches_pauses_itself(registry: RegistryServer) -> None:
    reg = registry
    result = cli(reg, "rollout", "set", NAME, "1.1", "--percent", "50", "--window", "2s")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: bool(status(reg)["halted"]), "the auto-pause")
    reason = str(status(reg)["halted_reason"])
    assert reason.startswith("auto-paused: no host fetched 1.1 within 2s")
    assert "rollout.auto-paused" in audit_actions(reg)

    # Halted: no bucket lists 1.1 any more (the tree follows right after the commit).
    def listed() -> int:
        return sum(
            "hello-1.1" in requests.get(f"{reg.url}/rollouts/stable/{NAME}/{b:02d}/SHA256SUMS").text
            for b in range(100)
        )

    wait_for(lambda: listed() == 0, "no bucket to list 1.1")
    shown = run_cli("rollout", "status", NAME, "--registry", reg.url)
    assert "auto-paused" in shown.stdout


def test_rollout_writes_need_a_token_in_scope_and_are_audited(registry: RegistryServer) -> None:
    reg = registry
    created = requests.post(
        f"{reg.url}/api/v1/tokens",
        headers=reg.headers(),
        json={"scopes": ["other"], "description": "ci"},
        timeout=10,
    ).json()
    outsider = cli(reg, "rollout", "set", NAME, "1.1", "--percent", "10", token=created["token"])
    assert outsider.returncode != 0 and "403" in outsider.stderr
    anonymous = requests.post(f"{reg.url}/api/v1/extensions/{NAME}/rollouts/1.1/halt", timeout=10)
    assert anonymous.status_code == 401
    assert cli(reg, "rollout", "set", NAME, "1.1", "--percent", "10").returncode == 0
    assert cli(reg, "rollout", "halt", NAME, "1.1").returncode == 0
    assert cli(reg, "rollout", "resume", NAME, "1.1").returncode == 0
    actions = audit_actions(reg)
    assert {"rollout.set", "rollout.halt", "rollout.resume"} <= set(actions)
    # The provisioning API makes managed hosts too (as `sysext butane --group canary`).
    butane = requests.get(
        f"{reg.url}/api/v1/extensions/{NAME}/butane", params={"group": "canary"}, timeout=30
    )
    assert butane.status_code == 200
    assert f"rollouts/stable/{NAME}/groups/canary/@BUCKET@/@HOST_ID@" in butane.text
    bad = requests.get(
        f"{reg.url}/api/v1/extensions/{NAME}/butane", params={"group": "Bad!"}, timeout=30
    )
    assert bad.status_code == 400 and "invalid group" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", NAME, "1.1", "--percent", "101"], "between 0 and 100"),
        (["set", NAME, "1.1", "--steps", "10,5", "--every", "1h"], "increasing"),
        (["set", NAME, "1.1", "--steps", "1,10"], "interval"),
        (["set", NAME, "1.1", "--steps", "x"], "invalid --steps"),
        (["set", NAME, "1.1", "--every", "soon", "--steps", "1"], "--every"),
        (["set", NAME, "1.1", "--percent", "5", "--group", "Bad!"], "invalid group"),
        (["set", NAME, "1.1"], "nothing to set"),
        (["set", NAME, "1.1", "--percent", "5", "--canary-activated"], "needs a canary"),
        (["set", NAME, "bad/version", "--percent", "5"], "404"),
        (["halt", NAME, "9.9"], "has no rollout"),
        (["set", NAME, "1.1", "--percent", "10", "--channel", "nope"], "channel"),
    ],
)
def test_bad_rollout_requests_are_one_line_errors(
    unchanged: RegistryServer, args: list[str], message: str
) -> None:
    registry = unchanged
    result = cli(registry, "rollout", *args)
    assert result.returncode != 0
    assert message in result.stderr
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith("error:") and all(line.startswith("hint:") for line in rest)
    assert status(registry)["percent"] == 0  # nothing changed


def test_lowering_is_refused(registry: RegistryServer) -> None:
    assert cli(registry, "rollout", "set", NAME, "1.1", "--percent", "30").returncode == 0
    lowered = cli(registry, "rollout", "set", NAME, "1.1", "--percent", "20")
    assert lowered.returncode != 0 and "use `sysext rollout halt`" in lowered.stderr
    assert "only moves forward" in lowered.stderr
    assert status(registry)["percent"] == 30


def test_the_catalogue_never_calls_a_version_mid_rollout_the_channels_newest(
    registry: RegistryServer,
) -> None:
    """1.1 at 0 % (the fixture): the channel's manifest lists 1.0 only, so the API's
    latest_version, the home page and the instructions' image say 1.0, and 1.1 is shown
    apart with its stage; at 100 % it becomes the newest."""
    reg = registry

    def summary() -> dict[str, object]:
        found = requests.get(f"{reg.url}/api/v1/extensions", timeout=10).json()
        return next(e for e in found if e["name"] == NAME)

    assert "1.1" not in requests.get(f"{reg.url}/extensions/{NAME}/SHA256SUMS", timeout=10).text
    assert summary()["latest_version"] == "1.0"
    assert summary()["rolling_out"] == {"stable": ["1.1"]}
    home = requests.get(f"{reg.url}/", timeout=10).text
    assert (
        '<span class="badge">stable</span> 1.0 <span class="rolling">(1.1 rolling out at 0%)'
        in home
    )
    page = requests.get(f"{reg.url}/catalog/{NAME}", timeout=10).text
    assert "As the image of version 1.0 (" in page
    assert '1.1</a> <span class="badge">rolling out at 0%</span>' in page
    assert cli(reg, "rollout", "halt", NAME, "1.1").returncode == 0
    page = requests.get(f"{reg.url}/catalog/{NAME}", timeout=10).text
    assert '1.1</a> <span class="badge">halted: halted by an operator</span>' in page

    assert cli(reg, "rollout", "resume", NAME, "1.1", "--percent", "100").returncode == 0
    assert (summary()["latest_version"], summary()["rolling_out"]) == ("1.1", {})
    home = requests.get(f"{reg.url}/", timeout=10).text
    assert '<span class="badge">stable</span> 1.1</span>' in home
    page = requests.get(f"{reg.url}/catalog/{NAME}", timeout=10).text
    assert "As the image of version 1.1 (" in page


# The admin form on the extension page (issue 21: "on the extension page for admins"): the
# page's script calls the same API as the CLI with the pasted token as a bearer header.


# Every CSP violation in the page, in the order they happen (the listener is added before
# the page's own script runs, as an init script Chromium runs outside the policy).
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(
  `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}`));
"""


def csp_violations(page: Page) -> list[str]:
    return list(page.page.evaluate("window.__cspViolations"))


def open_extension_page(reg: RegistryServer, page_factory: Callable[..., Page]) -> Page:
    """The extension page under the registry's own Content-Security-Policy (headers.py)."""
    page = page_factory(1280)
    page.context.add_init_script(CSP_LISTENER)
    assert page.goto(f"{reg.url}/catalog/{NAME}") == 200
    assert page.page.locator("form.rollout-admin").is_visible()
    return page


def submit_rollout(
    page: Page,
    token: str,
    action: str,
    *,
    percent: str = "",
    version: str = "1.1",
    channel: str = "stable",
) -> str:
    """Fill the form as an admin would, submit it, return what the live region says."""
    form = page.page
    form.fill("#rollout-token", token)
    form.select_option("#rollout-action", action)
    form.fill("#rollout-version", version)
    form.select_option("#rollout-channel", channel)
    if action != "halt":
        form.fill("#rollout-percent", percent)
    form.click("form.rollout-admin button[type=submit]")
    form.wait_for_function(
        "() => { const t = document.getElementById('rollout-answer').textContent;"
        " return t !== '' && t !== 'Sending…'; }"
    )
    return str(form.inner_text("#rollout-answer"))


def stage_shown(page: Page) -> str:
    return str(page.page.inner_text("#rollout-state table.rollouts tbody"))


def test_an_admin_sets_halts_and_resumes_a_rollout_from_the_page(
    registry: RegistryServer, page_factory: Callable[..., Page]
) -> None:
    reg = registry
    page = open_extension_page(reg, page_factory)
    assert "0%" in stage_shown(page)
    said = submit_rollout(page, reg.admin_token, "set", percent="10")
    assert said == "Done: 1.1 (stable) is now rolling out at 10%; 10% of hosts."
    assert status(reg)["percent"] == 10  # the API reports what the page did
    assert "rolling out at 10%" in stage_shown(page)  # and the table was refreshed
    entries = requests.get(
        f"{reg.url}/api/v1/audit", headers=reg.headers(), params={"action": "rollout.set"}
    ).json()
    assert [(e["target"], e["principal"]) for e in entries] == [
        (f"{NAME} 1.1", "admin"),  # this one; the fixture staged 1.1 by the CLI, before
        (f"{NAME} 1.1", "admin"),
    ]
    assert entries[0]["detail"]["after"]["percent"] == 10
    # The API's refusals come back as their one-line detail.
    lowered = submit_rollout(page, reg.admin_token, "set", percent="5")
    assert lowered.startswith("Refused (409): hello 1.1 is at 10% already")
    assert status(reg)["percent"] == 10
    assert submit_rollout(page, reg.admin_token, "halt").startswith(
        "Done: 1.1 (stable) is now halted: halted by an operator"
    )
    assert status(reg)["halted"] is True
    assert "halted" in stage_shown(page)
    said = submit_rollout(page, reg.admin_token, "resume", percent="50")
    assert said == "Done: 1.1 (stable) is now rolling out at 50%; 50% of hosts."
    assert (status(reg)["halted"], status(reg)["percent"]) == (False, 50)
    assert "rolling out at 50%" in stage_shown(page)
    actions = audit_actions(reg)
    assert actions.count("rollout.halt") == 1 and actions.count("rollout.resume") == 1
    # The token went nowhere but the API's headers: no cookie, no web storage.
    stored = page.page.evaluate(
        "() => [document.cookie, localStorage.length, sessionStorage.length]"
    )
    assert stored == ["", 0, 0]
    assert page.context.cookies() == []
    # Chromium logs every non-2xx fetch and every CSP violation; the 409 asked for above
    # is the only error.
    assert page.errors == [
        "Failed to load resource: the server responded with a status of 409 (Conflict)"
    ]
    assert page.foreign == []
    assert axe_violations(page) == []  # with an answer in the live region
    assert csp_violations(page) == []  # the form works within the registry's own policy
    # The policy was in force all along: an inline script does not run under it, and the
    # refusal is seen by the listener (so an empty list above means something).
    inline_ran = page.page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.inlineRan = true'; document.body.append(s);"
        " return window.inlineRan === true; }"
    )
    assert inline_ran is False
    page.page.wait_for_function("() => window.__cspViolations.length > 0")
    assert csp_violations(page)[0].startswith("script-src-elem blocked inline")


def test_the_page_shows_the_apis_refusals_and_changes_nothing(
    unchanged: RegistryServer, page_factory: Callable[..., Page]
) -> None:
    reg = unchanged
    before = audit_actions(reg)
    page = open_extension_page(reg, page_factory)
    wrong = submit_rollout(page, "not-a-token", "set", percent="10")
    assert wrong == "Refused (401): invalid or revoked token"
    assert page.page.locator("#rollout-answer.failed").count() == 1
    # A token for this extension but only the beta channel: 403 for stable.
    beta_only = requests.post(
        f"{reg.url}/api/v1/tokens",
        headers=reg.headers(),
        json={"scopes": [NAME], "channels": ["beta"], "description": "beta ci"},
        timeout=10,
    ).json()["token"]
    other_channel = submit_rollout(page, beta_only, "set", percent="10")
    assert other_channel == "Refused (403): this token may rollout only in beta; not in stable"
    assert submit_rollout(page, beta_only, "halt").startswith("Refused (403): ")
    assert (status(reg)["percent"], status(reg)["halted"]) == (0, False)  # nothing changed
    after = audit_actions(reg)
    for action in ("rollout.set", "rollout.halt"):
        assert after.count(action) == before.count(action)
    assert after.count("write.denied") > before.count("write.denied")  # audited as such
    assert "at 0%" in stage_shown(page)


def test_without_javascript_the_rollout_form_stays_hidden(
    unchanged: RegistryServer, page_factory: Callable[..., Page]
) -> None:
    page = page_factory(390, javascript=False)
    assert page.goto(f"{unchanged.url}/catalog/{NAME}") == 200
    assert page.page.locator("form.rollout-admin").is_hidden()
    assert "sysext rollout set|halt|resume hello VERSION" in page.page.inner_text("#main")
    # Its fields have no name: even a submitted form could not carry the token anywhere.
    assert page.page.locator("form.rollout-admin [name]").count() == 0


def test_the_first_rollout_is_staged_from_the_page_before_publishing(
    tmp_path: Path, registry_database: str, page_factory: Callable[..., Page]
) -> None:
    """An extension without any rollout or managed host still has the section and its
    form: 1.2, not yet published, is staged at 0 % from the page and the table appears."""
    with running_registry(tmp_path / "data", env={"SYSEXT_FLEET_FLUSH": "0"}) as reg:
        built = build_image(tmp_path, NAME, "1.0")
        assert cli(reg, "publish", str(built)).returncode == 0
        page = open_extension_page(reg, page_factory)
        assert "No staged rollout" in page.page.inner_text("#rollout-state")
        assert page.page.locator("#rollout-state table.rollouts").count() == 0
        said = submit_rollout(page, reg.admin_token, "set", version="1.2", percent="0")
        assert said == "Done: 1.2 (stable) is now rolling out at 0%; 0% of hosts."
        assert "rolling out at 0%" in stage_shown(page)
        info = requests.get(f"{reg.url}/api/v1/extensions/{NAME}/rollouts", timeout=10).json()
        assert [(r["version"], r["percent"]) for r in info["rollouts"]] == [("1.2", 0)]
        assert page.errors == []


# --- the rest of `sysext rollout set` on the page, and the registry's own CSP ------------


def fill(page: Page, selector: str, text: str) -> None:
    """Type into a field from the keyboard, as an admin would (Tab got there before)."""
    page.page.fill(selector, "")
    page.page.type(selector, text)


def apply(page: Page) -> str:
    page.page.click("form.rollout-admin button[type=submit]")
    page.page.wait_for_function(
        "() => { const t = document.getElementById('rollout-answer').textContent;"
        " return t !== '' && t !== 'Sending…'; }"
    )
    answer = str(page.page.inner_text("#rollout-answer"))
    # Cleared, so the next wait sees the next answer and not this one.
    page.page.evaluate("document.getElementById('rollout-answer').textContent = ''")
    return answer


def test_group_canary_schedule_and_window_from_the_page(
    registry: RegistryServer, page_factory: Callable[..., Page]
) -> None:
    """The folded part of the form, reached and opened from the keyboard: a group at
    100 %, then a schedule with a canary and a window, each exactly what the API reports;
    its refusals shown as the API words them, and nothing sent or changed by them."""
    reg = registry
    page = open_extension_page(reg, page_factory)
    keys = page.page.keyboard
    page.page.fill("#rollout-token", reg.admin_token)
    page.page.fill("#rollout-version", "1.1")
    page.page.focus("#rollout-percent")
    keys.type("100")
    assert page.page.locator("#rollout-group").is_hidden()  # folded away at first
    keys.press("Tab")
    assert page.page.evaluate("document.activeElement.tagName") == "SUMMARY"
    keys.press("Enter")
    assert page.page.locator("#rollout-more").get_attribute("open") is not None
    keys.press("Tab")
    assert page.page.evaluate("document.activeElement.id") == "rollout-group"
    keys.type("canary")
    said = apply(page)
    assert said == (
        "Done: 1.1 (stable) is now rolling out at 0%; 0% of hosts; groups: canary 100%."
    )
    assert (status(reg)["groups"], status(reg)["percent"]) == ({"canary": 100}, 0)
    # A schedule moves everybody's percentage: with the group still filled in, the API's
    # refusal, word for word.
    fill(page, "#rollout-percent", "")
    fill(page, "#rollout-steps", "1,10,50,100")
    fill(page, "#rollout-every", "1h")
    assert apply(page) == (
        "Refused (422): a schedule moves the percentage of all hosts, not a group"
    )
    fill(page, "#rollout-group", "")
    fill(page, "#rollout-canary", "3")
    fill(page, "#rollout-window", "2h")
    said = apply(page)
    info = status(reg)
    assert said == (
        "Done: 1.1 (stable) is now canary: waiting for 3 host(s) to fetch it; 1% of hosts; "
        f"groups: canary 100%; schedule 1,10,50,100 every 3600s, next at {info['next_step_at']}"
        "; canary 3 (waiting); auto-pause after 7200s without a fetch."
    )
    wanted = {
        "percent": 1,
        "groups": {"canary": 100},
        "steps": [1, 10, 50, 100],
        "every_seconds": 3600,
        "canary": 3,
        "canary_done": False,
        "window_seconds": 7200,
        "halted": False,
    }
    assert {key: info[key] for key in wanted} == wanted
    shown = stage_shown(page)  # the refreshed table says the same, in the page's words
    assert "schedule 1,10,50,100 every 1h" in shown and "canary 3" in shown
    assert "auto-pause after 2h without a fetch" in shown
    # The same through the CLI's status: the page and the CLI drive one API.
    printed = cli(reg, "rollout", "status", NAME).stdout
    assert "schedule 1,10,50,100 every 3600s" in printed and "canary 3 (waiting)" in printed
    before = audit_actions(reg).count("rollout.set")
    # Bad steps: refused by the API in its own words, with nothing changed.
    fill(page, "#rollout-steps", "50,10")
    assert apply(page) == (
        "Refused (422): steps must be increasing percentages between 1 and 100, e.g. 1,10,50,100"
    )
    fill(page, "#rollout-steps", "1,ten")
    assert apply(page) == (
        "Refused (422): steps.1: Input should be a valid integer, unable to parse string "
        "as an integer"
    )
    fill(page, "#rollout-steps", "1,10,50,100")
    fill(page, "#rollout-canary", "-1")
    assert apply(page) == "Refused (422): canary -1 must be between 0 and 10000 hosts"
    fill(page, "#rollout-canary", "3")
    # A duration the CLI's grammar refuses is refused before sending, in the CLI's words.
    fill(page, "#rollout-every", "1 hour")
    assert apply(page) == (
        "Not sent: invalid every '1 hour': write a number and a unit: 90s, 30m, 12h, 7d or "
        "2w (units may be combined: 1d12h)"
    )
    assert page.page.locator("#rollout-answer.failed").count() == 1
    assert status(reg) == info and audit_actions(reg).count("rollout.set") == before
    # Halt and resume take none of these: the folded part is hidden for them.
    page.page.select_option("#rollout-action", "halt")
    assert page.page.locator("#rollout-more").is_hidden()
    refused = "Failed to load resource: the server responded with a status of 422"
    assert page.errors == [f"{refused} (Unprocessable Entity)"] * 4  # one per refusal above
    assert csp_violations(page) == [] and page.foreign == []


def test_canary_activated_from_the_page(
    registry: RegistryServer, page_factory: Callable[..., Page]
) -> None:
    """The folded part's checkbox sends `canary_activated` (`--canary-activated`); ticked
    without a canary, the API's refusal is shown and nothing changes."""
    reg = registry
    page = open_extension_page(reg, page_factory)
    page.page.fill("#rollout-token", reg.admin_token)
    page.page.fill("#rollout-version", "1.1")
    page.page.click("#rollout-more summary")
    page.page.check("#rollout-canary-activated")
    before = audit_actions(reg).count("rollout.set")
    assert apply(page) == (
        "Refused (422): canary_activated needs a canary: give the number of canary hosts "
        "(--canary N) with it"
    )
    assert status(reg)["canary_activated"] is False
    assert audit_actions(reg).count("rollout.set") == before
    fill(page, "#rollout-canary", "2")
    fill(page, "#rollout-percent", "10")
    fill(page, "#rollout-window", "2h")
    assert apply(page) == (
        "Done: 1.1 (stable) is now canary: waiting for 2 host(s) to fetch and activate it; "
        "10% of hosts; canary 2 (waiting; gate: fetched and reported activated); canary "
        "hosts so far: 0 fetched, 0 of them reported activated; auto-pause after 7200s "
        "without a fetch and an activation report."
    )
    info = status(reg)
    assert (info["canary"], info["canary_activated"], info["percent"]) == (2, True, 10)
    shown = stage_shown(page)
    assert "canary 2 (fetched and reported activated: 0 fetched, 0 of them activated)" in shown
    assert "auto-pause after 2h without a fetch and an activation report" in shown
    printed = cli(reg, "rollout", "status", NAME).stdout
    assert "canary 2 (waiting; gate: fetched and reported activated)" in printed
    refused = "Failed to load resource: the server responded with a status of 422"
    assert page.errors == [f"{refused} (Unprocessable Entity)"]
    assert csp_violations(page) == [] and page.foreign == []


# Durations as `--every`/`--window` take them; the page converts them with its own copy of
# the grammar (the API takes seconds), so both must agree on each.
DURATIONS = ["1h", "90s", "30m", "1d12h", "2w", " 1H ", "1 h", "0s", "1h0m", "h", "1", "1x", "1.5h"]


def test_the_pages_durations_are_the_clis(
    unchanged: RegistryServer, page_factory: Callable[..., Page]
) -> None:
    page = open_extension_page(unchanged, page_factory)
    for text in DURATIONS:
        try:
            expected: object = int(parse_duration(text, what="every").total_seconds())
        except SysextError as exc:
            expected = exc.message.split(":")[0]  # "invalid every '…'" (the CLI's repr)
        got = page.page.evaluate(
            "t => { try { return durationSeconds(t.trim(), 'every'); }"
            " catch (e) { return e.message.split(':')[0]; } }",
            text,
        )
        if isinstance(expected, str):
            # The page names the field's trimmed text; the CLI the text as given.
            assert got == f"invalid every '{text.strip()}'", text
        else:
            assert got == expected, text


def test_every_page_has_the_registrys_csp_and_works_under_it(
    unchanged: RegistryServer, page_factory: Callable[..., Page]
) -> None:
    """The registry's own policy on each HTML page (home, search, extension page, the HTML
    404s, the API docs) and Chromium's view of it: nothing blocked. JSON answers carry
    `nosniff` but no policy; the files hosts fetch are sent exactly as before."""
    reg = unchanged
    html_accept = {"Accept": "text/html"}
    pages = ["/", "/?q=hel", f"/catalog/{NAME}", "/catalog/nothing", "/no/such/page", "/api/docs"]
    for path in pages:
        answer = requests.get(f"{reg.url}{path}", headers=html_accept, timeout=10)
        assert answer.headers["content-type"].startswith("text/html"), path
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "no-referrer", path
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"  # no inline style either
    for name, value in (
        ("frame-ancestors", "'none'"),
        ("form-action", "'self'"),
        ("base-uri", "'none'"),
        ("object-src", "'none'"),
    ):
        assert directives[name] == value, name
    api = requests.get(f"{reg.url}/api/v1/extensions/{NAME}/rollouts", timeout=10)
    assert api.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in api.headers
    script = requests.get(f"{reg.url}/static/catalogue.js", timeout=10)
    assert "content-security-policy" not in script.headers
    # The public tree is answered in front of the app: its responses are unchanged.
    for path in (f"extensions/{NAME}/SHA256SUMS", "keyring.gpg"):
        answer = requests.get(f"{reg.url}/{path}", timeout=10)
        assert answer.content == (reg.data / "public" / path).read_bytes()
        assert not {"content-security-policy", "x-content-type-options"} & {
            k.lower() for k in answer.headers
        }
    # In the browser: every page renders and runs its script with nothing blocked.
    page = page_factory(390)
    page.context.add_init_script(CSP_LISTENER)
    for path in pages:
        page.goto(f"{reg.url}{path}")
        if path == "/api/docs":  # Swagger UI, started by a file, renders the operations
            page.page.wait_for_selector(".opblock", timeout=30_000)
            page.page.locator(".opblock-summary").first.click()
            page.page.wait_for_selector(".opblock-body")
        if path == f"/catalog/{NAME}":
            assert page.page.locator("form.rollout-admin").is_visible()  # the script ran
            assert page.page.locator("button.copy").first.is_visible()
        assert csp_violations(page) == [], path
    assert (
        page.errors
        == ["Failed to load resource: the server responded with a status of 404 (Not Found)"] * 2
    )  # the two 404 pages, as asked
    assert page.foreign == []


@pytest.mark.root(reason="the test nginx config runs as root")
def test_the_shipped_nginx_block_passes_the_pages_headers_on(
    unchanged: RegistryServer, tmp_path: Path
) -> None:
    """nginx adds no CSP of its own and hides none of the registry's on proxied pages; the
    files it serves itself are as before."""
    reg = unchanged
    block = lambda listen: server_block(reg.data / "public", listen, reg.url)  # noqa: E731
    with running_nginx(tmp_path / "nginx", block) as url:
        for path in ("/", f"/catalog/{NAME}", "/api/docs"):
            answer = requests.get(f"{url}{path}", timeout=10)
            assert answer.status_code == 200, path
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["referrer-policy"] == "no-referrer", path
        served = requests.get(f"{url}/extensions/{NAME}/SHA256SUMS", timeout=10)
        assert (
            served.content
            == (reg.data / "public" / "extensions" / NAME / "SHA256SUMS").read_bytes()
        )
        assert "content-security-policy" not in served.headers
