"""Staged rollouts end to end (issue 21) with the REAL systemd-sysupdate 254, 257 and 262
against `sysext serve`: many simulated hosts, each a --root directory with its own machine ID
and the transfer file the provisioning's first-boot script writes from it.

The rollout key (which buckets go first) is random per registry; the test fixes it in the
database so that the expected shares are decided once, not by chance on every run, and
checks the exact set of hosts against `offered_buckets` as well as the 5-15 % bounds.

A fleet polls at once: `run_sysupdates` runs the hosts' clients concurrently (each waits
mostly on systemd-pull's timer, HTTP and gpg), so the three 200-host runs together cost
about what one serial-ish run did.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from registry.http.nginx_conf import server_block
from sysext.core.rollout import app_specific_id, host_bucket, offered_buckets
from sysext.provision import ExtensionRef, HttpCatalog, ProvisionOptions, generate_config
from sysext.provision.model import InlineContents
from sysext.provision.rollout_identity import ROLLOUT_SCRIPT, TEMPLATE_DIR
from tests.registry_server import (
    RegistryServer,
    build_image,
    running_nginx,
    running_registry,
)
from tests.servers import run_cli
from tests.sysupdate_client import follow_mkdir_instruction, run_sysupdates, unreaped_transfer
from tests.test_rollout_identity import run_rollout_script

pytestmark = pytest.mark.root

HOSTS = int(os.environ.get("SYSEXT_TEST_ROLLOUT_HOSTS", "200"))
# Fixed, with fixed machine IDs: the shares below are decided once, not on every run.
ROLLOUT_KEY = "a5" * 32
# 254: Debian 12 backports; 257: Debian 13 (run through its boot root's loader); 262:
# Debian forky (tests/sysupdate_client.py).
CLIENTS = (254, 257, 262)


@dataclass(frozen=True)
class Host:
    root: Path
    host_id: str | None  # None: unmanaged (provisioned before rollouts)

    @property
    def bucket(self) -> int:
        assert self.host_id is not None
        return host_bucket(self.host_id)


def running_version(host: Host) -> str | None:
    link = host.root / "etc/extensions/hello.raw"
    if not link.is_symlink():
        return None
    return os.readlink(link).rsplit("/", 1)[-1].removeprefix("hello-").removesuffix("-x86-64.raw")


def admin(reg: RegistryServer, *args: str) -> str:
    result = run_cli(*args, "--registry", reg.url, env={"SYSEXT_TOKEN": reg.admin_token})
    assert result.returncode == 0, result.stderr
    return result.stdout


def fixed_key(reg: RegistryServer) -> None:
    """ROLLOUT_KEY in the running registry's database, through an outside connection that
    closes at once (it must not take the server's later writes with it:
    test_registry_units.py::test_an_outside_sqlite_connection_never_takes_the_servers_writes)."""
    with contextlib.closing(sqlite3.connect(reg.data / "registry.db")) as db, db:
        db.execute("UPDATE registry_meta SET value = ? WHERE key = 'rollout_key'", (ROLLOUT_KEY,))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """hello 1.0 and 1.1, built once for every client's registry."""
    built = tmp_path_factory.mktemp("images")
    return {version: build_image(built, "hello", version) for version in ("1.0", "1.1")}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    env = {"SYSEXT_WORKERS": "1", "SYSEXT_FLEET_FLUSH": "0", "SYSEXT_ROLLOUT_TICK": "3600"}
    with running_registry(tmp_path / "data", env=env) as reg:
        fixed_key(reg)
        yield reg


def machine_id(number: int) -> str:
    return hashlib.sha256(f"machine {number}".encode()).hexdigest()[:32]


def provision(
    reg: RegistryServer,
    base: Path,
    count: int,
    start: int = 0,
    *,
    url: str | None = None,
    group: str | None = None,
) -> list[Host]:
    """Hosts as `sysext butane --rollout [--group G]` makes them, for the registry at `url`
    (default: the server itself): the config's template and first-boot script, run for
    each host's own machine ID."""
    options = ProvisionOptions(rollout=True, group=group)
    config = generate_config(HttpCatalog(url or reg.url), [ExtensionRef("hello")], options=options)
    files = {f.path: f.contents for f in config.files}
    template, script = files[f"{TEMPLATE_DIR}/hello.conf.in"], files[ROLLOUT_SCRIPT]
    assert isinstance(template, InlineContents) and isinstance(script, InlineContents)

    def one(number: int) -> Host:
        root = base / f"host{number:04d}"
        (root / TEMPLATE_DIR.lstrip("/")).mkdir(parents=True)
        (root / TEMPLATE_DIR.lstrip("/") / "hello.conf.in").write_bytes(template.data)
        (root / "rollout-transfer").write_bytes(script.data)
        (root / "etc/machine-id").write_text(machine_id(number) + "\n")
        (root / "etc/os-release").write_text("ID=flatcar\nVERSION_ID=4081.2.0\n")
        written = run_rollout_script(root, root / "rollout-transfer")
        assert written.returncode == 0, written.stderr
        transfer = (root / "etc/sysupdate.hello.d/hello.conf").read_text()
        follow_mkdir_instruction(root, transfer)
        return Host(root, app_specific_id(machine_id(number)))

    # Each host's script runs on its own (a private mount namespace each); they overlap.
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(start, start + count)))


