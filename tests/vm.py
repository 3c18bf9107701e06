"""A QEMU virtual machine for the tests that need a kernel with device-mapper (dm-verity).

The test container's kernel has no device-mapper, so signed verity DDIs are merged in a VM:
Debian's own kernel (`linux-image-amd64` from the machine's apt archive, unpacked with
dpkg-deb into ~/.cache/sysext/vm/), booted by `qemu-system-x86_64` under TCG (KVM hangs
on this nested host), with a small initramfs (busybox-static, the modules the test needs,
insmod'ed in depmod's order) that mounts a Debian root and `switch_root`s into the test's
script as PID 1. The root is the cached boot root of tests/booted.py (Debian 12, systemd
254: the one that carries libcryptsetup, which systemd needs for verity) as an ext4 image
made with `mke2fs -d`, attached with `snapshot=on` so no test changes it; the test's files
come on a second ext4 disk. The script's output is the serial console, which `boot()`
returns.

Everything missing (QEMU, the kernel package, busybox-static, kmod's depmod) is a skip
with the reason, printed by `-ra`: never a silent pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("SYSEXT_VM_CACHE", Path.home() / ".cache/sysext/vm"))
# What the tests load, in addition to what these pull in (modules.dep).
MODULES = (
    "virtio_pci", "virtio_blk", "ext4", "crc32c_generic", "loop", "dm_verity", "squashfs",
    "erofs", "overlay", "virtio_net",
)  # fmt: skip
# QEMU user networking: the guest's address on it, and where it reaches forwarded host
# ports (a guestfwd address of its own: QEMU refuses one on the host's 10.0.2.2).
GUEST_ADDRESS = "10.0.2.15"
FORWARD_ADDRESS = "10.0.2.100"
BOOT_TIMEOUT = 600  # TCG on two shared cores: a boot plus a script takes 10–60 s
END = "@@SYSEXT-VM-END"


@dataclass(frozen=True)
class Kernel:
    release: str  # e.g. 6.1.0-57-amd64
    vmlinuz: Path
    modules: Path  # …/lib/modules/RELEASE


def _need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"VM tests need {tool} (apt-get install {package}); not installed here")
    return found


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def kernel() -> Kernel:
    """Debian's current kernel package, downloaded and unpacked once per machine."""
    _need("qemu-system-x86_64", "qemu-system-x86")
    _need("dpkg-deb", "dpkg")
    _need("depmod", "kmod")
    depends = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=False
    ).stdout
    package = next(
        (line.split(":", 1)[1].strip() for line in depends.splitlines() if "Depends:" in line),
        None,
    )
    if not package or not package.startswith("linux-image-"):
        pytest.skip("VM tests need linux-image-amd64 in the apt archive (apt-cache depends)")
    release = package.removeprefix("linux-image-")
    target = CACHE / f"linux-{release}"
    with _locked("kernel"):
        if not (target / ".ready").exists():
            shutil.rmtree(target, ignore_errors=True)
            debs = CACHE / "debs"
            debs.mkdir(parents=True, exist_ok=True)
            fetched = subprocess.run(
                ["apt-get", "download", package], cwd=debs, capture_output=True, text=True,
                check=False,
            )  # fmt: skip
            deb = next(iter(sorted(debs.glob(f"{package}_*.deb"))), None)
            if deb is None:
                pytest.skip(f"VM tests: apt-get download {package} failed: {fetched.stderr}")
            unpacked = target.with_name(target.name + ".tmp")
            shutil.rmtree(unpacked, ignore_errors=True)
            _run("dpkg-deb", "-x", deb, unpacked)
            _run("depmod", "-b", unpacked, release)
            (unpacked / ".ready").write_text(release)
            unpacked.rename(target)
    return Kernel(release, target / f"boot/vmlinuz-{release}", target / f"lib/modules/{release}")


