"""Matrix builds: several recipes × version tracks × architectures in one run.

`plan()` turns the request into rows, one image each (`podman 5.3.1 arm64`): version specs
are resolved per recipe (`latest`, a track `X.Y` = its newest `X.Y.*`, or a literal
version), combinations a recipe does not support become notes rather than failures.
`run_matrix()` builds the rows on a thread pool: resolving and downloading overlap freely,
while packing holds one of a fixed number of slots (as many as there are cores, each
compressor then gets its share of the cores). Each row is one `sysext.build.pipeline.build()` of one
architecture, so its image is skipped as "unchanged" when its build key is already in the
output directory, and a row that fails leaves nothing behind while the others go on. With
a publisher, a row whose image the channel already has is not built at all, and each
finished row is published at once (sysext.publishing).

A locked matrix (`--locked`) reads each recipe's own lock file once, while planning; a
recipe whose lock is missing or unreadable fails its own rows, not the run.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sysext.build.lockfile import Lock, LockError, default_lock_path, load_lock
from sysext.build.pack import BuiltImage
from sysext.build.pipeline import BuildHooks, BuildRequest, build, plan_releases
from sysext.client.publishing import Publisher, PublishState
from sysext.core.config import Settings
from sysext.core.download import Downloader
from sysext.core.errors import SysextError
from sysext.core.process import stop_running_tools
from sysext.image.ddi import RootHashSigner
from sysext.image.formats import Compression, ImageFormat
from sysext.recipe.model import Recipe
from sysext.systemd.architecture import Architecture

log = logging.getLogger("sysext.build.matrix")

LATEST = "latest"


class Outcome(enum.Enum):
    BUILT = "built"
    UNCHANGED = "unchanged"
    SKIPPED = "not built"  # with --publish: the channel has this image already
    PUBLISHED = "published"
    ALREADY_PUBLISHED = "already published"
    FAILED = "failed"


@dataclass(frozen=True)
class Row:
    """One image to make: a recipe at a version for an architecture."""

    recipe: Recipe
    version: str
    arch: Architecture
    problem: str | None = None  # version spec or lock file unusable: the row fails
    lock: Lock | None = None  # --locked: the recipe's lock file, the only files it may use

    @property
    def label(self) -> str:
        return f"{self.recipe.name} {self.version} {self.arch.systemd_name}"


@dataclass(frozen=True)
class RowResult:
    row: Row
    build: Outcome  # BUILT, UNCHANGED, SKIPPED or FAILED
    publish: Outcome | None  # PUBLISHED, ALREADY_PUBLISHED, FAILED; None: not asked
    detail: str  # image size and file, or why it failed
    seconds: float
    image: BuiltImage | None = None

    @property
    def failed(self) -> bool:
        return Outcome.FAILED in (self.build, self.publish)

    @property
    def outcome(self) -> Outcome:
        """The row's one-word result for summaries: the publish outcome when publishing."""
        if self.build is Outcome.FAILED:
            return Outcome.FAILED
        return self.publish or self.build


@dataclass(frozen=True)
class MatrixRequest:
    recipes: tuple[Recipe, ...]
    output_dir: Path
    settings: Settings
    versions: tuple[str, ...] = ()  # `latest`, `X.Y` or a version; empty: each recipe's own
    architectures: tuple[Architecture, ...] = ()  # empty: this machine's
    os_spec: str | None = None
    os_version_id: str | None = None
    image_format: ImageFormat = ImageFormat.SQUASHFS
    compression: Compression | None = None
    level: int | None = None
    block_size: int | None = None  # squashfs only; None: the compressor's default
    refresh: bool = False
    force: bool = False
    workers: int = 4  # rows in progress at once (downloads overlap; packing is bounded apart)
    locked: bool = False  # each recipe uses only the files its lock file records
    lock_file: Path | None = None  # a one-recipe matrix's lock elsewhere than ./NAME.lock.json
    base: str | None = None  # --base for recipes with an apt source
    verity_signer: RootHashSigner | None = None  # --verity: signed DDIs


