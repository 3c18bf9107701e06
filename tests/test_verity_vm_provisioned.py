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

The same boot then updates: the host was provisioned through the registry's API for the
registry as the VM sees it (the host's 127.0.0.1:PORT, forwarded by QEMU user networking
as 10.0.2.100:PORT), version 2.0 (signed) was published after, and the generated update
unit runs the real systemd-sysupdate, then restarts systemd-sysext.service.
"""

from __future__ import annotations

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
from tests.registry_server import RegistryServer, free_port, running_registry
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
echo "@@STEP update"
# The registry is the host's, reached through QEMU user networking (tests/vm.py).
link=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
/test/busybox ip link set "$link" up
/test/busybox ip addr add {guest}/24 dev "$link"
systemctl start sysext-update-hello.service
echo "update-exit $?"
journalctl -u sysext-update-hello.service --no-pager -o cat
readlink -f /etc/extensions/hello.raw
report
/test/dmsetup table | grep -v '^No devices found'
/usr/bin/hello
""".replace("{guest}", vm.GUEST_ADDRESS)


def put(reg: RegistryServer, image: Path) -> None:
    response = requests.put(
        f"{reg.url}/api/v1/extensions/hello/images/{image.name}",
        data=image.read_bytes(),
        headers=reg.headers(),
        timeout=60,
    )
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> tuple[vm.Boot, dict[str, str]]:
    kernel = vm.kernel()
    base = tmp_path_factory.mktemp("vm257")
    from sysext.boot.rootfs import Base, ensure_root

    root = vm.root_image(ensure_root(Base.DEBIAN_13))
    keys = {stem: make_key(base, stem) for stem in ("builder", "stranger")}
    hello = pack_ddi(make_tree(base), base / "out", *keys["builder"])
    # What systemd-sysupdate installs in the guest, published once the host is provisioned.
    hello2 = pack_ddi(
        make_tree(base, version="2.0"), base / "out2", *keys["builder"], version="2.0"
    )
    rogue = pack_ddi(make_tree(base, "rogue"), base / "rogue", *keys["stranger"], name="rogue")
    signed_naked = pack_ddi(make_tree(base, "naked"), base / "n", *keys["builder"], name="naked")
    fs = base / "naked-fs.img"
    fs.write_bytes(partition_bytes(signed_naked, Role.ROOT))
    naked = base / "naked.raw"
    write_ddi(fs, naked, Architecture.X86_64, None)

    rootfs = base / "rootfs"
    # The registry as the guest sees it: its configs name this URL, and the VM reaches the
    # host's 127.0.0.1:PORT there (and nothing else).
    port = free_port()
    seen_as = f"http://{vm.FORWARD_ADDRESS}:{port}"
    registry = running_registry(
        base / "data",
        port=port,
        env={"SYSEXT_PUBLIC_URL": seen_as},
        args=("--verity-cert", str(keys["builder"][1])),
    )
    with registry as reg:
        put(reg, hello)
        # The registry's provisioning API (the code of `sysext butane`), with updates:
        # restart systemd-sysext.service after an install (the default), no timer (the
        # test starts the update itself).
        response = requests.get(
            f"{reg.url}/api/v1/extensions/hello/ignition",
            params={"require-signed": "true", "systemd-version": "257", "timer": "false"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert seen_as in response.text
        apply_ignition(response.json(), rootfs, reach=(seen_as, reg.url))  # checks the hash
        put(reg, hello2)
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
                # The guest configures its network card (the root has no `ip`).
                "busybox": Path(shutil.which("busybox") or "/bin/busybox"),
            },
            rootfs=rootfs,
            boot_systemd=True,
        )
        result_boot = vm.boot(
            kernel,
            vm.initramfs(kernel, base),
            root,
            disk,
            cmdline=vm.SYSTEMD_CMDLINE,
            forward=(port,),
        )
        (base / "console.log").write_text(result_boot.console)
    return result_boot, {
        "root_hash": check_verity(hello).root_hash,
        "root_hash2": check_verity(hello2).root_hash,
    }


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


def test_sysupdate_installs_the_next_signed_version_and_the_restart_merges_it(
    booted: tuple[vm.Boot, dict[str, str]],
) -> None:
    # The generated update unit runs the real systemd-sysupdate with the transfer file the
    # config installed, against the registry on the host: SHA256SUMS checked with the
    # registry's key, 2.0 downloaded; then `systemctl restart systemd-sysext.service`
    # (the drop-in's signed-only policy in force) merges it with verity.
    report = step(booted, "update")
    assert "update-exit 0" in report, report
    assert "Signature verification succeeded" in report, report
    assert "/opt/extensions/hello/hello-2.0-x86-64.raw\n" in report, report
    assert (
        "hello: installed hello-2.0-x86-64.raw (was hello-1.0-x86-64.raw), activating: restart"
        in report
    )
    assert re.search(r"^/usr\s+hello\b", report, re.MULTILINE), report
    root2 = booted[1]["root_hash2"]
    assert re.search(rf"^{root2}-verity: 0 \d+ verity 1 .* sha256 {root2} ", report, re.M), report
    # (1.0's verity device may still be listed: unmerging does not tear it down at once.)
    assert "hello 2.0 from a verity image" in report
