"""The cached OS tree that `sysext try` and the booted tests boot: a minimal Debian root.

Built once per machine with `debootstrap --variant=minbase` from the Debian mirror the host's
apt already uses (sysext/boot/mirror.py), then kept under the user cache directory, keyed
by `Base.key` (the suite, systemd version and the content revision below). A change to
what goes into a root must bump `CONTENT_REVISION`, so every machine rebuilds instead of
booting a stale tree. Boots never write into it: each one gets its own overlay.

Three bases, all verified to boot in systemd-nspawn on a Debian 12 host with cgroup v1:
- `debian-12`: bookworm with bookworm-backports' systemd 254, which carries
  systemd-sysupdate and systemd-pull (bookworm's own 252 ships neither); the default, and
  the version the sysupdate tests use.
- `debian-13`: trixie's systemd 257, whose systemd-container package ships
  systemd-sysupdate and systemd-pull (in /usr/lib/systemd/).
- `debian-forky`: forky's systemd 262 (the version hosts with EXTENSION_RESTART_UNITS=,
  `.component` files and the notify-sysext socket run). Bookworm's debootstrap knows no
  `forky`, so the `sid` script is named explicitly (forky is bootstrapped like sid), and
  262 no longer runs on a cgroup v1 hierarchy: the container gets a unified one
  (sysext/boot/container.py decides by the root's systemd version).
"""

from __future__ import annotations

import enum
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sysext.boot.mirror import host_debian_mirror
from sysext.core.config import default_cache_dir
from sysext.core.errors import SysextError
from sysext.core.process import run
from sysext.core.steps import console, step

# Bump when the packages or the set-up below change: cached roots are keyed by it.
CONTENT_REVISION = 2
ROOTS_ENV = "SYSEXT_BOOT_ROOTS"
# gpg: systemd-pull verifies SHA256SUMS.gpg with it. dbus: systemctl needs no bus, but units
# of extensions (docker, podman) expect the system bus, as on every real host.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "gpg")


@dataclass(frozen=True)
class BaseSpec:
    suite: str
    systemd: str  # major version the root boots with
    extra: tuple[str, ...]  # packages installed after debootstrap, from `extra_suite`
    extra_suite: str
    # debootstrap's script for the suite when its own list lacks it (a path, or None)
    script: str | None = None


class Base(enum.Enum):
    DEBIAN_12 = "debian-12"
    DEBIAN_13 = "debian-13"
    DEBIAN_FORKY = "debian-forky"

    @property
    def spec(self) -> BaseSpec:
        return _SPECS[self]

    @property
    def key(self) -> str:
        return f"{self.value}-systemd{self.spec.systemd}-r{CONTENT_REVISION}"

    @property
    def description(self) -> str:
        release = self.value.split("-")[1]
        return f"Debian {release} ({self.spec.suite}, systemd {self.spec.systemd})"


_SPECS = {
    Base.DEBIAN_12: BaseSpec(
        "bookworm",
        "254",
        extra=("systemd", "systemd-sysv", "systemd-container", "libsystemd0", "libudev1"),
        extra_suite="bookworm-backports",
    ),
    Base.DEBIAN_13: BaseSpec("trixie", "257", extra=("systemd-container",), extra_suite="trixie"),
    Base.DEBIAN_FORKY: BaseSpec(
        "forky",
        "262",
        # 262's systemd-pull dlopen()s libcurl, which Debian's systemd-container only
        # suggests: without it every download fails "Failed to allocate puller".
        extra=("systemd-container", "libcurl4t64"),
        extra_suite="forky",
        script="/usr/share/debootstrap/scripts/sid",
    ),
}
DEFAULT_BASE = Base.DEBIAN_12

# systemd < 255 ignores EXTENSION_RELOAD_MANAGER=1: the manager loaded its units before
# systemd-sysext.service merged, so units (and drop-ins such as multi-user.target.d/
# Upholds=) that only the extensions ship stay unknown until a daemon-reload. Flatcar
# answers this with a unit of its own after the merge; this does the same for systemd 254
# roots, so they behave like the hosts extensions are built for. PartOf= repeats it when
# systemd-sysext.service is restarted (how an update activates a new image).
RELOAD_MANAGER_UNIT = """\
[Unit]
Description=Load the units of merged system extensions (systemd < 255)
DefaultDependencies=no
After=systemd-sysext.service
PartOf=systemd-sysext.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/systemctl daemon-reload
ExecStart=/usr/bin/systemctl restart --no-block sockets.target timers.target multi-user.target

[Install]
WantedBy=systemd-sysext.service
"""

# Run inside the new root (chroot, private mount namespace, /proc mounted). $1: the mirror,
# $2: the suite to take packages from (SUITE-backports or SUITE), $3: the contents of
# sysext-reload-manager.service or empty, $4: the systemd major version the root must have,
# $5: apt.conf lines for the build (the host apt's date checks); then the packages.
_SETUP_SCRIPT = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
mirror=$1 suite=$2 RELOAD_UNIT=$3 major=$4 APT_CONF=$5; shift 5
printf '%s' "$APT_CONF" > /etc/apt/apt.conf.d/99sysext-build
echo "deb $mirror $suite main" > /etc/apt/sources.list.d/extra.list
apt-get -qq update
apt-get -y -qq --no-install-recommends -t "$suite" install "$@" >/dev/null
# The cache key and the tests name this version: a suite that moved on (forky, a testing
# suite) must fail the build loudly rather than hand out a root with another systemd.
found=$(systemctl --version | head -n1)
case "$found" in
  "systemd $major "*) ;;
  *) echo "$suite now carries '$found', not systemd $major: update sysext/boot/rootfs.py" >&2
     exit 1 ;;