def unmanaged(reg: RegistryServer, root: Path, client: int = 254) -> Host:
    """A host set up from the registry's own transfer file: NAME.conf for 254, NAME.transfer
    for 257+ (which read .conf only with a warning)."""
    suffix = "conf" if client < 257 else "transfer"
    transfer = requests.get(f"{reg.url}/extensions/hello/hello.{suffix}", timeout=10).text
    (root / "etc/sysupdate.hello.d").mkdir(parents=True)
    (root / f"etc/sysupdate.hello.d/hello.{suffix}").write_text(transfer)
    (root / "etc/os-release").write_text("ID=flatcar\nVERSION_ID=4081.2.0\n")
    follow_mkdir_instruction(root, transfer)
    return Host(root, None)


def poll(hosts: list[Host], keyring: bytes, client: int = 254) -> dict[Host, str | None]:
    """Every host runs `systemd-sysupdate -C hello update` once; what each then runs."""
    results = run_sysupdates(
        [h.root for h in hosts], ["-C", "hello", "update"], keyring, client=client
    )
    for host, result in zip(hosts, results, strict=True):
        assert result.returncode == 0, (client, host.root.name, result.stderr[-3000:])
    return {host: running_version(host) for host in hosts}


@contextlib.contextmanager
def nginx_in_front(reg: RegistryServer, prefix: Path) -> Iterator[str]:
    """The shipped nginx block serving the registry's tree; yields its URL."""
    with running_nginx(
        prefix, lambda listen: server_block(reg.data / "public", listen, reg.url)
    ) as url:
        yield url


def fleet_counts(reg: RegistryServer) -> dict[str, int]:
    fleet = requests.get(f"{reg.url}/api/v1/extensions/hello/fleet", timeout=30).json()
    return {v: e["hosts"] for v, e in fleet["versions"].items()}


def held(running: dict[Host, str | None], version: str) -> set[Host]:
    return {h for h, v in running.items() if v == version}


def expected(hosts: list[Host], percent: int) -> set[Host]:
    buckets = offered_buckets(bytes.fromhex(ROLLOUT_KEY), "hello", "1.1", percent)
    return {h for h in hosts if h.bucket in buckets}


@pytest.mark.parametrize("client", CLIENTS)
def test_staged_rollout_with_real_sysupdate(
    client: int, registry: RegistryServer, images: dict[str, Path], tmp_path: Path
) -> None:
    reg = registry
    admin(reg, "publish", str(images["1.0"]))
    hosts = provision(reg, tmp_path / "hosts", HOSTS)
    legacy = unmanaged(reg, tmp_path / "legacy", client)
    keyring = reg.keyring()

    # Everybody on 1.0.
    running = poll([*hosts, legacy], keyring, client)
    assert set(running.values()) == {"1.0"}
    assert fleet_counts(reg) == {"1.0": HOSTS}  # the unmanaged host is not seen

    # 1.1 staged at 10 % before it is published: no host ever sees it at 100 %.
    admin(reg, "rollout", "set", "hello", "1.1", "--percent", "10")
    admin(reg, "publish", str(images["1.1"]))
    running = poll([*hosts, legacy], keyring, client)
    first = held(running, "1.1")
    assert first == expected(hosts, 10)
    assert 0.05 * HOSTS <= len(first) <= 0.15 * HOSTS, len(first)
    assert running[legacy] == "1.0"  # unmanaged hosts are the last wave
    assert fleet_counts(reg) == {"1.0": HOSTS - len(first), "1.1": len(first)}
    # The same hosts again on a second poll, nobody else.
    assert held(poll(hosts, keyring, client), "1.1") == first

    # 50 %: a superset.
    admin(reg, "rollout", "set", "hello", "1.1", "--percent", "50")
    running = poll([*hosts, legacy], keyring, client)
    second = held(running, "1.1")
    assert second > first and second == expected(hosts, 50)
    assert running[legacy] == "1.0"

    # Halt: a new host in a bucket that 50 % offered never gets 1.1, the others keep it.
    # (The first machine ID past the fleet's whose bucket 50 % offered; only it is made.)
    status = admin(reg, "rollout", "halt", "hello", "1.1")
    assert "halted" in status
    offered = offered_buckets(bytes.fromhex(ROLLOUT_KEY), "hello", "1.1", 50)
    number = next(
        n
        for n in range(HOSTS, HOSTS + 1000)
        if host_bucket(app_specific_id(machine_id(n))) in offered
    )
    (newcomer,) = provision(reg, tmp_path / "new", 1, start=number)
    assert newcomer in expected([newcomer], 50)
    running = poll([*hosts, newcomer], keyring, client)
    assert running[newcomer] == "1.0"
    assert held(running, "1.1") == second
    assert fleet_counts(reg) == {"1.0": HOSTS + 1 - len(second), "1.1": len(second)}

    # Resume at 100 %: everybody, the unmanaged host included.
    admin(reg, "rollout", "resume", "hello", "1.1", "--percent", "100")
    everyone = [*hosts, newcomer, legacy]
    running = poll(everyone, keyring, client)
    assert set(running.values()) == {"1.1"}
    assert fleet_counts(reg) == {"1.1": HOSTS + 1}
    status = run_cli("rollout", "status", "hello", "--registry", reg.url)
    assert "1.1 (stable): complete; 100% of hosts" in status.stdout
    assert f"managed hosts seen: {HOSTS + 1} (1.1: {HOSTS + 1})" in status.stdout


