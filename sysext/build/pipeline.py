"""The build pipeline: recipe → sources → verified files → extracted → staged tree → image.

Every architecture is fetched, extracted and staged first, in a private temporary
directory; only when all of them staged cleanly are images packed into the output
directory. So a bad source, checksum or archive never leaves a partial result behind.

Before anything is fetched, each architecture's sources are resolved (pins, upstream
checksum files, the wheel cache) into a build key (sysext.build_key); when the output
directory already holds an image recorded with that key, the architecture is done:
"unchanged", with no download, staging or packing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from sysext.build.assemble import assemble
from sysext.build.build_key import KeyInputs, SourceIdentity, build_key
from sysext.build.extract import ArchiveFormat, ExtractOptions, extract
from sysext.build.lockfile import Lock, LockEntry, LockError
from sysext.build.pack import BuiltImage, pack, resolve_source_date_epoch
from sysext.build.provenance import provenance_filename, read_provenance
from sysext.build.sources import FetchContext, Fetched, source_kind
from sysext.build.sources.base import ImageTerms, Resolved
from sysext.core.config import Settings
from sysext.core.download import Downloader
from sysext.core.errors import SysextError
from sysext.core.steps import step
from sysext.image.ddi import RootHashSigner
from sysext.image.formats import Compression, ImageFormat, resolve_compression, writer_for
from sysext.image.staging import scan_tree
from sysext.recipe.model import Recipe
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease, check_os_binding
from sysext.systemd.manifest import (
    MANIFEST_NAME,
    ManifestEntry,
    merge_into_manifest,
    read_manifest_file,
)
from sysext.systemd.versioning import version_problem


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
    block_size: int | None = None
    force: bool = False  # pack even when an image of the same build key exists
    lock: Lock | None = None  # --locked: only the files recorded there are used
    base: str | None = None  # --base: root directory or ID:VERSION_ID (apt sources)
    # --verity: pack signed dm-verity DDIs with this signer (sysext.trust.x509.Signer)
    verity_signer: RootHashSigner | None = None

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


@dataclass(frozen=True)
class BuildHooks:
    """How a caller running several builds at once (sysext.build.matrix) watches and paces them."""

    # Called with the architecture and the stage: resolving, fetching, staging, waiting to
    # pack, packing.
    on_stage: Callable[[Architecture, str], None] = lambda arch, stage: None
    # Held while an image is packed: bounds how many compressors run at once.
    pack_slot: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    jobs: int | None = None  # compressor threads per image; None: one per core


@dataclass(frozen=True)
class PlannedImage:
    """One architecture's image as known before any payload is fetched."""

    release: ExtensionRelease
    terms: ImageTerms | None  # what a source decided (apt), else None


def make_contexts(
    request: BuildRequest, downloader: Downloader, work: Path, *, locking: bool = False
) -> dict[Architecture, FetchContext]:
    """One fetch context per architecture of the request, each with its own work directory."""
    contexts = {}
    for arch in target_architectures(request.recipe, request.architectures):
        ctx = FetchContext(
            recipe=request.recipe,
            version=request.chosen_version,
            arch=arch,
            downloader=downloader,
            work_dir=work / arch.systemd_name,
            lock=request.lock,
            locking=locking,
            base=request.base,
        )
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        contexts[arch] = ctx
    return contexts


def source_terms(recipe: Recipe, ctx: FetchContext) -> ImageTerms | None:
    """What the recipe's sources decide about the image (an apt closure), or None."""
    for spec in recipe.sources:
        if spec.applies_to(ctx.arch):
            terms = source_kind(spec.kind).terms(spec, ctx)
            if terms is not None:
                return terms
    return None


def plan_releases(
    request: BuildRequest, contexts: Mapping[Architecture, FetchContext] | None = None
) -> dict[Architecture, ExtensionRelease]:
    """The extension-release (and so the image file name) of each image the request makes,
    checked, before any payload is fetched. Recipes whose sources decide the version (apt)
    resolve them here; others need no I/O."""
    return {arch: planned.release for arch, planned in plan_images(request, contexts).items()}


