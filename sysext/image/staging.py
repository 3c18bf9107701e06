"""Checks on a staged tree before it becomes an image, and the entry list packed from it.

A system extension only contributes `/usr` and `/opt` (spec §1.5: anything else is silently
not merged), must never carry `usr/lib/os-release` (§1.1: v252 aborts the whole merge), and
its units must start binaries that exist once merged. `scan_tree()` walks the tree without
following symlinks, refuses what cannot be shipped, and returns every entry with an explicit
mode so that image writers never look at the tree's owners or timestamps.
"""

from __future__ import annotations

import enum
import os
import re
import shlex
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sysext.core.errors import SysextError

MERGED_HIERARCHIES = ("usr", "opt")
RELEASE_DIR = "usr/lib/extension-release.d"
UNIT_DIRS = ("usr/lib/systemd/system", "usr/lib/systemd/user")

# Binaries an immutable host (Flatcar, Fedora CoreOS, a Debian image…) always has, so a unit
# may start them without shipping them. Anything else under /usr or /opt must be in the image.
STANDARD_HOST_BINARIES: frozenset[str] = frozenset(
    {
        "sh", "bash", "env", "true", "false", "test", "echo", "printf", "sleep", "cat",
        "mkdir", "rmdir", "rm", "cp", "mv", "ln", "chmod", "chown", "touch", "install",
        "mount", "umount", "modprobe", "sysctl", "ip", "iptables", "ip6tables", "nft",
        "systemctl", "systemd-tmpfiles", "systemd-sysusers", "systemd-sysext",
        "systemd-confext", "systemd-notify", "systemd-run", "journalctl", "udevadm",
        "loginctl", "busctl", "kill", "flock", "setpriv", "su", "runuser", "nsenter",
        "ldconfig", "update-ca-certificates", "tee", "sed", "grep", "awk",
    }
)  # fmt: skip
STANDARD_BIN_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")
# Where systemd looks up an ExecStart= command given without a '/' (systemd.service(5)).
UNIT_SEARCH_PATH = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin")
# `[Service]` keys that start a program; ExecStart= is the one the bakery got wrong.
EXEC_KEYS = frozenset(
    {"ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost",
     "ExecCondition"}
)  # fmt: skip


class EntryKind(enum.Enum):
    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class StagedEntry:
    """One entry of the image: `path` is relative (`usr/bin/x`), `mode` the permission bits."""

    path: str
    kind: EntryKind
    mode: int
    # Regular files: absolute path of the bytes. A plain string, not a Path: building 30,000
    # Path objects was a third of the scan time of a large tree (bench/build.py).
    source: str | None = None
    target: str | None = None  # symlinks
    size: int = 0


