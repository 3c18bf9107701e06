"""The JSON API under /api/v1 (OpenAPI at /openapi.json): uploads, yank/promote, tokens,
listings and search. Writes need a token (auth.py); reads are public like the tree."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from registry.db.models import Image, Token, as_utc, utcnow
from registry.errors import RegistryError
from registry.service import audit, auth
from registry.service.core import RegistryService
from registry.service.names import name_problem, parse_image_filename
from registry.service.validation import validate_upload
from registry.storage.blobs import StagedUpload
from sysext import __version__
from sysext.core.urls import DEFAULT_CHANNEL, extension_url_path
from sysext.systemd.architecture import Architecture

router = APIRouter(prefix="/api/v1")

Authorization = Annotated[
    str | None,
    Header(description="`Bearer TOKEN`: the admin token or a scoped upload token"),
]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"detail": text}}}}
    for code, text in (
        (401, "no or unknown token"),
        (403, "token outside its scope"),
        (404, "no such extension or version"),
        (
            409,
            "this file name is already published with other content, or it would mix "
            "OS-bound and unbound images in one extension",
        ),
        (413, "upload larger than the configured limit"),
        (422, "invalid name, version, channel or image"),
    )
}


class ImageInfo(BaseModel):
    filename: str
    name: str
    version: str
    arch: str
    size: int
    sha256: str
    format: str
    os_version_id: str | None = Field(
        default=None, description="VERSION_ID an OS-bound image is built for; null: any OS"
    )
    channels: list[str]
    created: dt.datetime
    yanked: bool
    yanked_at: dt.datetime | None
    url: str = Field(description="path of the image in the public tree (stable if listed)")
    description: str | None = Field(default=None, description="X_SYSEXT_DESCRIPTION")
    homepage: str | None = Field(default=None, description="X_SYSEXT_HOMEPAGE")
    license: str | None = Field(default=None, description="X_SYSEXT_LICENSE (an SPDX expression)")
    upstream_version: str | None = Field(default=None, description="X_SYSEXT_UPSTREAM_VERSION")
    replaces: list[str] = Field(
        default_factory=list,
        description="X_SYSEXT_REPLACES: OS-shipped extensions this one replaces",
    )
    release: dict[str, str] | None = Field(
        default=None,
        description="every field of the image's extension-release file; null: not known",
    )
    binaries: list[str] | None = Field(
        default=None, description="commands the image puts on PATH; null: not known"
    )
    units: list[str] | None = Field(
        default=None, description="systemd units the image ships; null: not known"
    )
    verity_root_hash: str | None = Field(
        default=None,
        description="a signed dm-verity DDI: its root hash (hex); null: a plain file system",
    )
    verity_signed_by: str | None = Field(
        default=None,
        description="a signed dm-verity DDI: SHA-256 (hex) of the trusted certificate that "
        "signed its root hash, checked at upload (GET /verity.crt serves the certificates)",
    )
    verity: str | None = Field(
        default=None, description='"verity-signed by FINGERPRINT", or null: a plain image'
    )

    @classmethod
    def of(cls, image: Image) -> ImageInfo:
        summary = image.summary
        channels = image.channel_names
        channel = DEFAULT_CHANNEL if DEFAULT_CHANNEL in channels else channels[0]
        return cls(
            filename=image.filename,
            name=image.name,
            version=image.version,
            arch=image.arch,
            size=image.size,
            sha256=image.sha256,
            format=image.format,
            os_version_id=image.os_version_id,
            channels=channels,
            created=as_utc(image.created_at),
            yanked=image.yanked,
            yanked_at=as_utc(image.yanked_at) if image.yanked_at else None,
            url=f"/{extension_url_path(image.name, channel)}/{image.filename}",
            description=summary.description,
            homepage=summary.homepage,
            license=summary.license,
            upstream_version=summary.upstream_version,
            replaces=list(summary.replaces),
            release=image.release,
            binaries=image.binaries,
            units=image.units,
            verity_root_hash=image.verity_root_hash,
            verity_signed_by=image.verity_signer,
            verity=f"verity-signed by {image.verity_signer}" if image.verity_signer else None,
        )


class PublishOut(BaseModel):
    created: bool = Field(description="false: identical bytes were already published")
    image: ImageInfo


class ExtensionSummary(BaseModel):
    name: str
    description: str | None = Field(
        default=None, description="X_SYSEXT_DESCRIPTION of the newest listed image"
    )
    latest_version: str | None = Field(
        description="newest version a channel offers every host (not one still rolling out)"
    )
    rolling_out: dict[str, list[str]] = Field(
        default_factory=dict,
        description="channel -> published versions still rolling out (docs/rollouts.md)",
    )
    arches: list[str]
    channels: list[str]
    versions: int
    updated: dt.datetime


class ExtensionDetail(BaseModel):
    name: str
    description: str | None = Field(
        default=None, description="X_SYSEXT_DESCRIPTION of the newest listed image"
    )
    homepage: str | None = None
    license: str | None = None
    upstream_version: str | None = None
    replaces: list[str] = Field(default_factory=list)
    images: list[ImageInfo]


class TokenIn(BaseModel):
    # Bounded, so that no admin input reaches the database larger than its columns (the
    # description is the audit trail's varchar(255) principal; issue 19, finding 13).
    scopes: list[Annotated[str, Field(max_length=128)]] = Field(
        min_length=1, max_length=100, description="globs over extension names"
    )
    description: str = Field(default="", max_length=255)
    channels: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        max_length=100,
        description="channels it may publish/yank/promote in; null: all",
    )
    expires_at: dt.datetime | None = Field(default=None, description="null: never expires")


class TokenInfo(BaseModel):
    id: int
    scopes: list[str]
    description: str
    created: dt.datetime
    revoked: dt.datetime | None
    channels: list[str] | None = None
    expires: dt.datetime | None = None


class TokenCreated(TokenInfo):
    token: str = Field(description="shown once; only its hash is stored")


class Status(BaseModel):
    version: str
    fingerprint: str
    channels: list[str]
    base_url: str
    max_upload_bytes: int


def _service(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.service
    return service


def _principal(service: RegistryService, authorization: str | None) -> auth.Principal:
    with service.sessions() as session:
        return auth.authenticate(
            session, auth.bearer_token(authorization), service.settings.admin_token
        )


def _check_name(name: str) -> None:
    problem = name_problem(name)
    if problem:
        raise RegistryError(422, problem)


def _token_info(token: Token) -> TokenInfo:
    return TokenInfo(
        id=token.id,
        scopes=token.scope_list,
        description=token.description,
        created=as_utc(token.created_at),
        revoked=as_utc(token.revoked_at) if token.revoked_at else None,
        channels=token.channel_list,
        expires=as_utc(token.expires_at) if token.expires_at else None,
    )


@router.put(
    "/extensions/{name}/images/{filename}",
    response_model=PublishOut,
    responses={k: v for k, v in ERRORS.items() if k != 404},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    summary="Upload an image (raw request body) and publish it in a channel",
)
async def upload_image(
    name: str,
    filename: str,
    request: Request,
    authorization: Authorization = None,
    channel: Annotated[str, Query(description="channel to publish in")] = DEFAULT_CHANNEL,
) -> PublishOut:
    """Stream the body to disk (hashing as it comes), validate, then publish atomically.

    `filename` is `NAME-VERSION-ARCH.raw`. Same bytes again: 200 with `created: false`;
    other bytes under a published name: 409.
    """
    service = _service(request)
    principal = await run_in_threadpool(_principal, service, authorization)
    _check_name(name)
    auth.require_scope(principal, name)
    try:
        image_name = parse_image_filename(name, filename)
    except ValueError as exc:
        raise RegistryError(422, str(exc)) from None
    service.check_channel(channel)
    auth.require_channels(principal, [channel], "publish")
    limit = service.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RegistryError(
            413, f"upload of {declared} bytes exceeds this registry's limit of {limit}"
        )
    with StagedUpload(service.settings.tmp_dir, limit) as staged:
        buffer = bytearray()
        try:
            async for chunk in request.stream():
                buffer += chunk
                if len(buffer) >= 1 << 20:
                    await run_in_threadpool(staged.write, bytes(buffer))
                    buffer.clear()
        except ClientDisconnect:
            raise RegistryError(400, "the client disconnected before the upload finished") from None
        await run_in_threadpool(staged.write, bytes(buffer))
        sha256 = await run_in_threadpool(staged.finish)
        if staged.size == 0:
            raise RegistryError(422, f"{filename}: empty upload")
        validated = await run_in_threadpool(
            validate_upload,
            staged.path,
            image_name,
            verity_certs=service.settings.verity_certs,
            retired_certs=service.settings.verity_retired_certs,
        )
        result = await run_in_threadpool(
            service.publish,
            staged.path,
            sha256,
            staged.size,
            image_name,
            validated.format,
            channel,
            os_version_id=validated.os_version_id,
            summary=validated.summary,
            verity=(
                (validated.verity_root_hash, validated.verity_signer)
                if validated.verity_root_hash and validated.verity_signer
                else None
            ),
            actor=audit.Actor.of(principal, request),
        )
    return PublishOut(created=result.created, image=ImageInfo.of(result.image))


@router.get("/extensions", response_model=list[ExtensionSummary], summary="List extensions")
def list_extensions(
    request: Request,
    q: Annotated[str | None, Query(description="substring of the name or description")] = None,
) -> list[ExtensionSummary]:
    return [ExtensionSummary(**e) for e in _service(request).extensions(q)]


@router.get(
    "/search",
    response_model=list[ExtensionSummary],
    summary="Search extensions by name and description",
)
def search(request: Request, q: str = "") -> list[ExtensionSummary]:
    return [ExtensionSummary(**e) for e in _service(request).extensions(q)]


@router.get(
    "/extensions/{name}",
    response_model=ExtensionDetail,
    responses={404: ERRORS[404]},
    summary="All images of an extension, newest version first",
)
def get_extension(name: str, request: Request) -> ExtensionDetail:
    images = _service(request).images_of(name)
    if not images:
        raise RegistryError(404, f"no extension named {name!r}")
    infos = [ImageInfo.of(i) for i in images]
    # Images come newest first; a yanked one describes the extension only if nothing else does.
    lead = next((i for i in infos if not i.yanked), infos[0])
    return ExtensionDetail(
        name=name,
        description=lead.description,
        homepage=lead.homepage,
        license=lead.license,
        upstream_version=lead.upstream_version,
        replaces=lead.replaces,
        images=infos,
    )


def _version_action(
    request: Request,
    authorization: str | None,
    name: str,
    version: str,
    action: str,
    arch: str | None,
    channel: str | None = None,
) -> list[ImageInfo]:
    """Yank, unyank or promote. Which images (and so which channels) the write touches is
    decided by the service under its writer lock, and the token is checked there against
    exactly that set (auth.authorize_write); here only the request's shape is checked."""
    service = _service(request)
    principal = _principal(service, authorization)
    _check_name(name)
    _check_arch(arch)
    # Early answers for what the request alone decides; the binding check is the service's.
    auth.require_scope(principal, name)
    if action == "promote":
        auth.require_channels(principal, [channel or DEFAULT_CHANNEL], "promote")
    actor = audit.Actor.of(principal, request)
    if action == "promote":
        images = service.promote(name, version, arch, channel or DEFAULT_CHANNEL, actor)
    else:
        images = service.set_yanked(name, version, arch, action == "yank", actor)
    return [ImageInfo.of(i) for i in images]


