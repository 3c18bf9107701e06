"""The fleet view (issue 21): which managed host fetched what, recorded cheaply.

Managed hosts poll `rollouts/CHANNEL/NAME[/groups/G]/BB/HOSTID/FILE` (sysext/core/rollout.py).
The public-tree layer serves the bucket's file and hands (host, bucket, group, file) to a
`FleetRecorder`: a bounded queue per worker process that a background thread drains every
`fleet_flush` seconds, folding it to one upsert per host (a host polling twice is one row)
in transactions of FLUSH_BATCH rows. So a poll costs one append (or, with the queue full,
one counted drop) and never waits for the database, which sees one row per host per
interval however often it polls. Behind the shipped nginx blocks (registry/http/nginx/)
hosts get their answer from nginx, and the app sees each poll and image fetch as nginx's
HEAD copy of the same request (`mirror`), which takes this same path.

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
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, Text, cast, func, select
from sqlalchemy.orm import Session

from registry.db.models import as_utc, upsert_insert
from registry.db.rollout_tables import FleetHost, FleetSample, RegistryMeta, Rollout
from registry.service import host_reports
from sysext.core.rollout import BUCKETS, GROUPS_DIR, ROLLOUTS_DIR
from sysext.core.urls import extension_url_path
from sysext.systemd.architecture import Architecture

if TYPE_CHECKING:
    from registry.service.core import RegistryService

_BUCKET = re.compile(r"[0-9]{2}")
_HOST = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
log = logging.getLogger("registry")


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


# A sighting as the serving path queues it: plain strings, ints and a float, so the tuple
# holds nothing the garbage collector tracks. (A per-host object graph held until the next
# flush made every new host a long-lived container, and full collections over the
# worker's heap showed as the poll path's p99.)
#   (name, host_id, channel, group, bucket, version or None, time.time())
Sighting = tuple[str, str, str, str | None, int, str | None, float]
# A host folded from its sightings in one drain: (last sighting, version, version_at, first).
_Folded = tuple[Sighting, str | None, float | None, float]
# Rows per transaction: a batch takes the database's write lock for a few milliseconds
# and the flushing thread lets the serving thread run between batches.
FLUSH_BATCH = 2000

# The upsert, written for the driver's executemany: one statement for the whole batch, its
# parameters plain tuples. Built through SQLAlchemy instead, every row went through the
# compiled statement's per-row parameter processing (a Python call per column, the
# DateTime one formatting a string on SQLite) in one stretch that holds the interpreter
# lock; profiled under load that stretch, not the database, was what the serving thread
# waited for. The drivers (sqlite3, psycopg) bind the tuples in C and release the lock
# while each row executes. A host's version changes only when it fetched an image
# (COALESCE keeps the stored one otherwise); first_seen is written by the insert alone.
_UPSERT = (
    'INSERT INTO fleet_hosts (name, host_id, channel, "group", bucket, version, version_at,'
    " first_seen, last_seen) VALUES ({marks}) ON CONFLICT (name, host_id) DO UPDATE SET"
    ' channel = excluded.channel, "group" = excluded."group", bucket = excluded.bucket,'
    " last_seen = excluded.last_seen,"
    " version = COALESCE(excluded.version, fleet_hosts.version),"
    " version_at = COALESCE(excluded.version_at, fleet_hosts.version_at)"
)


class FleetRecorder:
    """Per-process bounded queue of host sightings, written by a background thread.

    `record()` is all a poll pays: one append to a deque (atomic under the GIL: no lock, no
    wait), or, with the queue full, one added to `dropped` — a poll never waits for the
    database. The thread started by `start()` wakes every `flush_seconds` (at once for 0),
    drains the queue, folds it to one entry per host and upserts those in batches of
    FLUSH_BATCH rows, one transaction each. `flush()` does the same on demand (the fleet
    view and the rollout job call it so they read what this worker saw), and `stop()`
    writes what is left when the worker shuts down, so a restart loses no sighting that
    was queued. Dropped sightings are added to a counter in the database with the next
    batch (`fleet_view()` reports it): the view then undercounts and says by how much.
    """

    def __init__(self, flush_seconds: float, capacity: int = 100_000) -> None:
        self.flush_seconds = flush_seconds
        self.capacity = capacity
        self._queue: deque[Sighting] = deque()
        # Host reports (host_reports.py) ride the same thread, in their own bounded queue.
        self._reports: deque[host_reports.Report] = deque()
        # Sightings dropped: counted by the serving thread alone, and the share of them
        # already added to the database's counter by the flushing side alone, so neither
        # needs a lock.
        self.dropped = 0
        self._dropped_written = 0
        self._writing = threading.Lock()  # one drain at a time; flush() waits for it
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, request: RolloutRequestPath, found: bool) -> None:
        if request.host_id is None or not found:
            return
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            return
        version = image_version(request.name, request.filename)
        self._queue.append(
            (request.name, request.host_id, request.channel, request.group, request.bucket,
             version, time.time())
        )  # fmt: skip
        if self.flush_seconds == 0:
            self._wake.set()

    def report(self, report: host_reports.Report) -> bool:
        """Queue a host's report; False when the queue is full (the caller says so)."""
        if len(self._reports) >= self.capacity:
            return False
        self._reports.append(report)
        if self.flush_seconds == 0:
            self._wake.set()
        return True

    def pending(self) -> int:
        return len(self._queue) + len(self._reports)

    def start(self, service: RegistryService) -> None:
        """Start the flushing thread (once per worker, from the app's lifespan)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(service,), name="fleet-flush", daemon=True
        )
        self._thread.start()

    def stop(self, service: RegistryService) -> None:
        """Stop the thread and write what is still queued."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush(service)

    def _run(self, service: RegistryService) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_seconds or None)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.flush(service)
            except Exception:  # keep serving; what failed is queued again for the next round
                log.exception("event=fleet_flush_failed")
                self._stopping.wait(max(1.0, self.flush_seconds))

    def flush(self, service: RegistryService) -> int:
        """Write everything queued; returns how many hosts. Waits for a flush in progress,
        so after it returns everything recorded before the call is stored."""
        with self._writing:
            # Plain tuples all the way to the driver: no object per host for the
            # collector to follow while the batch is written.
            folded: dict[tuple[str, str], _Folded] = {}
            for _ in range(len(self._queue)):
                sighting = self._queue.popleft()
                key = (sighting[0], sighting[1])
                before = folded.get(key)
                if sighting[5] is not None:
                    first = before[3] if before is not None else sighting[6]
                    folded[key] = (sighting, sighting[5], sighting[6], first)
                elif before is None:
                    folded[key] = (sighting, None, None, sighting[6])
                else:
                    folded[key] = (sighting, before[1], before[2], before[3])
            seen_dropped = self.dropped
            dropped = seen_dropped - self._dropped_written
            hosts = list(folded.values())
            written = 0
            try:
                for start in range(0, max(len(hosts), 1), FLUSH_BATCH):
                    chunk = hosts[start : start + FLUSH_BATCH]
                    if not chunk and not dropped:
                        break
                    with service.sessions() as session:
                        _upsert_hosts(session, chunk)
                        if dropped:
                            _count_dropped(session, dropped)
                        session.commit()
                    if dropped:
                        self._dropped_written, dropped = seen_dropped, 0
                    written += len(chunk)
                    time.sleep(0)  # let the serving thread take the GIL between batches
            except Exception:
                # Queued again for the next round (a later sighting of the same host
                # supersedes it); an unwritten drop count is still owed.
                for last, version, _, _ in hosts[written:]:
                    self._queue.appendleft((*last[:5], version, last[6]))
                raise
            if hosts or dropped:
                log.debug("event=fleet_flush hosts=%d", written)
            self._flush_reports(service)
            return written

    def _flush_reports(self, service: RegistryService) -> None:
        """Write the queued reports, the newest per (extension, host)."""
        newest: dict[tuple[str, str], host_reports.Report] = {}
        popped = [self._reports.popleft() for _ in range(len(self._reports))]
        for report in popped:
            newest[(report.name, report.host_id)] = report
        # Activations from every report, not only the newest per host: a canary host's
        # `activated` followed by `unchanged` in one drain still activated it.
        activated = [r for r in popped if r.result is host_reports.Result.ACTIVATED]
        if activated:
            try:
                with service.sessions() as session:
                    host_reports.record_activations(session, activated)
                    session.commit()
            except Exception:
                self._reports.extendleft(reversed(popped))  # next round
                raise
        reports = list(newest.values())
        for start in range(0, len(reports), FLUSH_BATCH):
            try:
                with service.sessions() as session:
                    host_reports.upsert_reports(session, reports[start : start + FLUSH_BATCH])
                    session.commit()
            except Exception:
                self._reports.extendleft(reversed(reports[start:]))  # next round
                raise