@dataclass(frozen=True)
class StagedTree:
    root: Path
    entries: tuple[StagedEntry, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def ships_units(self) -> bool:
        return any(
            e.kind is not EntryKind.DIR and e.path.startswith("usr/lib/systemd/system/")
            for e in self.entries
        )

    def find(self, path: str) -> StagedEntry | None:
        for entry in self.entries:
            if entry.path == path:
                return entry
        return None


class StagingError(SysextError):
    pass


def scan_tree(tree: Path, *, allow_setuid: Iterable[str] = ()) -> StagedTree:
    """Walk `tree`, apply the staging rules, and return its entries in sorted order.

    `allow_setuid` holds image paths (`usr/bin/x` or `/usr/bin/x`) that may keep a setuid or
    setgid bit; every other such bit is an error, as it would be in extracted archives.
    """
    if not tree.is_dir():
        raise StagingError(
            f"{tree}: not a directory", "pass the directory that holds usr/ (and opt/)"
        )
    allowed = {p.strip("/") for p in allow_setuid}
    where = str(tree)
    top = sorted(os.listdir(tree))
    for name in top:
        if name not in MERGED_HIERARCHIES:
            raise StagingError(
                f"{where}: top-level entry {name!r} is not allowed; an extension may only "
                "hold usr/ and opt/ (systemd-sysext merges nothing else)",
                f"ship configuration under /usr/share/NAME/ and copy it to /{name} at boot "
                "with a tmpfiles.d rule (e.g. `C /etc/foo.conf - - - - /usr/share/NAME/foo.conf`)",
            )
        if not stat.S_ISDIR(os.lstat(tree / name).st_mode):
            raise StagingError(
                f"{where}: {name} must be a directory, not a file or symlink",
                "the merged hierarchies /usr and /opt are overlaid as directories",
            )
    entries: list[StagedEntry] = []
    try:
        for name in top:
            _walk(tree, name, entries, allowed)
    except OSError as exc:
        raise StagingError(
            f"{where}: cannot read {exc.filename or 'the tree'}: {exc.strerror or exc}",
            "make the staged tree readable by the user running sysext",
        ) from None
    if not any(e.kind is not EntryKind.DIR for e in entries):
        raise StagingError(
            f"{where}: nothing to ship: no files under usr/ or opt/",
            "stage the extension's files as DIR/usr/… or DIR/opt/…",
        )
    for unwanted in ("usr/lib/os-release", "usr/etc/os-release"):
        if any(e.path == unwanted for e in entries):
            raise StagingError(
                f"{where}: {unwanted} must not be in an extension (systemd 252 refuses to "
                "merge any extension then; 255+ ignores this image)",
                "remove it; the extension-release file is written by sysext itself",
            )
    release_files = [e.path for e in entries if e.path.startswith(RELEASE_DIR + "/")]
    if release_files:
        raise StagingError(
            f"{where}: {release_files[0]} already exists; sysext writes the "
            "extension-release file itself",
            "remove it and pass extra release fields through the recipe/--os instead",
        )
    warnings: list[str] = []
    if any(e.path == "usr/sbin" or e.path.startswith("usr/sbin/") for e in entries):
        warnings.append(
            f"{where}: usr/sbin is a symlink to bin on Flatcar and Fedora; files there may "
            "shadow or be shadowed unexpectedly: prefer usr/bin"
        )
    staged = StagedTree(tree, tuple(entries), tuple(warnings))
    check_units(staged)
    return staged


def _walk(tree: Path, rel: str, out: list[StagedEntry], allowed: set[str]) -> None:
    """Depth-first, sorted walk of tree/rel; plain strings and os.lstat keep it fast."""
    base = os.path.abspath(tree)
    stack = [rel]
    while stack:
        rel = stack.pop()
        path = f"{base}/{rel}"
        st = os.lstat(path)
        _check_name(tree, rel)
        mode = st.st_mode
        perm = stat.S_IMODE(mode)
        if stat.S_ISDIR(mode):
            # setgid on a directory only steers group inheritance; pointless in a read-only
            # image, so it is dropped rather than refused.
            out.append(StagedEntry(rel, EntryKind.DIR, perm & ~stat.S_ISGID))
            stack.extend(f"{rel}/{child}" for child in sorted(os.listdir(path), reverse=True))
            continue
        if perm & (stat.S_ISUID | stat.S_ISGID) and rel not in allowed:
            raise StagingError(
                f"{tree}: {rel} has the setuid/setgid bit (mode {perm:04o}) without an allowance",
                "drop the bit (chmod u-s,g-s), or allow this path explicitly (recipe `setuid`, "
                "--allow-setuid)",
            )
        if stat.S_ISREG(mode):
            out.append(StagedEntry(rel, EntryKind.FILE, perm, source=path, size=st.st_size))
        elif stat.S_ISLNK(mode):
            target = os.readlink(path)
            if not target or target[0].isspace() or _CONTROL.search(target):
                raise StagingError(
                    f"{tree}: {rel}: symlink target {target!r} is empty, starts with a blank "
                    "or holds a control character",
                    "point the symlink at a plain path",
                )
            out.append(StagedEntry(rel, EntryKind.SYMLINK, 0o777, target=target))
        else:
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "a device node"
            )
            raise StagingError(
                f"{tree}: {rel} is {kind}; extensions may hold only files, directories and "
                "symlinks",
                "systemd-sysext mounts extensions with nodev; create runtime nodes with "
                "tmpfiles.d or udev instead",
            )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_name(tree: Path, rel: str) -> None:
    # Listings of an image (unsquashfs -l, SHA256SUMS, logs) take one path per line, so
    # names with control characters are refused rather than shown wrongly everywhere.
    # Parents were checked already, so only the last component is looked at.
    name = rel.rpartition("/")[2]
    if _CONTROL.search(name):
        raise StagingError(
            f"{tree}: {rel!r} contains a control character (newline?)",
            "rename the file; such names cannot be listed reliably in an image",
        )
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise StagingError(
                f"{tree}: {rel.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8",
                "rename the file to a UTF-8 name",
            ) from None