def _check_arch(arch: str | None) -> None:
    """An `arch` query value must name an architecture: empty or unknown ones are refused,
    never read as "every architecture"."""
    if arch is None:
        return
    known = [a.value for a in Architecture]
    if arch not in known:
        raise RegistryError(
            422, f"unknown architecture {arch!r}; use one of {', '.join(known)} or leave it out"
        )


ArchQuery = Annotated[str | None, Query(description="only this architecture (default: all)")]
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    k: v for k, v in ERRORS.items() if k in (401, 403, 404, 422)
}


def _yank_route(action: str, summary: str) -> None:
    """POST /extensions/{name}/versions/{version}/ACTION for `yank` and `unyank`, which
    differ only in the flag they set; `name=action` keeps their OpenAPI operation ids."""

    def route(
        name: str,
        version: str,
        request: Request,
        authorization: Authorization = None,
        arch: ArchQuery = None,
    ) -> list[ImageInfo]:
        return _version_action(request, authorization, name, version, action, arch)

    router.post(
        f"/extensions/{{name}}/versions/{{version}}/{action}",
        response_model=list[ImageInfo],
        responses=WRITE_ERRORS,
        summary=summary,
        name=action,
    )(route)


_yank_route("yank", "Drop a version from every manifest (the files stay for direct links)")
_yank_route("unyank", "List a yanked version again")


