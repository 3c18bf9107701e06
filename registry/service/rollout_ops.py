"""Rollout writes and the periodic rollout job (issue 21); the rules are in rollouts.py.

Every write takes the extension's writer lock (core.RegistryService.writing), authorizes
the token there (auth.authorize_write, like publish/yank/promote), adds its audit entry in
the same transaction, commits, then materializes the channel directory and the rollout
tree. The periodic job (`tick`) runs in every worker of every replica, but each change it
makes is decided and committed under the extension's writer lock, from the row as read
under that lock: a schedule step that another worker already took is no longer due, so a
schedule advances once, not once per replica.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.db.models import Image, as_utc, utcnow
from registry.db.rollout_tables import FleetHost, FleetSample, Rollout
from registry.errors import RegistryError
from registry.service import audit, auth, fleet, rollouts
from sysext.core.rollout import group_problem
from sysext.systemd.versioning import version_problem

if TYPE_CHECKING:
    from registry.service.core import RegistryService


@dataclass(frozen=True)
class RolloutRequest:
    percent: int | None = None
    group: str | None = None
    canary: int | None = None
    steps: tuple[int, ...] = ()
    every_seconds: int | None = None
    window_seconds: int | None = None
    # None: unchanged; True: canary (and window) hosts count only with an activation report.
    canary_activated: bool | None = None


def _check_request(request: RolloutRequest) -> None:
    if request.percent is not None and not 0 <= request.percent <= 100:
        raise RegistryError(422, f"percent {request.percent} is not between 0 and 100")
    if request.group is not None:
        problem = group_problem(request.group)
        if problem:
            raise RegistryError(422, problem)
    if request.canary is not None and not 0 <= request.canary <= 10000:
        raise RegistryError(422, f"canary {request.canary} must be between 0 and 10000 hosts")
    if request.steps:
        if any(not 0 < s <= 100 for s in request.steps) or list(request.steps) != sorted(
            set(request.steps)
        ):
            raise RegistryError(
                422, "steps must be increasing percentages between 1 and 100, e.g. 1,10,50,100"
            )
        if request.every_seconds is None:
            raise RegistryError(422, "steps need an interval (every, e.g. 1h)")
        if request.group is not None:
            raise RegistryError(422, "a schedule moves the percentage of all hosts, not a group")
    elif request.every_seconds is not None:
        raise RegistryError(422, "an interval (every) needs steps, e.g. 1,10,50,100")
    for label, seconds in (("every", request.every_seconds), ("window", request.window_seconds)):
        if seconds is not None and seconds < 1:
            raise RegistryError(422, f"{label} must be at least one second")


def _members(session: Session, name: str, version: str) -> list[Image]:
    return list(session.scalars(select(Image).where(Image.name == name)))


def _channels_of(images: list[Image], version: str) -> set[str]:
    return {c for i in images if i.release_version == version for c in i.channel_names}


def fleet_counts(session: Session, name: str) -> dict[str, int]:
    rows = session.execute(
        select(FleetHost.version, func.count())
        .where(FleetHost.name == name, FleetHost.version.is_not(None))
        .group_by(FleetHost.version)
    )
    return {str(v): int(n) for v, n in rows}


def set_rollout(
    service: RegistryService,
    name: str,
    version: str,
    channel: str,
    request: RolloutRequest,
    actor: audit.Actor,
) -> dict[str, Any]:
    """Create or change the policy of `version` in `channel`; a version not yet published
    may be staged first (publish it afterwards: it starts at this policy)."""
    problem = version_problem(version)
    if problem:
        raise RegistryError(422, f"invalid version {version!r}: {problem}")
    service.check_channel(channel)
    _check_request(request)
    with service.writing(name) as session:
        auth.authorize_write(session, actor.principal, name, [channel], "rollout")
        now = utcnow()
        policy = session.get(Rollout, (name, channel, version))
        before = rollouts.describe(policy, {}) if policy is not None else None
        if policy is None:
            policy = Rollout(
                name=name, channel=channel, version=version, percent=0, groups={},
                halted=False, halted_reason=None, canary=0, canary_done=False,
                canary_buckets=[], steps=[], every_seconds=None, next_step_at=None,
                window_seconds=None, offered_at=None, created_at=now, updated_at=now,
                canary_activated=False,
            )  # fmt: skip
            session.add(policy)
        percent = request.percent
        if request.steps:
            percent = request.steps[0] if percent is None else percent
            policy.steps = list(request.steps)
            policy.every_seconds = request.every_seconds
            policy.next_step_at = now + dt.timedelta(seconds=request.every_seconds or 0)
        if percent is not None:
            current = policy.groups.get(request.group, 0) if request.group else policy.percent
            if percent < current:
                raise RegistryError(
                    409,
                    f"{name} {version} is at {current}% already: lowering it would take the "
                    "version away from hosts that were offered it; use `sysext rollout halt`",
                )
            if request.group is not None:
                policy.groups = {**policy.groups, request.group: percent}
            else:
                policy.percent = percent
        if request.canary is not None and request.canary != policy.canary:
            # offered_at (below) marks the canary's start for the gate's spoofing rule.
            policy.canary = request.canary
            policy.canary_done = request.canary == 0
            hosts = rollouts.hosts_per_bucket(session, name, channel)
            key = rollouts.rollout_key(session)
            policy.canary_buckets = rollouts.canary_buckets(
                key, name, version, hosts, request.canary
            )
        if request.window_seconds is not None:
            policy.window_seconds = request.window_seconds
        if request.canary_activated is not None:
            policy.canary_activated = request.canary_activated
        elif request.canary == 0:
            policy.canary_activated = False  # no canary left: nothing for the flag to gate
        if policy.canary_activated and policy.canary == 0:
            # Raised before the commit: the session is dropped, nothing of this is written.
            raise RegistryError(
                422,
                "canary_activated needs a canary: give the number of canary hosts "
                "(--canary N) with it",
            )
        policy.offered_at = now
        policy.updated_at = now
        detail = {
            "channel": channel,
            "before": before,
            "after": rollouts.describe(policy, {}),
        }
        audit.record(session, actor, audit.Action.ROLLOUT_SET, f"{name} {version}", detail)
        _commit(service, session, name, channel)
        counted = rollouts.canary_progress(session, policy)
        return rollouts.describe(policy, fleet_counts(session, name), counted)


def set_halted(
    service: RegistryService,
    name: str,
    version: str,
    channel: str,
    halted: bool,
    actor: audit.Actor,
    *,
    percent: int | None = None,
) -> dict[str, Any]:
    service.check_channel(channel)
    if percent is not None:
        _check_request(RolloutRequest(percent=percent))
    action = audit.Action.ROLLOUT_HALT if halted else audit.Action.ROLLOUT_RESUME
    with service.writing(name) as session:
        auth.authorize_write(session, actor.principal, name, [channel], action.value)
        policy = session.get(Rollout, (name, channel, version))
        if policy is None:
            raise RegistryError(
                404,
                f"{name} {version} has no rollout in {channel}; "
                f"start one with `sysext rollout set {name} {version} --percent N`",
            )
        now = utcnow()
        policy.halted = halted
        policy.halted_reason = "halted by an operator" if halted else None
        if not halted:
            if percent is not None:
                if percent < policy.percent:
                    raise RegistryError(409, f"{name} {version} is at {policy.percent}% already")
                policy.percent = percent
            policy.offered_at = now
            if policy.next_step_at is not None:
                # A paused schedule resumes from now, not with every missed step at once.
                policy.next_step_at = now + dt.timedelta(seconds=policy.every_seconds or 0)
        policy.updated_at = now
        audit.record(
            session,
            actor,
            action,
            f"{name} {version}",
            {"channel": channel, "percent": policy.percent},
        )
        _commit(service, session, name, channel)
        counted = rollouts.canary_progress(session, policy)
        return rollouts.describe(policy, fleet_counts(session, name), counted)


def _commit(service: RegistryService, session: Session, name: str, channel: str) -> None:
    """Commit and serve; a version not published in `channel` yet only needs the commit."""

    def nothing(_session: Session) -> None:
        """The policy change stays (it is valid on its own); the tree is rebuilt from it."""

    members = session.scalars(select(Image.id).where(Image.name == name).limit(1)).first()
    if members is None:
        session.commit()
        return
    service._commit_and_serve(session, name, [channel], nothing)


def status(service: RegistryService, name: str) -> dict[str, Any]:
    with service.sessions() as session:
        rows = session.scalars(
            select(Rollout).where(Rollout.name == name).order_by(Rollout.created_at)
        ).all()
        counts = fleet_counts(session, name)
        return {
            "name": name,
            "rollouts": [
                rollouts.describe(r, counts, rollouts.canary_progress(session, r)) for r in rows
            ],
            "hosts_per_version": counts,
        }


def tick(service: RegistryService, now: dt.datetime | None = None) -> list[str]:
    """Advance due schedules, end passed canary phases, pause silent rollouts, sample the
    fleet. Returns one line per change (for the log)."""
    now = now or utcnow()
    with service.sessions() as session:
        active = [
            (r.name, r.channel, r.version)
            for r in session.scalars(select(Rollout).where(Rollout.halted.is_(False)))
            if not rollouts.released(r) or r.steps
        ]
    changes: list[str] = []
    for name, channel, version in active:
        with service.writing(name) as session:
            policy = session.get(Rollout, (name, channel, version), populate_existing=True)
            if policy is None or policy.halted:
                continue
            line = _tick_one(session, policy, now)
            if line is None:
                session.rollback()
                continue
            policy.updated_at = now
            changes.append(f"{name} {version} ({channel}): {line}")
            _commit(service, session, name, channel)
    sample_fleet(service, now)
    return changes


def _tick_one(session: Session, policy: Rollout, now: dt.datetime) -> str | None:
    target = f"{policy.name} {policy.version}"
    # Canaries count only hosts of the canary buckets that the registry had seen before
    # the canary began: a made-up host ID fetching the image now does not pass the gate.
    # With canary_activated, only those of them whose own report says activated
    # (rollouts.Progress: a report never counts without the same host's fetch).
    if rollouts.canary_pending(policy):
        counted = rollouts.canary_progress(session, policy)
        if counted.succeeded(policy) >= policy.canary:
            policy.canary_done = True
            policy.offered_at = now
            detail = {
                "channel": policy.channel, "hosts": counted.succeeded(policy),
                "fetched": counted.fetched, "activated": counted.activated,
                "failure_reports": counted.failed,
            }  # fmt: skip
            audit.record_registry(session, audit.Action.ROLLOUT_CANARY_PASSED, target, detail)
            how = "fetched and reported it activated" if policy.canary_activated else "fetched it"
            return (
                f"canary passed ({counted.succeeded(policy)} hosts {how}), now at {policy.percent}%"
            )
    if policy.window_seconds and policy.offered_at is not None:
        since = as_utc(policy.offered_at)
        if now - since >= dt.timedelta(seconds=policy.window_seconds):
            recent = rollouts.progress(session, policy, fetched_since=since)
            if not recent.succeeded(policy):
                policy.halted = True
                policy.halted_reason = _pause_reason(policy, recent, since)
                audit.record_registry(
                    session,
                    audit.Action.ROLLOUT_PAUSED,
                    target,
                    {"channel": policy.channel, "reason": policy.halted_reason},
                )
                return policy.halted_reason
    due = policy.next_step_at is not None and as_utc(policy.next_step_at) <= now
    if due and not rollouts.canary_pending(policy):
        later = [s for s in policy.steps if s > policy.percent]
        if not later:
            policy.next_step_at = None
            return None
        policy.percent = later[0]
        policy.offered_at = now
        every = dt.timedelta(seconds=policy.every_seconds or 0)
        policy.next_step_at = now + every if len(later) > 1 else None
        detail = {"channel": policy.channel, "percent": policy.percent}
        audit.record_registry(session, audit.Action.ROLLOUT_ADVANCE, target, detail)
        return f"schedule advanced to {policy.percent}%"
    return None


def _pause_reason(policy: Rollout, recent: rollouts.Progress, since: dt.datetime) -> str:
    window = f"within {policy.window_seconds}s of it being offered (at {since.isoformat()})"
    if not policy.canary_activated:
        return f"auto-paused: no host fetched {policy.version} {window}"
    # Failure reports are named (the operator decides), never the cause: a rollout with
    # fetches and activations pauses for none of them.
    failed = f"; {recent.failed} host(s) reported a failure" if recent.failed else ""
    return (
        f"auto-paused: no host both fetched {policy.version} and reported it activated "
        f"{window}: {recent.fetched} host(s) fetched it, activation reports were missing"
        f"{failed}"
    )


def sample_fleet(service: RegistryService, now: dt.datetime) -> None:
    """Hosts per version now, one row per (extension, version, 10-minute slot): the chart.
    A version that had hosts earlier in the slot and has none now is written as 0."""
    at = now.replace(minute=now.minute - now.minute % 10, second=0, microsecond=0)
    with service.sessions() as session:
        rows = session.execute(
            select(FleetHost.name, FleetHost.version, func.count())
            .where(FleetHost.version.is_not(None))
            .group_by(FleetHost.name, FleetHost.version)
        ).all()
        counts = {(str(n), str(v)): int(c) for n, v, c in rows}
        for sample in session.scalars(select(FleetSample).where(FleetSample.at == at)):
            counts.setdefault((sample.name, sample.version), 0)
        for (name, version), count in counts.items():
            fleet.upsert_sample(session, name, at, version, count)
        session.commit()