# --- units -----------------------------------------------------------------------------


# What a unit check needs to know about an image path: (is a regular file, mode), or None
# when the image does not have it. Staged trees and built images both answer it.
Lookup = Callable[[str], tuple[bool, int] | None]


def check_units(staged: StagedTree) -> None:
    """Every Exec*= program of a shipped unit must exist after merge (image or host)."""
    by_path = {e.path: e for e in staged.entries}

    def lookup(rel: str) -> tuple[bool, int] | None:
        entry = by_path.get(rel)
        return None if entry is None else (entry.kind is EntryKind.FILE, entry.mode)

    for entry in staged.entries:
        if entry.kind is not EntryKind.FILE or not is_unit_file(entry.path):
            continue
        assert entry.source is not None
        with open(entry.source, encoding="utf-8", errors="replace") as f:
            text = f.read()
        problem = unit_problem(entry.path, text, lookup)
        if problem:
            raise StagingError(
                f"{staged.root}: {problem}",
                "install the binary into the image at that path, or point the unit at "
                "where the image installs it",
            )


def unit_problem(path: str, text: str, lookup: Lookup) -> str | None:
    """The first Exec*= line of unit file `path` whose program will not exist, or None."""
    for number, key, command in exec_lines(text):
        problem = exec_problem(command, lookup)
        if problem:
            return f"{path}: line {number}: {key}={command}: {problem}"
    return None


def is_unit_file(path: str) -> bool:
    """A service unit or a service drop-in under usr/lib/systemd/{system,user}."""
    for base in UNIT_DIRS:
        if not path.startswith(base + "/"):
            continue
        rest = PurePosixPath(path[len(base) + 1 :])
        if len(rest.parts) == 1 and rest.suffix == ".service":
            return True
        # drop-ins: foo.service.d/10-x.conf
        if len(rest.parts) == 2 and rest.parts[0].endswith(".service.d") and rest.suffix == ".conf":
            return True
    return False


def exec_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, key, value) of Exec*= lines in [Service], with continuations joined."""
    found: list[tuple[int, str, str]] = []
    section = ""
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending:
            start = number
            if not line or line[0] in "#;":
                continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep and section == "Service" and key.strip() in EXEC_KEYS:
            found.append((start, key.strip(), value.strip()))
    return found


def exec_problem(command: str, lookup: Lookup) -> str | None:
    """Why the program of one Exec*= value will not exist after merge, or None."""
    if not command:
        return None  # an empty assignment resets the list
    # Prefixes systemd allows before the path (systemd.service(5), "Command lines").
    program = command.lstrip("@-:+!|")
    try:
        words = shlex.split(program)
    except ValueError:
        return "cannot parse the command line (unbalanced quotes?)"
    if not words:
        return None
    binary = words[0]
    if "%" in binary or "$" in binary:
        return None  # specifiers and variables resolve on the host only
    if "/" not in binary:
        for directory in UNIT_SEARCH_PATH:
            if lookup(f"{directory}/{binary}") is not None:
                return None
        if binary in STANDARD_HOST_BINARIES:
            return None
        return f"{binary!r} is neither in the image's usr/bin nor a standard host binary"
    if not binary.startswith("/"):
        return "the program must be an absolute path or a bare name"
    found = lookup(binary.lstrip("/"))
    if found is not None:
        is_file, mode = found
        if is_file and not mode & 0o111:
            return f"{binary} is in the image but not executable (mode {mode:04o})"
        return None
    parent, name = os.path.split(binary)
    if parent in STANDARD_BIN_DIRS and name in STANDARD_HOST_BINARIES:
        return None
    return f"{binary} is neither in the image nor a standard host path"
