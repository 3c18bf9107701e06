"""A real S3 engine for tests: a single-node Ceph (mon + one memstore OSD + radosgw) from
Debian's packages, bootstrapped in a private directory on 127.0.0.1 in about 5 s.

    rgw = start_rgw()                 # S3 at rgw.endpoint; rgw.access_key/secret_key
    rgw.restart_rgw()                 # radosgw only (fault tests); the data stays in the OSD
    stop_rgw(rgw)                     # every daemon by PID, then the directory

No manager daemon (radosgw works without it and it costs ~300 MB); `paxos propose
interval = 0.1` makes the eight pool creations quick; every port is picked free, so
several sessions can run side by side. Daemons run in the foreground (`-f`), started and
stopped by PID; nothing is written outside the directory.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.registry_server import free_port

ACCESS_KEY = "SYSEXTTESTACCESS"
SECRET_KEY = "sysext-test-secret-0123456789"


def ceph_available() -> bool:
    return all(shutil.which(t) for t in ("ceph-mon", "ceph-osd", "radosgw", "ceph-authtool"))


def _config(base: Path, fsid: str, mon_port: int, mon_v1: int, rgw_port: int) -> str:
    ms_min = random.randrange(20000, 29000, 100)
    return f"""[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{mon_port},v1:127.0.0.1:{mon_v1}]
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
ms bind port min = {ms_min}
ms bind port max = {ms_min + 99}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {base}/keyring
run dir = {base}/run
admin socket = {base}/run/$cluster-$name.asok
pid file = {base}/run/$name.pid
log file = {base}/log/$cluster-$name.log
mon cluster log file = {base}/log/$cluster.log
crash dir = {base}/crash
mon data = {base}/data/mon.$id
osd data = {base}/data/osd.$id
rgw data = {base}/data/rgw.$id
osd objectstore = memstore
memstore device bytes = 2147483648
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd crush initial weight = 1
mon osd nearfull ratio = .95
mon osd backfillfull ratio = .96
mon osd full ratio = .97
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.1
osd fast shutdown = false
rgw gc obj min wait = 60
rgw gc processor period = 60

[client.rgw.x]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
"""


@dataclass
class CephRgw:
    base: Path
    rgw_port: int
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    pids: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CEPH_CONF": str(self.base / "ceph.conf")}

    def run(self, *argv: str, timeout: float = 60) -> str:
        proc = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def daemon(self, name: str, *argv: str) -> None:
        log = open(self.base / "log" / f"{name}.out", "ab")  # noqa: SIM115 (child's)
        self.pids[name] = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()

    def wait(self, what: str, check: object, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.pids.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"ceph {name} exited while waiting for {what}")
            with contextlib.suppress(Exception):
                if check():  # type: ignore[operator]
                    return
            time.sleep(0.2)
        raise RuntimeError(f"ceph: timed out waiting for {what}")

    def _rgw_answers(self) -> bool:
        return requests.get(self.endpoint, timeout=2).status_code < 500

    def start_rgw(self) -> None:
        self.daemon("rgw", "radosgw", "-f", "-n", "client.rgw.x")
        self.wait("radosgw", self._rgw_answers)

    def stop_daemon(self, name: str, kill: bool = False) -> None:
        proc = self.pids.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart_rgw(self, kill: bool = False) -> None:
        self.stop_daemon("rgw", kill=kill)
        self.start_rgw()

    def stop(self) -> None:
        for name in ("rgw", "osd", "mon"):
            self.stop_daemon(name)


def start_rgw() -> CephRgw:
    base = Path(tempfile.mkdtemp(prefix="sysext-ceph-"))
    for sub in ("run", "log", "crash", "data/mon.a", "data/osd.0", "data/rgw.x"):
        (base / sub).mkdir(parents=True)
    fsid = str(uuid.uuid4())
    mon_port, mon_v1 = free_port(), free_port()
    rgw = CephRgw(base=base, rgw_port=free_port())
    (base / "ceph.conf").write_text(_config(base, fsid, mon_port, mon_v1, rgw.rgw_port))
    try:
        keyring = str(base / "keyring")
        rgw.run("ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.")
        rgw.run("ceph-authtool", keyring, "--cap", "mon", "allow *", "-n", "mon.")
        entities = {
            "client.admin": ("mon", "allow *", "osd", "allow *", "mgr", "allow *"),
            "osd.0": ("mon", "allow profile osd", "mgr", "allow profile osd", "osd", "allow *"),
            "client.rgw.x": ("mon", "allow rw", "osd", "allow rwx", "mgr", "allow rw"),
        }
        for entity, caps in entities.items():
            argv = ["ceph-authtool", keyring, "--gen-key", "-n", entity]
            for i in range(0, len(caps), 2):
                argv += ["--cap", caps[i], caps[i + 1]]
            rgw.run(*argv)
        monmap = str(base / "monmap")
        rgw.run(
            "monmaptool", "--create", "--fsid", fsid, "--addv", "a",
            f"[v2:127.0.0.1:{mon_port},v1:127.0.0.1:{mon_v1}]", monmap,
        )  # fmt: skip
        rgw.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyring)
        rgw.daemon("mon", "ceph-mon", "-f", "-i", "a")
        rgw.wait("the monitor", lambda: rgw.run("ceph", "--connect-timeout", "2", "mon", "stat"))
        osd_uuid = str(uuid.uuid4())
        rgw.run("ceph", "osd", "new", osd_uuid, "0")
        rgw.run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        rgw.daemon("osd", "ceph-osd", "-f", "-i", "0")
        rgw.wait("the OSD", lambda: "osd.0 up" in rgw.run("ceph", "osd", "dump"))
        rgw.start_rgw()
        rgw.run(
            "radosgw-admin", "user", "create", "--uid=sysext-test", "--display-name=sysext tests",
            f"--access-key={rgw.access_key}", f"--secret-key={rgw.secret_key}",
        )  # fmt: skip
    except BaseException:
        stop_rgw(rgw)
        raise
    return rgw


def stop_rgw(rgw: CephRgw) -> None:
    rgw.stop()
    shutil.rmtree(rgw.base, ignore_errors=True)
