"""The protocol every source kind implements, and the plug-in registry of kinds.

A kind checks a parsed `SourceSpec` for its own rules (at recipe-load time, before anything
is fetched) and fetches one architecture's file. The keys it accepts are declared on the
model (`x-kinds` of each SourceSpec field, sysext.recipe.model), next to the key itself.
Adding a kind means writing one module, registering it and naming it in the `x-kinds` of
its keys; the pipeline never changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sysext.build.extract import ArchiveFormat
from sysext.build.lockfile import Lock, LockEntry
from sysext.core.download import Downloader
from sysext.systemd.architecture import Architecture

if TYPE_CHECKING:
    from sysext.recipe.model import Recipe, SourceSpec, Where


@dataclass(frozen=True)
class FetchContext:
    recipe: Recipe
    version: str
    arch: Architecture
    downloader: Downloader
    work_dir: Path  # a private temporary directory for this build
    lock: Lock | None = None  # --locked: only files recorded here are used
    locking: bool = False  # `sysext lock`: first record of files upstream does not vouch for
    base: str | None = None  # `--base`: a root directory or ID:VERSION_ID (apt sources)
    # What a kind works out once per build and architecture (an apt closure), shared by
    # the contexts of one build: deciding the image's terms, resolving and fetching.
    memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cache_dir(self) -> Path:
        return self.downloader.cache_dir

    def pinned_sha256(self, spec: SourceSpec) -> str | None:
        return spec.sha256.lookup(self.version, self.arch, default_version=self.recipe.version)

    def expand(self, spec: SourceSpec, template: str, key: str) -> str:
        return self.recipe.expand(template, self.version, self.arch, f"sources[{spec.index}].{key}")

    def locked(self, spec: SourceSpec, origin: str) -> LockEntry | None:
        """The lock's entry for this source (an error if a --locked build lacks one)."""
        if self.lock is None:
            return None
        return self.lock.require(self.version, self.arch.systemd_name, spec.id, origin)


@dataclass(frozen=True)
class FetchedPart:
    """One file of a source made of several (an apt closure's .debs): what a lock records."""

    name: str  # lock entries are keyed SOURCE_ID/NAME
    url: str
    sha256: str
    size: int
    detail: str = ""  # e.g. the package and version, `htop=3.2.2-2`


@dataclass(frozen=True)
class Fetched:
    """A source file on local disk, verified, with what provenance records about it."""

    path: Path
    format: ArchiveFormat
    origin: str  # URL, path or package reference
    sha256: str
    file_name: str
    integrity: str = ""  # how it was verified, for provenance and `sysext lock`
    parts: tuple[FetchedPart, ...] = ()  # the files it was made of, when several


@dataclass(frozen=True)
class ImageTerms:
    """What a source decides about the image itself, before anything is downloaded: an apt
    closure sets the image's version and binds it to its base's OS."""

    version: str  # the image version (valid for sysupdate)
    upstream_version: str  # X_SYSEXT_UPSTREAM_VERSION
    os_id: str | None = None
    os_version_id: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)  # more extension-release fields


@dataclass(frozen=True)
class Resolved:
    """What a source will be, known without fetching its payload: the build key's input."""

    origin: str
    sha256: str
    file_name: str


class SourceKind(Protocol):
    name: str

    def check(self, spec: SourceSpec, where: Where) -> None: ...

    def terms(self, spec: SourceSpec, ctx: FetchContext) -> ImageTerms | None:
        """The image version and OS binding this source decides, or None (the recipe's)."""
        ...

    def resolve(self, spec: SourceSpec, ctx: FetchContext) -> Resolved | None:
        """The source's identity without downloading its payload, or None when only a fetch
        can tell (the build then fetches first and decides afterwards)."""
        ...

    def fetch(self, spec: SourceSpec, ctx: FetchContext) -> Fetched: ...

    def tools(self) -> dict[str, str]:
        """Versions of the tools this kind fetches with, for provenance records."""
        ...


_KINDS: dict[str, SourceKind] = {}


def register(kind: SourceKind) -> SourceKind:
    _KINDS[kind.name] = kind
    return kind


def source_kind(name: str) -> SourceKind:
    return _KINDS[name]


def source_kind_names() -> list[str]:
    return sorted(_KINDS)
