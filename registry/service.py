"""Registry operations: publish, yank, promote, queries, and start-up preparation.

Every write follows one order, which is what makes a crash harmless: take the writer lock,
put the validated file in the store, commit the database (the source of truth), then
materialize the affected directories. A crash before the commit leaves an unreferenced
blob (garbage-collected on start); after it, the start-up rematerialization publishes what
was committed. Either way the previous snapshot is served until a new one is complete.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry import audit
from registry import materialize as mat
from registry.db import (
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
from registry.keys import Rotation, Signer
from registry.locking import exclusive
from registry.names import ImageName, channel_problem
from registry.settings import Settings
from registry.store import blob_path, collect_garbage, ingest, remove_abandoned_uploads
from sysext.atomic import remove_stale_temporaries
from sysext.versioning import version_key

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

    # -- start-up -------------------------------------------------------------------

    def prepare(self) -> tuple[str, bool]:
        """Migrate, create the key, drop crash leftovers, rematerialize from the DB.

        Returns (fingerprint, key_created). Safe to run from every worker at once, and
        while others serve: it holds the writer lock, and uploads in flight are locked.
        """
        s = self.settings
        for directory in (s.data_dir, s.public_dir, s.snapshots_dir, s.store_dir, s.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        with exclusive(s.lock_path):
            migrate(self.engine)
            _, created = self.signer.ensure_key()
            self.signer.advance()
            self.signer.write_keyrings(s.public_dir)
            remove_abandoned_uploads(s.tmp_dir)
            remove_stale_temporaries(s.public_dir)
            with self.sessions() as session, self.signer.batch():
                images = list(session.scalars(select(Image)))
                collect_garbage(s.store_dir, {i.sha256 for i in images})
                known = self._rematerialize(images)
            mat.remove_unknown_links(s, known)
        return self.signer.fingerprint(), created

    def maintain(self, *, force_advance: bool = False) -> str | None:
        """The periodic job: advance a due key rotation, re-sign ageing manifests.

        Only signatures that are older than `resign_interval` or by a key that no longer
        signs are rewritten (in place: no other byte of the tree changes). Returns the
        rotation phase entered, if any.
        """
        with exclusive(self.settings.lock_path):
            entered = self.signer.advance(force=force_advance)
            self.signer.write_keyrings(self.settings.public_dir)
            with self.sessions() as session, self.signer.batch():
                self._rematerialize(list(session.scalars(select(Image))))
            return entered

    def rotate_key(self) -> Rotation:
        """Start a key rotation (keys.py): the new key joins the served keyring."""
        with exclusive(self.settings.lock_path):
            rotation = self.signer.rotate(self.settings.key_overlap_duration)
            self.signer.write_keyrings(self.settings.public_dir)
            return rotation

    def _rematerialize(self, images: list[Image]) -> set[tuple[str, str]]:
        groups: dict[tuple[str, str], list[Image]] = {}
        for image in images:
            for channel in image.channel_names:
                groups.setdefault((image.name, channel), []).append(image)
        for (name, channel), members in sorted(groups.items()):
            mat.materialize(self.settings, self.signer, self._content(name, channel, members))
        return set(groups)

    def _content(self, name: str, channel: str, images: Iterable[Image]) -> mat.DirectoryContent:
        return mat.desired_content(self.settings, name, channel, images)

    def _refresh(self, session: Session, name: str, channels: Iterable[str]) -> None:
        with self.signer.batch():
            self._refresh_signed(session, name, channels)

    def _refresh_signed(self, session: Session, name: str, channels: Iterable[str]) -> None:
        for channel in sorted(set(channels)):
            members = session.scalars(
                select(Image)
                .join(ImageChannel)
                .where(Image.name == name, ImageChannel.channel == channel)
            ).all()
            mat.materialize(self.settings, self.signer, self._content(name, channel, members))

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
        actor: audit.Actor | None = None,
    ) -> PublishResult:
        """Store a validated upload and make it visible in `channel`.

        `os_version_id`: the VERSION_ID of an OS-bound image (validation.ValidatedImage).
        `actor`: who asked; the audit entry commits with the change.
        """
        self.check_channel(channel)
        with exclusive(self.settings.lock_path), self.sessions() as session:
            existing = session.scalars(
                select(Image).where(Image.filename == image_name.filename)
            ).one_or_none()
            if existing is not None:
                if existing.sha256 != sha256:
                    raise RegistryError(
                        409,
                        f"{image_name.filename} is already published with other content "
                        f"(sha256 {existing.sha256}); published versions are immutable, "
                        "publish a new version",
                    )
                # Same bytes: idempotent, so a retried upload after a lost response is fine.
                added = channel not in existing.channel_names
                if added:
                    existing.channels.append(ImageChannel(channel=channel, added_at=utcnow()))
                _audit(session, actor, audit.Action.PUBLISH, existing, channel, created=False)
                session.commit()
                if added:
                    self._refresh(session, existing.name, [channel])
                return PublishResult(existing, created=False)
            self._refuse_mixing(session, image_name, os_version_id)
            ingest(self.settings.store_dir, staged, sha256)
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
                created_at=utcnow(),
                yanked=False,
            )
            image.channels.append(ImageChannel(channel=channel, added_at=utcnow()))
            session.add(image)
            _audit(session, actor, audit.Action.PUBLISH, image, channel, created=True)
            session.commit()
            failpoint("after-commit")
            self._refresh(session, image.name, [channel])
            return PublishResult(image, created=True)

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
        query = select(Image).where(Image.name == name, Image.version == version)
        if arch:
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
        actor: audit.Actor | None = None,
    ) -> list[Image]:
        with exclusive(self.settings.lock_path), self.sessions() as session:
            images = self._select_images(session, name, version, arch)
            for image in images:
                image.yanked = yanked
                image.yanked_at = utcnow() if yanked else None
                action = audit.Action.YANK if yanked else audit.Action.UNYANK
                _audit(session, actor, action, image, None)
            session.commit()
            self._refresh(session, name, {c for i in images for c in i.channel_names})
            return images

    def promote(
        self,
        name: str,
        version: str,
        arch: str | None,
        channel: str,
        actor: audit.Actor | None = None,
    ) -> list[Image]:
        self.check_channel(channel)
        with exclusive(self.settings.lock_path), self.sessions() as session:
            images = self._select_images(session, name, version, arch)
            for image in images:
                if channel not in image.channel_names:
                    image.channels.append(ImageChannel(channel=channel, added_at=utcnow()))
                _audit(session, actor, audit.Action.PROMOTE, image, channel)
            session.commit()
            self._refresh(session, name, [channel])
            return images

    # -- reads ----------------------------------------------------------------------

    def extensions(self, query: str | None = None) -> list[dict[str, Any]]:
        with self.sessions() as session:
            images = list(session.scalars(select(Image)))
        by_name: dict[str, list[Image]] = {}
        for image in images:
            by_name.setdefault(image.name, []).append(image)
        out = []
        needle = (query or "").strip().lower()
        for name in sorted(by_name):
            if needle and needle not in name.lower():
                continue
            members = by_name[name]
            live = [i for i in members if not i.yanked]
            latest = max(live, key=lambda i: version_key(i.version), default=None)
            out.append(
                {
                    "name": name,
                    "latest_version": latest.version if latest else None,
                    "arches": sorted({i.arch for i in live}),
                    "channels": sorted({c for i in live for c in i.channel_names}),
                    "versions": len({i.version for i in members}),
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


def _audit(
    session: Session,
    actor: audit.Actor | None,
    action: audit.Action,
    image: Image,
    channel: str | None,
    **detail: Any,
) -> None:
    """One audit entry per image touched, in the transaction of the change."""
    if actor is None:
        return
    facts: dict[str, Any] = {"sha256": image.sha256, **detail}
    if channel is not None:
        facts["channel"] = channel
    audit.record(session, actor, action, image.filename, facts)