def plan_images(
    request: BuildRequest, contexts: Mapping[Architecture, FetchContext] | None = None
) -> dict[Architecture, PlannedImage]:
    recipe = request.recipe
    if contexts is None and recipe.package_source is not None:
        with tempfile.TemporaryDirectory(prefix="sysext-plan-") as work_name:
            downloader = Downloader(
                cache_dir=request.settings.cache_dir,
                mirrors=request.settings.mirrors,
                refresh=request.refresh,
            )
            return plan_images(request, make_contexts(request, downloader, Path(work_name)))
    version = request.chosen_version
    if recipe.package_source is None:
        problem = version_problem(version)
        if problem:
            raise SysextError(f"--version: {problem}", "sysupdate accepts only [A-Za-z0-9.,_+-]")
    arches = target_architectures(recipe, request.architectures)
    requested_os = None
    if request.os_spec is not None:
        requested_os = ExtensionRelease.parse_os_spec(request.os_spec)
    planned: dict[Architecture, PlannedImage] = {}
    for arch in arches:
        ctx = contexts.get(arch) if contexts is not None else None
        terms = source_terms(recipe, ctx) if ctx is not None else None
        os_id, level = requested_os or (recipe.os_id, recipe.sysext_level)
        version_id = request.os_version_id
        if terms is not None and terms.os_id is not None:
            bound = f"{terms.os_id} {terms.os_version_id or ''}".strip()
            if requested_os not in (None, (terms.os_id, None)) or request.os_version_id not in (
                None,
                terms.os_version_id,
            ):
                raise SysextError(
                    f"recipe {recipe.file_label}: its image is bound to its base, {bound}; "
                    "--os and --os-version-id cannot change that",
                    "drop them, and choose the base with --base",
                )
            os_id, level, version_id = terms.os_id, None, terms.os_version_id
        check_os_binding(os_id, level, version_id)
        image_version = terms.version if terms is not None else version
        upstream = terms.upstream_version if terms is not None else version
        extra = {**recipe.extension_release, **metadata_fields(recipe, upstream)}
        if terms is not None:
            extra.update(terms.fields)
        release = ExtensionRelease(
            name=recipe.name,
            version=image_version,
            arch=arch,
            os_id=os_id,
            sysext_level=level,
            version_id=version_id,
            reload_manager=bool(recipe.reload_manager),
            extra=extra,
        )
        planned[arch] = PlannedImage(release, terms)
    return planned


