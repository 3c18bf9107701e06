"""First boot to update under a booted systemd, on every systemd the hosts run (root).

The client matrix: Debian 12 with bookworm-backports' systemd 254, Debian 13 with 257 and
Debian forky with 262 (sysext/boot/rootfs.py), each booted in systemd-nspawn. For each, a
config from `sysext butane --ignition --systemd-version V` (Flatcar-shaped, and on 257 and
262 also Fedora CoreOS-shaped) for an extension served by a real `sysext serve` — or by
the registry's Ceph RGW bucket — is written into the container by the real Ignition files
stage; the boot's
systemd-sysext.service merges the image and its daemons are upheld. A newer version is
published; the generated update service, started inside, runs the host's own
systemd-sysupdate (the signature checked with the registry key the config installed: through
the combined /etc/systemd/import-pubring.gpg before 262, through $SYSTEMD_OPENPGP_KEYRING on
262) and activates the new image — at once where the update restarts or refreshes
systemd-sysext or notifies it (262), after a reboot where it only leaves a reboot marker.
The unit the image lists in EXTENSION_RESTART_UNITS= really restarts (a new invocation and
main PID, the new binary's start line): by the update script before 262, by systemd-sysext
itself on 262. The registry listens on the host's 127.0.0.1; the container shares the host's
network, so it reaches it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sysext.boot.container import Container
from sysext.core.rollout import APP_ID
from sysext.provision.compose import host_layout
from sysext.provision.model import Variant
from sysext.trust import signing
from tests.booted import ignition_files_stage, service_image
from tests.ceph_rgw import CephRgw
from tests.pg_cluster import PostgresCluster
from tests.registry_server import RegistryServer, running_registry
from tests.servers import run_cli
from tests.test_registry_scale import bucket_env
from tests.test_rollout_policy import wait_for

pytestmark = pytest.mark.root(reason="needs root: boots systemd in a systemd-nspawn container")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One registry for the module (starting one costs seconds); each test has its own
    extension name, so their versions never meet."""
    with running_registry(tmp_path_factory.mktemp("registry") / "data") as reg:
        yield reg


@pytest.fixture(scope="module")
def s3_registry(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: PostgresCluster, ceph_rgw: CephRgw
) -> Iterator[tuple[RegistryServer, str]]:
    """The registry on a Ceph RGW bucket (PostgreSQL database), and the bucket's URL, which
    is what its hosts poll: GET-only for anonymous clients, so a missing name answers 403."""
    base = tmp_path_factory.mktemp("s3-registry")
    env = bucket_env(base, pg_cluster, ceph_rgw, "sysext-booted")
    with running_registry(base / "data", env=env) as reg:
        yield reg, f"{ceph_rgw.endpoint}/{env['SYSEXT_S3_BUCKET']}"


