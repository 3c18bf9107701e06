"""The base an extension is built against: what it has installed, and which files it ships.

Two ways to know it:

- a root directory (`sysext build --base DIR`, e.g. the image's own tree or a debootstrap):
  its `etc/os-release` binds the extension, `var/lib/dpkg/status` says which packages are
  installed (`install ok installed`), and `var/lib/dpkg/info/PKG.list` which files they
  ship;
- a named release (`[base] id = "debian"`, `version_id = "12"` in the recipe): the
  packages of a default minimal install, i.e. every package of Priority `required` or
  `important` in the release's suites plus their dependencies, at their candidate versions
  (what debootstrap's default variant installs, kept up to date). Their file lists are not
  known; Debian policy §7.6 makes a package declare `Replaces:` before it may overwrite
  another package's file, and the resolver refuses any `Replaces:` of a base package.

Paths are compared as they end up on a merged-/usr system: `bin/x`, `sbin/x` and `lib*/x`
are `usr/bin/x`, `usr/sbin/x` and `usr/lib*/x`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sysext.build.debian.archive import Package, parse_packages
from sysext.build.debian.control import Relation
from sysext.core.errors import SysextError
from sysext.systemd.osrelease import parse_os_release

# Top-level directories that merged-/usr systems (Debian 12 and later) link into /usr.
MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "libo32")
MINIMAL_PRIORITIES = ("required", "important")


class BaseError(SysextError):
    """The base cannot be used, or the extension would change what it ships."""


def usr_path(path: str) -> str:
    """A package path (`/lib/x/y`, `./usr/bin/z`) as it is on a merged-/usr system,
    without a leading slash (`usr/lib/x/y`); "" for the root itself."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        return ""
    if parts[0] in MERGED_DIRS:
        parts.insert(0, "usr")
    return "/".join(parts)


@dataclass(frozen=True)
class BaseSystem:
    label: str  # for messages: `base /srv/root (debian 12)` or `debian 12 (minimal install)`
    os_id: str
    version_id: str | None
    codename: str | None
    arch: str | None  # dpkg's architecture name; None: not known (named bases)
    packages: Mapping[str, Package]
    files: Mapping[str, str] | None = None  # merged-/usr path → owning package; None: unknown

    def provides(self, name: str) -> list[tuple[Package, Relation]]:
        return [(p, r) for p in self.packages.values() for r in p.provides if r.name == name]


def _read_inside(root: Path, relative: str) -> str | None:
    """A file of the root, following symlinks only within it (os-release is usually a
    link to ../usr/lib/os-release; an absolute link must not reach the build machine's)."""
    path = relative
    for _ in range(8):
        full = root / path
        if full.is_symlink():
            target = os.readlink(full)
            parent = os.path.dirname(path)
            path = os.path.normpath(
                target.lstrip("/") if target.startswith("/") else os.path.join(parent, target)
            )
            if path.startswith(".."):
                return None
            continue
        try:
            return full.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
    return None


def read_root(root: Path) -> BaseSystem:
    """The base as its root directory shows it (see the module docstring)."""
    if not root.is_dir():
        raise BaseError(f"--base {root}: no such directory", "pass the root of the base's tree")
    text = _read_inside(root, "etc/os-release") or _read_inside(root, "usr/lib/os-release")
    if text is None:
        raise BaseError(
            f"--base {root}: no etc/os-release or usr/lib/os-release",
            "pass the root directory of an OS tree",
        )
    os_release = parse_os_release(text, source=f"{root}/etc/os-release")
    for name in MERGED_DIRS[:3]:
        path = root / name
        if path.exists() and not path.is_symlink():
            raise BaseError(
                f"--base {root}: /{name} is a directory, not a link into /usr (not merged-/usr)",
                "extensions add to /usr and /opt only; build against a merged-/usr base "
                "(Debian 12 and later)",
            )
    status = root / "var/lib/dpkg/status"
    try:
        status_text = status.read_text(encoding="utf-8", errors="replace")
    except OSError:
        raise BaseError(
            f"--base {root}: no var/lib/dpkg/status (not a Debian-family tree?)",
            "pass a root with dpkg's database, or name the base in the recipe's [base] table",
        ) from None
    packages: dict[str, Package] = {}
    for package in parse_packages(status_text, None):
        words = package.raw.get("Status", "").split()
        if len(words) == 3 and words[2] == "installed":
            packages[package.name] = package
    if not packages:
        raise BaseError(f"--base {root}: var/lib/dpkg/status lists no installed package")
    files: dict[str, str] = {}
    info = root / "var/lib/dpkg/info"
    for name, package in sorted(packages.items()):
        for candidate in (info / f"{name}:{package.arch}.list", info / f"{name}.list"):
            if candidate.is_file():
                for line in candidate.read_text(encoding="utf-8", errors="replace").splitlines():
                    listed = usr_path(line)
                    if listed:
                        files.setdefault(listed, name)
                break
    dpkg = packages.get("dpkg")
    os_id = os_release.get("ID", "linux")
    version_id = os_release.get("VERSION_ID") or None
    return BaseSystem(
        label=f"base {root} ({os_id} {version_id or '(no VERSION_ID)'})",
        os_id=os_id,
        version_id=version_id,
        codename=os_release.get("VERSION_CODENAME") or None,
        arch=dpkg.arch if dpkg else None,
        packages=packages,
        files=files,
    )
