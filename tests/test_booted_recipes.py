"""Every recipe's units, proven under a booted systemd (root).

Each recipe with units is built from its upstream-shaped release (tests/upstream_fixtures.py,
the cases of tests/test_recipes_catalog.py: same URLs, archive members, checksum files and
signatures) whose binaries are
scripts that behave like the real ones where it matters here: run by systemd as a service
they report ready when the unit is Type=notify and stay alive like a daemon; run otherwise
(ExecStopPost=, a shell) they print a version and exit. Several extensions boot in one
container (those shipping the same unit names, e.g. docker's and containerd's
containerd.service, boot apart), and `sysext try`'s report says, per extension: merged, the
units it pulls in itself (Upholds=, .wants/ links, sockets.target) active, none failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sysext.boot.container import Container
from sysext.boot.report import TryReport, render
from sysext.boot.trial import GuestOS, identify, inspect, root_os_release, stage
from sysext.image.read import read_image
from sysext.recipe.model import available_recipes
from tests import test_recipes_catalog as catalog
from tests import upstream_fixtures as fixtures
from tests.servers import StaticServer, serve_directory
from tests.upstream_fixtures import SigningKey

pytestmark = pytest.mark.root(reason="needs root: boots systemd in a systemd-nspawn container")


# One case per recipe whose image ships units (the newest upstream layout of each).
CASES = {
    case.recipe: case
    for case in catalog.CASES
    if "usr/lib/systemd/system/" in (catalog.RECIPES / f"{case.recipe}.toml").read_text()
}
# Extensions that boot together; a recipe missing here boots alone. Apart: those shipping
# the same unit names (docker's and containerd's containerd.service, the SSM agent's
# amazon-ssm-agent.service in amazon-ssm-agent and oem-ami).
GROUPS = (
    ("docker", "crio", "k3s", "tailscale", "oem-ami"),
    ("containerd", "kubernetes", "podman", "amazon-ssm-agent", "droplet-agent"),
)
# The guest is Debian: OS-bound images are built for any OS here.
BUILD_OPTIONS = {"oem-ami": ("--os", "_any")}


def daemon_script(text: str) -> tuple[bytes, int]:
    """The catalogue's stand-in binary, daemon-shaped: INVOCATION_ID is set for processes
    systemd starts for a unit, SERVICE_RESULT only for ExecStop=/ExecStopPost= ones."""
    body = (
        "#!/bin/sh\n"
        'if [ -n "$INVOCATION_ID" ] && [ -z "$SERVICE_RESULT" ]; then\n'
        '  echo "$0 $* started as a daemon"\n'
        '  if [ -n "$NOTIFY_SOCKET" ]; then\n'
        "    exec systemd-notify --ready --exec \\; sleep infinity\n"
        "  fi\n"
        "  exec sleep infinity\n"
        "fi\n"
        f"echo '{text}'\n"
    )
    return body.encode(), 0o755


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    with serve_directory(tmp_path_factory.mktemp("upstream")) as server:
        yield server


@pytest.fixture(scope="module")
def images(
    upstream: StaticServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    """One x86-64 image per recipe with units, built by `sysext build` from the fixtures."""
    key = SigningKey()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fixtures, "script", daemon_script)
        catalog.publish_cases(list(CASES.values()), upstream.root, key)
    work = tmp_path_factory.mktemp("builds")
    recipes = catalog.recipe_copies(work / "recipes", key.fingerprint)
    built: dict[str, Path] = {}
    for name, case in CASES.items():
        result = catalog.build_case(
            case, upstream.url, recipes, work, (catalog.X86,), BUILD_OPTIONS.get(name, ())
        )
        assert result.result.returncode == 0, result.result.stderr
        built[name] = result.image(catalog.X86)
    yield built


def _boot_group(root: Path, paths: list[Path]) -> TryReport:
    extensions = [identify(path) for path in paths]
    with Container(root) as box:
        stage(box, extensions, GuestOS.DEBIAN)
        box.boot()
        return inspect(box, extensions, root_os_release(root, GuestOS.DEBIAN))


@pytest.fixture(scope="module")
def reports(boot_root: Path, images: dict[str, Path]) -> dict[str, TryReport]:
    """Boot each group once; every recipe maps to the report of its boot."""
    grouped = [list(group) for group in GROUPS]
    grouped += [[name] for name in images if not any(name in g for g in GROUPS)]
    by_name = {}
    for group in grouped:
        report = _boot_group(boot_root, [images[name] for name in group if name in images])
        for name in group:
            by_name[name] = report
    return by_name


@pytest.mark.parametrize("name", sorted(CASES))
def test_recipe_units_start_and_none_fails(name: str, reports: dict[str, TryReport]) -> None:
    report = reports[name]
    (extension,) = [e for e in report.extensions if e.name == name]
    context = render(report)
    assert extension.merged, context
    meant = [unit for unit in extension.units if unit.meant_to_start]
    assert meant, f"{name}: nothing in the image starts any of its units\n{context}"
    for unit in extension.units:
        assert unit.ok, f"{name}: {unit}\n{context}"
    assert report.failed_units == (), context


def test_every_recipe_with_units_has_a_booted_proof() -> None:
    """A recipe whose image ships units needs a case in test_recipes_catalog.CASES, else
    nothing here proves its units start."""
    for name in available_recipes(catalog.RECIPES):
        text = (catalog.RECIPES / f"{name}.toml").read_text()
        if 'kind = "apt"' in text:
            continue  # Debian packages: booted against the real archive, test_apt_archive.py
        if "usr/lib/systemd/system/" in text and name not in CASES:
            pytest.fail(f"recipe {name} ships units but has no upstream fixture in CASES")


def test_report_reads_units_from_the_image(images: dict[str, Path]) -> None:
    """The report's idea of what docker pulls in comes from the image: its socket, upheld
    by sockets.target, not the service (socket-activated)."""
    from sysext.boot.report import drop_in_paths, units_meant_to_start
    from sysext.image.read import read_files

    image = images["docker"]
    contents = read_image(image)
    assert units_meant_to_start(contents, read_files(image, drop_in_paths(contents))) == (
        "docker.socket",
    )