@dataclass(frozen=True)
class MatrixPlan:
    rows: tuple[Row, ...]
    notes: tuple[str, ...]  # combinations left out, and why


class MatrixView(Protocol):
    """What the progress display is told; called from worker threads."""

    def stage(self, row: Row, stage: str) -> None: ...

    def finished(self, result: RowResult) -> None: ...


def resolve_version(recipe: Recipe, spec: str, downloader: Downloader) -> str:
    """`latest` → the newest upstream version; `X.Y` → the newest `X.Y.*` (or `X.Y` itself)
    when the recipe has a version feed; anything else is taken as the version. One rule for
    single and matrix builds: sysext.upstream_versions (which also reads per-minor marker
    files such as Kubernetes' stable-1.31.txt)."""
    from sysext.build.upstream_versions import resolve_version as resolve

    return resolve(recipe, spec, downloader)


def recipe_lock(recipe: Recipe, lock_file: Path | None = None) -> Lock:
    """The recipe's lock (`lock_file`, default ./NAME.lock.json); a LockError if there is
    none or it cannot be read."""
    path = lock_file or default_lock_path(recipe.name)
    if not path.exists():
        raise LockError(
            f"no lock file {path}: run `sysext lock {recipe.name}`",
            "lock every --version and --arch the build asks for",
        )
    return load_lock(path, recipe.name)


def plan(request: MatrixRequest, downloader: Downloader) -> MatrixPlan:
    arches = request.architectures or (Architecture.from_uname(),)
    rows: dict[tuple[str, str, Architecture], Row] = {}
    notes: list[str] = []
    for recipe in request.recipes:
        supported = [a for a in arches if a in recipe.architectures]
        for arch in arches:
            if arch not in recipe.architectures:
                notes.append(f"{recipe.name}: no {arch.systemd_name} build (not in the recipe)")
        if not supported:
            continue
        lock, lock_problem = None, None
        if request.locked:
            try:
                lock = recipe_lock(recipe, request.lock_file)
            except SysextError as exc:
                lock_problem = _reason(exc)
        for spec in request.versions or (recipe.version,):
            problem = lock_problem
            try:
                version = resolve_version(recipe, spec, downloader)
            except SysextError as exc:
                version, problem = spec, problem or exc.message
            for arch in supported:
                row = Row(recipe, version, arch, problem, lock)
                rows.setdefault((recipe.name, version, arch), row)
    return MatrixPlan(tuple(rows.values()), tuple(notes))


