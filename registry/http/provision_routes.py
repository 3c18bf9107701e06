"""Provisioning configs from the registry: Butane and Ignition for one or many extensions.

    GET /api/v1/extensions/{name}/butane     ?version=&channel=&arch=&variant=…
    GET /api/v1/extensions/{name}/ignition
    GET /api/v1/provision/butane             ?ext=podman&ext=crio@1.31.1&…
    GET /api/v1/provision/ignition

`os_version=` (the host's VERSION_ID) is required for an extension published per OS version;
without it the 400 lists the OS versions that exist. `require-signed=true` (with
`systemd-version=`) is `sysext butane --require-signed`: the same checks in the same code
(sysext.provision.verity), refused with a 400 the CLI would refuse with exit status 2.

Resolution reads the materialized public tree (SHA256SUMS and keyring.gpg), exactly what
hosts will download, so a config can never name a file or hash the tree does not serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response

from registry.service.core import RegistryService
from sysext.core.errors import SysextError
from sysext.core.rollout import group_problem
from sysext.core.urls import DEFAULT_CHANNEL, extension_url_path
from sysext.provision import (
    ExtensionRef,
    ProvisionOptions,
    generate_config,
    render_butane,
    render_ignition,
)
from sysext.provision.host_commands import host_commands
from sysext.provision.model import (
    IgnitionVersion,
    KeyringMode,
    OnUpdate,
    ProvisionConfig,
    Variant,
    parse_enum,
)
from sysext.provision.resolve import (
    BrokenRegistryError,
    NotPublishedError,
    ResolvedImage,
    check_channel_name,
    served_os_bound,
)
from sysext.systemd.architecture import Architecture

router = APIRouter(prefix="/api/v1", tags=["provisioning"])

BUTANE_MEDIA_TYPE = "application/yaml"
# Extensions one provisioning config may install (`ext=` repeated): far more than a host
# activates, small enough that an anonymous request stays cheap.
MAX_EXTENSIONS = 32
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
    systemd_version: int | None = None
    rollout: bool = False
    group: str | None = None
    require_signed: bool = False


def _config_query(
    channel: Annotated[str, Query(description="registry channel")] = DEFAULT_CHANNEL,
    arch: Annotated[str, Query(description="host architecture, systemd name")] = "x86-64",
    variant: Annotated[str, Query(description="flatcar or fcos")] = "flatcar",
    ignition_version: Annotated[
        str,
        Query(alias="ignition-version", description="3.3.0, 3.4.0, or (fcos) 3.5.0, 3.6.0"),
    ] = "3.3.0",
    updates: Annotated[bool, Query(description="false: install only")] = True,
    on_update: Annotated[
        str,
        Query(alias="on-update", description="restart, refresh, reboot-marker or notify (262)"),
    ] = "restart",
    keyring: Annotated[str, Query(description="combine or skip")] = "combine",
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
    systemd_version: Annotated[
        int | None,
        Query(
            alias="systemd-version",
            ge=252,
            description="the hosts' systemd major version, if known (transfer file name, "
            "262 features)",
        ),
    ] = None,
    rollout: Annotated[
        bool, Query(description="managed host: staged rollouts (docs/rollouts.md)")
    ] = False,
    group: Annotated[
        str | None, Query(description="the managed host's rollout group (implies rollout)")
    ] = None,
    require_signed: Annotated[
        bool,
        Query(
            alias="require-signed",
            description="hosts merge only signed verity DDIs (needs systemd-version 255+ and "
            "a registry serving /verity.crt; docs/verity.md)",
        ),
    ] = False,
) -> ConfigQuery:
    return ConfigQuery(
        channel,
        arch,
        variant,
        ignition_version,
        updates,
        on_update,
        keyring,
        os_version,
        timer,
        systemd_version,
        rollout,
        group,
        require_signed,
    )


Options = Annotated[ConfigQuery, Depends(_config_query)]


class StorageCatalog:
    """The registry's public tree wherever its storage keeps it: the local directory or an
    S3 bucket (storage/). Configs name exactly the files and hashes hosts will download."""

    def __init__(self, service: RegistryService) -> None:
        self._service = service

    @property
    def base_url(self) -> str:
        return self._service.settings.base_url

    def read(self, path: str) -> bytes | None:
        return self._service.storage.read_public(path)

    def extension_names(self, channel: str) -> list[str] | None:
        return [e["name"] for e in self._service.extensions() if channel in e["channels"]]

    def channel_names(self) -> list[str] | None:
        return list(self._service.settings.channels)

    def release_fields(self, image: ResolvedImage) -> Mapping[str, str]:
        """As stored at upload (migration 0004); {} for an image whose fields are unknown."""
        for row in self._service.images_of(image.name):
            if row.filename == image.filename:
                return dict(row.release or {})
        return {}

    def verity_signer(self, image: ResolvedImage) -> str | None:
        """As verified at upload (migration 0006)."""
        for row in self._service.images_of(image.name):
            if row.filename == image.filename:
                return row.verity_signer
        return None


def catalog(request: Request) -> StorageCatalog:
    """The public tree configs are resolved from (the web catalogue uses the same)."""
    return StorageCatalog(request.app.state.service)


def _generate(request: Request, refs: list[str], query: ConfigQuery) -> ProvisionConfig:
    if len(refs) > MAX_EXTENSIONS:
        # Before anything is parsed or resolved: these routes need no token, and each entry
        # costs a manifest read (issue 19, finding 14).
        raise HTTPException(
            422,
            f"{len(refs)} extensions requested; one config installs at most {MAX_EXTENSIONS}",
        )
    try:
        options = ProvisionOptions(
            variant=parse_enum(Variant, query.variant, "variant"),
            ignition_version=parse_enum(IgnitionVersion, query.ignition_version, "version"),
            updates=query.updates,
            on_update=parse_enum(OnUpdate, query.on_update, "on-update action"),
            keyring=parse_enum(KeyringMode, query.keyring, "keyring mode"),
            timer=query.timer,
            systemd_version=query.systemd_version,
            rollout=query.rollout or query.group is not None,
            group=query.group,
            require_signed=query.require_signed,
        )
        problem = group_problem(query.group) if query.group is not None else None
        if problem:
            raise SysextError(problem, "e.g. group=canary")
        return generate_config(
            catalog(request),
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


def _saved_as(filename: str) -> dict[str, str]:
    """Browsers save a YAML answer instead of showing it: under NAME.bu, not "butane"."""
    return {"Content-Disposition": f'inline; filename="{filename}"'}


def _one(name: str, version: str | None) -> list[str]:
    return [f"{name}@{version}" if version else name]


_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "invalid option, or an extension named twice"},
    404: {"description": "unknown extension, version, architecture or channel (lists what exists)"},
    422: {"description": f"more than {MAX_EXTENSIONS} extensions"},
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
    return Response(
        render_butane(config), media_type=BUTANE_MEDIA_TYPE, headers=_saved_as(f"{name}.bu")
    )


@router.get(
    "/extensions/{name}/ignition",
    responses=_RESPONSES,
    summary="Ignition config installing one extension at first boot",
)
def extension_ignition(
    name: str, request: Request, query: Options, version: str | None = None
) -> Response:
    config = _generate(request, _one(name, version), query)
    return Response(
        render_ignition(config), media_type=IGNITION_MEDIA_TYPE, headers=_saved_as(f"{name}.ign")
    )


@router.get(
    "/extensions/{name}/commands",
    response_class=PlainTextResponse,
    responses=_RESPONSES,
    summary="Shell commands installing one extension on a running host",
)
def extension_commands(
    name: str,
    request: Request,
    channel: Annotated[str, Query(description="registry channel")] = DEFAULT_CHANNEL,
    variant: Annotated[str, Query(description="flatcar or fcos")] = "flatcar",
) -> Response:
    """What `sysext transfer NAME --commands` prints and the catalogue page shows."""
    try:
        ExtensionRef.parse(name)
        check_channel_name(channel)
        chosen = parse_enum(Variant, variant, "variant")
    except SysextError as exc:
        raise HTTPException(400, _detail(exc)) from None
    source = catalog(request)
    if source.read(f"{extension_url_path(name, channel)}/SHA256SUMS") is None:
        raise HTTPException(404, f"no extension {name!r} in channel {channel!r}")
    try:
        os_bound = served_os_bound(source, name, channel)
    except SysextError as exc:
        raise HTTPException(500, _detail(exc)) from None
    text = host_commands(name, source.base_url, channel=channel, variant=chosen, os_bound=os_bound)
    return PlainTextResponse(text)


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