def build(request: BuildRequest, hooks: BuildHooks | None = None) -> list[BuiltImage]:
    """Build the request's images; images whose build key is already in the output directory
    come back with `unchanged=True`, neither staged nor packed (see sysext.build_key)."""
    hooks = hooks or BuildHooks()
    recipe = request.recipe
    if recipe.package_source is None:
        plan_releases(request)  # a bad version or OS binding fails before anything else
    downloader = Downloader(
        cache_dir=request.settings.cache_dir,
        mirrors=request.settings.mirrors,
        refresh=request.refresh,
    )
    writer = writer_for(request.image_format)
    compression, chosen_level = resolve_compression(writer, request.compression, request.level)
    mtime = resolve_source_date_epoch(request.source_date_epoch)
    recipe_sha = hashlib.sha256(recipe.path.read_bytes()).hexdigest()

    def key_of(arch: Architecture, sources: Sequence[SourceIdentity]) -> str:
        return build_key(
            KeyInputs(
                recipe_sha256=recipe_sha,
                release=releases[arch].fields(),
                sources=sources,
                options={
                    "format": request.image_format.value,
                    "compression": compression.value,
                    "level": chosen_level,
                    "block_size": request.block_size,
                    # Another certificate means other bytes (the signature partition).
                    **(
                        {"verity": request.verity_signer.fingerprint}
                        if request.verity_signer is not None
                        else {}
                    ),
                },
                tools=writer.tool_versions(),
                source_date_epoch=mtime,
            )
        )

    done: dict[Architecture, BuiltImage] = {}
    with tempfile.TemporaryDirectory(prefix="sysext-build-") as work_name:
        work = Path(work_name)
        contexts = make_contexts(request, downloader, work)
        for arch in contexts:
            hooks.on_stage(arch, "resolving")
        releases = plan_releases(request, contexts)
        arches = tuple(releases)
        to_pack: list[tuple[_Staged, str]] = []
        for arch in arches:
            # From here on the context names the image's version (an apt closure's, or the
            # requested one); the plan a source made stays in its shared memo.
            ctx = dataclasses.replace(contexts[arch], version=releases[arch].version)
            known = _resolve(recipe, ctx)
            if known is not None and not request.force:
                existing = _unchanged(request.output_dir, releases[arch], key_of(arch, known))
                if existing is not None:
                    done[arch] = existing
                    continue
            hooks.on_stage(arch, "fetching")
            fetched = _fetch(recipe, ctx)
            key = key_of(arch, [_identity(sid, kind, f) for sid, kind, f in fetched])
            if known is None and not request.force:
                # Sources only a fetch can name (apt, pip): decide now, still before staging.
                existing = _unchanged(request.output_dir, releases[arch], key)
                if existing is not None:
                    done[arch] = existing
                    continue
            hooks.on_stage(arch, "staging")
            to_pack.append((_stage(recipe, ctx, fetched), key))
        tools: dict[str, str] = {}
        if to_pack:
            for kind in sorted({spec.kind for spec in recipe.sources}):
                tools.update(source_kind(kind).tools())
        for item, key in to_pack:
            provenance: dict[str, object] = {
                "recipe": {"name": recipe.name, "file": recipe.file_label, "sha256": recipe_sha},
                "version": releases[item.arch].version,
                "fetch_tools": tools,
                "sources": [_provenance_source(sid, kind, f) for sid, kind, f in item.fetched],
            }
            hooks.on_stage(item.arch, "waiting to pack")  # staged; packing slots are bounded
            with hooks.pack_slot():
                hooks.on_stage(item.arch, "packing")
                done[item.arch] = pack(
                    item.tree,
                    releases[item.arch],
                    request.output_dir,
                    image_format=request.image_format,
                    compression=compression,
                    level=chosen_level,
                    source_date_epoch=mtime,
                    provenance=provenance,
                    allow_setuid=frozenset(p.strip("/") for p in recipe.allow_setuid),
                    block_size=request.block_size,
                    key=key,
                    jobs=hooks.jobs,
                    verity_signer=request.verity_signer,
                )
    return [done[arch] for arch in arches]


def _provenance_source(sid: str, kind: str, got: Fetched) -> dict[str, object]:
    record: dict[str, object] = {
        "id": sid,
        "kind": kind,
        "origin": got.origin,
        "file": got.file_name,
        "sha256": got.sha256,
        "integrity": got.integrity,
    }
    if got.parts:
        record["parts"] = [
            {"name": p.name, "package": p.detail, "url": p.url, "sha256": p.sha256, "size": p.size}
            for p in got.parts
        ]
    return record


def _identity(sid: str, kind: str, got: Fetched | Resolved) -> SourceIdentity:
    return SourceIdentity(sid, kind, got.sha256, got.file_name)


def _resolve(recipe: Recipe, ctx: FetchContext) -> list[SourceIdentity] | None:
    """The identities of this architecture's sources without fetching payloads, or None
    when a source kind can name its file only by fetching it."""
    found = []
    for spec in recipe.sources:
        if not spec.applies_to(ctx.arch):
            continue
        resolved = source_kind(spec.kind).resolve(spec, ctx)
        if resolved is None:
            return None
        found.append(_identity(spec.id, spec.kind, resolved))
    return found


def _unchanged(output_dir: Path, release: ExtensionRelease, key: str) -> BuiltImage | None:
    """The image already in `output_dir` built from the same key, if there is one.

    Checked: the provenance file records the key, the image named there exists with the
    recorded size, and SHA256SUMS lists it (re-added when someone removed the line).
    """
    provenance_path = output_dir / provenance_filename(release.image_stem)
    try:
        record = read_provenance(provenance_path)
    except (OSError, ValueError):
        return None
    image = record.get("image")
    build_info = record.get("build")
    if record.get("key") != key or not isinstance(image, dict) or not isinstance(build_info, dict):
        return None
    path = output_dir / release.image_filename
    sha256, size = image.get("sha256"), image.get("size")
    if image.get("file") != path.name or not isinstance(sha256, str):
        return None
    try:
        if path.stat().st_size != size:
            return None
    except OSError:
        return None
    entry = ManifestEntry(path.name, sha256)
    if entry not in read_manifest_file(output_dir / MANIFEST_NAME):
        merge_into_manifest(output_dir / MANIFEST_NAME, [entry])
    level = build_info.get("level")
    return BuiltImage(
        path=path,
        sha256=sha256,
        size=path.stat().st_size,
        provenance_path=provenance_path,
        release=release,
        image_format=ImageFormat(build_info.get("format", ImageFormat.SQUASHFS.value)),
        compression=Compression(build_info.get("compression", Compression.ZSTD.value)),
        level=level if isinstance(level, int) else None,
        unchanged=True,
    )


