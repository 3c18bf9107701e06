"""Run the REAL systemd-sysupdate against a test ROOT: 254 (Debian bookworm-backports, the
default), 257 (Debian trixie; `client=257`) or 262 (Debian forky; `client=262`).

257 is not unpacked from packages: trixie's binaries need glibc 2.38/2.39, newer than this
Debian 12 host's 2.36. They run from the cached Debian 13 boot root (sysext/boot/rootfs.py,
built on first use) through that root's own dynamic loader with `--library-path` on its
libraries, by two wrapper scripts (`systemd-sysupdate`, and `systemd-pull`, which sysupdate
execs through `$SYSTEMD_PULL_PATH`). The loader's path does not leak into what they run
(the host's gpg), unlike LD_LIBRARY_PATH would.

`scripts/fetch-sysupdate.sh` (run by `scripts/setup.sh --test`) unpacks each suite's
`systemd`, `libsystemd-shared` and `systemd-container` packages into
`.cache/sysupdate-254/` and `.cache/sysupdate-262/` of the repo; nothing is installed on the
machine. 262 runs on this Debian 12 userland as it is (it needs glibc 2.34 at most and
dlopen()s libcurl and libcrypto, which bookworm has). `run_sysupdate(root, args, keyring)`
runs a systemd-sysupdate for a host whose files live under ROOT, as root, inside `unshare -m
--propagation private`, so every mount below exists only for that one run:

* **systemd-pull.** sysupdate execs systemd-pull by absolute path (`/lib/systemd/systemd-pull`,
  the host's 252 one here) unless `$SYSTEMD_PULL_PATH` names another: we point that at the
  client's own binary, so no bind mount over the host's file is needed. `LD_LIBRARY_PATH`
  finds the unpacked `libsystemd-shared-NNN.so` (the host only has the 252 one).
* **Keyring.** systemd-pull 254 reads `/etc/systemd/import-pubring.gpg`, else the vendor
  `/lib/systemd/import-pubring.gpg`; 262 reads `/etc/systemd/import-pubring.pgp` (else the
  legacy `.gpg` there) plus the vendor `/usr/lib/systemd/import-pubring.pgp` — HOST
  paths: `--root` is not applied (seen: a keyring in ROOT/etc/systemd is ignored and the
  signature check fails with "No public key"). So a tmpfs is mounted on /etc/systemd
  holding `keyring` (as import-pubring.gpg, which both read) when given, and another on the
  vendor keyring's directory so that `keyring=None` really means "no keyring at all" (gpg then
  creates an empty keybox and fails the same way), independent of what the host ships.
* **Target directory.** 254 resolves `[Target] Path=` with chase() (no CHASE_NONEXISTENT) and
  fails "Failed to resolve '/opt/extensions/NAME' (relative to '/'): No such file or
  directory" until it exists — on a real host too, not only with --root (spec §2.2 says 252
  creates it). The transfer file's install comment says `mkdir -p` it; `prepare_root` does.
* **No --root for the transfers.** 254 resolves an absolute `CurrentSymlink=` with chase()
  inside ROOT WITHOUT no-follow (`transfer_install_instance()`, only `if (root)`), so on the
  second update it follows the existing link and replaces the previous IMAGE by a symlink
  ("Updated symlink 'ROOT/opt/extensions/NAME/NAME-1.0-….raw' → 'NAME-1.1-….raw'"), leaving
  /etc/extensions/NAME.raw pointing at 1.0. A real host never passes --root, so
  `run_sysupdate` does what the host does instead: it takes the transfer files from
  ROOT/etc/sysupdate.NAME.d/ verbatim except that the absolute `[Target] Path=` and
  `CurrentSymlink=` get the ROOT prefix, and runs `--definitions=COPY` without --root.
  `root_mode=True` runs the genuine `--root=ROOT -C NAME` to show that trap.
* Nothing else was needed: no D-Bus, no /run/systemd, no booted system.

`merge_through_link(root, name, command)` proves the CurrentSymlink activates the image:
systemd-sysext 252 (and 254) with `--root` do not pick up a symlinked ROOT/etc/extensions/
NAME.raw ("No extensions found"), but without `--root` the same link is followed. So the
link sysupdate wrote is copied as a link to /run/extensions/NAME.raw (a search path), ROOT/opt
is bind-mounted on /opt so its relative target `../../opt/…` resolves, and the host's /usr
is merged — all inside the private mount namespace, never on the real host.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Client:
    """One systemd-sysupdate + systemd-pull: unpacked (scripts/fetch-sysupdate.sh), or
    (`boot_root`) taken from a cached boot root and run through its loader."""

    label: int  # 254, 257 or 262: the argument fetch-sysupdate.sh takes
    directory: Path
    bindir: str  # where the package puts the binaries
    boot_root: str | None = None  # sysext.boot.rootfs.Base value of the root

    @property
    def sysupdate(self) -> Path:
        if self.boot_root is not None:
            return self.directory / "systemd-sysupdate"
        return self.directory / self.bindir / "systemd-sysupdate"

    @property
    def pull(self) -> Path:
        if self.boot_root is not None:
            return self.directory / "systemd-pull"
        return self.directory / self.bindir / "systemd-pull"


CLIENTS = {
    254: Client(254, REPO / ".cache" / "sysupdate-254", "lib/systemd"),
    257: Client(257, REPO / ".cache" / "sysupdate-257", "usr/lib/systemd", boot_root="debian-13"),
    262: Client(262, REPO / ".cache" / "sysupdate-262", "usr/lib/systemd"),
}

# $0 is the wrapper; the root, its library path and the binary are filled in.
_LOADER_WRAPPER = """#!/bin/sh
# Generated by tests/sysupdate_client.py: run {binary} of {root} with that root's libc.
exec {root}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path {libraries} \\
    {root}/{binary} "$@"
