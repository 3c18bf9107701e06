"""Metadata database: the source of truth from which the public tree is materialized.

SQLAlchemy 2 models; the schema is created and upgraded by the Alembic migrations shipped
in `registry/db/migrations`, run at every start (`migrate()`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

if TYPE_CHECKING:
    from sysext.image.summary import ImageSummary

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class Image(Base):
    """One published image file: NAME-VERSION-ARCH.raw, immutable once stored."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(255))
    arch: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(16))
    # VERSION_ID of an OS-bound image (NAME-VERSION-VERSIONID-ARCH.raw), else None;
    # added by migration 0002.
    os_version_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The image's extension-release fields, the commands and units it ships (migration
    # 0004); NULL: not known (an image the backfill could not read).
    release: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    binaries: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    units: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # A signed verity DDI (migration 0008): its root hash and the SHA-256 of the trusted
    # certificate that signed it; NULL for plain file system images.
    verity_root_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    verity_signer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yanked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    channels: Mapped[list[ImageChannel]] = relationship(
        back_populates="image", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def channel_names(self) -> list[str]:
        return sorted(c.channel for c in self.channels)

    @property
    def release_version(self) -> str:
        """The extension's own version: an OS-bound image's file version is VERSION-VERSIONID."""
        suffix = f"-{self.os_version_id}" if self.os_version_id else ""
        if suffix and self.version.endswith(suffix):
            return self.version[: -len(suffix)]
        return self.version

    @property
    def summary(self) -> ImageSummary:
        from sysext.image.summary import ImageSummary

        return ImageSummary(
            release=dict(self.release or {}),
            binaries=tuple(self.binaries or ()),
            units=tuple(self.units or ()),
        )


class ImageChannel(Base):
    """Membership of an image in a channel (stable, beta, alpha…)."""

    __tablename__ = "image_channels"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    image: Mapped[Image] = relationship(back_populates="channels")


class Token(Base):
    """An upload token; only the SHA-256 of its secret is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(Text)  # newline-separated glob patterns
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Migration 0003_token_policy: NULL expires_at never expires; NULL channels: all.
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    channels: Mapped[str | None] = mapped_column(Text, nullable=True)  # newline-separated

    @property
    def scope_list(self) -> list[str]:
        return [s for s in self.scopes.split("\n") if s]

    @property
    def channel_list(self) -> list[str] | None:
        """The channels this token may write to, or None for every channel."""
        if self.channels is None:
            return None
        return [c for c in self.channels.split("\n") if c]


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several uvicorn workers share the file: wait for the writer instead of failing.
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    if url.startswith("postgresql"):
        # A pooled connection may be dead after a database restart: test it on checkout.
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL: readers never block the writer; synchronous=FULL: a committed publish
            # survives a crash (the tree is rematerialized from it on start).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def upsert_insert(session: Session) -> Any:
    """The dialect's INSERT construct, the one with ON CONFLICT (SQLite and PostgreSQL
    each have their own; both spell it the same)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


def make_sessionmaker(engine: Engine) -> sessionmaker[Any]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(
    target: Engine | Connection,
    image_summary: Callable[[str, str], ImageSummary | None] | None = None,
) -> None:
    """Bring the schema to the newest migration (idempotent), on SQLite or PostgreSQL.

    `image_summary(sha256, name)` reads a stored image; migrations that add what images
    carry (0004) use it to fill rows published before them. Given a connection, the
    migrations run in its transaction (the caller commits): the registry passes the one
    holding the writer lock, so replicas starting together migrate one after the other.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["image_summary"] = image_summary
    if isinstance(target, Connection):
        config.attributes["connection"] = target
        command.upgrade(config, "head")
        return
    with target.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
