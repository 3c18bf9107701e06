"""What managed hosts report after an update run (issue 21, item 4): shown, and counted
only by an opt-in canary gate, together with the same host's fetch.

The update script `sysext butane --rollout` generates (sysext/provision/compose.py) posts one
small JSON object per run and extension to `POST /api/v1/extensions/NAME/reports`: the
host's rollout ID (the application-specific one its identity unit derived, never the
machine ID), channel, group, the image its activation link points at, the outcome
(`activated`, `installed` — activation waits for a reboot or for systemd's own
notification —, `unchanged` — nothing newer —, or `failed` with a short reason), systemd's
major version and os-release's ID and VERSION_ID. Hosts that read a bucket or a plain
mirror never reach the registry with their polls; a report is how they appear in the fleet
view at all.

**Containment.** Hosts have no credentials, so anybody can post a report with any host ID.
A report alone therefore changes nothing: no rollout is halted, advanced or paused by a
report, and a failure is shown to the operator, who decides. The one place a report
counts is a rollout set with `canary_activated` (`--canary-activated`): its canary gate
and auto-pause window count a host only when it fetched the version's image from the
registry itself (`fleet_hosts`) AND it reported `activated` for that version
(`host_activations`, insert-only: a later report never takes an activation back, so a
made-up failure cannot turn a counted host into a missing one). A made-up success without
that host's fetch counts for nothing. Left open: a made-up success under the ID of a real
host that did fetch the image (host IDs travel in request paths, so logs and whoever sees
the traffic know them) counts like that host's own. A flood is bounded:
the body size (MAX_BODY), a per-address rate (`ReportLimiter`), one row per (extension,
host) however often it reports, reports only for extensions that exist, and the same
bounded per-worker queue as the sightings (fleet.FleetRecorder), so a report never waits
for the database. The view says how many hosts only reported and never fetched from the
registry, so invented IDs show up as such.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.db.models import Image, as_utc, upsert_insert
from registry.db.rollout_tables import HostActivation, HostReport
from registry.errors import RegistryError
from registry.service.names import parse_image_filename
from sysext.core.rollout import group_problem, host_id_problem

# A real report is ~300 bytes; anything past this is not one of ours.
MAX_BODY = 2048
_REASON = re.compile(r"[A-Za-z0-9 ._:=()/+,-]{1,120}")
# os-release(5): ID and VERSION_ID are lower-case letters, digits and "._-" (VERSION_ID
# may hold upper case on some distributions, so it is allowed).
_OS_ID = re.compile(r"[a-z0-9._-]{1,64}")
_OS_VERSION_ID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIELDS = frozenset(
    {"host_id", "channel", "group", "image", "result", "reason", "systemd", "os_id",
     "os_version_id"}
)  # fmt: skip


class Result(StrEnum):
    ACTIVATED = "activated"  # a newer image was installed and activated
    INSTALLED = "installed"  # installed; activation waits (reboot marker, notify)
    UNCHANGED = "unchanged"  # nothing newer was offered
    FAILED = "failed"  # the update or the activation failed (reason says which)


@dataclass(frozen=True)
class Report:
    name: str
    host_id: str
    channel: str
    group: str | None
    version: str | None
    result: Result
    reason: str | None
    systemd: int | None
    os_id: str | None
    os_version_id: str | None
    at: float


def _bad(detail: str) -> RegistryError:
    return RegistryError(422, f"invalid report: {detail}")


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(f"{key} must be a string")
    return value


def parse_report(name: str, raw: bytes, channels: tuple[str, ...], now: float) -> Report:
    """The report in `raw` (a JSON object) for extension `name`; RegistryError (one line)
    for anything a generated update script would not send."""
    if len(raw) > MAX_BODY:
        raise RegistryError(413, f"report too large: at most {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body is not JSON (send a JSON object)") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(_FIELDS))})")
    host_id = _text(body, "host_id")
    if host_id is None:
        raise _bad("host_id is missing")
    problem = host_id_problem(host_id)
    if problem:
        raise _bad(problem)
    channel = _text(body, "channel") or "stable"
    if not _CHANNEL.fullmatch(channel) or channel not in channels:
        raise _bad(f"unknown channel {channel[:64]!r} (channels: {', '.join(channels)})")
    group = _text(body, "group")
    if group is not None and (problem := group_problem(group[:64])):
        raise _bad(problem)
    result_text = _text(body, "result")
    try:
        result = Result(result_text or "")
    except ValueError:
        allowed = ", ".join(r.value for r in Result)
        raise _bad(f"result {str(result_text)[:32]!r} is not one of {allowed}") from None
    image = _text(body, "image")
    version = None
    if image is not None:
        try:
            version = parse_image_filename(name, image[:300]).version
        except ValueError as exc:
            raise _bad(f"image: {exc}") from None
    reason = _text(body, "reason")
    if reason is not None and not _REASON.fullmatch(reason):
        raise _bad("reason: 1-120 of letters, digits, spaces and ._:=()/+,-")
    if result is Result.FAILED and reason is None:
        raise _bad("a failed result needs a reason")
    systemd = body.get("systemd")
    if systemd is not None and (
        isinstance(systemd, bool) or not isinstance(systemd, int) or not 200 <= systemd <= 9999
    ):
        raise _bad("systemd must be the major version, a number like 257")
    os_id = _text(body, "os_id")
    if os_id is not None and not _OS_ID.fullmatch(os_id):
        raise _bad("os_id: os-release ID, 1-64 of a-z, 0-9 and ._-")
    os_version_id = _text(body, "os_version_id")
    if os_version_id is not None and not _OS_VERSION_ID.fullmatch(os_version_id):
        raise _bad("os_version_id: os-release VERSION_ID, 1-64 of letters, digits and ._~-")
    return Report(
        name=name, host_id=host_id, channel=channel, group=group, version=version,
        result=result, reason=reason, systemd=systemd, os_id=os_id,
        os_version_id=os_version_id, at=now,
    )  # fmt: skip


class ReportLimiter:
    """At most `per_minute` reports per client address and minute, in this worker.

    A fixed window per address, kept for at most `max_addresses` addresses (beyond that the
    table starts over: an attacker with that many addresses gets one more window, the
    memory stays bounded). A fleet behind one NAT address polls every few hours, so even
    thousands of hosts there stay far below a per-minute limit of hundreds."""

    def __init__(self, per_minute: int, max_addresses: int = 65536) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._window = 0
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, address: str, now: float | None = None) -> bool:
        window = int((time.time() if now is None else now) // 60)
        with self._lock:
            if window != self._window or len(self._counts) >= self.max_addresses:
                self._window, self._counts = window, {}
            count = self._counts.get(address, 0) + 1
            self._counts[address] = count
            return count <= self.per_minute


def _when(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(at), dt.UTC)


def _of_known_extensions(session: Session, reports: list[Report]) -> list[Report]:
    """The reports naming an extension that exists (the request path only queued them)."""
    names = {r.name for r in reports}
    known = set(session.scalars(select(Image.name).where(Image.name.in_(names)).distinct()))
    return [r for r in reports if r.name in known]


def upsert_reports(session: Session, reports: list[Report]) -> int:
    """Store the newest report per (extension, host), for extensions that exist (a report
    naming another one is dropped here: the request path only queued it)."""
    if not reports:
        return 0
    rows = [
        {
            "name": r.name, "host_id": r.host_id, "channel": r.channel, "group": r.group,
            "version": r.version, "result": r.result.value, "reason": r.reason,
            "systemd": r.systemd, "os_id": r.os_id, "os_version_id": r.os_version_id,
            "first_at": _when(r.at), "at": _when(r.at),
        }
        for r in _of_known_extensions(session, reports)
    ]  # fmt: skip
    if not rows:
        return 0
    statement = upsert_insert(session)(HostReport.__table__)
    excluded = statement.excluded
    keep = {"first_at"}
    update = {c: getattr(excluded, c) for c in rows[0] if c not in keep | {"name", "host_id"}}
    session.execute(
        statement.on_conflict_do_update(index_elements=["name", "host_id"], set_=update), rows
    )
    return len(rows)


def record_activations(session: Session, reports: list[Report]) -> int:
    """Note each (extension, host, version) reported `activated`, once and for good.

    Only a rollout's `canary_activated` gate reads these (rollouts.Progress), and only with
    the same host's fetch. Insert-only on purpose: a later report of that host — its own
    `unchanged` on the next run, or a made-up failure under its ID — never takes an
    activation back, so no report can turn a host that counted into one that does not
    (which, with an auto-pause window, would let a spoofed failure pause a rollout)."""
    rows = {
        (r.name, r.host_id, r.version): _when(r.at)
        for r in _of_known_extensions(session, reports)
        if r.version is not None and r.result is Result.ACTIVATED
    }
    if not rows:
        return 0
    statement = upsert_insert(session)(HostActivation.__table__).on_conflict_do_nothing(
        index_elements=["name", "host_id", "version"]
    )
    session.execute(
        statement,
        [{"name": n, "host_id": h, "version": v, "at": at} for (n, h, v), at in rows.items()],
    )
    return len(rows)


def summary(session: Session, name: str, fetched: dict[str, str | None]) -> dict[str, Any]:
    """The fleet view's `reports` part: per version the hosts that fetched it from the
    registry and what hosts reported, plus who only reported. `fetched`: host ID → version
    of its last fetched image (fleet_hosts)."""
    rows = session.scalars(select(HostReport).where(HostReport.name == name)).all()
    newest = session.scalar(select(func.max(HostReport.at)).where(HostReport.name == name))
    outcomes: dict[str, dict[str, int]] = {}

    def entry(version: str) -> dict[str, int]:
        return outcomes.setdefault(
            version, {"fetched": 0, "reported": 0, **{r.value: 0 for r in Result}}
        )

    for version in fetched.values():
        entry(version or "none")["fetched"] += 1
    reasons: Counter[tuple[str, str]] = Counter()
    systemd: Counter[str] = Counter()
    systems: Counter[str] = Counter()
    groups: dict[str, Counter[str]] = {}
    only_reported = 0
    for row in rows:
        groups.setdefault(row.group or "(none)", Counter())[row.version or "none"] += 1
        counts = entry(row.version or "none")
        counts["reported"] += 1
        counts[row.result] = counts.get(row.result, 0) + 1
        if row.result == Result.FAILED.value:
            reasons[(row.version or "none", row.reason or "")] += 1
        systemd[str(row.systemd) if row.systemd is not None else "unknown"] += 1
        systems[" ".join(p for p in (row.os_id, row.os_version_id) if p) or "unknown"] += 1
        if row.host_id not in fetched:
            only_reported += 1
    return {
        "hosts": len(rows),
        # Hosts that reported but were never seen fetching from the registry: hosts of a
        # bucket or mirror — or IDs somebody made up (reports carry no credentials).
        "only_reported": only_reported,
        "last_at": as_utc(newest).isoformat() if newest is not None else None,
        "versions": dict(sorted(outcomes.items())),
        "failures": [
            {"version": v, "reason": r, "hosts": n} for (v, r), n in sorted(reasons.items())
        ],
        # Reporting hosts per group (as they reported it) and version.
        "groups": {g: dict(sorted(c.items())) for g, c in sorted(groups.items())},
        "systemd": dict(sorted(systemd.items())),
        "os": dict(sorted(systems.items())),
    }