esac
# Without these two the root is useless for update tests: fail the build, not the tests.
[ -x /usr/lib/systemd/systemd-sysupdate ] || [ -x /lib/systemd/systemd-sysupdate ]
[ -x /usr/lib/systemd/systemd-pull ] || [ -x /lib/systemd/systemd-pull ]
# Flatcar enables it; Debian ships it disabled. It is what merges /etc/extensions at boot.
systemctl enable systemd-sysext.service
# The container shares the host's network: nothing inside may configure it (presets
# enable networkd and resolved on a first boot), and a unit that wants
# network-online.target (sysupdate services) must not wait for a manager that never
# reports online. firstboot would prompt on the console of every boot (see machine-id).
systemctl mask systemd-networkd.service systemd-networkd.socket systemd-resolved.service \
  systemd-networkd-wait-online.service systemd-firstboot.service
if [ -n "$RELOAD_UNIT" ]; then
  printf '%s' "$RELOAD_UNIT" > /etc/systemd/system/sysext-reload-manager.service
  systemctl enable sysext-reload-manager.service
fi
echo sysext-try > /etc/hostname
# An empty root password: `sysext try` opens its shell with nsenter, never a login, but a
# getty on the console must not lock a user out either.
passwd -d root >/dev/null
# Every boot is a first boot (machine-id "uninitialized"): presets apply, as with Ignition.
echo uninitialized > /etc/machine-id
# The mirror address is the host's business; the cache keeps no copy of it.
: > /etc/apt/sources.list
rm -f /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
rm -f /etc/apt/apt.conf.d/99sysext-build
apt-get clean
rm -rf /var/lib/apt/lists/* /setup-sysext-root.sh
"""


# Checks of a Release file's dates that the host's apt may switch off.
_DATE_CHECKS = ("Acquire::Check-Valid-Until", "Acquire::Check-Date")


def host_apt_date_checks() -> str:
    """apt.conf lines repeating the host apt's date checks that are switched off. A testing
    suite's Release carries a Valid-Until a week ahead; a host whose apt reads a frozen
    snapshot of the mirror switches the check off, and the root's apt, reading the same
    mirror, must do the same or its `apt-get update` refuses the suite as expired
    (debootstrap itself never looks at Valid-Until)."""
    lines = []
    for option in _DATE_CHECKS:
        found = run(["apt-config", "shell", "VALUE", option], check=False).stdout.decode()
        if found.strip() in ("VALUE='false'", "VALUE='0'"):
            lines.append(f'{option} "false";\n')
    return "".join(lines)


def roots_dir() -> Path:
    override = os.environ.get(ROOTS_ENV)
    return Path(override) if override else default_cache_dir() / "roots"


def cached_root(base: Base) -> Path | None:
    """The ready root for `base`, or None when it has not been built on this machine."""
    root = roots_dir() / base.key
    return root if (root / ".sysext-root-ready").is_file() else None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_root(base: Base = DEFAULT_BASE) -> Path:
    """The cached root for `base`, built now (one to three minutes) when missing."""
    found = cached_root(base)
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise SysextError(
            f"building the {base.description} boot root needs root (debootstrap, chroot)",
            "run as root, or pass --root with an OS tree that boots",
        )
    directory = roots_dir()
    with _locked(directory / f".{base.key}.lock"):
        found = cached_root(base)  # another process built it while we waited
        if found is not None:
            return found
        return _build(base, directory)


def _build(base: Base, directory: Path) -> Path:
    spec = base.spec
    target = directory / base.key
    scratch = directory / f".{base.key}.building"
    shutil.rmtree(scratch, ignore_errors=True)
    mirror = host_debian_mirror()
    console.print(
        f"Building the {base.description} boot root once for this machine into {target} "
        "(one to three minutes; later runs reuse it)"
    )
    started = time.monotonic()
    try:
        with step(f"debootstrap --variant=minbase {spec.suite} (systemd, dbus, gpg)"):
            argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
            if mirror.signed_by and Path(mirror.signed_by).is_file():
                argv.append(f"--keyring={mirror.signed_by}")
            script = [spec.script] if spec.script else []
            run(
                [*argv, spec.suite, scratch, mirror.uri, *script],
                stdout_to_stderr=True,  # its "I: Retrieving…" lines are the progress
                hint="the Debian mirror in this machine's apt sources must be reachable",
            )
        with step(f"Installing {' '.join(spec.extra)} from {spec.extra_suite}"):
            (scratch / "setup-sysext-root.sh").write_text(_SETUP_SCRIPT, encoding="utf-8")
            chroot = (
                'mount -t proc proc "$0/proc" && exec chroot "$0" sh /setup-sysext-root.sh "$@"'
            )
            unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", chroot]
            reload_unit = RELOAD_MANAGER_UNIT if int(spec.systemd) < 255 else ""
            arguments = [mirror.uri, spec.extra_suite, reload_unit, spec.systemd]
            run([*unshare, scratch, *arguments, host_apt_date_checks(), *spec.extra])
        (scratch / ".sysext-root-ready").write_text(f"{base.key}\n", encoding="utf-8")
        os.replace(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    console.print(f"Boot root ready in {time.monotonic() - started:.0f} s")
    return target
