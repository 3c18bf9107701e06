"""Staged rollouts (issue 21): which bucket may install which version, and the rollout tree.

The policy of a version (rollout_tables.Rollout) says what share of the buckets is offered
it (`percent`), per-group overrides (`groups`: a group at 100 % gets it first), whether it
is halted, a canary phase and a schedule. From the policies this module computes, for one
(extension, channel):

* `held_filenames`: what the channel's own SHA256SUMS leaves out. Hosts provisioned before
  rollouts existed ("unmanaged") read that manifest; they get a version once its rollout is
  complete (100 %, not halted, canary passed), i.e. they are the last wave.
* `rollout_content`: one manifest per bucket directory (rollout_tree.py).

Halting takes a version out of every bucket's manifest; hosts that installed it keep it,
since systemd-sysupdate never downgrades (rolling back is yank + a newer version).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.db.models import Image
from registry.db.rollout_tables import (
    FleetHost,
    HostActivation,
    HostReport,
    RegistryMeta,
    Rollout,
)
from registry.storage.materialize import PLACEHOLDER_NAME
from registry.storage.rollout_tree import RolloutContent, SlotContent
from sysext.core.rollout import BUCKETS, bucket_name, bucket_order, offered_buckets
from sysext.systemd.manifest import EMPTY_SHA256, ManifestEntry, format_manifest
from sysext.systemd.versioning import version_key


def rollout_key(session: Session) -> bytes:
    row = session.get(RegistryMeta, "rollout_key")
    if row is None:  # the migration makes it; a hand-edited database may lack it
        raise RuntimeError("registry_meta has no rollout_key: run the migrations")
    return bytes.fromhex(row.value)


def policies(session: Session, name: str, channel: str) -> dict[str, Rollout]:
    """version → policy; an OS-bound extension's policy names the extension's own version
    (1.0), which covers its image for every OS version (1.0-3815.2.0, …)."""
    rows = session.scalars(select(Rollout).where(Rollout.name == name, Rollout.channel == channel))
    return {r.version: r for r in rows}


def trees(session: Session) -> dict[tuple[str, str], frozenset[str]]:
    """(name, channel) → groups of every extension that has a rollout tree."""
    found: dict[tuple[str, str], set[str]] = {}
    for row in session.scalars(select(Rollout)):
        found.setdefault((row.name, row.channel), set()).update(row.groups)
    return {k: frozenset(v) for k, v in found.items()}


def unreleased(session: Session) -> dict[tuple[str, str], dict[str, str]]:
    """(name, channel) → version → its stage, for every version not yet offered to every
    host. The catalogue does not call such a version the channel's newest: the channel's
    own manifest (what unmanaged hosts and anyone following the page's instructions read)
    does not list it yet."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for row in session.scalars(select(Rollout)):
        if not released(row):
            found.setdefault((row.name, row.channel), {})[row.version] = stage(row)
    return found


def canary_pending(policy: Rollout) -> bool:
    return policy.canary > 0 and not policy.canary_done


def released(policy: Rollout | None) -> bool:
    """Offered to every host, unmanaged ones included."""
    if policy is None:
        return True
    return policy.percent >= 100 and not policy.halted and not canary_pending(policy)


def offered_to(key: bytes, policy: Rollout, bucket: int, group: str | None) -> bool:
    """Whether hosts of `bucket` (in `group`) are offered the version of `policy`."""
    if policy.halted:
        return False
    if group is not None and group in policy.groups:
        share = policy.groups[group]
        if bucket in offered_buckets(key, policy.name, policy.version, share):
            return True
    if canary_pending(policy):
        return bucket in set(policy.canary_buckets)
    return bucket in offered_buckets(key, policy.name, policy.version, policy.percent)


def canary_buckets(
    key: bytes, name: str, version: str, hosts: dict[int, int], wanted: int
) -> list[int]:
    """The first buckets of the version's order that hold `wanted` hosts the registry has
    seen (`hosts`: bucket → count). A registry that knows fewer hosts than that takes
    `wanted` buckets, so a canary never starts as a large share of an unknown fleet."""
    enough = sum(hosts.values()) >= wanted
    chosen: list[int] = []
    seen = 0
    for bucket in bucket_order(key, name, version):
        if seen >= wanted or (not enough and len(chosen) >= wanted):
            break
        chosen.append(bucket)
        seen += hosts.get(bucket, 0)
    return chosen


def hosts_per_bucket(session: Session, name: str, channel: str) -> dict[int, int]:
    rows = session.execute(
        select(FleetHost.bucket, func.count())
        .where(FleetHost.name == name, FleetHost.channel == channel)
        .group_by(FleetHost.bucket)
    )
    return {int(b): int(n) for b, n in rows}


# host_reports.Result.FAILED (the service layer below imports no sibling for one string).
FAILED = "failed"


@dataclass(frozen=True)
class Progress:
    """Hosts that count for a rollout's canary gate, or its auto-pause window.

    `fetched`: hosts that fetched the version's image from the registry (fleet_hosts: the
    hosts' own requests). `activated`: those of them that reported `activated` for that
    version (host_activations, insert-only); a report without such a fetch by the same
    host ID never counts (reports
    carry no credentials: a made-up success alone must not open a gate). `failed`: hosts
    that reported a failure for the version, fetched or not; shown, never acted on (a
    made-up failure must not halt a rollout either)."""

    fetched: int
    activated: int
    failed: int

    def succeeded(self, policy: Rollout) -> int:
        return self.activated if policy.canary_activated else self.fetched


def progress(
    session: Session,
    policy: Rollout,
    *,
    buckets: Sequence[int] | None = None,
    seen_before: dt.datetime | None = None,
    fetched_since: dt.datetime | None = None,
) -> Progress:
    """Count the hosts of `policy`'s version: in `buckets` only, first seen no later than
    `seen_before`, fetched the image at or after `fetched_since` (each when given)."""
    fetches = select(FleetHost.host_id).where(
        FleetHost.name == policy.name, FleetHost.version == policy.version
    )
    if buckets is not None:
        fetches = fetches.where(FleetHost.bucket.in_(list(buckets) or [-1]))
    if seen_before is not None:
        fetches = fetches.where(FleetHost.first_seen <= seen_before)
    if fetched_since is not None:
        fetches = fetches.where(FleetHost.version_at >= fetched_since)
    hosts = fetches.subquery()
    fetched = session.scalar(select(func.count()).select_from(hosts)) or 0
    activated = session.scalar(
        select(func.count())
        .select_from(HostActivation)
        .join(hosts, HostActivation.host_id == hosts.c.host_id)
        .where(HostActivation.name == policy.name, HostActivation.version == policy.version)
    )
    failed = session.scalar(
        select(func.count())
        .select_from(HostReport)
        .where(
            HostReport.name == policy.name,
            HostReport.version == policy.version,
            HostReport.result == FAILED,
        )
    )
    return Progress(int(fetched), int(activated or 0), int(failed or 0))


def canary_progress(session: Session, policy: Rollout) -> Progress:
    """The canary gate's count: hosts of the canary buckets that the registry had seen
    before the canary began (a made-up host ID fetching the image now does not pass it)."""
    return progress(
        session,
        policy,
        buckets=policy.canary_buckets,
        seen_before=policy.offered_at or policy.created_at,
    )


def held_filenames(
    session: Session, name: str, channel: str, images: Iterable[Image]
) -> frozenset[str]:
    """Images the channel's own manifest leaves out while their version rolls out."""
    rules = policies(session, name, channel)
    if not rules:
        return frozenset()
    return frozenset(i.filename for i in images if not released(rules.get(i.release_version)))


def _listed(
    live: Sequence[Image], rules: dict[str, Rollout], key: bytes, bucket: int, group: str | None
) -> list[Image]:
    """Per (arch, OS version): the newest released image, plus newer ones offered here."""
    kinds: dict[tuple[str, str | None], list[Image]] = {}
    for image in live:
        kinds.setdefault((image.arch, image.os_version_id), []).append(image)
    listed: list[Image] = []
    for members in kinds.values():
        done = [i for i in members if released(rules.get(i.release_version))]
        newest = max(done, key=lambda i: version_key(i.version), default=None)
        if newest is not None:
            listed.append(newest)
        for image in members:
            rule = rules.get(image.release_version)
            if rule is None or released(rule) or not offered_to(key, rule, bucket, group):
                continue
            if newest is None or version_key(image.version) > version_key(newest.version):
                listed.append(image)
    return sorted(listed, key=lambda i: (version_key(i.version), i.arch))


def rollout_content(
    session: Session, name: str, channel: str, images: Iterable[Image]
) -> RolloutContent:
    key = rollout_key(session)
    rules = policies(session, name, channel)
    live = [i for i in images if not i.yanked and channel in i.channel_names]
    groups: list[str | None] = [None, *sorted({g for r in rules.values() for g in r.groups})]
    slots = []
    for group in groups:
        for bucket in range(BUCKETS):
            listed = _listed(live, rules, key, bucket, group)
            if listed:
                manifest = b"".join(
                    format_manifest([ManifestEntry(i.filename, i.sha256)]) for i in listed
                )
            else:
                manifest = format_manifest([ManifestEntry(PLACEHOLDER_NAME, EMPTY_SHA256)])
            prefix = f"groups/{group}/" if group else ""
            slots.append(
                SlotContent(
                    path=prefix + bucket_name(bucket),
                    manifest=manifest,
                    images=tuple(sorted({(i.filename, i.sha256) for i in listed})),
                    placeholder=not listed,
                )
            )
    return RolloutContent(name, channel, tuple(slots))


def stage(policy: Rollout) -> str:
    """One line: where this rollout stands."""
    if policy.halted:
        return "halted" + (f": {policy.halted_reason}" if policy.halted_reason else "")
    if canary_pending(policy):
        what = "fetch and activate" if policy.canary_activated else "fetch"
        return f"canary: waiting for {policy.canary} host(s) to {what} it"
    if released(policy):
        return "complete"
    return f"rolling out at {policy.percent}%"


def describe(
    policy: Rollout, fleet: dict[str, int], counted: Progress | None = None
) -> dict[str, Any]:
    """The API's view of a rollout; `counted`: its canary progress, when the caller read it."""

    def when(value: dt.datetime | None) -> str | None:
        if value is None:
            return None
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.isoformat()

    return {
        "version": policy.version,
        "channel": policy.channel,
        "percent": policy.percent,
        "groups": dict(policy.groups),
        "halted": policy.halted,
        "halted_reason": policy.halted_reason,
        "canary": policy.canary,
        "canary_done": policy.canary_done,
        "canary_buckets": sorted(policy.canary_buckets),
        "canary_activated": bool(policy.canary_activated),
        # Canary hosts that fetched it / of those reported it activated; failure reports
        # for the version (any host, unverified): shown, never acted on.
        "canary_fetched": counted.fetched if counted else None,
        "canary_reported_activated": counted.activated if counted else None,
        "failure_reports": counted.failed if counted else None,
        "steps": list(policy.steps),
        "every_seconds": policy.every_seconds,
        "next_step_at": when(policy.next_step_at),
        "window_seconds": policy.window_seconds,
        "offered_at": when(policy.offered_at),
        "stage": stage(policy),
        "released": released(policy),
        "hosts": fleet.get(policy.version, 0),
        "updated_at": when(policy.updated_at),
    }
