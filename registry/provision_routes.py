"""Provisioning configs from the registry: Butane and Ignition for one or many extensions.

    GET /api/v1/extensions/{name}/butane     ?version=&channel=&arch=&variant=…
    GET /api/v1/extensions/{name}/ignition
    GET /api/v1/provision/butane             ?ext=podman&ext=crio@1.31.1&…
    GET /api/v1/provision/ignition

`os_version=` (the host's VERSION_ID) is required for an extension published per OS version;
without it the 400 lists the OS versions that exist.

Resolution reads the materialized public tree (SHA256SUMS and keyring.gpg), exactly what
hosts will download, so a config can never name a file or hash the tree does not serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response

from sysext.architecture import Architecture
from sysext.errors import SysextError
from sysext.provision import (
    DirectoryCatalog,
    ExtensionRef,
    ProvisionOptions,
    generate_config,
    render_butane,
    render_ignition,
)
from sysext.provision.model import (
    IgnitionVersion,
    KeyringMode,
    OnUpdate,
    ProvisionConfig,
    Variant,
    parse_enum,
)
from sysext.provision.resolve import BrokenRegistryError, NotPublishedError
from sysext.urls import DEFAULT_CHANNEL

router = APIRouter(prefix="/api/v1", tags=["provisioning"])

BUTANE_MEDIA_TYPE = "application/yaml"
IGNITION_MEDIA_TYPE = "application/json"


@dataclass(frozen=True)
class ConfigQuery:
    """The options of `sysext butane`, as query parameters."""

    channel: str
    arch: str
    variant: str
    ignition_version: str
    updates: bool
    on_update: str
    keyring: str
    os_version: str | None = None
    timer: bool | None = None


def _config_query(
    channel: Annotated[str, Query(description="registry channel")] = DEFAULT_CHANNEL,
    arch: Annotated[str, Query(description="host architecture, systemd name")] = "x86-64",
    variant: Annotated[str, Query(description="flatcar or fcos")] = "flatcar",
    ignition_version: Annotated[
        str, Query(alias="ignition-version", description="3.3.0, 3.4.0 or 3.5.0 (fcos)")
    ] = "3.3.0",
    updates: Annotated[bool, Query(description="false: install only")] = True,
    on_update: Annotated[
        str, Query(alias="on-update", description="restart, refresh or reboot-marker")
    ] = "restart",
    keyring: Annotated[str, Query(description="replace or skip")] = "replace",
    os_version: Annotated[
        str | None,
        Query(
            description="the host's os-release VERSION_ID; required for extensions "
            "published per OS version"
        ),
    ] = None,
    timer: Annotated[
        bool | None,
        Query(description="enable the update timer (default: flatcar yes, fcos no)"),
    ] = None,
) -> ConfigQuery:
    return ConfigQuery(
        channel, arch, variant, ignition_version, updates, on_update, keyring, os_version, timer
    )


Options = Annotated[ConfigQuery, Depends(_config_query)]


def _catalog(request: Request) -> DirectoryCatalog:
    state = request.app.state
    settings = getattr(state, "settings", None) or state.service.settings
    return DirectoryCatalog(settings.public_dir, settings.base_url, tuple(settings.channels))


def _generate(request: Request, refs: list[str], query: ConfigQuery) -> ProvisionConfig:
    try:
        options = ProvisionOptions(
            variant=parse_enum(Variant, query.variant, "variant"),
            ignition_version=parse_enum(IgnitionVersion, query.ignition_version, "version"),
            updates=query.updates,
            on_update=parse_enum(OnUpdate, query.on_update, "on-update action"),
            keyring=parse_enum(KeyringMode, query.keyring, "keyring mode"),
            timer=query.timer,
        )
        return generate_config(
            _catalog(request),
            [ExtensionRef.parse(text) for text in refs],
            arch=Architecture.parse(query.arch),
            channel=query.channel,
            options=options,
            os_version=query.os_version,
        )
    except NotPublishedError as exc:
        raise HTTPException(404, _detail(exc)) from None
    except BrokenRegistryError as exc:
        raise HTTPException(500, _detail(exc)) from None
    except SysextError as exc:
        raise HTTPException(400, _detail(exc)) from None


def _detail(exc: SysextError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


def _one(name: str, version: str | None) -> list[str]:
    return [f"{name}@{version}" if version else name]


_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "invalid option"},
    404: {"description": "unknown extension, version, architecture or channel (lists what exists)"},
}


@router.get(
    "/extensions/{name}/butane",
    response_class=PlainTextResponse,
    responses=_RESPONSES,
    summary="Butane config installing one extension at first boot",
)
def extension_butane(
    name: str, request: Request, query: Options, version: str | None = None
) -> Response:
    config = _generate(request, _one(name, version), query)
    return Response(render_butane(config), media_type=BUTANE_MEDIA_TYPE)


@router.get(
    "/extensions/{name}/ignition",
    responses=_RESPONSES,
    summary="Ignition config installing one extension at first boot",
)
def extension_ignition(
    name: str, request: Request, query: Options, version: str | None = None
) -> Response:
    config = _generate(request, _one(name, version), query)
    return Response(render_ignition(config), media_type=IGNITION_MEDIA_TYPE)


Extensions = Annotated[
    list[str], Query(alias="ext", description="NAME or NAME@VERSION; repeat for several")
]


@router.get(
    "/provision/butane",
    response_class=PlainTextResponse,
    responses=_RESPONSES,
    summary="Butane config installing several extensions",
)
def provision_butane(request: Request, query: Options, ext: Extensions) -> Response:
    return Response(render_butane(_generate(request, ext, query)), media_type=BUTANE_MEDIA_TYPE)


@router.get(
    "/provision/ignition",
    responses=_RESPONSES,
    summary="Ignition config installing several extensions",
)
def provision_ignition(request: Request, query: Options, ext: Extensions) -> Response:
    config = _generate(request, ext, query)
    return Response(render_ignition(config), media_type=IGNITION_MEDIA_TYPE)
