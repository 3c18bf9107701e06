"""Managed hosts (issue 21, step 1): the rollout ID is derived on the host, and the transfer
file the first-boot script writes is exactly what `sysext transfer --host-id` prints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sysext.core.rollout import (
    APP_ID,
    BUCKETS,
    app_specific_id,
    bucket_order,
    host_bucket,
    offered_buckets,
)
from sysext.provision import ExtensionRef, HttpCatalog, ProvisionOptions, generate_config
from sysext.provision.ignition import render_ignition
from sysext.provision.rollout_identity import IDENTITY_UNIT, ROLLOUT_SCRIPT, TEMPLATE_DIR
from tests.provision_layout import PublicTree
from tests.servers import run_cli
from tests.test_provision import built_tree, decode_data_url, ignition_validate, served

__all__ = ["built_tree", "served"]  # fixtures used below


def systemd_app_id(machine_id_file: Path | None = None) -> str:
    """The real `systemd-id128 machine-id --app-specific`, for this machine or, in a private
    mount namespace, for a host whose /etc/machine-id is `machine_id_file`."""
    command = f"systemd-id128 machine-id --app-specific={APP_ID}"
    if machine_id_file is not None:
        command = f"mount --bind {machine_id_file} /etc/machine-id && {command}"
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def run_rollout_script(root: Path, script: Path) -> subprocess.CompletedProcess[str]:
    """The generated first-boot script for host ROOT, whose machine ID is ROOT/etc/machine-id."""
    command = f'mount --bind "$ROOT/etc/machine-id" /etc/machine-id && exec sh {script}'
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", command],
        env={"ROOT": str(root), "SYSEXT_ROOT": str(root), "PATH": "/usr/bin:/bin:/usr/sbin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_host_id_is_systemds_app_specific_id() -> None:
    own = Path("/etc/machine-id").read_text().strip()
    assert app_specific_id(own) == systemd_app_id()
    result = run_cli("host-id")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == systemd_app_id()
    assert own not in result.stdout  # the machine ID itself never shows


def test_rollout_order_is_monotonic_and_differs_per_version() -> None:
    key = b"k" * 32
    previous: frozenset[int] = frozenset()
    for percent in range(101):
        now = offered_buckets(key, "hello", "1.1", percent)
        assert previous <= now and len(now) == percent * BUCKETS // 100
        previous = now
    assert bucket_order(key, "hello", "1.1")[:10] != bucket_order(key, "hello", "1.2")[:10]
    ids = [app_specific_id(f"{i:032x}") for i in range(2000)]
    per_bucket = [sum(1 for i in ids if host_bucket(i) == b) for b in range(BUCKETS)]
    assert min(per_bucket) > 5  # uniform enough: every bucket holds hosts


@pytest.mark.root
def test_first_boot_script_writes_what_sysext_transfer_prints(
    served: tuple[PublicTree, str], tmp_path: Path
) -> None:
    _, url = served
    options = ProvisionOptions(rollout=True, group="canary")
    ignition_text = render_ignition(
        generate_config(HttpCatalog(url), [ExtensionRef("podman")], options=options)
    )
    assert ignition_validate(ignition_text, tmp_path) == ""
    document = json.loads(ignition_text)
    files = {
        f["path"]: decode_data_url(f["contents"]["source"])
        for f in document["storage"]["files"]
        if f["contents"]["source"].startswith("data:")
    }
    # No finished transfer file in the config: only the host can know its ID.
    assert "/etc/sysupdate.podman.d/podman.conf" not in files
    template = files[f"{TEMPLATE_DIR}/podman.conf.in"].decode()
    assert f"Path={url}/rollouts/stable/podman/groups/canary/@BUCKET@/@HOST_ID@\n" in template
    units = {u["name"]: u for u in document["systemd"]["units"]}
    assert units[IDENTITY_UNIT]["enabled"] is True
    assert f"After={IDENTITY_UNIT}" in units["sysext-update-podman.service"]["contents"]

    seen_buckets = set()
    for number in range(6):
        root = tmp_path / f"host{number}"
        (root / TEMPLATE_DIR.lstrip("/")).mkdir(parents=True)
        (root / TEMPLATE_DIR.lstrip("/") / "podman.conf.in").write_text(template)
        script = root / "rollout-transfer"
        script.write_bytes(files[ROLLOUT_SCRIPT])
        machine_id = f"{number + 1:x}" * 32
        (root / "etc/machine-id").write_text(machine_id + "\n")
        written = run_rollout_script(root, script)
        assert written.returncode == 0, written.stderr
        host_id = systemd_app_id(root / "etc/machine-id")
        assert host_id == app_specific_id(machine_id)
        assert machine_id not in (root / "etc/sysupdate.podman.d/podman.conf").read_text()
        expected = run_cli(
            "transfer", "podman", "--registry", url, "--any-os", "--host-id", host_id,
            "--group", "canary",
        )  # fmt: skip
        assert expected.returncode == 0, expected.stderr
        assert (root / "etc/sysupdate.podman.d/podman.conf").read_text() == expected.stdout
        assert f"bucket {host_bucket(host_id):02d}" in written.stdout
        seen_buckets.add(host_bucket(host_id))
    assert len(seen_buckets) > 1


def test_bad_host_ids_and_groups_are_one_line_errors(served: tuple[PublicTree, str]) -> None:
    _, url = served
    cases = [
        (["transfer", "podman", "--registry", url, "--any-os", "--host-id", "XYZ"], "host ID"),
        (["transfer", "podman", "--registry", url, "--any-os", "--group", "g"], "--host-id"),
        (
            ["transfer", "podman", "--registry", url, "--any-os", "--host-id", "a" * 32,
             "--group", "Bad_Group"],
            "invalid group",
        ),
        (["butane", "podman", "--registry", url, "--group", "-x"], "invalid group"),
        (["host-id", "--machine-id", "nothex"], "invalid machine ID"),
    ]  # fmt: skip
    for argv, message in cases:
        result = run_cli(*argv)
        assert result.returncode != 0
        assert message in result.stderr
        assert result.stdout == ""
        first, *rest = result.stderr.strip().splitlines()
        assert first.startswith("error:") and all(r.startswith("hint:") for r in rest)
