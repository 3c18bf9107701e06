"""Registry operations: publish, yank, promote, queries, and start-up preparation.

Every write follows one order, which is what makes a crash harmless: take the writer lock
(locking.py: per extension, across replicas on PostgreSQL), put the validated file in the
store (storage/: local files or an S3 bucket), build and check the directory contents the change
will publish (consistency.py: only what can be served is committed), commit the database
(the source of truth), then materialize the affected directories. A crash before the
commit leaves an unreferenced blob (garbage-collected on start); after it, the start-up
rematerialization publishes what was committed. A materialization that fails after the
commit (a full disk) undoes the change in the database, so database and tree never
diverge. Either way the previous snapshot is served until a new one is complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.db.locking import advisory_session, exclusive
from registry.db.models import (
    Image,
    ImageChannel,
    as_utc,
    make_engine,
    make_sessionmaker,
    migrate,
    utcnow,
)
from registry.errors import RegistryError
from registry.failpoints import failpoint
from registry.service import audit, auth, consistency, fleet, host_reports, rollouts
from registry.service.names import ImageName, channel_problem, claimed_by
from registry.settings import Settings
from registry.storage import materialize as mat
from registry.storage.backend import make_storage
from registry.storage.blobs import blob_path, remove_abandoned_uploads
from registry.trust.keys import Rotation, Signer
from sysext.core.atomic import atomic_write
from sysext.core.errors import SysextError
from sysext.core.logfmt import log_value
from sysext.image.read import read_image
from sysext.image.summary import ImageSummary, summarize
from sysext.systemd.versioning import strverscmp, version_key

log = logging.getLogger("registry")


@dataclass(frozen=True)
class PublishResult:
    image: Image
    created: bool


class RegistryService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.db_url)
        self.sessions = make_sessionmaker(self.engine)
        self.signer = Signer(settings.key_path, settings.signing_policy)
        # (name, channel) directories start-up could not materialize: served from their
        # previous snapshot (if any) and reported; `sysext registry check` explains them.
        self.broken: list[consistency.Problem] = []
        self.storage = make_storage(settings)
        # Sightings of managed hosts, buffered per worker (fleet.py).
        self.fleet = fleet.FleetRecorder(settings.fleet_flush, settings.fleet_queue)
        # Unauthenticated host reports, per client address (host_reports.py).
        self.report_limiter = host_reports.ReportLimiter(settings.report_rate)
        self._trees: tuple[float, dict[tuple[str, str], frozenset[str]]] | None = None

    @contextlib.contextmanager
    def writing(self, name: str | None) -> Iterator[Session]:
        """A session holding the writer lock of extension `name` (None: of everything)."""
        if self.engine.dialect.name == "postgresql":
            with advisory_session(self.engine, name) as session:
                yield session
        else:
            with exclusive(self.settings.lock_path), self.sessions() as session:
                yield session

    @contextlib.contextmanager
    def _publishing(self, name: str) -> Iterator[Session]:
        """The writer lock a publish of `name` needs.

        `_refuse_squatting` reads the other extensions' names and files; the new row is
        committed later. On SQLite every write holds the one flock, so nothing runs in
        between. On PostgreSQL writes of different extensions hold the registry-wide key
        shared and run side by side, so the first images of `a` and `a-1` could both pass
        the check and both commit. Hence a publish that creates its extension (no row of
        `name` yet) takes the registry-wide key exclusively and runs alone.

        That is enough. Take two concurrent publishes to existing extensions X and Y.
        Each was created under the exclusive key, so committed before either writer got
        its shared key: X's check sees Y's name and Y's sees X's. All one check can miss
        is the other's uncommitted file, and if X's pattern matches Y's new file, Y's own
        check refuses it (its first loop: another extension's pattern matches my file).
        Rows of a name are only deleted under that name's lock (a failed publish undone)
        or everything's (repair), so "exists", seen under the name's lock, holds until
        the commit. New versions of existing extensions, the common case, still publish
        in parallel (tests/test_registry_squatting_race.py shows both).
        """
        with self.writing(name) as session:
            if (
                self.engine.dialect.name != "postgresql"
                or session.scalars(select(Image.id).where(Image.name == name).limit(1)).first()
                is not None
            ):
                yield session
                return
        # Released first: asking for the exclusive key while holding the shared one would
        # deadlock against another writer doing the same.
        with self.writing(None) as session:
            yield session

    # -- start-up -------------------------------------------------------------------

    def prepare(self) -> tuple[str, bool]:
        """Migrate, create the key, drop crash leftovers, rematerialize from the DB.

        Returns (fingerprint, key_created). Safe to run from every worker at once, and
        while others serve: it holds the writer lock, and uploads in flight are locked.
        """
        s = self.settings
        for directory in (s.data_dir, s.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        _private_database(s)
        with self.writing(None) as session:
            # Inside the lock of everything: replicas starting together migrate once.
            migrate(session.connection(), self._stored_summary)
            session.commit()
            _, created = self.signer.ensure_key()
            self._advance_key(session, audit.Actor.system(), force=False)
            self.storage.prepare(self.signer)
            atomic_write(s.served_url_path, s.base_url.encode() + b"\n", mode=0o600)
            remove_abandoned_uploads(s.tmp_dir)
            images = list(session.scalars(select(Image)))
            self.storage.collect_garbage({i.sha256 for i in images})
            with self.signer.batch():
                known = self.rematerialize(images)
            self.storage.remove_unknown(known)
        return self.signer.fingerprint(), created

    def maintain(self) -> str | None:
        """The periodic job: advance a due key rotation, re-sign ageing manifests.

        Only signatures that are older than `resign_interval` or by a key that no longer
        signs are rewritten (in place: no other byte of the tree changes). Returns the
        rotation phase entered, if any; a phase entered on its own is audited as the
        registry's (issue 19, finding 15).
        """
        with self.writing(None) as session:
            entered = self._advance_key(session, audit.Actor.system(), force=False)
            self._republish(session)
            return entered

    def advance_key(self, actor: audit.Actor, phase: str | None = None) -> str:
        """Move the rotation in progress to its next phase now (`sysext key rotate --advance`).

        `phase`: the phase the caller saw and means to leave. Checked under the writer
        lock of everything, like the rotation itself: two advances sent together run one
        after the other, and the second (same `phase`) is refused instead of skipping the
        retiring overlap (issue 19, finding 11).
        """
        with self.writing(None) as session:
            rotation = self.signer.rotation()
            if rotation is None:
                raise RegistryError(
                    409, "no key rotation in progress; start one with sysext key rotate"
                )
            if phase is not None and rotation.phase != phase:
                raise RegistryError(
                    409,
                    f"the key rotation is in phase {rotation.phase}, not {phase}: another "
                    "advance came first; nothing was changed (see sysext key status)",
                )
            entered = self._advance_key(session, actor, force=True)
            assert entered is not None  # a rotation in progress always has a next phase
            self._republish(session)
            return entered

    def _advance_key(self, session: Session, actor: audit.Actor, *, force: bool) -> str | None:
        """Advance the rotation (if due, or `force`) and commit its audit entry at once,
        under the caller's writer lock: no other write sees the new key files first."""
        before = self.signer.rotation()
        entered = self.signer.advance(force=force)
        if entered is not None and before is not None:
            audit.record(
                session,
                actor,
                audit.Action.KEY_ADVANCE,
                self.signer.fingerprint(),
                {"phase": entered, "from": before.phase, "automatic": not force},
            )
            session.commit()
        return entered

    def _republish(self, session: Session) -> None:
        self.storage.prepare(self.signer)  # publishes the keyring of the new phase
        with self.signer.batch():
            self.rematerialize(list(session.scalars(select(Image))))

    def rotate_key(self, actor: audit.Actor) -> Rotation:
        """Start a key rotation (keys.py): the new key joins the served keyring.

        The audit entry commits right after the key files change, under the same writer
        lock (issue 19, finding 15: it used to commit after the lock was released).
        """
        with self.writing(None) as session:
            rotation = self.signer.rotate(self.settings.key_overlap_duration)
            audit.record(
                session,
                actor,
                audit.Action.KEY_ROTATE,
                rotation.other,
                {"advance_at": rotation.advance_at.isoformat()},
            )
            session.commit()
            self.storage.prepare(self.signer)
            return rotation

    def _stored_summary(self, sha256: str, name: str) -> ImageSummary | None:
        """Read what a stored image carries (for rows published before migration 0004)."""
        if self.settings.uses_s3:
            return None  # S3 came after 0004: no such rows there
        try:
            return summarize(read_image(blob_path(self.settings.store_dir, sha256)), name)
        except SysextError as exc:
            log.warning(
                "event=summary-unreadable sha256=%s error=%s", sha256, log_value(exc.message)
            )
            return None

    def rematerialize(self, images: list[Image]) -> set[tuple[str, str]]:
        """Materialize every (extension, channel); one broken extension never stops the rest.

        A directory that cannot be materialized keeps serving its previous snapshot and
        is reported loudly (log line and `self.broken`); the registry starts regardless.
        """
        groups: dict[tuple[str, str], list[Image]] = {}
        for image in images:
            for channel in image.channel_names:
                groups.setdefault((image.name, channel), []).append(image)
        self.broken = []
        for (name, channel), members in sorted(groups.items()):
            try:
                held = self.held_for(name, channel, members)
                content = consistency.checked_content(self.settings, name, channel, members, held)
                self.storage.materialize(self.signer, content)
                with self.sessions() as session:
                    self._serve_rollouts(session, name, [channel])
            except (RegistryError, OSError, SysextError) as exc:
                message = exc.detail if isinstance(exc, RegistryError) else str(exc)
                problem = consistency.Problem(
                    name, channel, message, "run `sysext registry check --data DIR`"
                )
                self.broken.append(problem)
                log.error(
                    "event=extension-broken name=%s channel=%s problem=%s "
                    "action=serving-previous-snapshot hint=%s",
                    log_value(name),
                    log_value(channel),
                    log_value(message),
                    log_value(
                        "sysext registry check --data DIR; sysext registry repair --data DIR"
                    ),
                )
        return set(groups)

    def _refresh(self, session: Session, name: str, channels: Iterable[str]) -> None:
        with self.signer.batch():
            for content in self._planned(session, name, channels):
                self.storage.materialize(self.signer, content)
            self._serve_rollouts(session, name, channels)

    def rollout_trees(self) -> dict[tuple[str, str], frozenset[str]]:
        """(name, channel) → groups, of every rollout tree; re-read at most every 5 s (a
        replica redirecting bucket paths to the object store asks on every request)."""
        now = time.monotonic()
        if self._trees is None or now - self._trees[0] > 5:
            with self.sessions() as session:
                self._trees = (now, rollouts.trees(session))
        return self._trees[1]

    def held_for(self, name: str, channel: str, members: Iterable[Image]) -> frozenset[str]:
        """What `name`'s channel manifest leaves out while it rolls out (rollouts.py)."""
        with self.sessions() as session:
            return rollouts.held_filenames(session, name, channel, members)

    def _serve_rollouts(self, session: Session, name: str, channels: Iterable[str]) -> None:
        """Materialize the rollout tree (one directory per bucket) of `name` in `channels`,
        as the session sees the database (call it after the commit)."""
        self._trees = None  # this process redirects by the new state at once
        for channel in sorted(set(channels)):
            members = session.scalars(
                select(Image)
                .join(ImageChannel)
                .where(Image.name == name, ImageChannel.channel == channel)
            ).all()
            # No rollout ever set: no tree; the bucket paths fall back to the channel's
            # directory (tree.py, the nginx block), which then lists the same versions.
            if not members or not rollouts.policies(session, name, channel):
                continue
            content = rollouts.rollout_content(session, name, channel, members)
            self.storage.materialize_rollouts(self.signer, content)

    def _planned(
        self, session: Session, name: str, channels: Iterable[str]
    ) -> list[mat.DirectoryContent]:
        """The checked contents of `name`'s directories in `channels`, as the session sees
        them (pending changes included): RegistryError 422 when one could not be served."""
        session.flush()
        planned = []
        for channel in sorted(set(channels)):
            members = session.scalars(
                select(Image)
                .join(ImageChannel)
                .where(Image.name == name, ImageChannel.channel == channel)
            ).all()
            held = rollouts.held_filenames(session, name, channel, members)
            planned.append(consistency.checked_content(self.settings, name, channel, members, held))
        return planned

    def _commit_and_serve(
        self,
        session: Session,
        name: str,
        channels: Iterable[str],
        undo: Callable[[Session], None],
        authorize: Callable[[Session], None] | None = None,
    ) -> None:
        """Check, commit, materialize; if materializing fails, `undo` the committed change.

        Everything materialization checks by itself was checked before (`_planned`), so
        what remains is the machine failing (disk full, I/O error): the client gets a 503,
        the database is as before the request and the tree is rebuilt from it.
        `authorize` runs last before the commit, with the change flushed (auth.authorize_write).
        """
        channels = sorted(set(channels))
        try:
            planned = self._planned(session, name, channels)
            if authorize is not None:
                authorize(session)
        except RegistryError:
            session.rollback()
            raise
        session.commit()
        failpoint("after-commit")
        try:
            with self.signer.batch():
                for content in planned:
                    self.storage.materialize(self.signer, content)
                self._serve_rollouts(session, name, channels)
        except (OSError, SysextError, RegistryError) as exc:
            # RegistryError: the object store failed (storage/s3.py), the same as a disk.
            log.error(
                "event=materialize-failed name=%s problem=%s action=undo",
                log_value(name),
                log_value(exc),
            )
            undo(session)
            session.commit()
            try:
                self._refresh(session, name, channels)
            except (OSError, SysextError, RegistryError) as again:
                log.error(
                    "event=extension-broken name=%s problem=%s", log_value(name), log_value(again)
                )
            raise RegistryError(
                503,
                f"could not write the public tree for {name} ({type(exc).__name__}); "
                "nothing was changed, try again later",
            ) from None

    # -- writes ---------------------------------------------------------------------

    def check_channel(self, channel: str) -> None:
        problem = channel_problem(channel, self.settings.channels)
        if problem:
            raise RegistryError(422, problem)

    def publish(
        self,
        staged: Path,
        sha256: str,
        size: int,
        image_name: ImageName,
        fmt: str,
        channel: str,
        *,
        os_version_id: str | None = None,
        summary: ImageSummary | None = None,
        verity: tuple[str, str] | None = None,
        actor: audit.Actor,
    ) -> PublishResult:
        """Store a validated upload and make it visible in `channel`.

        `os_version_id`: the VERSION_ID of an OS-bound image; `summary`: its release fields
        and contents (both from validation.ValidatedImage); `verity`: (root hash, signer
        fingerprint) of a signed verity DDI. `actor`: who asked, authorized here under the
        writer lock and again just before the commit (the token may have been revoked while
        the upload was stored); the audit entry commits with the change.
        """
        self.check_channel(channel)

        def authorize(session: Session) -> None:
            try:
                auth.authorize_write(
                    session, actor.principal, image_name.name, [channel], "publish"
                )
            except RegistryError:
                session.rollback()
                raise

        with self._publishing(image_name.name) as session:
            auth.authorize_write(session, actor.principal, image_name.name, [channel], "publish")
            existing = session.scalars(
                select(Image).where(
                    Image.name == image_name.name, Image.filename == image_name.filename
                )
            ).one_or_none()
            if existing is None:
                self._refuse_squatting(session, image_name)
                self._refuse_equal_version(session, image_name)
            if existing is not None:
                if existing.sha256 != sha256:
                    raise RegistryError(
                        409,
                        f"{image_name.filename} is already published with other content "
                        f"(sha256 {existing.sha256}); published versions are immutable, "
                        "publish a new version",
                    )
                # Same bytes: idempotent, so a retried upload after a lost response is fine.
                _audit(session, actor, audit.Action.PUBLISH, [existing], channel, created=False)
                if channel not in existing.channel_names:
                    added = ImageChannel(channel=channel, added_at=utcnow())
                    existing.channels.append(added)

                    def drop_channel(s: Session, image: Image = existing) -> None:
                        image.channels[:] = [c for c in image.channels if c.channel != channel]

                    self._commit_and_serve(
                        session,
                        existing.name,
                        [channel],
                        _undone(actor, drop_channel, audit.Action.PUBLISH, [existing]),
                        authorize,
                    )
                else:
                    session.flush()  # holds the write lock now (auth.authorize_write)
                    authorize(session)
                    session.commit()
                return PublishResult(existing, created=False)
            self._refuse_mixing(session, image_name, os_version_id)
            self.storage.ingest(staged, sha256)
            failpoint("after-store")
            image = Image(
                name=image_name.name,
                version=image_name.version,
                arch=image_name.arch,
                filename=image_name.filename,
                sha256=sha256,
                size=size,
                format=fmt,
                os_version_id=os_version_id,
                release=dict(summary.release) if summary else None,
                binaries=list(summary.binaries) if summary else None,
                units=list(summary.units) if summary else None,
                verity_root_hash=verity[0] if verity else None,
                verity_signer=verity[1] if verity else None,
                created_at=utcnow(),
                yanked=False,
            )
            image.channels.append(ImageChannel(channel=channel, added_at=utcnow()))
            session.add(image)
            _audit(session, actor, audit.Action.PUBLISH, [image], channel, created=True)

            def forget(s: Session) -> None:
                s.delete(image)  # its blob is garbage-collected at the next start

            self._commit_and_serve(
                session,
                image.name,
                [channel],
                _undone(actor, forget, audit.Action.PUBLISH, [image]),
                authorize,
            )
            return PublishResult(image, created=True)

    @staticmethod
    def _refuse_squatting(session: Session, image_name: ImageName) -> None:
        """No file name two extensions' transfer patterns could both match.

        With versions starting with a digit (names.py), `hello-x-1.0-x86-64.raw` is only
        ever hello-x's; but `a-1-2-x86-64.raw` is version 1-2 of `a` *and* version 2 of
        `a-1`. Whichever extension comes second is refused, in both directions: its file
        would be matched by the other's `OTHER-@v-%a.raw`, or its pattern would match
        the other's files (hosts sharing a target directory would mistake them).
        """
        filename = image_name.filename
        others = {n for n in session.scalars(select(Image.name).distinct()) if n != image_name.name}
        for other in sorted(others):
            if claimed_by(other, filename):
                raise RegistryError(
                    409,
                    f"{filename} would also match extension {other}'s transfer pattern "
                    f"{other}-@v-%a.raw; publish {image_name.name} under a name that is not "
                    f"{other}-DIGIT…",
                )
        prefix = image_name.name + "-"
        for row in session.scalars(
            select(Image).where(Image.name != image_name.name, Image.filename.startswith(prefix))
        ):
            if claimed_by(image_name.name, row.filename):
                raise RegistryError(
                    409,
                    f"{image_name.name}'s transfer pattern {image_name.name}-@v-%a.raw would "
                    f"match {row.filename} of extension {row.name}; pick another name",
                )

    @staticmethod
    def _refuse_equal_version(session: Session, image_name: ImageName) -> None:
        """Versions systemd orders as equal (8.0, 08.0, 8.00, 8.0+) cannot coexist.

        sysupdate picks the newest by strverscmp; between equal ones its choice depends
        on listing order, so hosts could get either image.
        """
        for row in session.scalars(select(Image).where(Image.name == image_name.name)):
            same = strverscmp(row.version, image_name.version) == 0
            if same and row.version != image_name.version:
                raise RegistryError(
                    409,
                    f"version {image_name.version} of {image_name.name} is the same version "
                    f"as the published {row.version} ({row.filename}) to systemd-sysupdate; "
                    "publish a version that sorts differently",
                )

    @staticmethod
    def _refuse_mixing(session: Session, image_name: ImageName, os_version_id: str | None) -> None:
        """One extension is either all OS-bound or all plain.

        A host's transfer file has one MatchPattern: NAME-@v-%w-%a.raw for bound images,
        NAME-@v-%a.raw for plain ones. The plain pattern reads a bound name's
        "1.0-3815.2.0" as a version and would offer hosts an image their systemd-sysext
        refuses (VERSION_ID differs, spec §1.3 step 8); the bound one never sees plain
        images. Yanked images count too: they stay in the public directory.
        """
        other = session.scalars(
            select(Image)
            .where(
                Image.name == image_name.name,
                Image.os_version_id.is_(None)
                if os_version_id is not None
                else Image.os_version_id.is_not(None),
            )
            .limit(1)
        ).one_or_none()
        if other is None:
            return
        if os_version_id is not None:
            problem = (
                f"{image_name.filename} is bound to VERSION_ID={os_version_id}, but "
                f"{image_name.name} already has images for any OS version ({other.filename})"
            )
        else:
            problem = (
                f"{image_name.filename} is for any OS version, but {image_name.name} already "
                f"has images bound to one VERSION_ID ({other.filename})"
            )
        raise RegistryError(
            409, f"{problem}; one extension cannot mix both, publish it under another name"
        )

    def _select_images(
        self, session: Session, name: str, version: str, arch: str | None
    ) -> list[Image]:
        """The images a version write touches: every architecture when `arch` is None.

        An empty `arch` is refused, never read as "all" (issue 19, finding 1: it once
        selected every image while the channel check saw none).
        """
        if arch is not None and not arch:
            raise RegistryError(422, "empty architecture; leave arch out to mean every one")
        query = select(Image).where(Image.name == name, Image.version == version)
        if arch is not None:
            query = query.where(Image.arch == arch)
        images = list(session.scalars(query))
        if not images:
            what = f"{name} {version}" + (f" ({arch})" if arch else "")
            raise RegistryError(404, f"no published image of {what}")
        return images

    def set_yanked(
        self,
        name: str,
        version: str,
        arch: str | None,
        yanked: bool,
        actor: audit.Actor,
    ) -> list[Image]:
        """Yank (or list again) a version: it leaves every channel it is in, so the token
        must be allowed in each of them, as seen under the writer lock."""
        action = audit.Action.YANK if yanked else audit.Action.UNYANK
        with self.writing(name) as session:
            images = self._select_images(session, name, version, arch)
            channels = {c for i in images for c in i.channel_names}
            auth.authorize_write(
                session, actor.principal, name, channels, "yank" if yanked else "unyank"
            )
            before = [(i, i.yanked, i.yanked_at) for i in images]
            for image in images:
                image.yanked = yanked
                image.yanked_at = utcnow() if yanked else None
            _audit(session, actor, action, images, None)

            def restore(s: Session) -> None:
                for image, was, at in before:
                    image.yanked, image.yanked_at = was, at

            self._commit_and_serve(session, name, channels, _undone(actor, restore, action, images))
            return images

    def promote(
        self,
        name: str,
        version: str,
        arch: str | None,
        channel: str,
        actor: audit.Actor,
    ) -> list[Image]:
        self.check_channel(channel)
        with self.writing(name) as session:
            images = self._select_images(session, name, version, arch)
            auth.authorize_write(session, actor.principal, name, [channel], "promote")
            _audit(session, actor, audit.Action.PROMOTE, images, channel)
            added = []
            for image in images:
                if channel not in image.channel_names:
                    image.channels.append(ImageChannel(channel=channel, added_at=utcnow()))
                    added.append(image)

            def demote(s: Session) -> None:
                for image in added:
                    image.channels[:] = [c for c in image.channels if c.channel != channel]

            self._commit_and_serve(
                session, name, [channel], _undone(actor, demote, audit.Action.PROMOTE, images)
            )
            return images

    # -- reads ----------------------------------------------------------------------

    def extensions(self, query: str | None = None) -> list[dict[str, Any]]:
        """One summary per extension; `query` matches names and descriptions (any case)."""
        with self.sessions() as session:
            images = list(session.scalars(select(Image)))
            unreleased = rollouts.unreleased(session)
        by_name: dict[str, list[Image]] = {}
        for image in images:
            by_name.setdefault(image.name, []).append(image)
        out = []
        needle = (query or "").strip().lower()
        for name in sorted(by_name):
            members = by_name[name]
            live = [i for i in members if not i.yanked]
            # The newest version some channel offers every host; one still rolling out is
            # listed apart (rolling_out), not as the extension's latest (docs/rollouts.md).
            offered = [
                i
                for i in live
                if any(
                    i.release_version not in unreleased.get((name, c), {}) for c in i.channel_names
                )
            ]
            latest = max(offered, key=lambda i: version_key(i.release_version), default=None)
            rolling = {
                c: sorted(v, key=version_key)
                for (n, c), v in sorted(unreleased.items())
                if n == name and any(i.release_version in v for i in live)
            }
            described = latest or max(members, key=lambda i: version_key(i.release_version))
            description = described.summary.description
            if needle and needle not in name.lower() and needle not in (description or "").lower():
                continue
            out.append(
                {
                    "name": name,
                    "description": description,
                    "latest_version": latest.release_version if latest else None,
                    "rolling_out": rolling,
                    "arches": sorted({i.arch for i in live}),
                    "channels": sorted({c for i in live for c in i.channel_names}),
                    # OS-bound images of one version (one per VERSION_ID) count once.
                    "versions": len({i.release_version for i in members}),
                    "updated": as_utc(max(i.created_at for i in members)),
                }
            )
        return out

    def images_of(self, name: str) -> list[Image]:
        with self.sessions() as session:
            images = list(session.scalars(select(Image).where(Image.name == name)))
        return sorted(images, key=lambda i: (version_key(i.version), i.arch), reverse=True)

    def blob(self, image: Image) -> Path:
        return blob_path(self.settings.store_dir, image.sha256)


def _private_database(settings: Settings) -> None:
    """registry.db holds token hashes and the whole history: 0600, like the signing key.

    SQLite creates its -wal/-shm files with the database's mode, so creating the file
    0600 first (and fixing files of older versions) covers all three.
    """
    if settings.database_url is not None:
        return
    database = settings.data_dir / "registry.db"
    # Only ever open the file to create it. SQLite keeps POSIX locks on registry.db, and
    # closing *any* descriptor of the file drops every such lock the process holds: with
    # one worker the app starts in the process whose connections are already open, and an
    # outside connection (sqlite3, `registry check`) closing afterwards believed itself the
    # last one and deleted the -wal the server still wrote into — its writes were lost.
    if not database.exists():
        with contextlib.suppress(FileExistsError):  # another worker made it first
            os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    for suffix in ("", "-wal", "-shm"):
        path = database.with_name(database.name + suffix)
        if path.exists():
            os.chmod(path, 0o600)


def _audit(
    session: Session,
    actor: audit.Actor | None,
    action: audit.Action,
    images: Iterable[Image],
    channel: str | None,
    **detail: Any,
) -> None:
    """One audit entry per image touched, in the transaction of the change."""
    if actor is None:
        return
    for image in images:
        facts: dict[str, Any] = {"sha256": image.sha256, **detail}
        if channel is not None:
            facts["channel"] = channel
        audit.record(session, actor, action, image.filename, facts)


def _undone(
    actor: audit.Actor | None,
    undo: Callable[[Session], None],
    action: audit.Action,
    images: list[Image],
) -> Callable[[Session], None]:
    """`undo`, plus an entry saying so: the trail is append-only, so the committed entry
    of the change stays and this one tells that the registry rolled it back (503)."""

    def undo_and_record(session: Session) -> None:
        undo(session)
        _audit(session, actor, action, images, None, undone=True)

    return undo_and_record