def suite_libraries(suite: str, packages: tuple[str, ...]) -> Path:
    """Packages of another Debian suite unpacked into one tree (cached per machine): what a
    boot root lacks, e.g. Debian 13's libcryptsetup for systemd 257. apt-get runs with a
    private configuration (own source list, lists and cache), so the machine's apt state
    is not touched. Skips when the mirror has no such suite."""
    from sysext.boot.mirror import host_debian_mirror

    target = CACHE / f"{suite}-{'-'.join(packages)}"
    with _locked("suite-libraries"):
        if (target / ".ready").exists():
            return target
        mirror = host_debian_mirror()
        apt = CACHE / f"apt-{suite}"
        for sub in ("lists/partial", "cache/archives/partial", "debs"):
            (apt / sub).mkdir(parents=True, exist_ok=True)
        signed = f"[signed-by={mirror.signed_by}] " if mirror.signed_by else ""
        (apt / "sources.list").write_text(f"deb {signed}{mirror.uri} {suite} main\n")
        options = [
            "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={apt / 'lists'}",
            "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip
        updated = subprocess.run(
            ["apt-get", *options, "update"], capture_output=True, text=True, check=False
        )
        fetched = subprocess.run(
            ["apt-get", *options, "download", *packages],
            cwd=apt / "debs", capture_output=True, text=True, check=False,
        )  # fmt: skip
        if updated.returncode != 0 or fetched.returncode != 0:
            pytest.skip(
                f"VM tests need {', '.join(packages)} from Debian {suite}: "
                f"{(updated.stderr + fetched.stderr).strip().splitlines()[-1:]}"
            )
        unpacked = target.with_name(target.name + ".tmp")
        shutil.rmtree(unpacked, ignore_errors=True)
        for package in packages:
            debs = sorted((apt / "debs").glob(f"{package}_*.deb"))
            assert debs, package
            _run("dpkg-deb", "-x", debs[-1], unpacked)
        (unpacked / ".ready").write_text(suite)
        unpacked.rename(target)
    return target


def _module_order(k: Kernel, names: tuple[str, ...]) -> list[Path]:
    """Module files for `names` with their dependencies first (modules.dep), no repeats."""
    deps: dict[str, list[str]] = {}
    for line in (k.modules / "modules.dep").read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[module] = needs.split()
    by_name = {Path(m).name.removesuffix(".ko").replace("-", "_"): m for m in deps}
    order: list[str] = []

    def add(module: str) -> None:
        for dependency in deps[module]:
            add(dependency)
        if module not in order:
            order.append(module)

    for name in names:
        if name in by_name:
            add(by_name[name])
        # else: built into this kernel
    return [k.modules / m for m in order]


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data); directories have empty data."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in $(/bin/busybox cat /modules.order); do
    /bin/busybox insmod /modules/$m || echo "insmod $m failed"