def publish(reg: RegistryServer, image: Path) -> None:
    result = run_cli("publish", image, "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token})
    assert result.returncode == 0, result.stderr


def ignition(
    reg: RegistryServer, name: str, *options: str, hosts_url: str | None = None
) -> dict[str, object]:
    """`sysext butane --ignition` for hosts that poll `hosts_url` (default: the registry)."""
    url = hosts_url or reg.url
    result = run_cli("butane", name, "--registry", url, "--ignition", *options)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def state(box: Container, unit: str) -> str:
    return box.text(["systemctl", "is-active", unit]).strip()


def journal(box: Container, unit: str) -> str:
    return box.text(["journalctl", "--boot", f"--unit={unit}", "--no-pager", "--output=cat"])


def invocation(box: Container, unit: str) -> tuple[str, str]:
    """(InvocationID, MainPID) of a running unit: both change when it really restarts."""
    shown = box.text(["systemctl", "show", "--property=InvocationID,MainPID", unit])
    fields = dict(line.partition("=")[::2] for line in shown.splitlines())
    assert fields.get("InvocationID") and fields.get("MainPID", "0") != "0", shown
    return fields["InvocationID"], fields["MainPID"]


def explain(box: Container, name: str) -> str:
    """What to look at when an assertion fails: failed units and the update's journal."""
    failed = box.text(["systemctl", "list-units", "--failed", "--plain", "--no-legend"])
    return (
        f"failed units:\n{failed}\nupdate journal:\n{journal(box, f'sysext-update-{name}.service')}"
    )


def boot_first_version(
    box: Container,
    reg: RegistryServer,
    images: Path,
    name: str,
    *options: str,
    restart_units: tuple[str, ...] = (),
    hosts_url: str | None = None,
    variant: Variant = Variant.FLATCAR,
) -> None:
    """Publish NAME 1.0 (NAME.service and NAME-keep.service, upheld), provision the
    container with the real Ignition files stage, boot it and check the first boot; then
    publish 2.0, which adds NAME-extra.service."""
    keep = {f"{name}-keep.service": f"{name}-keepd"}
    publish(reg, service_image(images, name, "1.0", extra_units=keep, restart_units=restart_units))
    if variant is Variant.FCOS:
        # Fedora CoreOS's layout (/var/lib/extensions.d/NAME, linked from
        # /var/lib/extensions) and its update timer off by default; --timer turns it on.
        options = (*options, "--variant", "fcos", "--timer")
    config = ignition(reg, name, *options, hosts_url=hosts_url)
    ignition_files_stage(config, box.upper, images / f".ignition-{name}")
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
    layout = host_layout(name, variant)
    assert box.text(["readlink", "-f", layout.link]).strip() == (
        f"{layout.images_dir}/{name}-1.0-x86-64.raw"
    )
    # 2.0 brings a second daemon, upheld like the first: proof its units were loaded.
    extra = {**keep, f"{name}-extra.service": "extrad"}
    publish(reg, service_image(images, name, "2.0", extra_units=extra, restart_units=restart_units))


@pytest.mark.parametrize(
    ("root_fixture", "systemd", "on_update", "restart_units", "backend"),
    [
        pytest.param("boot_root", 254, "restart", True, "local", id="systemd-254-restart"),
        pytest.param("boot_root", 254, "restart", True, "s3", id="systemd-254-restart-s3"),
        pytest.param(
            "boot_root",
            254,
            "refresh",
            False,
            "local",
            id="systemd-254-refresh",
            marks=pytest.mark.xfail(
                strict=True,
                reason="systemd 254 ignores EXTENSION_RELOAD_MANAGER, and `systemd-sysext "
                "refresh` loads no new units; restarting systemd-sysext.service does",
            ),
        ),
        pytest.param("boot_root_newest", 257, "refresh", True, "local", id="systemd-257-refresh"),
        pytest.param("boot_root_newest", 257, "refresh", True, "s3", id="systemd-257-refresh-s3"),
        pytest.param(
            "boot_root_newest", 257, "refresh", True, "fcos", id="systemd-257-refresh-fcos"
        ),
        # 262's own path: sysupdate tells systemd-sysupdate-notify-sysext.socket, whose
        # service runs systemd-sysext, which restarts EXTENSION_RESTART_UNITS= itself.
        pytest.param("boot_root_262", 262, "notify", True, "local", id="systemd-262-notify"),
        # The same host polling the registry's Ceph RGW bucket (262 is the client that
        # tries several signature names, and a bucket answers 403 for a missing one).
        pytest.param("boot_root_262", 262, "notify", True, "s3", id="systemd-262-notify-s3"),
        # Fedora CoreOS-shaped configs (paths under /var/lib, the timer enabled by --timer).
        pytest.param("boot_root_262", 262, "notify", True, "fcos", id="systemd-262-notify-fcos"),
    ],
)
def test_update_activates_the_new_version_without_reboot(
    root_fixture: str,
    systemd: int,
    on_update: str,
    restart_units: bool,
    backend: str,
    request: pytest.FixtureRequest,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    root = request.getfixturevalue(root_fixture)
    hosts_url = None
    if backend == "s3":
        registry, hosts_url = request.getfixturevalue("s3_registry")
    # `backend`: local (`sysext serve`, Flatcar config), s3 (the Ceph RGW bucket, Flatcar
    # config) or fcos (`sysext serve`, Fedora CoreOS config).
    variant = Variant.FCOS if backend == "fcos" else Variant.FLATCAR
    name = f"up{systemd}{on_update}{backend}"
    listed = (f"{name}.service",) if restart_units else ()
    options = ("--on-update", on_update, "--systemd-version", str(systemd))
    with Container(root) as box:
        assert box.systemd_version == systemd  # the root is the client it stands for
        boot_first_version(
            box,
            registry,
            tmp_path,
            name,
            *options,
            restart_units=listed,
            hosts_url=hosts_url,
            variant=variant,
        )
        assert box.text(["systemctl", "--version"]).startswith(f"systemd {systemd} ")
        # 257+ read NAME.transfer (and warn about NAME.conf), 252-256 only NAME.conf.
        suffix = "transfer" if systemd >= 257 else "conf"
        assert box.text(["ls", f"/etc/sysupdate.{name}.d"]).split() == [f"{name}.{suffix}"]
        # Before 262 the registry key is verified through the combined /etc keyring; 262
        # gets it through $SYSTEMD_OPENPGP_KEYRING and /etc/systemd stays untouched.
        combined = box.run(["test", "-e", "/etc/systemd/import-pubring.gpg"]).returncode == 0
        assert combined == (systemd < 262), explain(box, name)
        daemon = invocation(box, f"{name}.service")
        kept = invocation(box, f"{name}-keep.service")

        update = box.run(["systemctl", "start", f"sysext-update-{name}.service"], timeout=180)
        assert update.returncode == 0, explain(box, name)
        box.settle()  # the activation queues the new units' starts without waiting
        log = journal(box, f"sysext-update-{name}.service")
        assert "Signature verification succeeded" in log, log
        # From where the host polls: `sysext serve` itself, or the bucket.
        polled = hosts_url or registry.url
        assert f"Pulling '{polled}/extensions/{name}/{name}-2.0-x86-64.raw'" in log, log
        assert f"{name}: installed {name}-2.0-x86-64.raw (was {name}-1.0-x86-64.raw)" in log, log
        layout = host_layout(name, variant)
        assert box.text(["readlink", "-f", layout.link]).strip() == (
            f"{layout.images_dir}/{name}-2.0-x86-64.raw"
        )
        assert box.text([name]) == f"{name} 2.0\n"
        assert state(box, f"{name}-extra.service") == "active", explain(box, name)
        assert "extrad 2.0 started" in journal(box, f"{name}-extra.service")
        assert state(box, f"{name}.service") == "active"
        # The listed daemon runs the new binary in a new invocation; the unlisted one keeps
        # its old binary until its unit restarts (recipes/README.md says so).
        restarted = invocation(box, f"{name}.service")
        assert restarted[0] != daemon[0] and restarted[1] != daemon[1], explain(box, name)
        assert f"{name}d 2.0 started" in journal(box, f"{name}.service")
        assert invocation(box, f"{name}-keep.service") == kept
        assert f"{name}-keepd 2.0 started" not in journal(box, f"{name}-keep.service")
        by_script = f"{name}: restarting {name}.service (EXTENSION_RESTART_UNITS)"
        # Before 262 the update script restarts it; on 262 systemd-sysext does, natively.
        assert (by_script in log) == (systemd < 262), log
        assert box.text(["systemctl", "list-units", "--failed", "--plain", "--no-legend"]) == ""


@pytest.mark.parametrize("root_fixture", ["boot_root", "boot_root_newest"], ids=["254", "257"])
def test_update_with_reboot_marker_activates_after_reboot(
    root_fixture: str,
    request: pytest.FixtureRequest,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    """Also the config for a host of unknown systemd version (no --systemd-version): it
    carries the boot-merge drop-in that 262 needs, so it must boot and reboot as well on
    254 (no --no-reload: the drop-in falls back to the stock refresh) and 257."""
    with Container(request.getfixturevalue(root_fixture)) as box:
        name = "uprebootmarker" + ("257" if root_fixture == "boot_root_newest" else "")
        boot_first_version(box, registry, tmp_path, name, "--on-update", "reboot-marker")
        dropins = box.text(["systemctl", "show", "-P", "DropInPaths", "systemd-sysext.service"])
        assert "50-sysext-boot-merge.conf" in dropins
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


@pytest.mark.parametrize(
    ("root_fixture", "systemd"), [("boot_root", 254), ("boot_root_262", 262)], ids=["254", "262"]
)
def test_managed_host_reports_each_update_outcome(
    root_fixture: str,
    systemd: int,
    request: pytest.FixtureRequest,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    """A managed host (`--rollout --group canary`): its identity unit derives the host ID at
    boot, and each run of the update service reports to the registry what it did — nothing
    newer, then 2.0 activated — with the host's own systemd version and os-release, under
    that ID; the fleet view counts it as fetched and reported."""
    name = f"upreport{systemd}"
    with Container(request.getfixturevalue(root_fixture)) as box:
        # Flatcar and Fedora CoreOS ship curl; these Debian roots have its library only.
        curl = box.upper / "usr/local/bin/curl"
        curl.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2("/usr/bin/curl", curl)
        boot_first_version(box, registry, tmp_path, name, "--rollout", "--group", "canary")
        host_id = box.text(["cat", "/run/sysext/rollout-host-id"]).strip()
        assert (
            host_id == box.text(["systemd-id128", "machine-id", f"--app-specific={APP_ID}"]).strip()
        )
        log = journal(box, f"sysext-update-{name}.service")
        assert f"{name}: reported unchanged to {registry.url}" in log, log
        update = box.run(["systemctl", "start", f"sysext-update-{name}.service"], timeout=180)
        assert update.returncode == 0, explain(box, name)
        box.settle()
        log = journal(box, f"sysext-update-{name}.service")
        assert f"{name}: installed {name}-2.0-x86-64.raw (was {name}-1.0-x86-64.raw)" in log
        assert f"{name}: reported activated to {registry.url}" in log, log
        assert box.text([name]) == f"{name} 2.0\n"
        os_release = box.text(["cat", "/usr/lib/os-release"])
        version_id = dict(
            line.partition("=")[::2] for line in os_release.splitlines() if "=" in line
        ).get("VERSION_ID", "")

    def fleet() -> dict[str, Any]:
        answer = requests.get(f"{registry.url}/api/v1/extensions/{name}/fleet", timeout=60)
        return dict(answer.json())

    # Another worker may hold the report until its next write (SYSEXT_FLEET_FLUSH, 5 s).
    wait_for(lambda: "2.0" in fleet()["reports"]["versions"], "the report of 2.0")
    view = fleet()
    reports = view["reports"]
    assert reports["hosts"] == 1 and reports["only_reported"] == 0, view
    assert reports["versions"]["2.0"] == {
        "fetched": 1, "reported": 1, "activated": 1, "installed": 0, "unchanged": 0,
        "failed": 0,
    }, view  # fmt: skip
    assert reports["systemd"] == {str(systemd): 1}
    assert reports["os"] == {" ".join(filter(None, ("debian", version_id.strip('"')))): 1}
    assert view["groups"] == {"canary": {"2.0": 1}}
    assert reports["groups"] == {"canary": {"2.0": 1}}
