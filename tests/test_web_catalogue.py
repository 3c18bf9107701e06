"""The web catalogue in a real browser (issue 9): Debian's Chromium driven by Playwright.

One real registry per module, populated like the registry the issue was tried on
(tests/catalogue_images.py: 9 extensions, stable and beta, x86-64 and arm64, yanks, a
beta-only, a fully yanked and an OS-bound extension, stored fields holding HTML). The tests
click through it at 1280 and 390 px: every link answers 200, copy buttons copy the exact
text, no console errors, nothing scrolls sideways, the pages work without JavaScript, and
every snippet equals what `sysext butane` and the API print and passes ignition-validate.
Full-page screenshots of the home page and an extension page land in screenshots/.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import axe_playwright_python
import pytest
import requests

from tests.catalogue_images import CATALOGUE, HTML_DESCRIPTION, OS_VERSIONS, populate
from tests.registry_server import RegistryServer, running_registry
from tests.servers import ROOT, run_cli

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium, never a browser Playwright downloads; no network beyond 127.0.0.1.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDTHS = (1280, 390)
SCREENSHOTS = ROOT / "screenshots"
NAMES = sorted({entry[0] for entry in CATALOGUE})


EMPTY_HOME: dict[str, str] = {}  # the home page before anything was published


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    work = tmp_path_factory.mktemp("catalogue")
    with running_registry(work / "data") as server:
        EMPTY_HOME["text"] = requests.get(f"{server.url}/", timeout=10).text
        populate(server.url, server.admin_token, work / "images")
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/setup.sh --test` (Debian chromium)")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A Playwright page that records console errors, failed requests and foreign hosts."""

    def __init__(self, browser: object, width: int, *, javascript: bool = True) -> None:
        self.context = browser.new_context(  # type: ignore[attr-defined]
            viewport={"width": width, "height": 900}, java_script_enabled=javascript
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._request)

    def _request(self, request: object) -> None:
        url = request.url  # type: ignore[attr-defined]
        host = urllib.parse.urlsplit(url).hostname
        if host not in ("127.0.0.1", None) and not url.startswith("data:"):
            self.foreign.append(url)

    def goto(self, url: str) -> int:
        response = self.page.goto(url)
        self.page.wait_for_load_state("load")
        return int(response.status) if response else 0

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page_factory(browser: object) -> Iterator[object]:
    pages: list[Page] = []

    def make(width: int = 1280, *, javascript: bool = True) -> Page:
        page = Page(browser, width, javascript=javascript)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()


def snippet(page_html: str, name: str) -> str:
    """The text of <pre id="snippet-NAME"> as a reader sees it (entities decoded)."""
    match = re.search(
        rf'<pre[^>]* id="snippet-{name}"[^>]*><code>(.*?)</code></pre>', page_html, re.S
    )
    assert match, f"no {name} snippet on the page"
    return html.unescape(match.group(1))


def layout_problems(page: Page) -> list[str]:
    """Horizontal scroll, missing/extra <h1>."""
    problems = []
    widths = page.page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    if widths[0] > widths[1]:
        problems.append(f"scrolls sideways: {widths[0]} > {widths[1]} px")
    h1 = page.page.locator("h1").count()
    if h1 != 1:
        problems.append(f"{h1} <h1> elements")
    return problems


# WCAG AA contrast of every visible text and control border, computed in the page.
CONTRAST_JS = "\n".join(
    line
    for line in (ROOT / "tests" / "data" / "wcag_contrast.js").read_text().splitlines()
    if not line.startswith("//")
)


