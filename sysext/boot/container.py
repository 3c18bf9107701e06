"""A throw-away booted container over any OS tree: systemd-nspawn, an overlay, loop devices.

    with Container(root) as box:
        (box.upper / "etc/extensions").mkdir(parents=True)   # files the boot should see
        boot = box.boot()                                      # systemd reached its target
        box.run(["systemctl", "is-active", "docker.service"])
        box.reboot()                                           # same writable layer again

How it boots, and why (measured on a Debian 12 host whose PID 1 is not systemd):
- `systemd-nspawn --register=no --keep-unit -b`: no machined, no transient scope, so it runs
  wherever root can run it. Everything happens in a private mount namespace (`unshare -m`)
  that dies with the container, so no mount outlives it, even after a SIGKILL.
- The OS tree is the lower layer of an overlayfs whose upper layer lives in a temporary
  directory: the tree stays clean, `upper` holds what the caller adds before boot (images,
  Ignition's files), and a reboot boots the same upper layer again.
- systemd-sysext inside needs loop devices: /dev/loop-control is bound in, and so are
  device nodes loop0…loopN created on a private tmpfs. The host's own /dev/loopN nodes come
  and go as other processes attach and detach images, and the kernel hands out the lowest
  free index, so fixed nodes that exist for the whole boot are what works.
- Readiness: with `--notify-ready=yes` nspawn reports READY=1 and the container's leader
  PID on $NOTIFY_SOCKET; then `systemctl is-system-running --wait`, run inside through
  nsenter, returns when the boot job queue is empty ("running" or "degraded").
- Commands run inside through `nsenter --target LEADER --all --root --wd`, not machinectl
  (nothing is registered).
- Stop: SIGTERM to nspawn makes it send SIGRTMIN+3 to the container's systemd, an orderly
  shutdown (units stop, systemd-sysext unmerges, loop devices are released).
- cgroups: on a host with a cgroup v1 hierarchy nspawn gives the container v1 too, and
  systemd 258 and later refuse to run on it (v1 support was removed in 258). For such a
  root, `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1` makes nspawn mount a unified (v2) hierarchy
  for the container; older roots keep what they were verified with.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sysext.core.errors import SysextError
from sysext.core.process import interactive, require_tool, run, start

LOOP_DEVICES = 64
# The first systemd without cgroup v1 support (NEWS 258).
UNIFIED_CGROUP_FROM = 258
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_PAGER": "cat",
    "SYSTEMD_LESS": "",
    "HOME": "/root",
}

# $1 lower, $2 upper, $3 overlay work dir, $4 merged mount point, $5 device dir, $6 count of
# loop nodes; the rest is the nspawn command line.
_BOOT_SCRIPT = r"""
set -e
lower=$1 upper=$2 work=$3 merged=$4 devices=$5 count=$6
shift 6
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
mount -t tmpfs -o mode=0755 tmpfs "$devices"
i=0
while [ "$i" -lt "$count" ]; do
  mknod -m 0660 "$devices/loop$i" b 7 "$i"
  i=$((i + 1))
