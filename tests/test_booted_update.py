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
from sysext.trust import signing
from tests.booted import apply_ignition, service_image
from tests.registry_server import RegistryServer, running_registry
from tests.servers import run_cli

pytestmark = pytest.mark.root(reason="needs root: boots systemd in a systemd-nspawn container")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One registry for the module (starting one costs seconds); each test has its own
    extension name, so their versions never meet."""
    with running_registry(tmp_path_factory.mktemp("registry") / "data") as reg:
        yield reg


def publish(reg: RegistryServer, image: Path) -> None:
    result = run_cli("publish", image, "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token})
    assert result.returncode == 0, result.stderr


def ignition(reg: RegistryServer, name: str, *options: str) -> dict[str, object]:
    result = run_cli("butane", name, "--registry", reg.url, "--ignition", *options)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def state(box: Container, unit: str) -> str:
    return box.text(["systemctl", "is-active", unit]).strip()


def journal(box: Container, unit: str) -> str:
    return box.text(["journalctl", "--boot", f"--unit={unit}", "--no-pager", "--output=cat"])


def explain(box: Container, name: str) -> str:
    """What to look at when an assertion fails: failed units and the update's journal."""
    failed = box.text(["systemctl", "list-units", "--failed", "--plain", "--no-legend"])
    return (
        f"failed units:\n{failed}\nupdate journal:\n{journal(box, 'sysext-update-{name}.service')}"
    )


def boot_first_version(
    box: Container, reg: RegistryServer, images: Path, name: str, *options: str
) -> None:
    publish(reg, service_image(images, name, "1.0"))
    apply_ignition(ignition(reg, name, *options), box.upper)
    boot = box.boot()
    assert boot.state == "running", explain(box, name)
    assert box.text([name]) == f"{name} 1.0\n"
    assert state(box, f"{name}.service") == "active"
    assert f"{name}d 1.0 started" in journal(box, f"{name}.service")
    # Ignition's preset line, applied on the first boot, enabled and started the timer.
    assert box.text(["systemctl", "is-enabled", f"sysext-update-{name}.timer"]).strip() == "enabled"
    assert state(box, f"sysext-update-{name}.timer") == "active"
    # Nothing newer yet: the update succeeds doing nothing, and says so.
    skipped = box.run(["systemctl", "start", f"sysext-update-{name}.service"])
    assert skipped.returncode == 0, explain(box, name)
    assert f"{name}: up to date ({name}-1.0-x86-64.raw)" in journal(
        box, f"sysext-update-{name}.service"
    )
    assert box.text(["readlink", "-f", f"/etc/extensions/{name}.raw"]).strip() == (
        f"/opt/extensions/{name}/{name}-1.0-x86-64.raw"
    )
    # 2.0 brings a second daemon, upheld like the first: proof its units were loaded.
    publish(
        reg, service_image(images, name, "2.0", extra_units={f"{name}-extra.service": "extrad"})
    )