done
/bin/busybox mount -t ext4 /dev/vda /newroot || { echo "no root"; /bin/busybox poweroff -f; }
/bin/busybox mkdir -p /newroot/test
/bin/busybox mount -t ext4 /dev/vdb /newroot/test || echo "no test disk"
# Files the test adds to the root (e.g. what Ignition's files stage would write).
[ -d /newroot/test/rootfs ] && /bin/busybox cp -a /newroot/test/rootfs/. /newroot/
/bin/busybox mount --move /dev /newroot/dev
/bin/busybox mount --move /proc /newroot/proc
/bin/busybox mount --move /sys /newroot/sys
# Either boot the root's systemd (the test's units do the checking) or run the script.
[ -e /newroot/test/boot-systemd ] && exec /bin/busybox switch_root /newroot /sbin/init
exec /bin/busybox switch_root /newroot /bin/sh /test/run.sh
"""

# The script's frame: the kernel-side mounts systemd expects, then the test's body, then
# the end marker and a power-off (PID 1 must never return).
SCRIPT_HEAD = """#!/bin/sh
mount --make-rshared /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
step() { echo "@@STEP $*"; }
"""
SCRIPT_TAIL = f"""
sync
echo "{END}"
echo o > /proc/sysrq-trigger
sleep 30
"""


def initramfs(k: Kernel, directory: Path) -> Path:
    busybox = _need("busybox", "busybox-static")
    if not _is_static(Path(busybox)):
        pytest.skip("VM tests need a static busybox (apt-get install busybox-static)")
    modules = _module_order(k, MODULES)
    entries: list[tuple[str, int, bytes]] = [
        ("bin", stat.S_IFDIR | 0o755, b""),
        ("modules", stat.S_IFDIR | 0o755, b""),
        ("bin/busybox", stat.S_IFREG | 0o755, Path(busybox).read_bytes()),
        ("init", stat.S_IFREG | 0o755, INIT.encode()),
        ("modules.order", stat.S_IFREG | 0o644, "\n".join(m.name for m in modules).encode()),
    ]
    entries += [(f"modules/{m.name}", stat.S_IFREG | 0o644, m.read_bytes()) for m in modules]
    path = directory / "initramfs.cpio"
    path.write_bytes(_cpio(entries))
    return path


def _is_static(path: Path) -> bool:
    # No PT_INTERP program header: statically linked (the `file` tool may be missing).
    data = path.read_bytes()[:4096]
    return b"/lib64/ld-linux" not in data and b"/lib/ld-linux" not in data


def root_image(root: Path) -> Path:
    """The boot root as an ext4 image, made once per root (attached read-only later)."""
    _need("mke2fs", "e2fsprogs")
    target = CACHE / f"root-{root.name}.ext4"
    with _locked("root-image"):
        stamp = root / ".sysext-root-ready"
        if not target.exists() or target.stat().st_mtime < stamp.stat().st_mtime:
            tmp = target.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            size = sum(
                f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink()
            )
            megabytes = size * 3 // 2 // (1 << 20) + 200
            _run("mke2fs", "-q", "-t", "ext4", "-d", root, "-L", "root", tmp, f"{megabytes}M")
            tmp.rename(target)
    return target


def make_disk(
    directory: Path,
    script: str,
    files: dict[str, Path | bytes],
    *,
    rootfs: Path | None = None,
    boot_systemd: bool = False,
) -> Path:
    """An ext4 image holding `files` and run.sh (= `script` framed), for /dev/vdb.

    `rootfs`: a tree copied over the root before it boots; `boot_systemd`: boot the root's
    systemd instead of running run.sh (then a unit of `rootfs` must print `END` and power
    off, see `UNIT_FRAME`)."""
    content = directory / "disk"
    shutil.rmtree(content, ignore_errors=True)
    content.mkdir(parents=True)
    for name, source in files.items():
        target = content / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copyfile(source, target)
            target.chmod(source.stat().st_mode & 0o777)
    (content / "run.sh").write_text(SCRIPT_HEAD + script + SCRIPT_TAIL)
    (content / "run.sh").chmod(0o755)
    if rootfs is not None:
        shutil.copytree(rootfs, content / "rootfs", symlinks=True)
    if boot_systemd:
        (content / "boot-systemd").write_text("")
    size = sum(f.stat().st_size for f in content.rglob("*") if f.is_file())
    image = directory / "test.ext4"
    image.unlink(missing_ok=True)
    _run("mke2fs", "-q", "-t", "ext4", "-d", content, image, f"{size * 2 // (1 << 20) + 16}M")
    return image


@dataclass(frozen=True)
class Boot:
    console: str
    seconds: float

    def steps(self) -> dict[str, str]:
        """The output of each `step NAME` in the script, by name."""
        found: dict[str, str] = {}
        name = None
        for line in self.console.splitlines():
            line = line.rstrip("\r")
            if "@@STEP " in line:  # the first may follow the firmware's escape codes
                name = line.split("@@STEP ", 1)[1].strip()
                found[name] = ""
            elif line.startswith(END):
                name = None
            elif name is not None:
                found[name] += line + "\n"
        return found


# A unit that runs the test's checks once the boot has got far enough, prints them on the
# serial console between the markers Boot.steps() reads, and powers the VM off.
UNIT_FRAME = f"""[Unit]
Description=The test's checks
After=multi-user.target systemd-sysext.service
[Service]
Type=oneshot
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh -c '. /test/check.sh; echo {END}'
ExecStartPost=/usr/bin/systemctl poweroff --no-block
[Install]
WantedBy=multi-user.target
"""
SYSTEMD_CMDLINE = "systemd.firstboot=0 systemd.show_status=0 systemd.log_level=info"


def boot(
    k: Kernel,
    initrd: Path,
    root: Path,
    disk: Path,
    *,
    memory: str = "1024",
    cmdline: str = "",
    forward: tuple[int, ...] = (),
) -> Boot:
    """Boot, run the disk's run.sh as PID 1, return the console once it powered off.

    `forward`: ports of the host's 127.0.0.1 the guest reaches at FORWARD_ADDRESS:PORT (a
    network card on QEMU user networking; the guest configures its address itself).
    `restrict=on` isolates the guest from everything else: no other host port, nothing
    beyond the host."""
    argv = [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", memory,
        "-smp", "1", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
        "-kernel", str(k.vmlinuz), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 loglevel=4 systemd.log_color=0 {cmdline}",
        "-drive", f"file={root},if=virtio,format=raw,snapshot=on",
        "-drive", f"file={disk},if=virtio,format=raw",
    ]  # fmt: skip
    if forward:
        # One relay process per connection (tests/vm_relay.py says why); QEMU's option
        # syntax escapes a comma by doubling it.
        relay = f"{sys.executable} {Path(__file__).with_name('vm_relay.py')}".replace(",", ",,")
        rules = ",".join(
            f"guestfwd=tcp:{FORWARD_ADDRESS}:{port}-cmd:{relay} {port}" for port in forward
        )
        argv += ["-netdev", f"user,id=net0,restrict=on,{rules}"]
        argv += ["-device", "virtio-net-pci,netdev=net0"]
    started = time.monotonic()
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=BOOT_TIMEOUT, check=False,
        errors="replace",
    )  # fmt: skip
    result = Boot(proc.stdout, time.monotonic() - started)
    if END not in proc.stdout:
        raise AssertionError(
            f"the VM did not finish its script (qemu exit {proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
        )
    return result