def _timestamps(session: Session) -> Callable[[float], Any]:
    """Seconds since the epoch → what the driver takes for a DateTime column, exactly as
    SQLAlchemy would bind it (SQLite: its text format; PostgreSQL: the datetime). Whole
    seconds, as utcnow() stores them: the canary gate compares first_seen with a
    rollout's offered_at. Memoized: a batch spans a few distinct seconds."""
    dialect = session.get_bind().dialect
    column = FleetHost.__table__.c.last_seen.type
    process = column.dialect_impl(dialect).bind_processor(dialect)
    cache: dict[int, Any] = {}

    def when(at: float) -> Any:
        second = int(at)
        value = cache.get(second)
        if value is None:
            value = dt.datetime.fromtimestamp(second, dt.UTC)
            value = cache[second] = process(value) if process is not None else value
        return value

    return when


def _upsert_hosts(session: Session, batch: list[_Folded]) -> None:
    """Upsert the batch in one executemany of the driver (see _UPSERT)."""
    if not batch:
        return
    when = _timestamps(session)
    rows = [
        (last[0], last[1], last[2], last[3], last[4], version,
         when(version_at) if version_at is not None else None, when(first), when(last[6]))
        for last, version, version_at, first in batch
    ]  # fmt: skip
    marks = ", ".join(["?" if session.get_bind().dialect.paramstyle == "qmark" else "%s"] * 9)
    session.connection().exec_driver_sql(_UPSERT.format(marks=marks), rows)


