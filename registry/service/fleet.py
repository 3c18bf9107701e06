"""The fleet view (issue 21): which managed host fetched what, recorded cheaply.

Managed hosts poll `rollouts/CHANNEL/NAME[/groups/G]/BB/HOSTID/FILE` (sysext/core/rollout.py).
The public-tree layer serves the bucket's file and hands (host, bucket, group, file) to a
`FleetRecorder`: an in-memory map per worker process, one entry per host (a host polling
twice is one entry), written to the database in one batch of upserts at most every
`fleet_flush` seconds, off the event loop. So a poll costs a dict update, and the database
sees one statement per host per interval however often it polls.

A host's "version" is the version of the last image it fetched: sysupdate downloads an
image only to install it, so that is what the host runs (or is about to). A host that only
fetched manifests is counted as seen, with the version it had before (or none).

Spoofing: anybody can fetch a bucket path with a made-up host ID. Such requests add hosts
to the view; they cannot change what any real host is offered. They can never halt a
rollout (auto-pause needs the *absence* of fetches) and never advance a schedule (it moves
by time). The canary gate counts only hosts of the canary buckets first seen before the
rollout began, so an ID invented afterwards does not pass it; one planted in advance in
the right bucket could, and a fake fetch can keep a rollout from auto-pausing. The counts
are therefore an upper bound, and the canary gate a convenience, not a security boundary.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from registry.db.models import as_utc, utcnow
from registry.db.rollout_tables import FleetHost, FleetSample, Rollout
from sysext.core.rollout import BUCKETS, GROUPS_DIR, ROLLOUTS_DIR
from sysext.core.urls import extension_url_path
from sysext.systemd.architecture import Architecture

if TYPE_CHECKING:
    from registry.service.core import RegistryService

_BUCKET = re.compile(r"[0-9]{2}")
_HOST = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class RolloutRequestPath:
    """A GET under rollouts/: the static file it means, and who asked (if it says)."""

    static_path: str
    name: str
    channel: str
    group: str | None
    bucket: int
    host_id: str | None
    filename: str


def parse_rollout_path(url_path: str) -> RolloutRequestPath | None:
    """`rollouts/C/NAME[/groups/G]/BB[/HOSTID]/FILE` → its parts; None for anything else."""
    parts = url_path.split("/")
    if len(parts) < 5 or parts[0] != ROLLOUTS_DIR:
        return None
    channel, name, rest = parts[1], parts[2], parts[3:]
    group = None
    if rest[0] == GROUPS_DIR and len(rest) >= 4:
        group, rest = rest[1], rest[2:]
    if not (_NAME.fullmatch(channel) and _NAME.fullmatch(name)) or not _BUCKET.fullmatch(rest[0]):
        return None
    bucket = int(rest[0])
    host_id = None
    if len(rest) == 3 and _HOST.fullmatch(rest[1]):
        host_id = rest[1]
        rest = [rest[0], rest[2]]
    if len(rest) != 2 or bucket >= BUCKETS or not rest[1] or rest[1].startswith("."):
        return None
    prefix = f"{ROLLOUTS_DIR}/{channel}/{name}" + (f"/{GROUPS_DIR}/{group}" if group else "")
    return RolloutRequestPath(
        static_path=f"{prefix}/{rest[0]}/{rest[1]}",
        name=name,
        channel=channel,
        group=group,
        bucket=bucket,
        host_id=host_id,
        filename=rest[1],
    )


def fallback_paths(request: RolloutRequestPath) -> list[str]:
    """Where a bucket path's file is when its directory does not exist, in order: a group
    without a policy reads the ungrouped bucket; an extension that never had a rollout has
    no rollout tree at all, and its channel directory lists exactly what a bucket would."""
    paths = []
    if request.group is not None:
        directory = f"{ROLLOUTS_DIR}/{request.channel}/{request.name}/{request.bucket:02d}"
        paths.append(f"{directory}/{request.filename}")
    channel_dir = extension_url_path(request.name, request.channel)
    paths.append(f"{channel_dir}/{request.filename}")
    return paths


def image_path(request: RolloutRequestPath) -> str:
    """The one URL path of an image, whichever bucket asked: the channel's directory (which
    keeps every image it ever listed, held and yanked ones included)."""
    return f"{extension_url_path(request.name, request.channel)}/{request.filename}"


def image_version(name: str, filename: str) -> str | None:
    """NAME-VERSION-ARCH.raw (or NAME-VERSION-VERSIONID-ARCH.raw) → VERSION[-VERSIONID]."""
    if not filename.endswith(".raw") or not filename.startswith(name + "-"):
        return None
    middle = filename[len(name) + 1 : -len(".raw")]
    for arch in sorted((a.value for a in Architecture), key=len, reverse=True):
        if middle.endswith("-" + arch) and len(middle) > len(arch) + 1:
            return middle[: -len(arch) - 1]
    return None


@dataclass
class _Seen:
    channel: str
    group: str | None
    bucket: int
    version: str | None
    version_at: dt.datetime | None
    at: dt.datetime


class FleetRecorder:
    """Per-process buffer of host sightings, flushed in batches (see the module doc)."""

    def __init__(self, flush_seconds: float) -> None:
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()  # guards _pending
        self._writing = threading.Lock()  # one flush at a time; readers wait for it
        self._pending: dict[tuple[str, str], _Seen] = {}
        self._last_flush = time.monotonic()

    def record(self, request: RolloutRequestPath, found: bool) -> None:
        if request.host_id is None or not found:
            return
        now = utcnow()
        version = image_version(request.name, request.filename)
        key = (request.name, request.host_id)
        with self._lock:
            seen = self._pending.get(key)
            if seen is None:
                seen = _Seen(request.channel, request.group, request.bucket, None, None, now)
                self._pending[key] = seen
            seen.channel, seen.group, seen.bucket = request.channel, request.group, request.bucket
            seen.at = now
            if version is not None:
                seen.version, seen.version_at = version, now

    def due(self) -> bool:
        with self._lock:
            if not self._pending or self._writing.locked():
                return False
            return time.monotonic() - self._last_flush >= self.flush_seconds

    def flush(self, service: RegistryService) -> int:
        """Write the buffered sightings (one upsert per host); returns how many. Waits for
        a flush in progress, so after it returns everything recorded before is stored."""
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, {}
            try:
                if batch:
                    with service.sessions() as session:
                        _upsert_hosts(session, batch)
                        session.commit()
            except Exception:
                with self._lock:  # keep what could not be written for the next round
                    for key, seen in batch.items():
                        self._pending.setdefault(key, seen)
                raise
            finally:
                self._last_flush = time.monotonic()
            return len(batch)


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _upsert_hosts(session: Session, batch: dict[tuple[str, str], _Seen]) -> None:
    """Upsert the batch: a host's version changes only when it fetched an image (COALESCE
    keeps the stored one otherwise)."""
    table = FleetHost.__table__
    rows = [
        {
            "name": name,
            "host_id": host_id,
            "channel": seen.channel,
            "group": seen.group,
            "bucket": seen.bucket,
            "version": seen.version,
            "version_at": seen.version_at,
            "first_seen": seen.at,
            "last_seen": seen.at,
        }
        for (name, host_id), seen in batch.items()
    ]
    # One statement, compiled once, executed for every row (the driver's executemany).
    statement = _insert(session)(table)
    excluded = statement.excluded
    update: dict[str, Any] = {
        "channel": excluded.channel,
        "group": excluded.group,
        "bucket": excluded.bucket,
        "last_seen": excluded.last_seen,
        "version": func.coalesce(excluded.version, table.c.version),
        "version_at": func.coalesce(excluded.version_at, table.c.version_at),
    }
    upsert = statement.on_conflict_do_update(index_elements=["name", "host_id"], set_=update)
    session.execute(upsert, rows)


def upsert_sample(session: Session, name: str, at: dt.datetime, version: str, hosts: int) -> None:
    statement = _insert(session)(FleetSample.__table__).values(
        name=name, at=at, version=version, hosts=hosts
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["name", "at", "version"], set_={"hosts": statement.excluded.hosts}
        )
    )


def fleet_view(service: RegistryService, name: str) -> dict[str, Any]:
    """GET /api/v1/extensions/NAME/fleet: hosts seen, per version and per group."""
    with service.sessions() as session:
        hosts = session.scalars(select(FleetHost).where(FleetHost.name == name)).all()
        samples = session.scalars(
            select(FleetSample).where(FleetSample.name == name).order_by(FleetSample.at)
        ).all()
        rollout_rows = session.scalars(select(Rollout).where(Rollout.name == name)).all()
        newest = session.scalar(select(func.max(FleetHost.last_seen)).where(FleetHost.name == name))
    per_version: dict[str, dict[str, Any]] = {}
    per_group: dict[str, dict[str, int]] = {}
    for host in hosts:
        version = host.version or "none"
        entry = per_version.setdefault(version, {"hosts": 0, "last_seen": None})
        entry["hosts"] += 1
        seen = as_utc(host.last_seen).isoformat()
        entry["last_seen"] = max(entry["last_seen"] or seen, seen)
        group = per_group.setdefault(host.group or "", {})
        group[version] = group.get(version, 0) + 1
    return {
        "name": name,
        "hosts": len(hosts),
        "last_seen": as_utc(newest).isoformat() if newest is not None else None,
        "versions": dict(sorted(per_version.items())),
        "groups": {(g or "(none)"): dict(sorted(v.items())) for g, v in sorted(per_group.items())},
        "history": [
            {"at": as_utc(s.at).isoformat(), "version": s.version, "hosts": s.hosts}
            for s in samples
        ],
        "rollouts": {f"{r.channel}/{r.version}": r.percent for r in rollout_rows},
    }