def test_nginx_serves_rollouts_and_groups(images: dict[str, Path], tmp_path: Path) -> None:
    """The shipped nginx block in front of the same tree: buckets, a group with its own
    percentage, a group without a policy (falls back to its bucket), images redirected to
    their one channel URL; real sysupdate 254 through nginx."""
    env = {"SYSEXT_WORKERS": "1", "SYSEXT_FLEET_FLUSH": "0", "SYSEXT_ROLLOUT_TICK": "3600"}
    with running_registry(tmp_path / "data", env=env) as reg:
        fixed_key(reg)
        admin(reg, "publish", str(images["1.0"]))
        with nginx_in_front(reg, tmp_path / "nginx") as url:
            # Provisioned before any rollout: the bucket paths fall back to the channel.
            plain = provision(reg, tmp_path / "plain", 12, url=url)
            canaries = provision(reg, tmp_path / "canary", 3, 100, url=url, group="canary")
            others = provision(reg, tmp_path / "other", 3, 200, url=url, group="other")
            everyone = [*plain, *canaries, *others]
            keyring = reg.keyring()
            assert set(poll(everyone, keyring).values()) == {"1.0"}

            admin(reg, "rollout", "set", "hello", "1.1", "--percent", "30")
            admin(reg, "rollout", "set", "hello", "1.1", "--group", "canary", "--percent", "100")
            admin(reg, "publish", str(images["1.1"]))
            running = poll(everyone, keyring)
            assert held(running, "1.1") == expected(plain + others, 30) | set(canaries)
            redirect = requests.get(
                f"{url}/rollouts/stable/hello/07/{'0' * 32}/hello-1.1-x86-64.raw",
                allow_redirects=False,
                timeout=10,
            )
            assert redirect.status_code == 302
            assert redirect.headers["location"].endswith(
                "/channels/stable/extensions/hello/hello-1.1-x86-64.raw"
            )


def fleet_when(reg: RegistryServer, want: dict[str, int]) -> dict[str, Any]:
    """The fleet view once its counts are `want`, or as it is after 60 s. nginx's copy of a
    request may reach the app after the host got its answer, so the view catches up a
    moment after the last poll returned."""
    deadline = time.monotonic() + 60
    while True:
        fleet: dict[str, Any] = requests.get(
            f"{reg.url}/api/v1/extensions/hello/fleet", timeout=30
        ).json()
        counts = {v: e["hosts"] for v, e in fleet["versions"].items()}
        if counts == want or time.monotonic() > deadline:
            return fleet
        time.sleep(0.2)


