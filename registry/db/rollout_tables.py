"""Tables of staged rollouts, the fleet view and host reports (migrations 0007, 0009, 0010)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from registry.db.models import Base


class Rollout(Base):
    """The rollout policy of one version of an extension in one channel.

    A version without a row is released to every host (as before rollouts existed)."""

    __tablename__ = "rollouts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(255), primary_key=True)
    percent: Mapped[int] = mapped_column(Integer)
    groups: Mapped[dict[str, int]] = mapped_column(JSON)  # group → its own percentage
    halted: Mapped[bool] = mapped_column(Boolean)
    halted_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    canary: Mapped[int] = mapped_column(Integer)  # hosts that must fetch it first (0: none)
    canary_done: Mapped[bool] = mapped_column(Boolean)
    canary_buckets: Mapped[list[int]] = mapped_column(JSON)
    # Migration 0010: canary hosts (and the auto-pause window's) count only when they
    # fetched the image AND reported it activated (rollouts.succeeded_hosts).
    canary_activated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    steps: Mapped[list[int]] = mapped_column(JSON)  # the schedule's percentages
    every_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    next_step_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    window_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # When hosts were last offered more of it (auto-pause counts its window from here).
    offered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class FleetHost(Base):
    """What one managed host last fetched of one extension."""

    __tablename__ = "fleet_hosts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    host_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    group: Mapped[str | None] = mapped_column(String(32), nullable=True)
    bucket: Mapped[int] = mapped_column(Integer)
    version: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class FleetSample(Base):
    """Hosts whose last fetched image was `version`, at one sampling time (the chart)."""

    __tablename__ = "fleet_samples"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    version: Mapped[str] = mapped_column(String(255), primary_key=True)
    hosts: Mapped[int] = mapped_column(Integer)


class RegistryMeta(Base):
    __tablename__ = "registry_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def as_json_list(value: Any) -> list[int]:
    return [int(v) for v in value or []]


class HostReport(Base):
    """What one managed host last reported about one extension after its update run
    (migration 0009; registry/service/host_reports.py). Shown, never acted on."""

    __tablename__ = "host_reports"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    host_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    group: Mapped[str | None] = mapped_column(String(32), nullable=True)
    version: Mapped[str | None] = mapped_column(String(255), nullable=True)
    result: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(120), nullable=True)
    systemd: Mapped[int | None] = mapped_column(Integer, nullable=True)
    os_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_version_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class HostActivation(Base):
    """A host reported `activated` for this version of the extension (migration 0010).

    Insert-only (host_reports.record_activations): a later report of the same host never
    removes it. Read only by a rollout's `canary_activated` gate, with the host's fetch."""

    __tablename__ = "host_activations"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    host_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[str] = mapped_column(String(255), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
