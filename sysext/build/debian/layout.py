"""The closure's packages as one extension tree: what goes where, and what may not go.

Each package's data member is extracted by the safe extractor (sysext.build.extract), then
its entries are placed:

- `usr/…` and `opt/…` as they are; `bin/`, `sbin/`, `lib*/` under `usr/` (the base is
  merged-/usr, where /lib is a link to usr/lib);
- `etc/…`: systemd-sysext merges only /usr and /opt, so configuration files become factory
  defaults in `usr/share/factory/etc/…`, and a tmpfiles.d file
  (`usr/lib/tmpfiles.d/sysext-NAME.conf`) copies each to /etc at boot when it is missing
  (`C`), recreates symlinks (`L`) and empty directories (`d`);
- `var/…`: directories become `d` lines, files factory defaults with `C` lines;
- anything else (`srv/`, `home/`, `run/`, …): empty directories are dropped, files are an
  error.

Setuid and setgid bits are dropped unless the source's `allow_setuid` lists the path: an
image is owned by root, so a package's setgid helper (group utmp, crontab) could not keep
its group, and the programs run, less privileged, without the bit.

Two packages shipping the same path, or a package shipping a path that a base package owns
(by the base's dpkg file lists), is an error naming both: the base is never overwritten.
Directories are shared, as dpkg shares them.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sysext.build.debian.base import BaseError, BaseSystem, usr_path
from sysext.build.extract import ArchiveFormat, ExtractOptions, extract

FACTORY = "usr/share/factory"


@dataclass(frozen=True)
class Placed:
    files: int  # regular files and symlinks in the tree
    tmpfiles: tuple[str, ...]  # lines of the generated tmpfiles.d file


def tmpfiles_path(name: str) -> str:
    return f"usr/lib/tmpfiles.d/sysext-{name}.conf"


def _quote(path: str) -> str:
    """A tmpfiles.d path field: C-style escapes for blanks and backslashes."""
    return path.replace("\\", "\\\\").replace(" ", "\\x20").replace("\t", "\\x09")


class _Placer:
    def __init__(self, tree: Path, base: BaseSystem) -> None:
        self.tree = tree
        self.base = base
        self.owner: dict[str, str] = {}  # image path → package that placed it
        self.tmpfiles: list[str] = []
        self.count = 0

    def _parents(self, rel: str) -> Path:
        target = self.tree / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        return target

    def _claim(self, package: str, rel: str, shown: str) -> None:
        previous = self.owner.get(rel)
        if previous is not None:
            raise BaseError(
                f"{package} and {previous} both ship /{shown}",
                "dpkg would refuse this pair too; request only one of them",
            )
        if self.base.files is not None:
            owner = self.base.files.get(usr_path(shown))
            if owner is not None:
                raise BaseError(
                    f"{package} would overwrite /{shown} of base package {owner}",
                    "an extension never replaces a base file; use another package or base",
                )
        self.owner[rel] = package

    def place(self, package: str, scratch: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(scratch):
            dirnames.sort()
            relative_dir = Path(dirpath).relative_to(scratch).as_posix()
            for entry in sorted(dirnames) + sorted(filenames):
                rel = entry if relative_dir == "." else f"{relative_dir}/{entry}"
                self._one(package, scratch, rel)

    def _one(self, package: str, scratch: Path, rel: str) -> None:
        source = scratch / rel
        info = os.lstat(source)
        is_dir = stat.S_ISDIR(info.st_mode)
        path = usr_path(rel)
        top = path.split("/", 1)[0]
        if top in ("usr", "opt"):
            if is_dir:
                (self.tree / path).mkdir(parents=True, exist_ok=True, mode=0o755)
                return
            self._claim(package, path, path)
            os.rename(source, self._parents(path))
            self.count += 1
            return
        if top in ("etc", "var"):
            if is_dir:
                # Only the package's own directories (var/lib/foo, an empty etc/foo.d):
                # a `d` line on /var or /var/lib would reset the base's modes.
                depth = path.count("/")
                if (top == "var" and depth >= 2) or (depth >= 1 and not any(os.scandir(source))):
                    mode = stat.S_IMODE(info.st_mode)
                    self.tmpfiles.append(f"d /{_quote(path)} {mode:04o} - - -")
                return
            factory = f"{FACTORY}/{path}"
            self._claim(package, factory, path)
            if stat.S_ISLNK(info.st_mode):
                self.tmpfiles.append(f"L /{_quote(path)} - - - - {os.readlink(source)}")
            else:
                self.tmpfiles.append(f"C /{_quote(path)} - - - - /{_quote(factory)}")
            os.rename(source, self._parents(factory))
            self.count += 1
            return
        if is_dir:
            return  # skeleton directories (/srv, /run/foo) carry nothing
        raise BaseError(
            f"{package} ships /{rel}, outside /usr, /opt, /etc and /var",
            "an extension cannot place files there; use another package",
        )


def place_packages(
    debs: Sequence[tuple[str, Path]],
    tree: Path,
    base: BaseSystem,
    *,
    name: str,
    work: Path,
    allow_setuid: tuple[str, ...] = (),
) -> Placed:
    """Extract each (package label, .deb) into `tree` as the module docstring says."""
    tree.mkdir(parents=True, exist_ok=True)
    placer = _Placer(tree, base)
    for label, deb in debs:
        scratch = work / f"data-{label.split(' ', 1)[0]}"
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        extract(
            deb,
            scratch,
            ArchiveFormat.DEB,
            ExtractOptions(allow_setuid=allow_setuid, drop_setid=True),
            label=f"{label.replace(' ', '_')}.deb",
        )
        placer.place(label.split(" ", 1)[0], scratch)
        shutil.rmtree(scratch)
    lines = tuple(sorted(set(placer.tmpfiles)))
    if lines:
        conf = tree / tmpfiles_path(name)
        if conf.exists() or tmpfiles_path(name) in placer.owner:
            raise BaseError(f"a package already ships /{tmpfiles_path(name)}")
        conf.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        header = (
            "# Written by sysext: the packages' /etc and /var files, kept as factory "
            "defaults in /usr/share/factory and copied at boot when missing.\n"
        )
        conf.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    return Placed(placer.count, lines)