def test_fleet_view_counts_hosts_behind_nginx(images: dict[str, Path], tmp_path: Path) -> None:
    """Hosts that poll only the shipped nginx block are in the fleet view with the version
    they installed: nginx answers from disk and sends the app a copy (`mirror`) of each
    poll and image fetch. With the app down, nginx still answers every poll."""
    env = {"SYSEXT_WORKERS": "1", "SYSEXT_FLEET_FLUSH": "0", "SYSEXT_ROLLOUT_TICK": "3600"}
    with running_registry(tmp_path / "data", env=env) as reg:
        fixed_key(reg)
        admin(reg, "publish", str(images["1.0"]))
        admin(reg, "rollout", "set", "hello", "1.1", "--percent", "50")
        admin(reg, "rollout", "set", "hello", "1.1", "--group", "canary", "--percent", "100")
        admin(reg, "publish", str(images["1.1"]))
        with nginx_in_front(reg, tmp_path / "nginx") as url:
            plain = provision(reg, tmp_path / "plain", 6, url=url)
            canaries = provision(reg, tmp_path / "canary", 2, 100, url=url, group="canary")
            late = provision(reg, tmp_path / "late", 3, 300, url=url)
            keyring = reg.keyring()
            everyone = [*plain, *canaries]
            running = poll(everyone, keyring)
            newer = expected(plain, 50) | set(canaries)
            assert held(running, "1.1") == newer and held(running, "1.0") == set(everyone) - newer
            assert newer and set(everyone) - newer, "both versions must be on some host"
            want = {"1.0": len(everyone) - len(newer), "1.1": len(newer)}
            fleet = fleet_when(reg, want)
            counts = {v: e["hosts"] for v, e in fleet["versions"].items()}
            assert counts == want
            assert fleet["groups"] == {
                "(none)": {k: v for k, v in (("1.0", want["1.0"]), ("1.1", want["1.1"] - 2)) if v},
                "canary": {"1.1": 2},
            }
            # The app saw those hosts only as nginx's copies (HEAD; a host asks GET): one
            # per poll (its SHA256SUMS; not the signature) and one per image fetched.
            lines = [line for line in reg.log().splitlines() if "path=/rollouts/" in line]
            assert all("method=HEAD" in line for line in lines), lines
            assert sum("/SHA256SUMS " in line for line in lines) == len(everyone), lines
            assert sum(".raw " in line for line in lines) == len(everyone), lines
            assert not any("SHA256SUMS." in line for line in lines), lines

            # The app down: nginx answers every poll from disk all the same, also a second
            # request on the same kept-alive connection (which waits for the copy's end).
            reg.stop()
            bucket_dir = reg.data / "public/rollouts/stable/hello" / f"{late[0].bucket:02d}"
            with requests.Session() as session:
                for _ in range(2):
                    got = session.get(
                        f"{url}/rollouts/stable/hello/{late[0].bucket:02d}/{late[0].host_id}"
                        "/SHA256SUMS",
                        timeout=30,
                    )
                    assert got.status_code == 200
                    assert got.content == (bucket_dir / "SHA256SUMS").read_bytes()
            running = poll(late, keyring)
            assert held(running, "1.1") == expected(late, 50)
            assert held(running, "1.0") == set(late) - expected(late, 50)
            errors = (tmp_path / "nginx/error.log").read_text()
            assert 'subrequest: "/_sysext_fleet"' in errors  # tried, failed, ignored
            reg.start()
            # What nginx answered while the app was down is not in the view; at their next
            # poll those hosts are seen again, but their version is "none" until they
            # fetch an image (the version is that of the last image fetched).
            assert fleet_when(reg, want)["hosts"] == len(everyone)
            poll(late, keyring)
            fleet = fleet_when(reg, {**want, "none": len(late)})
            assert {v: e["hosts"] for v, e in fleet["versions"].items()} == {
                **want,
                "none": len(late),
            }


def test_the_254_pull_hang_is_told_from_other_logs() -> None:
    """run_sysupdates runs a 254 host again only for systemd-pull's unreaped transfer: the
    log (as a hung run left it) of both responses in and one download finished — not for a
    run that finished, nor one still waiting for its responses."""
    url = "http://127.0.0.1:1/rollouts/stable/hello/27/a22cefa7ce1247e08fe18d5c4cc11900"
    start = [
        f"⤵️ Acquiring manifest file {url}/SHA256SUMS…",
        f"Pulling '{url}/SHA256SUMS'.",
    ]
    both_in = [
        f"Downloading 176B for {url}/SHA256SUMS.",
        f"Downloading 125B for {url}/SHA256SUMS.gpg.",
    ]
    first_done = ["Acquired 176B.", f"Download of {url}/SHA256SUMS complete."]
    second_done = ["Acquired 125B.", f"Download of {url}/SHA256SUMS.gpg complete."]
    assert unreaped_transfer("\n".join([*start, *both_in, *first_done]))
    assert not unreaped_transfer("\n".join([*start, *both_in, *first_done, *second_done]))
    assert not unreaped_transfer("\n".join(start))
    assert not unreaped_transfer("\n".join([*start, both_in[0]]))
