"""First boot to update under a booted systemd (root).

A root provisioned with the real Ignition files stage of `sysext butane --ignition` for an
extension served by a real `sysext serve` boots in systemd-nspawn (Debian 12 with
bookworm-backports' systemd 254, which carries systemd-sysupdate): its systemd-sysext.service
merges the image and the extension's daemon is upheld. A newer version is published; the
generated update service, started inside, runs the real systemd-sysupdate (signature
checked with the keyring the config installed) and activates the new image — at once where
the update refreshes, after a reboot where it only leaves a reboot marker. The registry
listens on the host's 127.0.0.1; the container shares the host's network, so it reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sysext.boot.container import Container
from tests.booted import apply_ignition, service_image
from tests.conftest import run_cli
from tests.registry_server import RegistryServer, running_registry

pytestmark = pytest.mark.root


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with running_registry(tmp_path / "data") as reg:
        yield reg


def publish(reg: RegistryServer, image: Path) -> None:
    result = run_cli("publish", image, "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token})
    assert result.returncode == 0, result.stderr


def ignition(reg: RegistryServer, *options: str) -> dict[str, object]:
    result = run_cli("butane", "hello", "--registry", reg.url, "--ignition", *options)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def state(box: Container, unit: str) -> str:
    return box.text(["systemctl", "is-active", unit]).strip()


def journal(box: Container, unit: str) -> str:
    return box.text(["journalctl", "--boot", f"--unit={unit}", "--no-pager", "--output=cat"])


def explain(box: Container) -> str:
    """What to look at when an assertion fails: failed units and the update's journal."""
    failed = box.text(["systemctl", "list-units", "--failed", "--plain", "--no-legend"])
    return (
        f"failed units:\n{failed}\nupdate journal:\n{journal(box, 'sysext-update-hello.service')}"
    )


def boot_first_version(box: Container, reg: RegistryServer, images: Path, *options: str) -> None:
    publish(reg, service_image(images, "hello", "1.0"))
    apply_ignition(ignition(reg, *options), box.upper)
    boot = box.boot()
    assert boot.state == "running", explain(box)
    assert box.text(["hello"]) == "hello 1.0\n"
    assert state(box, "hello.service") == "active"
    assert "hellod 1.0 started" in journal(box, "hello.service")
    # Ignition's preset line, applied on the first boot, enabled and started the timer.
    assert box.text(["systemctl", "is-enabled", "sysext-update-hello.timer"]).strip() == "enabled"
    assert state(box, "sysext-update-hello.timer") == "active"
    # Nothing newer yet: check-new (ExecCondition) skips the update, nothing fails.
    skipped = box.run(["systemctl", "start", "sysext-update-hello.service"])
    assert skipped.returncode == 0, explain(box)
    assert box.text(["readlink", "-f", "/etc/extensions/hello.raw"]).strip() == (
        "/opt/extensions/hello/hello-1.0-x86-64.raw"
    )
    # 2.0 brings a second daemon, upheld like the first: proof its units were loaded.
    publish(
        reg, service_image(images, "hello", "2.0", extra_units={"hello-extra.service": "extrad"})
    )


@pytest.mark.parametrize(
    "root_fixture",
    [
        pytest.param(
            "boot_root",
            id="systemd-254",
            marks=pytest.mark.xfail(
                strict=True,
                reason="systemd 254 ignores EXTENSION_RELOAD_MANAGER, and `systemd-sysext "
                "refresh` in the update unit loads no new units; activating by restarting "
                "systemd-sysext.service (issue 15) does",
            ),
        ),
        pytest.param("boot_root_newest", id="systemd-257"),
    ],
)
def test_update_activates_the_new_version_without_reboot(
    root_fixture: str, request: pytest.FixtureRequest, registry: RegistryServer, tmp_path: Path
) -> None:
    root = request.getfixturevalue(root_fixture)
    with Container(root) as box:
        boot_first_version(box, registry, tmp_path)
        update = box.run(["systemctl", "start", "sysext-update-hello.service"], timeout=180)
        assert update.returncode == 0, explain(box)
        log = journal(box, "sysext-update-hello.service")
        assert "Signature verification succeeded" in log, log
        assert box.text(["readlink", "-f", "/etc/extensions/hello.raw"]).strip() == (
            "/opt/extensions/hello/hello-2.0-x86-64.raw"
        )
        assert box.text(["hello"]) == "hello 2.0\n"
        assert state(box, "hello-extra.service") == "active", explain(box)
        assert "extrad 2.0 started" in journal(box, "hello-extra.service")
        assert state(box, "hello.service") == "active"
        assert box.text(["systemctl", "list-units", "--failed", "--plain", "--no-legend"]) == ""


def test_update_with_reboot_marker_activates_after_reboot(
    boot_root: Path,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    with Container(boot_root) as box:
        boot_first_version(box, registry, tmp_path, "--on-update", "reboot-marker")
        update = box.run(["systemctl", "start", "sysext-update-hello.service"], timeout=180)
        assert update.returncode == 0, explain(box)
        assert "Signature verification succeeded" in journal(box, "sysext-update-hello.service")
        assert box.run(["test", "-e", "/run/reboot-required"]).returncode == 0
        # Downloaded and linked, not active until the reboot.
        assert box.text(["readlink", "-f", "/etc/extensions/hello.raw"]).strip() == (
            "/opt/extensions/hello/hello-2.0-x86-64.raw"
        )
        assert box.text(["hello"]) == "hello 1.0\n"
        assert state(box, "hello-extra.service") != "active"
        boot = box.reboot()
        assert boot.state == "running", explain(box)
        assert box.run(["test", "-e", "/run/reboot-required"]).returncode != 0
        assert box.text(["hello"]) == "hello 2.0\n"
        assert "hellod 2.0 started" in journal(box, "hello.service")
        assert state(box, "hello-extra.service") == "active"
        assert "extrad 2.0 started" in journal(box, "hello-extra.service")