def _fetch(recipe: Recipe, ctx: FetchContext) -> list[tuple[str, str, Fetched]]:
    fetched: list[tuple[str, str, Fetched]] = []
    for spec in recipe.sources:
        if not spec.applies_to(ctx.arch):
            continue
        with step(
            f"Fetching {recipe.name} {ctx.version} {ctx.arch.systemd_name}: source {spec.id}"
        ):
            got = source_kind(spec.kind).fetch(spec, ctx)
        _check_against_lock(ctx, spec.id, got)
        fetched.append((spec.id, spec.kind, got))
    return fetched


def _stage(recipe: Recipe, ctx: FetchContext, fetched: list[tuple[str, str, Fetched]]) -> _Staged:
    work = ctx.work_dir
    extracted: dict[str, Path] = {}
    for sid, _, got in fetched:
        spec = next(s for s in recipe.sources if s.id == sid)
        destination = work / "sources" / sid
        destination.mkdir(parents=True)
        with step(f"Extracting source {sid} ({got.format.value})"):
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
        extracted[sid] = destination
    tree = work / "tree"
    tree.mkdir()
    whole = frozenset(sid for sid, _, got in fetched if got.format is ArchiveFormat.DIRECTORY)
    with step(f"Staging {recipe.name} {ctx.version} {ctx.arch.systemd_name}"):
        assemble(recipe, extracted, tree, whole_trees=whole)
        # pack() checks the tree again; checking here too means a tree that cannot become an
        # image fails the build before any architecture has written its image.
        scan_tree(tree, allow_setuid=recipe.allow_setuid)
    return _Staged(ctx.arch, tree, tuple(fetched))


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
    base: str | None = None,
) -> list[LockEntry]:
    """Fetch and verify every source of `version` for `arches`; what a lock file records.

    Sources upstream vouches for are verified as in a build; `integrity = "lock"` sources
    are recorded on first use (the lock is then their only integrity). A source made of
    several files (an apt closure) gets one entry per file, keyed SOURCE/NAME, under the
    image version its closure makes.
    """
    downloader = Downloader(cache_dir=settings.cache_dir, mirrors=settings.mirrors, refresh=refresh)
    request = BuildRequest(
        recipe=recipe,
        output_dir=Path("."),
        settings=settings,
        version=version,
        architectures=tuple(arches),
        refresh=refresh,
        base=base,
    )
    entries: list[LockEntry] = []
    with tempfile.TemporaryDirectory(prefix="sysext-lock-") as work_name:
        contexts = make_contexts(request, downloader, Path(work_name), locking=True)
        for arch, first in contexts.items():
            terms = source_terms(recipe, first)
            image_version = terms.version if terms is not None else version
            ctx = dataclasses.replace(first, version=image_version)
            for spec in recipe.sources:
                if not spec.applies_to(arch):
                    continue
                with step(f"Locking {recipe.name} {image_version} {arch.systemd_name}: {spec.id}"):
                    got = source_kind(spec.kind).fetch(spec, ctx)
                if got.parts:
                    entries += [
                        LockEntry(
                            version=image_version,
                            arch=arch.systemd_name,
                            source=f"{spec.id}/{part.name}",
                            url=part.url,
                            sha256=part.sha256,
                            size=part.size,
                            package=part.detail,
                        )
                        for part in got.parts
                    ]
                    continue
                entries.append(
                    LockEntry(
                        version=image_version,
                        arch=arch.systemd_name,
                        source=spec.id,
                        url=got.origin,
                        sha256=got.sha256,
                        size=got.path.stat().st_size,
                    )
                )
    return entries