def same_origin_links(page: Page, base: str) -> set[str]:
    hrefs = page.page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    out = set()
    for href in hrefs:
        url = href.split("#", 1)[0]
        if url.startswith(base):
            out.add(url)
    return out


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_and_link_at_desktop_and_phone_width(
    registry: RegistryServer, page_factory: object, width: int
) -> None:
    page = page_factory(width)  # type: ignore[operator]
    pages = [f"{registry.url}/", *(f"{registry.url}/catalog/{n}" for n in NAMES)]
    pages.append(f"{registry.url}/catalog/nvidia?os_version={OS_VERSIONS[1]}")
    links: set[str] = set()
    for url in pages:
        assert page.goto(url) == 200, url
        assert layout_problems(page) == [], url
        assert page.page.evaluate(CONTRAST_JS) == [], url
        links |= same_origin_links(page, registry.url)
        # With JavaScript every copy button is shown (they are hidden without it).
        buttons = page.page.locator("button.copy")
        for index in range(buttons.count()):
            assert buttons.nth(index).is_visible(), url
    assert page.errors == [] and page.foreign == []
    # The screenshots the README points to.
    SCREENSHOTS.mkdir(exist_ok=True)
    kind = "desktop" if width > 800 else "phone"
    for name, url in (("home", "/"), ("extension-podman", "/catalog/podman")):
        page.goto(registry.url + url)
        page.page.screenshot(path=str(SCREENSHOTS / f"{name}-{kind}.png"), full_page=True)
    html_pages = {u for u in links if "/catalog/" in u or u.rstrip("/") == registry.url}
    for url in sorted(links - html_pages):
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, url
    for url in sorted(html_pages):
        assert page.goto(url) == 200, url
        assert layout_problems(page) == [], url
    assert page.errors == []
    # Every page links the signing key and names its fingerprint.
    fingerprint = requests.get(f"{registry.url}/api/v1/status", timeout=10).json()["fingerprint"]
    for url in pages:
        text = requests.get(url, timeout=10).text
        assert fingerprint in text and 'href="/keyring.gpg"' in text, url


# axe-core (the engine behind most accessibility audits), as shipped inside the
# axe-playwright-python wheel: injected into the page, nothing fetched.
AXE_JS = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()
WCAG_21_A_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_violations(page: Page) -> list[str]:
    page.page.evaluate(AXE_JS)
    result = page.page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_21_A_AA
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — "
        + ", ".join(str(n["target"]) for n in v["nodes"][:3])
        for v in result["violations"]
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_passes_an_accessibility_audit(
    registry: RegistryServer, page_factory: object, width: int
) -> None:
    """WCAG 2.1 A/AA rules of axe-core on the home page, every extension page and an
    OS-bound one, at desktop and phone width: no violation of any impact."""
    page = page_factory(width)  # type: ignore[operator]
    pages = [f"{registry.url}/", *(f"{registry.url}/catalog/{n}" for n in NAMES)]
    pages.append(f"{registry.url}/catalog/nvidia?os_version={OS_VERSIONS[1]}")
    found = {}
    for url in pages:
        assert page.goto(url) == 200, url
        violations = axe_violations(page)
        if violations:
            found[url.removeprefix(registry.url)] = violations
    assert found == {}


def test_copy_buttons_copy_exactly_what_is_shown(
    registry: RegistryServer, page_factory: object
) -> None:
    page = page_factory(390)  # type: ignore[operator]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    for url in (f"{registry.url}/catalog/podman?channel=beta", f"{registry.url}/catalog/crio"):
        assert page.goto(url) == 200
        buttons = page.page.locator("button.copy")
        assert buttons.count() >= 6
        for index in range(buttons.count()):
            button = buttons.nth(index)
            target = button.get_attribute("data-copy")
            expected = page.page.locator(f"#{target}").text_content()
            button.click()
            copied = page.page.evaluate("navigator.clipboard.readText()")
            assert copied == expected, target
            if target == "snippet-butane":
                api = requests.get(
                    f"{registry.url}/api/v1/extensions/{url.split('/')[-1].split('?')[0]}/butane",
                    params={"channel": "beta"} if "beta" in url else {},
                    timeout=30,
                )
                assert copied == api.text
    assert page.errors == []


CLI_CHECKED = {
    ("podman", "stable", "x86-64", "flatcar"),
    ("podman", "beta", "x86-64", "fcos"),
    ("crio", "stable", "arm64", "fcos"),
}


def _choices() -> list[tuple[str, str, str, str]]:
    """Every installable (name, channel, arch) with both variants, as the page offers them."""
    combos = []
    for name in NAMES:
        if name in ("oldtool", "nvidia"):
            continue
        for channel in ("stable", "beta"):
            for arch in ("x86-64", "arm64"):
                for variant in ("flatcar", "fcos"):
                    combos.append((name, channel, arch, variant))
    return combos


