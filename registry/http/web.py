"""The web catalogue: what the registry serves, and how to install it, for humans.

Pages: `/` (what can I install, with search), `/catalog/NAME` (one extension, its versions
and instructions for the reader's choices), an HTML 404, the API docs at `/api/docs` with
Swagger UI served from the `fastapi-offline` package (no CDN), and `/favicon.ico`. Every
page answers GET and HEAD and works without JavaScript: choices are a GET form, and the
script only adds copy buttons and submits the form when a choice changes.

The Butane, Ignition and shell snippets on the extension page come from the very functions
behind `sysext butane` and `/api/v1/extensions/NAME/butane|ignition` (sysext.provision),
reading the same public tree, so the page, the CLI and the API print the same text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry.db.models import Image, utcnow
from registry.errors import RegistryError
from registry.http import catalogue, provision_routes
from registry.http.fleet_chart import adoption_svg
from registry.service import fleet, rollout_ops, rollouts
from registry.service.core import RegistryService
from sysext.core.durations import format_duration
from sysext.core.errors import SysextError
from sysext.core.urls import KEYRING_ARMORED, KEYRING_BINARY, extension_url_path
from sysext.provision import (
    ExtensionRef,
    ProvisionOptions,
    generate_config,
    render_butane,
    render_ignition,
)
from sysext.provision.host_commands import host_commands, verify_commands
from sysext.provision.model import Variant
from sysext.systemd.architecture import Architecture

# The checkout's web/ (editable installs), else the copy a wheel installs under
# PREFIX/share/sysext/web.
_CHECKOUT_WEB = Path(__file__).resolve().parents[2] / "web"
WEB_DIR = _CHECKOUT_WEB if _CHECKOUT_WEB.is_dir() else Path(sys.prefix) / "share" / "sysext" / "web"
STATIC_DIR = WEB_DIR / "static"
# Swagger UI's files as the fastapi-offline wheel ships them.
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_ASSETS_URL = "/static/api-docs"
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))
router = APIRouter(include_in_schema=False)
PAGE_METHODS = ["GET", "HEAD"]
VARIANT_LABELS = {Variant.FLATCAR: "Flatcar", Variant.FCOS: "Fedora CoreOS"}


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _web_link(url: str | None) -> str | None:
    """A homepage from an image is shown as a link only when it is http(s) (no javascript:)."""
    if url and urllib.parse.urlsplit(url).scheme in ("http", "https"):
        return url
    return None


def _seconds(value: int | None) -> str:
    """A rollout's interval as people write it (`1h`, `1d 12h`), not a count of seconds."""
    return format_duration(dt.timedelta(seconds=value or 0))


templates.env.filters["human"] = _human
templates.env.filters["seconds"] = _seconds