@pytest.mark.parametrize(
    ("root_fixture", "on_update"),
    [
        pytest.param("boot_root", "restart", id="systemd-254-restart"),
        pytest.param(
            "boot_root",
            "refresh",
            id="systemd-254-refresh",
            marks=pytest.mark.xfail(
                strict=True,
                reason="systemd 254 ignores EXTENSION_RELOAD_MANAGER, and `systemd-sysext "
                "refresh` loads no new units; restarting systemd-sysext.service does",
            ),
        ),
        pytest.param("boot_root_newest", "refresh", id="systemd-257-refresh"),
    ],
)
def test_update_activates_the_new_version_without_reboot(
    root_fixture: str,
    on_update: str,
    request: pytest.FixtureRequest,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    root = request.getfixturevalue(root_fixture)
    name = f"up{root_fixture.removeprefix('boot_root')}{on_update}".replace("_", "")
    with Container(root) as box:
        boot_first_version(box, registry, tmp_path, name, "--on-update", on_update)
        update = box.run(["systemctl", "start", f"sysext-update-{name}.service"], timeout=180)
        assert update.returncode == 0, explain(box, name)
        box.settle()  # the activation queues the new units' starts without waiting
        log = journal(box, f"sysext-update-{name}.service")
        assert "Signature verification succeeded" in log, log
        assert box.text(["readlink", "-f", f"/etc/extensions/{name}.raw"]).strip() == (
            f"/opt/extensions/{name}/{name}-2.0-x86-64.raw"
        )
        assert box.text([name]) == f"{name} 2.0\n"
        assert state(box, f"{name}-extra.service") == "active", explain(box, name)
        assert "extrad 2.0 started" in journal(box, f"{name}-extra.service")
        assert state(box, f"{name}.service") == "active"
        # Activation merges the new /usr; a daemon already running is not restarted and
        # keeps its old binary until its unit restarts (recipes/README.md says so).
        assert f"{name}d 2.0 started" not in journal(box, f"{name}.service")
        assert box.text(["systemctl", "list-units", "--failed", "--plain", "--no-legend"]) == ""


def test_update_with_reboot_marker_activates_after_reboot(
    boot_root: Path,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    with Container(boot_root) as box:
        name = "uprebootmarker"
        boot_first_version(box, registry, tmp_path, name, "--on-update", "reboot-marker")
        update = box.run(["systemctl", "start", f"sysext-update-{name}.service"], timeout=180)
        assert update.returncode == 0, explain(box, name)
        box.settle()  # the activation queues the new units' starts without waiting
        assert "Signature verification succeeded" in journal(box, f"sysext-update-{name}.service")
        assert box.run(["test", "-e", "/run/reboot-required"]).returncode == 0
        # Downloaded and linked, not active until the reboot.
        assert box.text(["readlink", "-f", f"/etc/extensions/{name}.raw"]).strip() == (
            f"/opt/extensions/{name}/{name}-2.0-x86-64.raw"
        )
        assert box.text([name]) == f"{name} 1.0\n"
        assert state(box, f"{name}-extra.service") != "active"
        boot = box.reboot()
        assert boot.state == "running", explain(box, name)
        assert box.run(["test", "-e", "/run/reboot-required"]).returncode != 0
        assert box.text([name]) == f"{name} 2.0\n"
        assert f"{name}d 2.0 started" in journal(box, f"{name}.service")
        assert state(box, f"{name}-extra.service") == "active"
        assert "extrad 2.0 started" in journal(box, f"{name}-extra.service")


def test_update_failures_are_visible_and_the_next_run_recovers(
    boot_root: Path, registry: RegistryServer, tmp_path: Path
) -> None:
    """A wrong keyring and an unreachable registry each leave the update unit failed, with
    the reason in its journal and the running version untouched; once fixed, the next start
    installs and activates (the generated default: restart systemd-sysext.service)."""
    foreign = tmp_path / "foreign.pgp"
    signing.generate_key(foreign)
    with Container(boot_root) as box:
        name = "upfailures"
        boot_first_version(box, registry, tmp_path, name)
        keyring = "/etc/systemd/import-pubring.gpg"
        assert box.run(["cp", keyring, "/etc/systemd/registry.gpg.saved"]).returncode == 0
        replace = ["sh", "-c", f"cat > {keyring}"]
        assert box.run(replace, input=signing.export_public_key(foreign)).returncode == 0

        failed = box.run(["systemctl", "start", f"sysext-update-{name}.service"], timeout=180)
        assert failed.returncode != 0
        assert (
            box.text(["systemctl", "is-failed", f"sysext-update-{name}.service"]).strip()
            == "failed"
        )
        log = journal(box, f"sysext-update-{name}.service")
        assert f"{name}: update FAILED: systemd-sysupdate exited with status" in log, log
        assert "DOWNLOAD INVALID: Signature verification failed." in log, log
        assert box.text([name]) == f"{name} 1.0\n"
        assert state(box, f"sysext-update-{name}.timer") == "active"  # it will try again

        assert box.run(["cp", "/etc/systemd/registry.gpg.saved", keyring]).returncode == 0
        registry.stop()
        down = box.run(["systemctl", "start", f"sysext-update-{name}.service"], timeout=180)
        assert down.returncode != 0
        assert (
            box.text(["systemctl", "is-failed", f"sysext-update-{name}.service"]).strip()
            == "failed"
        )
        log = journal(box, f"sysext-update-{name}.service")
        assert log.count(f"{name}: update FAILED") == 2, log
        assert "Could not connect to server" in log, log
        assert box.text([name]) == f"{name} 1.0\n"

        registry.start()
        recovered = box.run(["systemctl", "start", f"sysext-update-{name}.service"], timeout=180)
        assert recovered.returncode == 0, explain(box, name)
        box.settle()
        assert (
            box.text(["systemctl", "is-failed", f"sysext-update-{name}.service"]).strip()
            != "failed"
        )
        assert f"{name}: installed {name}-2.0-x86-64.raw (was {name}-1.0-x86-64.raw)" in journal(
            box, f"sysext-update-{name}.service"
        )
        assert box.text([name]) == f"{name} 2.0\n"
        assert state(box, f"{name}-extra.service") == "active", explain(box, name)
        assert box.text(["systemctl", "list-units", "--failed", "--plain", "--no-legend"]) == ""
