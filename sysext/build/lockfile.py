"""Lock files: every file a recipe resolved to, with its sha256 and size.

`sysext lock RECIPE` fetches (and verifies, as the recipe says) every source for each
requested version and architecture and records it; `sysext build --locked` then trusts
nothing else: a source missing from the lock, a URL that differs from the recorded one,
or a download whose hash changed since it was locked stops the build. For upstreams that
publish no checksum or signature at all (Docker's static tarballs, which have been
re-uploaded with different content), the lock is the only integrity there is
(`integrity = "lock"` in the recipe).

The file is JSON, sorted, one entry per (version, architecture, source):

    {"format": 1, "recipe": "docker", "entries": [
      {"version": "28.5.2", "arch": "x86-64", "source": "docker",
       "url": "https://download.docker.com/…/docker-28.5.2.tgz",
       "sha256": "…", "size": 12345}]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sysext.core.atomic import atomic_write
from sysext.core.errors import SysextError

FORMAT = 1


class LockError(SysextError):
    """A lock file is unreadable, or a build does not match it."""


@dataclass(frozen=True)
class LockEntry:
    version: str
    arch: str  # systemd's name
    source: str  # the recipe's source id
    url: str  # the upstream URL (or pypi:/deb: reference) before mirror rewriting
    sha256: str
    size: int
    package: str = ""  # apt sources: the package and version, `htop=3.2.2-2`


@dataclass(frozen=True)
class Lock:
    recipe: str
    entries: tuple[LockEntry, ...]
    path: Path

    def find(self, version: str, arch: str, source: str) -> LockEntry | None:
        for entry in self.entries:
            if (entry.version, entry.arch, entry.source) == (version, arch, source):
                return entry
        return None

    def parts(self, version: str, arch: str, source: str) -> list[LockEntry]:
        """The entries of a source made of several files (`SOURCE/NAME`, apt's .debs)."""
        prefix = source + "/"
        return [
            e
            for e in self.entries
            if (e.version, e.arch) == (version, arch) and e.source.startswith(prefix)
        ]

    def require(self, version: str, arch: str, source: str, url: str) -> LockEntry:
        """The entry for this source, or a LockError saying what is missing or different."""
        entry = self.find(version, arch, source)
        if entry is None:
            raise LockError(
                f"{self.path.name}: no entry for {self.recipe} {version} {arch} source "
                f"{source!r}; --locked builds use only locked files",
                f"record it: sysext lock {self.recipe} --version {version} --arch {arch}",
            )
        if entry.url != url:
            raise LockError(
                f"{self.path.name}: {self.recipe} {version} {arch} source {source!r} is locked "
                f"to {entry.url}, but the recipe now resolves to {url}",
                "the recipe changed since the lock was written; re-run sysext lock",
            )
        return entry

    def merged(self, new: list[LockEntry]) -> Lock:
        """These entries, replaced or extended by `new` (same version, arch and source)."""
        keys = {(e.version, e.arch, e.source) for e in new}
        kept = [e for e in self.entries if (e.version, e.arch, e.source) not in keys]
        entries = sorted([*kept, *new], key=lambda e: (e.version, e.arch, e.source))
        return Lock(self.recipe, tuple(entries), self.path)


def default_lock_path(recipe_name: str) -> Path:
    return Path(f"{recipe_name}.lock.json")


def load_lock(path: Path, recipe_name: str) -> Lock:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LockError(
            f"{path}: no such lock file",
            f"write one first: sysext lock {recipe_name} --version V --arch A --lock-file {path}",
        ) from None
    except (OSError, ValueError) as exc:
        raise LockError(f"{path}: not a lock file ({exc})") from None
    try:
        if data["format"] != FORMAT:
            raise LockError(f"{path}: lock format {data['format']!r} is not {FORMAT}")
        entries = tuple(
            LockEntry(
                version=str(e["version"]),
                arch=str(e["arch"]),
                source=str(e["source"]),
                url=str(e["url"]),
                sha256=str(e["sha256"]).lower(),
                size=int(e["size"]),
                package=str(e.get("package", "")),
            )
            for e in data["entries"]
        )
        recipe = str(data["recipe"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LockError(f"{path}: malformed lock file (missing or bad {exc})") from None
    if recipe != recipe_name:
        raise LockError(
            f"{path}: this lock is for recipe {recipe!r}, not {recipe_name!r}",
            "pass the recipe's own lock with --lock-file",
        )
    return Lock(recipe, entries, path)


def empty_lock(path: Path, recipe_name: str) -> Lock:
    return Lock(recipe_name, (), path)


def write_lock(lock: Lock) -> None:
    document = {
        "format": FORMAT,
        "recipe": lock.recipe,
        "entries": [
            {k: v for k, v in asdict(e).items() if k != "package" or v} for e in lock.entries
        ],
    }
    atomic_write(lock.path, (json.dumps(document, indent=2) + "\n").encode())