def _service(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.service
    return service


def _common(request: Request) -> dict[str, Any]:
    """What every page shows: the registry's URL and the key its manifests are signed with."""
    return {
        "base_url": _service(request).settings.base_url,
        "fingerprint": getattr(request.app.state, "fingerprint", ""),
        "keyring_binary": "/" + KEYRING_BINARY,
        "keyring_armored": "/" + KEYRING_ARMORED,
    }


@router.api_route("/", methods=PAGE_METHODS, response_class=HTMLResponse)
def home(request: Request, q: str = "") -> Response:
    service = _service(request)
    with service.sessions() as session:
        images = list(session.scalars(select(Image)))
        unreleased = rollouts.unreleased(session)
    cards = catalogue.extension_cards(images, service.settings.channels, q, unreleased)
    return templates.TemplateResponse(
        request,
        "index.html",
        {**_common(request), "cards": cards, "q": q, "published": bool(images)},
    )


@dataclass(frozen=True)
class Snippets:
    butane: str
    ignition: str
    shell: str
    butane_url: str
    ignition_url: str
    conf_url: str
    cli: str
    commands_url: str
    commands_cli: str
    ignition_version: str


def _snippets(request: Request, name: str, choice: catalogue.Choice, *, os_bound: bool) -> Snippets:
    """Butane, Ignition and shell text for `choice`, as the CLI and the API make them."""
    base = _service(request).settings.base_url
    # The catalogue the API's provisioning routes read, so both resolve the same files.
    config = generate_config(
        provision_routes.catalog(request),
        [ExtensionRef(name)],
        arch=Architecture.parse(choice.arch),
        channel=choice.channel,
        options=ProvisionOptions(
            variant=choice.variant,
            require_signed=choice.require_signed,
            systemd_version=choice.systemd_version,
        ),
        os_version=choice.os_version,
    )
    query = {"channel": choice.channel, "arch": choice.arch, "variant": choice.variant.value}
    if choice.os_version:
        query["os_version"] = choice.os_version
    if choice.systemd_version is not None:
        query["systemd-version"] = str(choice.systemd_version)
    if choice.require_signed:
        query["require-signed"] = "true"
    encoded = urllib.parse.urlencode(query)
    cli = f"sysext butane {name} --registry {base} --channel {choice.channel} "
    cli += f"--arch {choice.arch} --variant {choice.variant.value}"
    if choice.os_version:
        cli += f" --os-version {choice.os_version}"
    if choice.systemd_version is not None:
        cli += f" --systemd-version {choice.systemd_version}"
    if choice.require_signed:
        cli += " --require-signed"
    return Snippets(
        butane=render_butane(config),
        ignition=render_ignition(config),
        shell=host_commands(
            name, base, channel=choice.channel, variant=choice.variant, os_bound=os_bound
        ),
        butane_url=f"/api/v1/extensions/{name}/butane?{encoded}",
        ignition_url=f"/api/v1/extensions/{name}/ignition?{encoded}",
        conf_url=f"/{extension_url_path(name, choice.channel)}/{name}.conf",
        cli=cli,
        commands_url=f"/api/v1/extensions/{name}/commands?"
        + urllib.parse.urlencode({"channel": choice.channel, "variant": choice.variant.value}),
        commands_cli=f"sysext transfer {name} --registry {base} --channel {choice.channel} "
        f"--commands --variant {choice.variant.value}",
        ignition_version=config.ignition_version.value,
    )


@router.api_route("/catalog/{name}", methods=PAGE_METHODS, response_class=HTMLResponse)
def extension_page(
    name: str,
    request: Request,
    channel: str | None = None,
    arch: str | None = None,
    variant: str | None = None,
    os_version: str | None = None,
    require_signed: bool = False,
    systemd_version: str | None = None,
) -> Response:
    service = _service(request)
    images = service.images_of(name)
    if not images:
        return not_found_page(request, f"No extension named “{name}” is published here.")
    configured = service.settings.channels
    with service.sessions() as session:
        held = {c: v for (n, c), v in rollouts.unreleased(session).items() if n == name}
    offer = catalogue.Offer.of(images, configured)
    outcome = offer.choose(channel, arch, variant, os_version)
    described = catalogue.describing_image(images, outcome.choice, held)
    summary = catalogue.summary_of(described)
    release = (described.release if described else None) or {}
    snippets: Snippets | None = None
    problem: str | None = None
    verify: str | None = None
    choice = outcome.choice
    # An empty field is "not given": the form always sends it.
    version = (systemd_version or "").strip()
    unusable = (
        f"systemd version {version!r} is not a number, so it is ignored."
        if version and not version.isdigit()
        else None
    )
    if choice is not None:
        choice = dataclasses.replace(
            choice,
            require_signed=require_signed,
            systemd_version=int(version) if version.isdigit() else None,
        )
        try:
            snippets = _snippets(request, name, choice, os_bound=offer.os_bound)
        except SysextError as exc:
            # Choices provisioning refuses (--require-signed for a systemd without image
            # policies, an unsigned image), or the tree disagreeing with the database
            # (e.g. mid-rematerialization): say so instead of failing the whole page.
            problem = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        except RegistryError as exc:  # the storage (an object store) failed
            problem = exc.detail
        verify = verify_commands(
            name,
            service.settings.base_url,
            channel=choice.channel,
            # The image the instructions install (newest for the reader's choices).
            filename=described.filename if described else None,
            fingerprint=getattr(request.app.state, "fingerprint", None),
        )
    return templates.TemplateResponse(
        request,
        "extension.html",
        {
            **_common(request),
            "name": name,
            "summary": summary,
            "homepage_link": _web_link(summary.homepage),
            "described": described,
            "level": release.get("SYSEXT_LEVEL"),
            "os_id": release.get("ID"),
            "scope": release.get("SYSEXT_SCOPE"),
            "offer": offer,
            "choice": choice,
            "notices": outcome.notices,
            "unusable": unusable,
            "signed": bool(described and described.verity_signer),
            "variants": VARIANT_LABELS,
            "groups": catalogue.versions_by_channel(images, configured, held),
            "paths": {
                c: "/" + extension_url_path(name, c)
                for c in {c for i in images for c in i.channel_names}
            },
            "snippets": snippets,
            "problem": problem,
            "verify": verify,
            "rollout": _rollout_section(service, name, images),
        },
    )


def _rollout_section(service: RegistryService, name: str, images: list[Image]) -> dict[str, Any]:
    """Rollout stages, the fleet chart and the admin form's choices (issue 21). Shown for
    every extension, so that an admin can stage the first rollout from the page too."""
    service.fleet.flush(service)
    status = rollout_ops.status(service, name)
    view = fleet.fleet_view(service, name)
    samples = [
        (dt.datetime.fromisoformat(h["at"]), str(h["version"]), int(h["hosts"]))
        for h in view["history"]
    ]
    current = {v: e["hosts"] for v, e in view["versions"].items() if v != "none"}
    return {
        "empty": not status["rollouts"] and not view["all_hosts"],
        "rollouts": status["rollouts"],
        "fleet": view,
        "chart": adoption_svg(samples, utcnow(), current),
        # The admin form's suggestions: every published version (a version can also be
        # staged before it is published, so the field takes any text) and channel.
        "versions": list(dict.fromkeys(i.release_version for i in images)),  # newest first
        "channels": service.settings.channels,
    }


@router.api_route("/favicon.ico", methods=PAGE_METHODS)
def favicon() -> Response:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


@router.api_route("/api/docs", methods=PAGE_METHODS)
def api_docs(request: Request) -> Response:
    """Swagger UI from the registry's own files, started by /static/api-docs.js: FastAPI's
    get_swagger_ui_html starts it with an inline script, which the pages' CSP refuses."""
    return templates.TemplateResponse(
        request,
        "api-docs.html",
        {"assets": DOCS_ASSETS_URL, "openapi_url": request.app.openapi_url or "/openapi.json"},
    )


def not_found_page(request: Request, message: str) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "404.html", {**_common(request), "message": message}, status_code=404
    )


def _wants_html(request: Request) -> bool:
    """Browsers get the HTML 404; the API, sysupdate and scripts keep JSON."""
    path = request.url.path
    return not path.startswith("/api/") and (
        path.startswith("/catalog/") or "text/html" in request.headers.get("accept", "")
    )


def install(app: FastAPI) -> None:
    """Add the catalogue, its static files, the API docs and the HTML 404 to `app`."""
    app.include_router(router)
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="api-docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and _wants_html(request):
            return not_found_page(request, "There is no page at this address.")
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )
