"""The build pipeline: recipe → sources → verified files → extracted → staged tree → image.

Every architecture is fetched, extracted and staged first, in a private temporary
directory; only when all of them staged cleanly are images packed into the output
directory. So a bad source, checksum or archive never leaves a partial result behind.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sysext.architecture import Architecture
from sysext.assemble import assemble
from sysext.config import Settings
from sysext.download import Downloader
from sysext.errors import SysextError
from sysext.extension_release import ExtensionRelease
from sysext.extract import ExtractOptions, extract
from sysext.formats import Compression, ImageFormat
from sysext.image import BuiltImage, pack
from sysext.lockfile import Lock, LockEntry, LockError
from sysext.recipe import Recipe
from sysext.sources import FetchContext, Fetched, source_kind
from sysext.staging import scan_tree
from sysext.steps import step
from sysext.versioning import version_problem


@dataclass(frozen=True)
class BuildRequest:
    recipe: Recipe
    output_dir: Path
    settings: Settings
    version: str | None = None  # None: the recipe's default
    architectures: tuple[Architecture, ...] = ()  # empty: the host's architecture
    os_spec: str | None = None  # ID[:SYSEXT_LEVEL]; None: the recipe's `os`, else _any
    os_version_id: str | None = None  # VERSION_ID= binding (spec §1.3 step 8); None: unbound
    image_format: ImageFormat = ImageFormat.SQUASHFS
    compression: Compression | None = None
    level: int | None = None
    refresh: bool = False
    source_date_epoch: int | None = None
    lock: Lock | None = None  # --locked: only the files recorded there are used

    @property
    def chosen_version(self) -> str:
        return self.version or self.recipe.version


def metadata_fields(recipe: Recipe, upstream_version: str) -> dict[str, str]:
    """The self-description every image carries in extension-release.NAME (the X_SYSEXT_*
    contract shared with the registry and provisioning): absent fields mean unknown."""
    fields = {
        "X_SYSEXT_DESCRIPTION": recipe.description,
        "X_SYSEXT_HOMEPAGE": recipe.homepage,
        "X_SYSEXT_LICENSE": recipe.license,
        "X_SYSEXT_UPSTREAM_VERSION": upstream_version,
        "X_SYSEXT_REPLACES": " ".join(recipe.replaces),
    }
    return {key: value for key, value in fields.items() if value}


@dataclass(frozen=True)
class _Staged:
    arch: Architecture
    tree: Path
    fetched: tuple[tuple[str, str, Fetched], ...] = field(default=())  # (id, kind, file)


def target_architectures(
    recipe: Recipe, requested: Sequence[Architecture]
) -> tuple[Architecture, ...]:
    """The requested architectures (default: the host's), each supported by the recipe."""
    chosen = tuple(dict.fromkeys(requested)) or (Architecture.from_uname(),)
    supported = ", ".join(a.systemd_name for a in recipe.architectures)
    for arch in chosen:
        if arch not in recipe.architectures:
            raise SysextError(
                f"recipe {recipe.file_label} does not support {arch.systemd_name}",
                f"it supports: {supported}; pick one with --arch",
            )
    return chosen


def build(request: BuildRequest) -> list[BuiltImage]:
    recipe = request.recipe
    version = request.chosen_version
    problem = version_problem(version)
    if problem:
        raise SysextError(f"--version: {problem}", "sysupdate accepts only [A-Za-z0-9.,_+-]")
    arches = target_architectures(recipe, request.architectures)
    os_id, level = recipe.os_id, recipe.sysext_level
    if request.os_spec is not None:
        os_id, level = ExtensionRelease.parse_os_spec(request.os_spec)
    releases = {
        arch: ExtensionRelease(
            name=recipe.name,
            version=version,
            arch=arch,
            os_id=os_id,
            sysext_level=level,
            version_id=request.os_version_id,
            reload_manager=bool(recipe.reload_manager),
            extra={**recipe.extension_release, **metadata_fields(recipe, version)},
        )
        for arch in arches
    }
    downloader = Downloader(
        cache_dir=request.settings.cache_dir,
        mirrors=request.settings.mirrors,
        refresh=request.refresh,
    )
    with tempfile.TemporaryDirectory(prefix="sysext-build-") as work_name:
        work = Path(work_name)
        staged = [
            _stage(recipe, version, arch, downloader, work / arch.systemd_name, request.lock)
            for arch in arches
        ]
        recipe_sha = hashlib.sha256(recipe.path.read_bytes()).hexdigest()
        tools: dict[str, str] = {}
        for kind in sorted({spec.kind for spec in recipe.sources}):
            tools.update(source_kind(kind).tools())
        images = []
        for item in staged:
            provenance: dict[str, object] = {
                "recipe": {"name": recipe.name, "file": recipe.file_label, "sha256": recipe_sha},
                "version": version,
                "fetch_tools": tools,
                "sources": [
                    {
                        "id": sid,
                        "kind": kind,
                        "origin": f.origin,
                        "file": f.file_name,
                        "sha256": f.sha256,
                        "integrity": f.integrity,
                    }
                    for sid, kind, f in item.fetched
                ],
            }
            images.append(
                pack(
                    item.tree,
                    releases[item.arch],
                    request.output_dir,
                    image_format=request.image_format,
                    compression=request.compression,
                    level=request.level,
                    source_date_epoch=request.source_date_epoch,
                    provenance=provenance,
                    allow_setuid=frozenset(p.strip("/") for p in recipe.allow_setuid),
                )
            )
    return images


def _stage(
    recipe: Recipe,
    version: str,
    arch: Architecture,
    downloader: Downloader,
    work: Path,
    lock: Lock | None = None,
) -> _Staged:
    work.mkdir(parents=True)
    ctx = FetchContext(
        recipe=recipe, version=version, arch=arch, downloader=downloader, work_dir=work, lock=lock
    )
    fetched: list[tuple[str, str, Fetched]] = []
    extracted: dict[str, Path] = {}
    for spec in recipe.sources:
        if not spec.applies_to(arch):
            continue
        with step(f"Fetching {recipe.name} {version} {arch.systemd_name}: source {spec.id}"):
            got = source_kind(spec.kind).fetch(spec, ctx)
        _check_against_lock(ctx, spec.id, got)
        fetched.append((spec.id, spec.kind, got))
        destination = work / "sources" / spec.id
        destination.mkdir(parents=True)
        with step(f"Extracting source {spec.id} ({got.format.value})"):
            extract(
                got.path,
                destination,
                got.format,
                ExtractOptions(
                    strip_components=spec.strip_components,
                    allow_setuid=spec.allow_setuid,
                    file_name=got.file_name,
                ),
                label=got.file_name,
            )
        extracted[spec.id] = destination
    tree = work / "tree"
    tree.mkdir()
    with step(f"Staging {recipe.name} {version} {arch.systemd_name}"):
        assemble(recipe, extracted, tree)
        # pack() checks the tree again; checking here too means a tree that cannot become an
        # image fails the build before any architecture has written its image.
        scan_tree(tree, allow_setuid=recipe.allow_setuid)
    return _Staged(arch, tree, tuple(fetched))


def _check_against_lock(ctx: FetchContext, source_id: str, got: Fetched) -> None:
    """Kinds that fetch through pip or apt learn the hash only afterwards: compare it."""
    if ctx.lock is None or got.integrity == "lock":
        return
    entry = ctx.lock.require(ctx.version, ctx.arch.systemd_name, source_id, got.origin)
    if entry.sha256 != got.sha256:
        raise LockError(
            f"UPSTREAM FILE CHANGED: {got.origin} has sha256 {got.sha256}, but "
            f"{ctx.lock.path.name} locked {entry.sha256}",
            "upstream replaced a released file; find out why before re-locking it",
        )


def lock_entries(
    recipe: Recipe,
    version: str,
    arches: Sequence[Architecture],
    settings: Settings,
    *,
    refresh: bool = False,
) -> list[LockEntry]:
    """Fetch and verify every source of `version` for `arches`; what a lock file records.

    Sources upstream vouches for are verified as in a build; `integrity = "lock"` sources
    are recorded on first use (the lock is then their only integrity).
    """
    downloader = Downloader(cache_dir=settings.cache_dir, mirrors=settings.mirrors, refresh=refresh)
    entries: list[LockEntry] = []
    with tempfile.TemporaryDirectory(prefix="sysext-lock-") as work_name:
        for arch in target_architectures(recipe, arches):
            work = Path(work_name) / arch.systemd_name
            work.mkdir()
            ctx = FetchContext(
                recipe=recipe,
                version=version,
                arch=arch,
                downloader=downloader,
                work_dir=work,
                locking=True,
            )
            for spec in recipe.sources:
                if not spec.applies_to(arch):
                    continue
                with step(f"Locking {recipe.name} {version} {arch.systemd_name}: {spec.id}"):
                    got = source_kind(spec.kind).fetch(spec, ctx)
                entries.append(
                    LockEntry(
                        version=version,
                        arch=arch.systemd_name,
                        source=spec.id,
                        url=got.origin,
                        sha256=got.sha256,
                        size=got.path.stat().st_size,
                    )
                )
    return entries