@router.post(
    "/extensions/{name}/versions/{version}/promote",
    response_model=list[ImageInfo],
    responses=WRITE_ERRORS,
    summary="Add a version to another channel (e.g. beta → stable)",
)
def promote(
    name: str,
    version: str,
    request: Request,
    channel: str,
    authorization: Authorization = None,
    arch: ArchQuery = None,
) -> list[ImageInfo]:
    return _version_action(request, authorization, name, version, "promote", arch, channel)


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    responses={k: v for k, v in ERRORS.items() if k in (401, 403, 422)},
    summary="Create a scoped upload token (admin only)",
)
def create_token(
    body: TokenIn, request: Request, authorization: Authorization = None
) -> TokenCreated:
    service = _service(request)
    principal = _principal(service, authorization)
    auth.require_admin(principal, "create tokens")
    with service.sessions() as session:
        token, secret = auth.create_token(
            session,
            body.scopes,
            body.description,
            channels=body.channels,
            expires_at=body.expires_at,
            known_channels=service.settings.channels,
        )
        audit.record(
            session,
            audit.Actor.of(principal, request),
            audit.Action.TOKEN_CREATE,
            f"token {token.id}",
            {
                "scopes": body.scopes,
                "description": body.description,
                "channels": body.channels,
                "expires_at": body.expires_at.isoformat() if body.expires_at else None,
            },
        )
        session.commit()
        return TokenCreated(**_token_info(token).model_dump(), token=secret)