def test_snippets_equal_the_api_and_the_cli_and_validate(
    registry: RegistryServer, tmp_path: Path
) -> None:
    seen = 0
    cli_checked = 0
    for name, channel, arch, variant in _choices():
        query = {"channel": channel, "arch": arch, "variant": variant}
        page = requests.get(f"{registry.url}/catalog/{name}", params=query, timeout=30)
        assert page.status_code == 200
        if f"<strong>{channel}</strong>, <strong>{arch}</strong>" not in page.text:
            continue  # not installable: the page picked something else and said so
        seen += 1
        butane = snippet(page.text, "butane")
        ignition = snippet(page.text, "ignition")
        api = f"{registry.url}/api/v1/extensions/{name}"
        from_api = requests.get(f"{api}/butane", params=query, timeout=30)
        assert butane == from_api.text
        assert from_api.headers["content-disposition"] == f'inline; filename="{name}.bu"'
        assert ignition == requests.get(f"{api}/ignition", params=query, timeout=30).text
        assert f"channel {channel})" in butane and f"-{arch}.raw" in butane
        config = tmp_path / f"{name}-{channel}-{arch}-{variant}.ign"
        config.write_text(ignition)
        validated = subprocess.run(
            ["ignition-validate", str(config)], capture_output=True, text=True, check=False
        )
        assert validated.returncode == 0 and validated.stdout + validated.stderr == "", (
            validated.stdout + validated.stderr
        )
        if (name, channel, arch, variant) in CLI_CHECKED:
            command = snippet(page.text, "cli").split()
            assert command[:2] == ["sysext", "butane"]
            from_cli = run_cli(*command[1:])
            assert from_cli.returncode == 0, from_cli.stderr
            assert from_cli.stdout == butane
            ignition_cli = run_cli(*command[1:], "--ignition")
            assert ignition_cli.stdout == ignition
            cli_checked += 1
    # podman stable ×2 arches, podman beta x86-64, crio 3, tailscale x86-64, wasmtime beta,
    # htmltest, docker-compose, shellcheck: each for Flatcar and Fedora CoreOS.
    assert seen == 2 * 11
    assert cli_checked == len(CLI_CHECKED)


def test_the_page_offers_only_what_is_installable(registry: RegistryServer) -> None:
    def get(path: str, **params: str) -> str:
        response = requests.get(f"{registry.url}{path}", params=params, timeout=30)
        assert response.status_code == 200
        return response.text

    # Beta-only: instructions for beta, never a stable link that would 404.
    wasmtime = get("/catalog/wasmtime")
    assert "Instructions for <strong>beta</strong>" in wasmtime
    assert "channel=stable" not in wasmtime and '"/extensions/wasmtime' not in wasmtime
    # An arch whose only build is yanked is not offered; the yanked image stays listed.
    tailscale = get("/catalog/tailscale", arch="arm64")
    assert "Channel stable has no installable &#39;arm64&#39; image." in tailscale
    assert '<option value="arm64"' not in tailscale
    assert "tailscale-1.70.0-arm64.raw" in tailscale and "yanked</span>" in tailscale
    # Fully yanked: labelled, no instructions, versions still shown.
    oldtool = get("/catalog/oldtool")
    assert "all versions yanked" in oldtool and "snippet-butane" not in oldtool
    assert "/api/v1/extensions/oldtool/butane" not in oldtool
    assert "oldtool-1.0-x86-64.raw" in oldtool
    # Full hashes, one per image.
    podman = requests.get(f"{registry.url}/api/v1/extensions/podman", timeout=10).json()
    page = get("/catalog/podman")
    for image in podman["images"]:
        assert f">{image['sha256']}</code>" in page