"""


def _wrap_boot_root_client(client: Client) -> None:
    """Write the wrappers of a boot-root client (building the root on first use)."""
    from sysext.boot.rootfs import Base, ensure_root

    assert client.boot_root is not None
    root = ensure_root(Base(client.boot_root))
    libraries = f"{root}/usr/lib/x86_64-linux-gnu/systemd:{root}/usr/lib/x86_64-linux-gnu"
    client.directory.mkdir(parents=True, exist_ok=True)
    for wrapper, name in ((client.sysupdate, "systemd-sysupdate"), (client.pull, "systemd-pull")):
        binary = f"{client.bindir}/{name}"
        text = _LOADER_WRAPPER.format(root=root, libraries=libraries, binary=binary)
        if not wrapper.is_file() or wrapper.read_text() != text:
            wrapper.write_text(text)
            wrapper.chmod(0o755)


CLIENT_DIR = CLIENTS[254].directory
SYSUPDATE = CLIENTS[254].sysupdate
PULL = CLIENTS[254].pull
# Where systemd-pull looks for the vendor keyring (254: /lib/systemd, 262: /usr/lib/systemd;
# the same directory on this merged-/usr host, resolved because /lib is a symlink).
VENDOR_KEYRING_DIR = Path("/lib/systemd").resolve()

_KEYRING_MOUNTS = r"""
set -eu
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd
if [ -n "$KEYRING_FILE" ]; then cp "$KEYRING_FILE" /etc/systemd/import-pubring.gpg; fi
mount -t tmpfs -o mode=0755 tmpfs "$VENDOR_KEYRING_DIR"
"""
_RUN_SCRIPT = _KEYRING_MOUNTS + 'exec "$SYSUPDATE" "$@"\n'
# The same mounts, then the namespace is held open (until stdin closes) for many runs.
_HOLD_SCRIPT = _KEYRING_MOUNTS + "echo ready\nexec cat >/dev/null\n"

_MERGE_SCRIPT = r"""
set -eu
mount -t tmpfs tmpfs /run
mount --make-rshared /
mount --bind "$ROOT/opt" /opt
mkdir -p /run/extensions
cp -P "$ROOT/etc/extensions/$NAME.raw" "/run/extensions/$NAME.raw"
systemd-sysext merge >&2
set +e
"$@"
rc=$?
systemd-sysext unmerge >&2
exit $rc
"""


def _library_dir(client: Client) -> Path:
    found = sorted(client.directory.glob("usr/lib/*/systemd/libsystemd-shared-*.so"))
    if not found:
        import pytest  # here: bench/rollout.py imports this module without the test extras

        pytest.fail(
            f"no libsystemd-shared in {client.directory};"
            f" run scripts/fetch-sysupdate.sh {client.label}"
        )
    return found[0].parent


def require_client(client: int = 254) -> Path:
    """The real systemd-sysupdate binary; fail (not skip) when setup did not fetch it."""
    found = CLIENTS[client]
    if found.boot_root is not None:
        _wrap_boot_root_client(found)
    if not (found.sysupdate.is_file() and found.pull.is_file()):
        import pytest

        pytest.fail(
            f"the real systemd-sysupdate {client} is missing from {found.directory}:"
            f" run scripts/fetch-sysupdate.sh {client} (scripts/setup.sh --test does)"
        )
    return found.sysupdate


def client_env(client: int = 254, log_level: str = "info") -> dict[str, str]:
    found = CLIENTS[client]
    # A boot-root client's wrappers name its libraries to its loader themselves.
    libraries = {} if found.boot_root else {"LD_LIBRARY_PATH": str(_library_dir(found))}
    return {
        **os.environ,
        **libraries,
        "SYSTEMD_PULL_PATH": str(found.pull),
        "SYSTEMD_COLORS": "0",
        "SYSTEMD_PAGER": "cat",
        "SYSTEMD_LOG_LEVEL": log_level,
    }


def client_version(client: int = 254) -> str:
    proc = subprocess.run(
        [str(require_client(client)), "--version"],
        env=client_env(client),
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.splitlines()[0]


def requested(log: str) -> list[str]:
    """The URL paths systemd-pull asked for, in order, from a debug-level client log
    (libcurl's request lines, `> GET /PATH HTTP/1.1`)."""
    return [line.split()[2] for line in log.splitlines() if line.startswith("> GET ")]


def prepare_root(
    root: Path, name: str, transfer: str, *, make_dirs: bool = True, suffix: str = "conf"
) -> Path:
    """A host ROOT for extension NAME: the transfer file in /etc/sysupdate.NAME.d/ (as
    NAME.conf, or NAME.transfer for 257+) and an os-release; with `make_dirs`, the
    directories the transfer file's own install comment says to create (`#   mkdir -p
    DIR…`: the target and /etc/extensions), under ROOT."""
    definitions = root / "etc" / f"sysupdate.{name}.d"
    definitions.mkdir(parents=True, exist_ok=True)
    (definitions / f"{name}.{suffix}").write_text(transfer, encoding="utf-8")
    os_release = root / "etc" / "os-release"
    if not os_release.exists():
        os_release.write_text("ID=flatcar\nVERSION_ID=4081.2.0\n", encoding="utf-8")
    if make_dirs:
        follow_mkdir_instruction(root, transfer)
    return root


def follow_mkdir_instruction(root: Path, transfer: str) -> list[str]:
    """Create under ROOT what the transfer's `#   mkdir -p DIR…` comment names."""
    for line in transfer.splitlines():
        if line.startswith("#   mkdir -p "):
            directories = line.removeprefix("#   mkdir -p ").split()
            for directory in directories:
                (root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
            return directories
    raise AssertionError("the transfer file does not say which directories to create")


def rebase_transfer(text: str, root: Path) -> str:
    """The transfer with its absolute [Target] Path= and CurrentSymlink= moved under ROOT;
    every other line (source URL, patterns, Verify=, InstancesMax=…) stays as it is."""
    lines = []
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        key, sep, value = stripped.partition("=")
        if section == "[Target]" and key in ("Path", "CurrentSymlink") and sep:
            line = f"{key}={root}{value}" if value.startswith("/") else line
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_sysupdate(
    root: Path,
    args: Sequence[str],
    keyring: bytes | None,
    *,
    root_mode: bool = False,
    timeout: float = 120,
    client: int = 254,
    log_level: str = "info",
) -> subprocess.CompletedProcess[str]:
    """Run the real client for host ROOT: `args` as given to systemd-sysupdate on the host,
    e.g. ["-C", "hello", "update"]; `keyring` is the host's /etc/systemd/import-pubring.gpg
    (None: no keyring at all). See the module doc for how ROOT is applied. `client`: 254 or
    262; `log_level` debug makes the log list every request (`requested()`)."""
    sysupdate = require_client(client)
    scratch = Path(tempfile.mkdtemp(prefix="sysupdate-run-"))
    try:
        argv = list(args)
        if root_mode:
            argv = [f"--root={root}", *argv]
        else:
            argv = _with_rebased_definitions(root, argv, scratch / "definitions")
        env = {
            **client_env(client, log_level),
            "SYSUPDATE": str(sysupdate),
            **_keyring_env(keyring, scratch),
        }
        unshare = ["unshare", "-m", "--propagation", "private", "sh", "-c", _RUN_SCRIPT, "sh"]
        return subprocess.run(
            [*unshare, *argv], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _keyring_env(keyring: bytes | None, scratch: Path) -> dict[str, str]:
    """What _KEYRING_MOUNTS reads: `keyring` as a file in SCRATCH ("": no keyring at all)."""
    keyring_file = ""
    if keyring is not None:
        (scratch / "import-pubring.gpg").write_bytes(keyring)
        keyring_file = str(scratch / "import-pubring.gpg")
    return {"KEYRING_FILE": keyring_file, "VENDOR_KEYRING_DIR": str(VENDOR_KEYRING_DIR)}


def run_sysupdates(
    roots: Sequence[Path],
    args: Sequence[str],
    keyring: bytes | None,
    *,
    client: int = 254,
    workers: int = 16,
    timeout: float = 120,
) -> list[subprocess.CompletedProcess[str]]:
    """`run_sysupdate(root, args, keyring, client=client)` for many hosts at once (a fleet
    polling), results in the order of `roots`.

    Each host is still its own systemd-sysupdate process reading its own rebased transfer
    files (ROOT holds all of a host's state), but the mounts that are the same for every
    host — the keyring tmpfs on /etc/systemd and the empty vendor keyring directory — are
    made once, in one private mount namespace held open by a `sh` (then `cat`) for the
    batch, which each run enters with nsenter: that setup (an unshare, a sh, two mounts and
    a cp per host) was about 6 of the 35 ms of CPU a poll costs. The runs overlap: each
    spends most of its time waiting (systemd-pull's first curl timer, on sd-event's default
    250 ms accuracy; HTTP; gpg), so `workers` of them keep both of a small machine's cores
    busy."""
    sysupdate = require_client(client)
    scratch = Path(tempfile.mkdtemp(prefix="sysupdate-batch-"))
    holder: subprocess.Popen[bytes] | None = None
    try:
        env = {**client_env(client), **_keyring_env(keyring, scratch)}
        hold = ["unshare", "-m", "--propagation", "private", "sh", "-c", _HOLD_SCRIPT, "sh"]
        holder = subprocess.Popen(hold, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert holder.stdout is not None
        if holder.stdout.readline() != b"ready\n":
            raise AssertionError(f"the namespace for the batch did not come up ({holder.wait()})")
        enter = ["nsenter", f"--mount=/proc/{holder.pid}/ns/mnt", "--"]

        def one(numbered: tuple[int, Path]) -> subprocess.CompletedProcess[str]:
            number, root = numbered
            rebased = _with_rebased_definitions(root, list(args), scratch / f"d{number}")
            argv = [*enter, str(sysupdate), *rebased]
            if client not in HANGING_PULL:
                return _run(argv, env, timeout)
            try:
                return _run(argv, env, HANG_TIMEOUT)
            except subprocess.TimeoutExpired as hung:
                log = (hung.stderr or b"").decode(errors="replace")
                if not unreaped_transfer(log):
                    raise
                # The host's next poll, as its timer would run it (the killed run wrote
                # nothing: it hung fetching the manifest). Said, not hidden.
                warnings.warn(
                    f"systemd-pull {client} hung on {root.name} (an unreaped"
                    " transfer); ran it again",
                    stacklevel=1,
                )
                return _run(argv, env, timeout)

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, enumerate(roots)))
    finally:
        if holder is not None:
            assert holder.stdin is not None
            holder.stdin.close()  # cat ends, and with it the namespace
            holder.wait(timeout=30)
            assert holder.stdout is not None
            holder.stdout.close()
        shutil.rmtree(scratch, ignore_errors=True)


# systemd-pull 254 reaps one finished transfer per wake-up (its curl_glue_check_finished()
# calls curl_multi_info_read() once; 257 and 262 do not hang): when the manifest's and the
# signature's responses, fetched in parallel, complete in the same wake-up, the second is
# never reaped, no socket or timer is left to wake it, and the pull waits forever. Seen in
# about 1 run in 200 with 16 clients at once on 2 loaded cores, never yet with 257 or 262.
HANGING_PULL = frozenset({254})
# A run of a batch takes a few seconds at most even on 2 cores at load 15 (measured): a 254
# run still going after this long is killed, and run again only if its log shows that hang.
HANG_TIMEOUT = 20.0


def unreaped_transfer(log: str) -> bool:
    """Whether a client log (info level) ends in that hang: two transfers whose responses
    came ("Downloading N for URL."), one of them finished ("Download of URL complete.")."""
    lines = log.splitlines()
    started = {
        line.partition(" for ")[2].removesuffix(".")
        for line in lines
        if line.startswith("Downloading ") and " for " in line
    }
    finished = {
        line.removeprefix("Download of ").removesuffix(" complete.")
        for line in lines
        if line.startswith("Download of ")
    }
    return len(started) == 2 and len(finished) == 1 and finished < started


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _with_rebased_definitions(root: Path, args: list[str], definitions: Path) -> list[str]:
    """Replace `-C NAME` (or the default /etc/sysupdate.d) by --definitions=a rebased copy."""
    component = None
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word in ("-C", "--component"):
            component = next(words)
        elif word.startswith("--component="):
            component = word.partition("=")[2]
        else:
            rest.append(word)
    source = root / "etc" / (f"sysupdate.{component}.d" if component else "sysupdate.d")
    definitions.mkdir()
    # Both suffixes: the client itself picks (257+ read *.transfer, 252-256 only *.conf).
    for conf in sorted([*source.glob("*.conf"), *source.glob("*.transfer")]):
        rebased = rebase_transfer(conf.read_text(encoding="utf-8"), root)
        (definitions / conf.name).write_text(rebased, encoding="utf-8")
    return [f"--definitions={definitions}", *rest]


@dataclass(frozen=True)
class HostClient:
    """A real systemd-sysupdate build as a host runs it: its binary, the environment it
    runs with, and its major version. Tests that take a `HostClient` run with every build
    in `HOST_CLIENTS`."""

    name: str
    sysupdate: Path
    env: dict[str, str]
    version: int

    @property
    def vendor_keyring_name(self) -> str:
        # systemd 258 renamed the vendor keyring to .pgp (NEWS 258).
        return "import-pubring.pgp" if self.version >= 258 else "import-pubring.gpg"


def host_client(version: int) -> HostClient:
    return HostClient(f"systemd-{version}", require_client(version), client_env(version), version)


HOST_CLIENTS: dict[str, Callable[[], HostClient]] = {
    str(version): functools.partial(host_client, version) for version in sorted(CLIENTS)
}

# The host's view for one command: ROOT/etc/systemd IS /etc/systemd (bind mount, so what the
# command writes there lands in ROOT), and the vendor keyring directory holds only ROOT's
# vendor keyrings (a private tmpfs): both are where systemd-pull reads them (--root is not
# applied to keyrings).
_HOST_VIEW = r"""
set -eu
mkdir -p "$ROOT/etc/systemd"
mount --bind "$ROOT/etc/systemd" /etc/systemd
mount -t tmpfs -o mode=0755 tmpfs "$VENDOR_KEYRING_DIR"
for f in import-pubring.gpg import-pubring.pgp; do
  [ ! -f "$ROOT/usr/lib/systemd/$f" ] || cp "$ROOT/usr/lib/systemd/$f" "$VENDOR_KEYRING_DIR/"
done
exec "$@"
"""


def run_in_host_view(
    root: Path, argv: Sequence[str], env: dict[str, str], *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `argv` as root with ROOT's /etc/systemd and vendor keyrings in the real places."""
    full_env = {**env, "ROOT": str(root), "VENDOR_KEYRING_DIR": str(VENDOR_KEYRING_DIR)}
    unshare = ["unshare", "-m", "--propagation", "private", "sh", "-c", _HOST_VIEW, "sh"]
    return subprocess.run(
        [*unshare, *argv],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def host_sysupdate(
    client: HostClient, root: Path, args: Sequence[str], *, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`systemd-sysupdate ARGS` on host ROOT with ROOT's own keyrings (run_in_host_view) and
    its transfer files (rebased as run_sysupdate does)."""
    scratch = Path(tempfile.mkdtemp(prefix="sysupdate-host-"))
    try:
        argv = _with_rebased_definitions(root, list(args), scratch / "definitions")
        env = {**client.env, **(extra_env or {})}
        return run_in_host_view(root, [str(client.sysupdate), *argv], env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class Merged:
    returncode: int
    stdout: str
    stderr: str


def merge_through_link(root: Path, name: str, command: Sequence[str]) -> Merged:
    """Merge ROOT/etc/extensions/NAME.raw — the symlink itself — with the host's
    systemd-sysext (no --root; see the module doc) and run `command` while merged."""
    env = {**os.environ, "ROOT": str(root), "NAME": name, "SYSTEMD_LOG_LEVEL": "info"}
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", _MERGE_SCRIPT, "sh"]
    proc = subprocess.run(
        [*argv, *command], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return Merged(proc.returncode, proc.stdout, proc.stderr)
