"""Staged rollouts and the fleet view under /api/v1/extensions/NAME (issue 21).

Writes (set, halt, resume) need a token allowed for the extension and channel, checked by
the service under the writer lock like every other write (rollout_ops.py); reads are
public like the rest of the API: rollout stages and per-version host counts, never a host
ID. Host reports (POST …/reports) are unauthenticated by necessity, hosts have no
credentials: bounded in size and rate, queued, and acted on only by a rollout's opt-in
`canary_activated` gate, and there only together with the same host's own fetch
(host_reports.py, rollouts.Progress).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from registry.db.models import Image
from registry.errors import RegistryError
from registry.http.api import WRITE_ERRORS, Authorization, _check_name, _principal, _service
from registry.service import audit, auth, fleet, host_reports, rollout_ops
from registry.service.core import RegistryService
from sysext.core.urls import DEFAULT_CHANNEL

router = APIRouter(prefix="/api/v1")


class RolloutBody(BaseModel):
    percent: int | None = Field(default=None, description="share of hosts offered it, 0-100")
    group: str | None = Field(default=None, description="set `percent` for this group only")
    canary: int | None = Field(
        default=None, description="offer it to this many hosts first, until they fetched it"
    )
    steps: list[int] = Field(default_factory=list, description="schedule, e.g. [1, 10, 50, 100]")
    every_seconds: int | None = Field(default=None, description="time between schedule steps")
    window_seconds: int | None = Field(
        default=None, description="pause when no host fetched it within this time"
    )
    canary_activated: bool | None = Field(
        default=None,
        description=(
            "with a canary: a host counts (for the canary and the window) only when it "
            "fetched the image AND reported it activated; null leaves it unchanged"
        ),
    )


class ResumeBody(BaseModel):
    percent: int | None = None


def _actor(request: Request, authorization: str | None, name: str) -> audit.Actor:
    service = _service(request)
    principal = _principal(service, authorization)
    _check_name(name)
    auth.require_scope(principal, name)  # early; the binding check is under the lock
    return audit.Actor.of(principal, request)


@router.put(
    "/extensions/{name}/rollouts/{version}",
    responses={**WRITE_ERRORS, 409: {"description": "lowering a percentage"}},
    summary="Create or change the rollout of a version (stage it before publishing)",
)
def set_rollout(
    name: str,
    version: str,
    body: RolloutBody,
    request: Request,
    authorization: Authorization = None,
    channel: str = DEFAULT_CHANNEL,
) -> dict[str, Any]:
    actor = _actor(request, authorization, name)
    wanted = rollout_ops.RolloutRequest(
        percent=body.percent,
        group=body.group,
        canary=body.canary,
        steps=tuple(body.steps),
        every_seconds=body.every_seconds,
        window_seconds=body.window_seconds,
        canary_activated=body.canary_activated,
    )
    return rollout_ops.set_rollout(_service(request), name, version, channel, wanted, actor)


@router.post(
    "/extensions/{name}/rollouts/{version}/halt",
    responses=WRITE_ERRORS,
    summary="Offer the version to no new host (hosts that have it keep it)",
)
def halt(
    name: str,
    version: str,
    request: Request,
    authorization: Authorization = None,
    channel: str = DEFAULT_CHANNEL,
) -> dict[str, Any]:
    actor = _actor(request, authorization, name)
    return rollout_ops.set_halted(_service(request), name, version, channel, True, actor)


@router.post(
    "/extensions/{name}/rollouts/{version}/resume",
    responses=WRITE_ERRORS,
    summary="Resume a halted rollout, optionally at a higher percentage",
)
def resume(
    name: str,
    version: str,
    request: Request,
    authorization: Authorization = None,
    channel: str = DEFAULT_CHANNEL,
    body: ResumeBody | None = None,
) -> dict[str, Any]:
    actor = _actor(request, authorization, name)
    percent = body.percent if body is not None else None
    return rollout_ops.set_halted(
        _service(request), name, version, channel, False, actor, percent=percent
    )


@router.get("/extensions/{name}/rollouts", summary="Rollouts of an extension and their stage")
def rollouts(name: str, request: Request) -> dict[str, Any]:
    _check_name(name)
    service = _service(request)
    service.fleet.flush(service)
    return rollout_ops.status(service, name)


@router.get(
    "/extensions/{name}/fleet",
    summary="Managed hosts seen: per version and group, last seen, history",
)
async def fleet_view(name: str, request: Request) -> dict[str, Any]:
    _check_name(name)
    service = _service(request)
    # What this worker buffered is written first; other workers flush within fleet_flush.
    await run_in_threadpool(service.fleet.flush, service)
    return await run_in_threadpool(fleet.fleet_view, service, name)


async def _report_body(request: Request) -> bytes:
    """The body, read no further than MAX_BODY + 1 bytes (413 beyond)."""
    too_large = RegistryError(
        413, f"report too large: at most {host_reports.MAX_BODY} bytes (one JSON object)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > host_reports.MAX_BODY:
        raise too_large
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > host_reports.MAX_BODY:
            raise too_large
    return body


def _extension_exists(service: RegistryService, name: str) -> bool:
    with service.sessions() as session:
        return session.scalar(select(Image.id).where(Image.name == name).limit(1)) is not None


@router.post(
    "/extensions/{name}/reports",
    status_code=202,
    responses={
        404: {"description": "no such extension"},
        413: {"description": "body over 2 KiB"},
        422: {"description": "not a report a generated update script sends"},
        429: {"description": "too many reports from this address"},
    },
    summary=(
        "A managed host's outcome after an update run (no credentials; shown; counted only "
        "by a canary_activated gate, with the same host's fetch)"
    ),
)
async def report(name: str, request: Request) -> JSONResponse:
    """Body: `{"host_id", "channel", "group", "image", "result", "reason", "systemd",
    "os_id", "os_version_id"}` (docs/rollouts.md, "Host reports")."""
    _check_name(name)
    service = _service(request)
    address = request.client.host if request.client else "-"
    if not service.report_limiter.allow(address):
        raise RegistryError(
            429,
            f"too many reports from {address}: at most {service.report_limiter.per_minute} "
            "a minute (SYSEXT_REPORT_RATE)",
        )
    raw = await _report_body(request)
    parsed = host_reports.parse_report(name, raw, service.settings.channels, time.time())
    if not await run_in_threadpool(_extension_exists, service, name):
        raise RegistryError(404, f"no extension named {name!r}")
    if not service.fleet.report(parsed):
        raise RegistryError(503, "the report queue is full; report again later")
    return JSONResponse({"accepted": True}, status_code=202)