DROPPED_KEY = "fleet_dropped"


def _count_dropped(session: Session, dropped: int) -> None:
    """Add to the registry-wide count of sightings no worker could queue (in SQL, so
    workers and replicas adding at once lose nothing)."""
    table = RegistryMeta.__table__
    statement = upsert_insert(session)(table).values(key=DROPPED_KEY, value=str(dropped))
    total = cast(cast(table.c.value, Integer) + dropped, Text)
    session.execute(statement.on_conflict_do_update(index_elements=["key"], set_={"value": total}))


def dropped_sightings(session: Session) -> int:
    row = session.get(RegistryMeta, DROPPED_KEY)
    return int(row.value) if row is not None else 0


def upsert_sample(session: Session, name: str, at: dt.datetime, version: str, hosts: int) -> None:
    statement = upsert_insert(session)(FleetSample.__table__).values(
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
        dropped = dropped_sightings(session)
        reports = host_reports.summary(session, name, {h.host_id: h.version for h in hosts})
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
        # Sightings of any extension that a full queue dropped (registry-wide): when not
        # 0, the counts above may be short by up to this many hosts.
        "dropped_sightings": dropped,
        # What hosts reported after their update runs (host_reports.py): shown, never
        # acted on. Per version: hosts that fetched it from the registry, hosts that
        # reported it and each outcome; `only_reported`: hosts never seen fetching (a
        # bucket's or a mirror's hosts, or made-up IDs).
        "reports": reports,
        # Every host seen either way: fetched from the registry or reported.
        "all_hosts": len(hosts) + reports["only_reported"],
    }