done
exec "$@"
"""


def root_systemd_version(root: Path) -> int | None:
    """The systemd major version an OS tree boots with, from the name of its
    libsystemd-shared-NNN.so (where nspawn itself looks); None when there is none."""
    for directory in ("usr/lib/systemd", "usr/lib/*/systemd", "usr/lib64/systemd"):
        for shared in sorted(root.glob(f"{directory}/libsystemd-shared-*.so")):
            number = shared.name.removeprefix("libsystemd-shared-").removesuffix(".so")
            if number.isdigit():
                return int(number)
    return None


@dataclass(frozen=True)
class BootResult:
    seconds: float  # from starting nspawn until the boot job queue was empty
    state: str  # what `systemctl is-system-running` said: running, degraded…


class Container:
    """One booted OS tree; use as a context manager so it is always cleaned up."""

    def __init__(self, root: Path, *, name: str | None = None, scratch: Path | None = None):
        if not (root / "usr").is_dir():
            raise SysextError(f"{root}: not an OS tree (no usr/)", "pass the root of an OS tree")
        if os.geteuid() != 0:
            raise SysextError(
                "booting a container needs root (systemd-nspawn, overlayfs, loop devices)",
                "run it as root",
            )
        self.root = root.resolve()
        self.name = name or f"sysext-{secrets.token_hex(4)}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}.", dir=scratch))
        self.upper = self.workdir / "upper"
        for part in ("upper", "work", "merged", "dev"):
            (self.workdir / part).mkdir()
        self.console_log = self.workdir / "console.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.last_boot: BootResult | None = None
        self.systemd_version = root_systemd_version(self.root)

    def __enter__(self) -> Container:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- boot and stop ---------------------------------------------------------------------

    def boot(self, timeout: float = 90) -> BootResult:
        """Boot and wait until systemd has nothing left to start."""
        if self.process is not None:
            raise RuntimeError("already booted")
        started = time.monotonic()
        notify_path = self.workdir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            notify.bind(str(notify_path))
            self._start(notify_path)
            self.leader = self._wait_ready(notify, started + timeout)
        except BaseException:
            self.stop()
            raise
        finally:
            notify.close()
        remaining = max(1.0, started + timeout - time.monotonic())
        self.run(["systemctl", "is-system-running", "--wait"], timeout=remaining)
        self.settle(max(1.0, started + timeout - time.monotonic()))
        state = self.text(["systemctl", "is-system-running"]).strip() or "unknown"
        if state not in ("running", "degraded"):
            self.stop()
            raise SysextError(
                f"the container did not finish booting (systemd says {state!r})",
                f"see the console log {self.console_log}",
            )
        self.last_boot = BootResult(time.monotonic() - started, state)
        return self.last_boot

    def settle(self, timeout: float = 60, quiet: float = 1.0) -> None:
        """Wait until no job has been queued for `quiet` seconds. "running" comes as soon as
        the boot transaction is done, but merged extensions start their units after it (the
        manager reload after the merge, Upholds= retries), and a report must see those; the
        same after an update's activation, which queues its starts without waiting."""
        deadline = time.monotonic() + timeout
        calm_since = time.monotonic()
        while time.monotonic() < deadline:
            jobs = self.text(["systemctl", "list-jobs", "--no-legend", "--plain"]).strip()
            now = time.monotonic()
            if jobs:
                calm_since = now
            elif now - calm_since >= quiet:
                return
            time.sleep(0.2)

    def _start(self, notify_path: Path) -> None:
        devices = self.workdir / "dev"
        nspawn = [
            require_tool("systemd-nspawn"),
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--boot",
            f"--machine={self.name}",
            f"--directory={self.workdir / 'merged'}",
            "--notify-ready=yes",
            "--console=pipe",
            "--link-journal=no",
            "--bind=/dev/loop-control",
            *(f"--bind={devices}/loop{i}:/dev/loop{i}" for i in range(LOOP_DEVICES)),
        ]
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _BOOT_SCRIPT]
        argv += ["sh", str(self.root), str(self.upper), str(self.workdir / "work")]
        argv += [str(self.workdir / "merged"), str(devices), str(LOOP_DEVICES), *nspawn]
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        if self.systemd_version is not None and self.systemd_version >= UNIFIED_CGROUP_FROM:
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        with open(self.console_log, "ab") as log:
            self.process = start(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                new_session=True,  # Ctrl-C is ours to handle: we stop it in order
            )

    def _wait_ready(self, notify: socket.socket, deadline: float) -> int:
        leader: int | None = None
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SysextError(
                    f"systemd-nspawn exited {self.process.returncode} before the boot finished: "
                    f"{self.console_tail()}",
                    f"the whole console log is {self.console_log}",
                )
            notify.settimeout(0.5)
            try:
                message = notify.recv(4096).decode("utf-8", "replace")
            except TimeoutError:
                continue
            for line in message.splitlines():
                if line.startswith("X_NSPAWN_LEADER_PID="):
                    leader = int(line.partition("=")[2])
                if line == "READY=1" and leader is not None:
                    return leader
        raise SysextError(
            "the container did not report ready in time", f"see the console log {self.console_log}"
        )

    def stop(self, timeout: float = 60) -> None:
        """Orderly shutdown (SIGTERM → nspawn → SIGRTMIN+3 to systemd); SIGKILL if stuck."""
        process, self.process = self.process, None
        leader, self.leader = self.leader, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if leader is not None:  # PID 1 of the container: its whole PID namespace
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(leader, signal.SIGKILL)
                process.kill()
                process.wait()

    def reboot(self, timeout: float = 90) -> BootResult:
        """Shut down and boot the same tree and upper layer again (/run starts empty)."""
        self.stop()
        return self.boot(timeout)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- inside the container --------------------------------------------------------------

    def _nsenter(self) -> list[str]:
        if self.leader is None:
            raise RuntimeError("the container is not booted")
        return [require_tool("nsenter"), f"--target={self.leader}", "--all", "--root", "--wd"]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside (as root in the container's namespaces); never raises on a
        non-zero exit: callers look at returncode."""
        return run(
            [*self._nsenter(), "--", *argv],
            input=input,
            env={**CONTAINER_ENV, **(env or {})},
            check=False,
            timeout=timeout,
        )

    def text(self, argv: Sequence[str], timeout: float | None = 120) -> str:
        return self.run(argv, timeout=timeout).stdout.decode("utf-8", "replace")

    def shell(self, argv: Sequence[str] = ("/bin/bash", "-l")) -> int:
        """An interactive command on this terminal, inside; returns its exit code."""
        env = {**CONTAINER_ENV, "TERM": os.environ.get("TERM", "xterm")}
        return interactive([*self._nsenter(), "--", *argv], env=env)

    def console_tail(self, lines: int = 3) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.splitlines()[-lines:] if line.strip())