def run_matrix(
    request: MatrixRequest,
    rows: Sequence[Row],
    view: MatrixView,
    publisher: Publisher | None = None,
) -> list[RowResult]:
    """Build (and publish) every row; results in the order of `rows`.

    Interrupted (Ctrl-C reaches the main thread as KeyboardInterrupt), rows not started are
    dropped and running rows stop at their next stage; this waits for them, so that no row
    is left writing into the output directory when the exception goes on. (A terminal's
    Ctrl-C also reaches the packing tools, which are in the same process group: the packs
    in progress fail and clean up after themselves.)
    """
    cores = os.cpu_count() or 1
    slots = max(1, min(cores, len(rows)))
    jobs = max(1, cores // slots)
    packing = threading.BoundedSemaphore(slots)
    stopping = threading.Event()

    def check() -> None:
        if stopping.is_set():
            raise SysextError("interrupted", "run the build again to finish it")

    @contextmanager
    def pack_slot() -> Iterator[None]:
        with packing:
            check()  # rows that waited for a slot must not start packing after Ctrl-C
            yield

    def one(row: Row) -> RowResult:
        def on_stage(arch: Architecture, stage: str) -> None:
            check()
            view.stage(row, stage)

        hooks = BuildHooks(on_stage=on_stage, pack_slot=pack_slot, jobs=jobs)
        return _run_row(request, row, view, publisher, hooks)

    workers = max(1, min(request.workers, len(rows)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sysext-row")
    futures: list[Future[RowResult]] = []
    try:
        futures = [pool.submit(one, row) for row in rows]
        return [future.result() for future in futures]
    except BaseException:
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        # A pack that Ctrl-C ended frees its slot at once, possibly before this thread
        # got the signal: the row waiting for the slot may have started a pack after it.
        # End such latecomers until every row has stopped.
        while not all(f.done() for f in futures):
            stop_running_tools()
            wait(futures, timeout=0.1)
        raise
    finally:
        pool.shutdown(wait=True)


def _run_row(
    request: MatrixRequest,
    row: Row,
    view: MatrixView,
    publisher: Publisher | None,
    hooks: BuildHooks,
) -> RowResult:
    started = time.monotonic()

    def result(
        build_outcome: Outcome,
        detail: str,
        publish: Outcome | None = None,
        image: BuiltImage | None = None,
    ) -> RowResult:
        done = RowResult(row, build_outcome, publish, detail, time.monotonic() - started, image)
        view.finished(done)
        return done

    try:
        if row.problem:
            raise SysextError(row.problem)
        build_request = BuildRequest(
            recipe=row.recipe,
            output_dir=request.output_dir,
            settings=request.settings,
            version=row.version,
            architectures=(row.arch,),
            os_spec=request.os_spec,
            os_version_id=request.os_version_id,
            image_format=request.image_format,
            compression=request.compression,
            level=request.level,
            block_size=request.block_size,
            refresh=request.refresh,
            force=request.force,
            lock=row.lock,
            base=request.base if row.recipe.package_source is not None else None,
            verity_signer=request.verity_signer,
        )
        if publisher is not None and not request.force:
            # A version the channel has is done: published versions are immutable, so
            # building it again could only give the same bytes — or other bytes, when a
            # newer sysext packs differently (e.g. its default compressor changed), which
            # the registry would refuse. --force builds it anyway and compares.
            (release,) = plan_releases(build_request).values()
            hooks.on_stage(row.arch, "resolving")
            there = publisher.published(release.name).get(release.image_filename)
            if there is not None and publisher.channel in there["channels"]:
                return result(
                    Outcome.SKIPPED,
                    f"{release.image_filename} is in {publisher.channel} already "
                    "(--force builds it again and compares)",
                    Outcome.ALREADY_PUBLISHED,
                )
        (image,) = build(build_request, hooks)
    except SysextError as exc:
        return result(Outcome.FAILED, _reason(exc))
    except Exception as exc:  # a bug in one row must not take the other rows down
        log.exception("building %s", row.label)
        return result(Outcome.FAILED, f"internal error: {type(exc).__name__}: {exc}")
    built = Outcome.UNCHANGED if image.unchanged else Outcome.BUILT
    detail = f"{image.path.name} ({_size(image.size)})"
    if publisher is None:
        return result(built, detail, image=image)
    assert image.release is not None
    try:
        hooks.on_stage(row.arch, "publishing")
        published = publisher.publish(image.path, image.release.name, image.sha256)
    except SysextError as exc:
        return result(built, f"publishing: {_reason(exc)}", Outcome.FAILED, image)
    state = (
        Outcome.ALREADY_PUBLISHED if published.state is PublishState.ALREADY else Outcome.PUBLISHED
    )
    return result(built, f"{detail}; {published.detail}", state, image)


def _reason(exc: SysextError) -> str:
    return exc.message + (f" (hint: {exc.hint})" if exc.hint else "")


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 1 << 20 else f"{size / 1024:.0f} KiB"


def summary_counts(results: Sequence[RowResult]) -> dict[Outcome, int]:
    counts = dict.fromkeys(Outcome, 0)
    for item in results:
        counts[item.outcome] += 1
    return counts


__all__ = [
    "MatrixPlan",
    "MatrixRequest",
    "MatrixView",
    "Outcome",
    "Row",
    "RowResult",
    "plan",
    "recipe_lock",
    "resolve_version",
    "run_matrix",
    "summary_counts",
]
