"""A host provisioned by `sysext butane --require-signed --systemd-version 257`, booted
(issue 22): Debian 13's systemd 257 as PID 1 in the QEMU VM of tests/vm.py, with the
files Ignition's files stage would write from the generated config (tests/booted.py).

systemd-sysext.service, amended by the generated drop-in, merges the registry's signed
DDI with verity at boot; then an image signed by a stranger and an unsigned DDI are
dropped into /etc/extensions, `systemctl restart systemd-sysext.service` (what the update
units run) and neither is merged. Debian 13's root has no libcryptsetup (systemd dlopens
it for verity): the VM gets Debian 13's libcryptsetup12 and the three libraries it links to
that the root lacks (downloaded once with apt-get and a private configuration,
tests/vm.py `suite_libraries`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import requests

from sysext.image.ddi import Role, check_verity, write_ddi
from sysext.systemd.architecture import Architecture
from tests import vm
from tests.booted import apply_ignition
from tests.conftest import run_cli
from tests.registry_server import running_registry
from tests.verity_images import make_key, make_tree, pack_ddi, partition_bytes

pytestmark = [
    pytest.mark.root(reason="needs root: builds the VM's root disk with mke2fs -d"),
    pytest.mark.slow,
]

MULTIARCH = Path("/usr/lib/x86_64-linux-gnu")
# systemd 257 needs libcryptsetup 2.7's symbols; Debian 13's, with what it links to that
# the boot root lacks.
CRYPTSETUP_PACKAGES = ("libcryptsetup12", "libdevmapper1.02.1", "libargon2-1", "libjson-c5")

CHECK = """
report() {
    systemd-sysext status --no-legend --no-pager
    for name in hello rogue naked; do
        if [ -x /usr/bin/$name ]; then echo "merged $name"; else echo "absent $name"; fi
    done
}
echo "@@STEP boot"
systemctl --version | head -n 1
systemctl is-active systemd-sysext.service
echo "@@STEP unit"
systemctl cat systemd-sysext.service | grep -E '^# /|^Exec'
echo "@@STEP at-boot"
report
/test/dmsetup table | grep -v '^No devices found'
ls /etc/verity.d
/usr/bin/hello
for intruder in rogue naked; do
    echo "@@STEP $intruder"
    cursor=$(journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
    cp /test/$intruder.raw /etc/extensions/
    systemctl restart systemd-sysext.service
    echo "restart-exit $?"
    report
    journalctl --after-cursor="$cursor" -u systemd-sysext.service --no-pager -o cat
    rm /etc/extensions/$intruder.raw
done
echo "@@STEP direct-refresh"
cp /test/naked.raw /etc/extensions/
systemd-sysext refresh >/dev/null 2>&1
echo "refresh-exit $?"
report
systemd-sysext unmerge >/dev/null 2>&1
rm /etc/extensions/naked.raw
echo "@@STEP recovered"
systemctl restart systemd-sysext.service
echo "restart-exit $?"
report
"""


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> tuple[vm.Boot, dict[str, str]]:
    kernel = vm.kernel()
    base = tmp_path_factory.mktemp("vm257")
    from sysext.boot.rootfs import Base, ensure_root

    root = vm.root_image(ensure_root(Base.DEBIAN_13))
    keys = {stem: make_key(base, stem) for stem in ("builder", "stranger")}
    hello = pack_ddi(make_tree(base), base / "out", *keys["builder"])
    rogue = pack_ddi(make_tree(base, "rogue"), base / "rogue", *keys["stranger"], name="rogue")
    signed_naked = pack_ddi(make_tree(base, "naked"), base / "n", *keys["builder"], name="naked")
    fs = base / "naked-fs.img"
    fs.write_bytes(partition_bytes(signed_naked, Role.ROOT))
    naked = base / "naked.raw"
    write_ddi(fs, naked, Architecture.X86_64, None)

    rootfs = base / "rootfs"
    with running_registry(base / "data", args=("--verity-cert", str(keys["builder"][1]))) as reg:
        response = requests.put(
            f"{reg.url}/api/v1/extensions/hello/images/{hello.name}",
            data=hello.read_bytes(),
            headers=reg.headers(),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        result = run_cli(
            "butane", "hello", "--require-signed", "--systemd-version", "257", "--no-updates",
            "--registry", reg.url, "--ignition",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        apply_ignition(json.loads(result.stdout), rootfs)  # downloads the image, checks it
    libraries = vm.suite_libraries("trixie", CRYPTSETUP_PACKAGES)
    for lib in (libraries / MULTIARCH.relative_to("/")).iterdir():
        target = rootfs / MULTIARCH.relative_to("/") / lib.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if lib.is_symlink():
            target.symlink_to(os.readlink(lib))
        elif lib.is_file():
            shutil.copyfile(lib, target)
    unit = rootfs / "etc/systemd/system/verity-check.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(vm.UNIT_FRAME)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).symlink_to(f"../{unit.name}")
    disk = vm.make_disk(
        base,
        "",
        {
            "check.sh": CHECK.encode(),
            "rogue.raw": rogue,
            "naked.raw": naked,
            "dmsetup": Path("/usr/sbin/dmsetup"),
        },
        rootfs=rootfs,
        boot_systemd=True,
    )
    result_boot = vm.boot(
        kernel, vm.initramfs(kernel, base), root, disk, cmdline=vm.SYSTEMD_CMDLINE
    )
    (base / "console.log").write_text(result_boot.console)
    return result_boot, {"root_hash": check_verity(hello).root_hash}


def step(booted: tuple[vm.Boot, dict[str, str]], name: str) -> str:
    report = booted[0].steps()
    assert name in report, booted[0].console[-4000:]
    return report[name]


def test_the_host_runs_systemd_257_and_its_sysext_service_has_the_policy(
    booted: tuple[vm.Boot, dict[str, str]],
) -> None:
    boot = step(booted, "boot")
    assert "systemd 257" in boot and "\nactive\n" in boot, boot
    unit = step(booted, "unit")
    assert "# /etc/systemd/system/systemd-sysext.service.d/50-sysext-require-signed.conf" in unit
    policy = "--image-policy=root=signed+absent:usr=signed+absent"
    assert f"ExecStart=systemd-sysext refresh {policy}" in unit, unit


def test_the_signed_image_merges_at_boot_with_verity(
    booted: tuple[vm.Boot, dict[str, str]],
) -> None:
    report = step(booted, "at-boot")
    root = booted[1]["root_hash"]
    assert re.search(r"^/usr\s+hello\b", report, re.MULTILINE), report
    assert re.search(rf"^{root}-verity: 0 \d+ verity 1 .* sha256 {root} ", report, re.M), report
    assert re.search(r"^sysext-[0-9a-f]{16}\.crt$", report, re.MULTILINE)
    assert "hello 1.0 from a verity image" in report


@pytest.mark.parametrize("intruder", ["rogue", "naked"])
def test_a_strangers_or_an_unsigned_image_fails_the_whole_refresh(
    booted: tuple[vm.Boot, dict[str, str]], intruder: str
) -> None:
    # systemd 257 under the policy refuses the image and, with it, the whole refresh: the
    # service fails and no extension stays merged (fail-closed) until it is removed.
    report = step(booted, intruder)
    assert "restart-exit 0" not in report, report
    assert f"absent {intruder}" in report and "absent hello" in report, report
    assert "Failed to merge hierarchies" in report
    if intruder == "naked":  # refused by the drop-in's policy, not by a failed signature
        assert "/etc/extensions/naked.raw: Image does not match image policy." in report


def test_a_direct_refresh_bypasses_the_drop_in(booted: tuple[vm.Boot, dict[str, str]]) -> None:
    # Why --on-update refresh is refused below 259: `systemd-sysext refresh` run by hand
    # (or by a script) does not read systemd-sysext.service, and merges the unsigned image.
    report = step(booted, "direct-refresh")
    assert "refresh-exit 0" in report and "merged naked" in report, report


def test_removing_the_intruder_brings_the_signed_image_back(
    booted: tuple[vm.Boot, dict[str, str]],
) -> None:
    report = step(booted, "recovered")
    assert "restart-exit 0" in report and "merged hello" in report, report