@router.get(
    "/tokens",
    response_model=list[TokenInfo],
    responses={k: v for k, v in ERRORS.items() if k in (401, 403)},
    summary="List tokens (admin only; secrets are never shown again)",
)
def list_tokens(request: Request, authorization: Authorization = None) -> list[TokenInfo]:
    service = _service(request)
    auth.require_admin(_principal(service, authorization), "list tokens")
    with service.sessions() as session:
        return [_token_info(t) for t in session.scalars(select(Token).order_by(Token.id))]


@router.delete(
    "/tokens/{token_id}",
    response_model=TokenInfo,
    responses={k: v for k, v in ERRORS.items() if k in (401, 403, 404)},
    summary="Revoke a token (admin only)",
)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**31)],
    request: Request,
    authorization: Authorization = None,
) -> TokenInfo:
    service = _service(request)
    principal = _principal(service, authorization)
    auth.require_admin(principal, "revoke tokens")
    with service.sessions() as session:
        token = session.get(Token, token_id)
        if token is None:
            raise RegistryError(404, f"no token with id {token_id}")
        audit.record(
            session,
            audit.Actor.of(principal, request),
            audit.Action.TOKEN_REVOKE,
            f"token {token_id}",
            {"already_revoked": token.revoked_at is not None},
        )
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        session.commit()
        return _token_info(token)


@router.get("/status", response_model=Status, summary="Registry version, key and channels")
def status(request: Request) -> Status:
    service = _service(request)
    return Status(
        version=__version__,
        fingerprint=service.signer.fingerprint(),
        channels=list(service.settings.channels),
        base_url=service.settings.base_url,
        max_upload_bytes=service.settings.max_upload_bytes,
    )


class AuditInfo(BaseModel):
    id: int
    at: dt.datetime
    token_id: int | None = Field(
        description="null: the admin token, the registry itself or no valid token "
        "(principal says which)"
    )
    principal: str = Field(
        description="'admin', the token's description, 'registry' (automatic key phases), "
        "'registry repair' or 'anonymous' (a refused write without a valid token)"
    )
    action: str
    target: str
    detail: dict[str, Any]
    client: str = Field(description="address the request came from")


@router.get(
    "/audit",
    response_model=list[AuditInfo],
    responses={k: v for k, v in ERRORS.items() if k in (401, 403)},
    summary="The audit trail of every write, newest first (admin only, read-only)",
)
def audit_log(
    request: Request,
    authorization: Authorization = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    action: Annotated[str | None, Query(description="only this action, e.g. image.yank")] = None,
    after: Annotated[int, Query(ge=0, le=2**31, description="only entries after this id")] = 0,
) -> list[AuditInfo]:
    service = _service(request)
    auth.require_admin(_principal(service, authorization), "read the audit trail")
    with service.sessions() as session:
        found = audit.entries(session, limit=limit, action=action, after_id=after)
        return [AuditInfo(**entry.to_json()) for entry in found]