def test_home_page_answers_what_can_i_install(registry: RegistryServer) -> None:
    text = requests.get(f"{registry.url}/", timeout=30).text
    cards = {
        m.group(1): m.group(0)
        for m in re.finditer(
            r'<li class="card">\s*<h2><a href="/catalog/([^"]+)">.*?</li>', text, re.S
        )
    }
    assert sorted(cards) == NAMES
    compact = {k: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", v)) for k, v in cards.items()}
    assert "stable 5.3.1 beta 5.4.0-rc1" in compact["podman"]
    assert "Architectures arm64, x86-64" in compact["podman"]
    assert "Architectures x86-64 " in compact["tailscale"]  # arm64's only build is yanked
    assert "beta 25.0.0" in compact["wasmtime"] and "stable" not in compact["wasmtime"]
    assert "all versions yanked" in compact["oldtool"]
    assert "Versions 2, built for 2 OS versions" in compact["nvidia"]
    # Search covers names and descriptions.
    found = requests.get(f"{registry.url}/", params={"q": "mesh vpn"}, timeout=10).text
    assert re.findall(r'href="/catalog/([^"]+)"', found) == ["tailscale"]
    found = requests.get(f"{registry.url}/", params={"q": "DAEMONLESS"}, timeout=10).text
    assert re.findall(r'href="/catalog/([^"]+)"', found) == ["podman"]


def test_empty_registry_teaches_publishing(registry: RegistryServer) -> None:
    text = EMPTY_HOME["text"]
    assert "Nothing is published yet" in text
    assert f"sysext publish out/*.raw --registry {registry.url}" in text
    assert "Nothing is published yet" not in requests.get(f"{registry.url}/", timeout=10).text


def test_without_javascript_the_choices_still_work(
    registry: RegistryServer, page_factory: object
) -> None:
    page = page_factory(390, javascript=False)  # type: ignore[operator]
    assert page.goto(f"{registry.url}/catalog/podman") == 200
    assert page.page.locator("button.copy").first.is_hidden()
    page.page.select_option("#channel", "beta")
    page.page.select_option("#variant", "fcos")
    page.page.click("text=Show instructions")
    page.page.wait_for_load_state("load")
    assert "channel=beta" in page.page.url and "variant=fcos" in page.page.url
    assert "Instructions for beta, x86-64, Fedora CoreOS." in page.page.inner_text("p.for")
    shown = page.page.locator("#snippet-butane").text_content()
    api = requests.get(
        f"{registry.url}/api/v1/extensions/podman/butane",
        params={"channel": "beta", "arch": "x86-64", "variant": "fcos"},
        timeout=30,
    )
    assert shown == api.text
    assert layout_problems(page) == []


def test_with_javascript_a_changed_choice_shows_new_instructions(
    registry: RegistryServer, page_factory: object
) -> None:
    page = page_factory(1280)  # type: ignore[operator]
    assert page.goto(f"{registry.url}/catalog/crio") == 200
    with page.page.expect_navigation():
        page.page.select_option("#arch", "arm64")
    assert "Instructions for stable, arm64, Flatcar." in page.page.inner_text("p.for")
    assert "crio-1.30.0-arm64.raw" in (page.page.locator("#snippet-butane").text_content() or "")
    assert page.errors == []


def test_stored_and_query_html_is_shown_as_text(
    registry: RegistryServer, page_factory: object
) -> None:
    page = page_factory(1280)  # type: ignore[operator]
    assert page.goto(f"{registry.url}/catalog/htmltest") == 200
    assert page.page.inner_text("p.lead") == HTML_DESCRIPTION
    assert page.page.evaluate("window.__pwned") is None
    assert page.page.locator("main b, main i, main script").count() == 0
    assert page.page.locator('a[href^="javascript:"]').count() == 0
    assert "javascript:window.__pwned=2" in page.page.inner_text("main")
    hostile = "<img src=x onerror=window.__pwned=9>"
    for url in (
        f"{registry.url}/?q={urllib.parse.quote(hostile)}",
        f"{registry.url}/catalog/podman?channel={urllib.parse.quote(hostile)}",
        f"{registry.url}/catalog/{urllib.parse.quote(hostile)}",
    ):
        page.goto(url)
        assert hostile in page.page.inner_text("main"), url
        assert page.page.locator("main img").count() == 0, url
        assert page.page.evaluate("window.__pwned") is None, url
    # The home page lists the hostile description as text too.
    page.goto(f"{registry.url}/?q=bold")
    assert HTML_DESCRIPTION in page.page.inner_text("main")
    assert page.page.evaluate("window.__pwned") is None


def test_not_found_head_favicon_and_offline_api_docs(
    registry: RegistryServer, page_factory: object
) -> None:
    html_accept = {"Accept": "text/html,application/xhtml+xml"}
    for path in ("/catalog/unknown", "/no/such/page", "/extensions/unknown/SHA256SUMS"):
        response = requests.get(f"{registry.url}{path}", headers=html_accept, timeout=10)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "<h1>Not found</h1>" in response.text and 'href="/"' in response.text
    # Clients that do not ask for HTML (sysupdate, scripts, the API) keep JSON.
    for path in ("/extensions/unknown/SHA256SUMS", "/api/v1/extensions/unknown"):
        response = requests.get(f"{registry.url}{path}", timeout=10)
        assert response.status_code == 404 and response.json()["detail"]
    for path in ("/", "/catalog/podman", "/api/docs", "/favicon.ico", "/openapi.json"):
        head = requests.head(f"{registry.url}{path}", timeout=10)
        assert head.status_code == 200, path
    assert requests.get(f"{registry.url}/favicon.ico", timeout=10).content.startswith(b"<svg")
    # Swagger UI from the registry itself: renders every operation, asks no other host.
    page = page_factory(1280)  # type: ignore[operator]
    assert page.goto(f"{registry.url}/api/docs") == 200
    page.page.wait_for_selector(".opblock", timeout=30_000)
    assert page.page.locator(".opblock").count() >= 10
    assert page.page.locator("h1").count() == 1 and page.page.locator('a[href="/"]').count()
    assert page.errors == [] and page.foreign == []


def test_verify_it_yourself_commands_run(registry: RegistryServer, tmp_path: Path) -> None:
    text = requests.get(f"{registry.url}/catalog/crio", timeout=30).text
    commands = snippet(text, "verify")
    fingerprint = requests.get(f"{registry.url}/api/v1/status", timeout=10).json()["fingerprint"]
    assert fingerprint in commands
    env = {
        **os.environ,
        "GNUPGHOME": tempfile.mkdtemp(dir=tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert fingerprint in ran.stdout  # gpg --show-keys
    assert "Good signature" in ran.stderr  # gpg --verify
    assert "crio-1.30.0-x86-64.raw: OK" in ran.stdout  # sha256sum --check


@pytest.mark.parametrize("os_version", OS_VERSIONS)
def test_os_bound_snippets_pick_the_image_of_the_chosen_os_version(
    registry: RegistryServer, tmp_path: Path, os_version: str
) -> None:
    query = {"channel": "stable", "arch": "x86-64", "variant": "flatcar", "os_version": os_version}
    page = requests.get(f"{registry.url}/catalog/nvidia", params=query, timeout=30)
    assert page.status_code == 200
    assert f"OS version <strong>{os_version}</strong>" in page.text
    butane, ignition = snippet(page.text, "butane"), snippet(page.text, "ignition")
    # The newest version built for this OS version, with that image's own hash.
    images = requests.get(f"{registry.url}/api/v1/extensions/nvidia", timeout=10).json()["images"]
    (chosen,) = [
        i for i in images if i["os_version_id"] == os_version and i["version"].startswith("560.35")
    ]
    assert chosen["release"]["VERSION_ID"] == os_version
    assert f"/extensions/nvidia/{chosen['filename']}" in butane
    assert f"sha256-{chosen['sha256']}" in butane and f"sha256-{chosen['sha256']}" in ignition
    others = [i["filename"] for i in images if i["filename"] != chosen["filename"]]
    assert not any(other in butane for other in others)
    assert "MatchPattern=nvidia-@v-%w-%a.raw" in butane
    api = f"{registry.url}/api/v1/extensions/nvidia"
    assert butane == requests.get(f"{api}/butane", params=query, timeout=30).text
    assert ignition == requests.get(f"{api}/ignition", params=query, timeout=30).text
    command = snippet(page.text, "cli").split()
    assert command[-2:] == ["--os-version", os_version]
    assert run_cli(*command[1:]).stdout == butane
    config = tmp_path / "nvidia.ign"
    config.write_text(ignition)
    validated = subprocess.run(
        ["ignition-validate", str(config)], capture_output=True, text=True, check=False
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_an_os_bound_extension_offers_only_its_os_versions(registry: RegistryServer) -> None:
    page = requests.get(
        f"{registry.url}/catalog/nvidia", params={"os_version": "9999.0.0"}, timeout=30
    )
    assert page.status_code == 200
    assert "No image for OS version &#39;9999.0.0&#39;" in page.text
    options = re.findall(r'<option value="([^"]+)"', page.text.split('id="os_version"')[1])
    assert options[: len(OS_VERSIONS)] == sorted(OS_VERSIONS, reverse=True)
    # The versions table counts versions, and shows each image's OS version.
    assert page.text.count('<td data-label="OS version">') == 3


_HOST_SCRIPT = r"""
set -eu
# The host's /etc, /opt and /var, writable only inside this private mount namespace.
for d in /etc /opt /var; do
  mkdir -p "$WORK/upper$d" "$WORK/work$d"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$WORK/upper$d,workdir=$WORK/work$d" "$d"
done
mount -t tmpfs tmpfs /run
mount --make-rshared /
bash -euo pipefail -c "$COMMANDS"
"$EXTENSION"
systemd-sysext unmerge >&2
"""
# Where each variant's commands put the image and its activation link.
LAYOUTS = {
    "flatcar": ("opt/extensions/docker-compose", "etc/extensions/docker-compose.raw"),
    "fcos": ("var/lib/extensions.d/docker-compose", "var/lib/extensions/docker-compose.raw"),
}


@pytest.mark.root
@pytest.mark.parametrize("variant", ["flatcar", "fcos"])
def test_the_running_host_commands_install_with_the_real_sysupdate(
    registry: RegistryServer, tmp_path: Path, variant: str
) -> None:
    """The page's shell commands, run as root on this machine in a private mount namespace,
    install, verify and merge the extension: its command runs. Only what needs a booted
    systemd is swapped: the sysupdate path for the real 254 client the tests fetch, and
    `systemctl restart systemd-sysext.service` for what that unit runs (`systemd-sysext
    refresh`); `systemctl enable` has nothing to enable here."""
    from tests.sysupdate_client import SYSUPDATE, client_env, require_client

    require_client()
    page = requests.get(
        f"{registry.url}/catalog/docker-compose", params={"variant": variant}, timeout=30
    )
    commands = snippet(page.text, "shell")
    assert "/usr/lib/systemd/systemd-sysupdate -C docker-compose update" in commands
    assert commands.endswith("systemctl restart systemd-sysext.service\n")
    runnable = (
        commands.replace("/usr/lib/systemd/systemd-sysupdate", str(SYSUPDATE))
        .replace("systemctl restart systemd-sysext.service", "systemd-sysext refresh")
        .replace("systemctl enable systemd-sysext.service", ":")
    )
    env = {
        **client_env(),
        "WORK": str(tmp_path),
        "COMMANDS": runnable,
        "EXTENSION": "docker-compose",
    }
    ran = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", _HOST_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().endswith("docker-compose 2.29.1")
    images, link = LAYOUTS[variant]
    installed = tmp_path / "upper" / images
    assert [p.name for p in installed.iterdir()] == ["docker-compose-2.29.1-x86-64.raw"]
    target = os.path.join(os.path.dirname(f"/{link}"), os.readlink(tmp_path / "upper" / link))
    assert os.path.normpath(target) == f"/{images}/docker-compose-2.29.1-x86-64.raw"
    # The registry key sits in its own file; what systemd 254 reads is this machine's vendor
    # keyring followed by it (sysext-keyring-combine), so the OS's own keys stay trusted.
    assert (tmp_path / "upper/etc/sysext/keyring.gpg").read_bytes() == registry.keyring()
    combined = (tmp_path / "upper/etc/systemd/import-pubring.gpg").read_bytes()
    vendor = Path("/usr/lib/systemd/import-pubring.gpg")
    assert combined == (vendor.read_bytes() if vendor.exists() else b"") + registry.keyring()


@pytest.mark.parametrize(
    ("name", "channel", "variant"),
    [("podman", "beta", "fcos"), ("nvidia", "stable", "flatcar")],
)
def test_running_host_commands_equal_the_api_and_the_cli(
    registry: RegistryServer, name: str, channel: str, variant: str
) -> None:
    query = {"channel": channel, "variant": variant}
    page = requests.get(f"{registry.url}/catalog/{name}", params=query, timeout=30).text
    shown = snippet(page, "shell")
    api = requests.get(
        f"{registry.url}/api/v1/extensions/{name}/commands", params=query, timeout=10
    )
    assert api.status_code == 200 and api.text == shown
    found = re.search(r'<code id="commands-cli">(.*?)</code>', page)
    assert found is not None
    command = html.unescape(found.group(1))
    from_cli = run_cli(*command.split()[1:])
    assert from_cli.returncode == 0, from_cli.stderr
    assert from_cli.stdout == shown
    assert ("systemctl enable systemd-sysext.service" in shown) == (variant == "fcos")
    # Flatcar fetches the very transfer file the registry serves; Fedora CoreOS writes one
    # for its own layout (/var/lib/extensions.d).
    served = f"curl -fsSo /etc/sysupdate.{name}.d/{name}.conf {registry.url}/"
    assert (served in shown) == (variant == "flatcar")
    assert ("Path=/var/lib/extensions.d/" in shown) == (variant == "fcos")
    # Nothing to install: the API and the CLI say so.
    missing = requests.get(
        f"{registry.url}/api/v1/extensions/wasmtime/commands",
        params={"channel": "stable"},
        timeout=10,
    )
    assert missing.status_code == 404
    refused = run_cli("transfer", "wasmtime", "--registry", registry.url, "--commands")
    assert refused.returncode == 2 and "serves no 'wasmtime' in channel 'stable'" in refused.stderr
