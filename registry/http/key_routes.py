"""Signing-key routes under /api/v1/keys: status (public) and rotation (admin only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from registry.http.api import ERRORS, Authorization, _principal, _service
from registry.service import audit, auth

router = APIRouter(prefix="/api/v1/keys")


class RotationInfo(BaseModel):
    phase: str = Field(
        description="introducing: new key served, old key signs; retiring:"
        " new key signs, old key still served"
    )
    other: str = Field(description="fingerprint of the next (introducing) or previous key")
    started: str
    advance_at: str = Field(description="when the next phase begins on its own")
    overlap_seconds: int


class KeyStatus(BaseModel):
    active: str = Field(description="fingerprint of the key that signs manifests now")
    keyring: list[str] = Field(description="fingerprints served in /keyring.gpg")
    rotation: RotationInfo | None
    signature_lifetime_seconds: int | None = Field(description="null: signatures never expire")
    resign_interval_seconds: int


def _status(data: dict[str, Any]) -> KeyStatus:
    return KeyStatus(**data)


@router.get("", response_model=KeyStatus, summary="Signing keys, rotation and signature lifetime")
def key_status(request: Request) -> KeyStatus:
    return _status(_service(request).signer.status())


@router.post(
    "/rotate",
    response_model=KeyStatus,
    responses={k: v for k, v in ERRORS.items() if k in (401, 403, 409)},
    summary="Start a key rotation: a new key, certified by the active one (admin only)",
)
async def rotate(request: Request, authorization: Authorization = None) -> KeyStatus:
    service = _service(request)
    principal = await run_in_threadpool(_principal, service, authorization)
    auth.require_admin(principal, "rotate the signing key")
    await run_in_threadpool(service.rotate_key, audit.Actor.of(principal, request))
    return _status(await run_in_threadpool(service.signer.status))


@router.post(
    "/advance",
    response_model=KeyStatus,
    responses={k: v for k, v in ERRORS.items() if k in (401, 403, 409, 422)},
    summary="Move a key rotation to its next phase now (admin only)",
)
async def advance(
    request: Request,
    authorization: Authorization = None,
    phase: Annotated[
        Literal["introducing", "retiring"] | None,
        Query(
            description="the phase to leave; if the rotation is no longer in it (another "
            "advance came first), 409 and nothing changes"
        ),
    ] = None,
) -> KeyStatus:
    service = _service(request)
    principal = await run_in_threadpool(_principal, service, authorization)
    auth.require_admin(principal, "advance a key rotation")
    await run_in_threadpool(service.advance_key, audit.Actor.of(principal, request), phase)
    return _status(await run_in_threadpool(service.signer.status))
