"""Signed verity DDIs merged by a real systemd-sysext on a kernel with dm-verity (issue 22).

One QEMU boot (tests/vm.py: Debian's 6.1 kernel under TCG, the Debian 12 boot root with
systemd 254) runs every scenario in turn, each between a merge and an unmerge, and prints
what it saw; the tests below read their scenario's part. Checked on the VM's own tools:
`systemd-sysext status` (merge exits 0 even when an image is refused, so only the status
counts), `dmsetup table` (the verity target and its root hash) and reads through the merged
/usr (a changed block is an I/O error, not changed bytes).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from sysext.image.ddi import Role, check_verity, write_ddi
from sysext.systemd.architecture import Architecture
from tests import vm
from tests.verity_images import blob_of, flip_data_byte, make_key, make_tree, pack_ddi
from tests.verity_images import copy as copy_image

pytestmark = [
    pytest.mark.root(reason="needs root: builds the VM's root disk with mke2fs -d"),
    pytest.mark.slow,
]

POLICY = "--image-policy=root=signed+absent:usr=signed+absent"

SCRIPT = """
setup() {  # $1: image, $2: certificate (or "none")
    systemd-sysext unmerge >/dev/null 2>&1
    rm -rf /etc/extensions /etc/verity.d
    mkdir -p /etc/extensions /etc/verity.d
    cp "/test/$1" /etc/extensions/hello.raw
    [ "$2" = none ] || cp "/test/$2" /etc/verity.d/trusted.crt
}
show() {  # what every scenario reports
    echo "merge-exit $1"
    systemd-sysext status --no-legend --no-pager | sed 's/^/status /'
    /test/dmsetup table 2>/dev/null | grep -v '^No devices found' | sed 's/^/table /'
    if [ -x /usr/bin/hello ]; then /usr/bin/hello | sed 's/^/ran /'; fi
    if [ -f /usr/share/hello/blob ]; then
        if sum=$(sha256sum /usr/share/hello/blob); then echo "blob ${sum%% *}";
        else echo "blob unreadable"; fi
    fi
}
scenario() {  # $1: name, $2: image, $3: certificate, $4…: extra merge options
    name=$1 image=$2 cert=$3; shift 3
    setup "$image" "$cert"
    step "$name"
    systemd-sysext merge "$@" >/tmp/merge.log 2>&1
    show $?
    sed 's/^/log /' /tmp/merge.log | tail -n 5
}
step versions
uname -r
systemd-sysext --version | head -n 1
scenario signed signed.raw builder.crt
scenario tampered tampered.raw builder.crt
scenario wrong-cert signed.raw stranger.crt
scenario no-cert signed.raw none
scenario unsigned unsigned.raw builder.crt
scenario signed-policy signed.raw builder.crt {policy}
scenario wrong-cert-policy signed.raw stranger.crt {policy}
scenario unsigned-policy unsigned.raw builder.crt {policy}
systemd-sysext unmerge >/dev/null 2>&1
""".replace("{policy}", POLICY)


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> tuple[vm.Boot, dict[str, str]]:
    """The VM's report per scenario, and the facts to compare it with."""
    kernel = vm.kernel()
    base = tmp_path_factory.mktemp("vm")
    from sysext.boot.rootfs import Base, ensure_root

    root = vm.root_image(ensure_root(Base.DEBIAN_12))
    keys = {stem: make_key(base, stem) for stem in ("builder", "stranger")}
    tree = make_tree(base)
    signed = pack_ddi(tree, base / "out", *keys["builder"])
    tampered = copy_image(signed, base / "tampered")
    flip_data_byte(tampered, blob_of(tree))
    fs = base / "fs.img"
    with open(signed, "rb") as f:
        part = check_verity(signed).ddi.find(Role.ROOT)
        assert part is not None
        f.seek(part.offset)
        fs.write_bytes(f.read(part.size))
    unsigned = base / "unsigned.raw"
    write_ddi(fs, unsigned, Architecture.X86_64, None)
    disk = vm.make_disk(
        base,
        SCRIPT,
        {
            "signed.raw": signed,
            "tampered.raw": tampered,
            "unsigned.raw": unsigned,
            "builder.crt": keys["builder"][1],
            "stranger.crt": keys["stranger"][1],
            "dmsetup": Path("/usr/sbin/dmsetup"),
        },
    )
    result = vm.boot(kernel, vm.initramfs(kernel, base), root, disk)
    (base / "console.log").write_text(result.console)  # for a human when a test fails
    facts = {
        "root_hash": check_verity(signed).root_hash,
        "blob": hashlib.sha256(blob_of(tree)).hexdigest(),
    }
    return result, facts


def scenario(booted: tuple[vm.Boot, dict[str, str]], name: str) -> str:
    report = booted[0].steps()
    assert name in report, booted[0].console[-3000:]
    return report[name]


def merged(report: str) -> bool:
    return bool(re.search(r"^status /usr\s+hello\b", report, re.MULTILINE))


def test_the_vm_runs_debian_kernel_and_systemd_254(booted: tuple[vm.Boot, dict[str, str]]) -> None:
    versions = scenario(booted, "versions")
    assert re.search(r"^6\.1\.\d+", versions, re.MULTILINE), versions
    assert "systemd 254" in versions


def test_signed_image_merges_with_verity_active(booted: tuple[vm.Boot, dict[str, str]]) -> None:
    report = scenario(booted, "signed")
    root = booted[1]["root_hash"]
    assert merged(report), report
    # The kernel maps the image through dm-verity with the signed root hash.
    assert re.search(rf"^table {root}-verity: 0 \d+ verity 1 .* sha256 {root} ", report, re.M), (
        report
    )
    assert "ran hello 1.0 from a verity image" in report
    assert f"blob {booted[1]['blob']}" in report


def test_a_changed_block_cannot_be_read(booted: tuple[vm.Boot, dict[str, str]]) -> None:
    report = scenario(booted, "tampered")
    # The signature is over the root hash, which still matches the tree: the image merges,
    # and the kernel refuses the block whose hash does not match when it is read.
    assert merged(report), report
    assert "blob unreadable" in report  # an I/O error, never the changed bytes
    assert re.search(
        r"device-mapper: verity: \d+:\d+: data block \d+ is corrupted", booted[0].console
    )


@pytest.mark.parametrize("name", ["wrong-cert", "no-cert"])
def test_a_signature_no_trusted_certificate_made_is_refused(
    booted: tuple[vm.Boot, dict[str, str]], name: str
) -> None:
    report = scenario(booted, name)
    assert not merged(report), report
    assert "merge-exit 0" in report  # systemd-sysext says nothing went wrong (issue 22)
    assert "table " not in report


def test_without_a_policy_an_unsigned_verity_image_merges_unprotected(
    booted: tuple[vm.Boot, dict[str, str]],
) -> None:
    # Why --require-signed exists: systemd 254's default policy takes a root+verity image
    # without a signature, and mounts it without setting verity up at all.
    report = scenario(booted, "unsigned")
    assert merged(report), report
    assert "table " not in report


def test_the_signed_only_policy_keeps_good_images_and_refuses_the_rest(
    booted: tuple[vm.Boot, dict[str, str]],
) -> None:
    assert merged(scenario(booted, "signed-policy"))
    for name in ("wrong-cert-policy", "unsigned-policy"):
        report = scenario(booted, name)
        assert not merged(report), report
        assert "table " not in report
