"""The web catalogue: a small human view of what the registry serves."""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from registry.errors import RegistryError
from registry.service import RegistryService
from sysext.urls import DEFAULT_CHANNEL, KEYRING_BINARY, extension_url_path

# The checkout's web/ (editable installs), else the copy a wheel installs under
# PREFIX/share/sysext/web.
_CHECKOUT_WEB = Path(__file__).resolve().parent.parent / "web"
WEB_DIR = _CHECKOUT_WEB if _CHECKOUT_WEB.is_dir() else Path(sys.prefix) / "share" / "sysext" / "web"
STATIC_DIR = WEB_DIR / "static"
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))
router = APIRouter(include_in_schema=False)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


templates.env.filters["human"] = _human


@router.get("/", response_class=HTMLResponse)
def catalogue(request: Request, q: str = "") -> HTMLResponse:
    service: RegistryService = request.app.state.service
    return templates.TemplateResponse(
        request,
        "index.html",
        {"extensions": service.extensions(q), "q": q, "base_url": _base(request)},
    )


@router.get("/catalog/{name}", response_class=HTMLResponse)
def extension_page(name: str, request: Request) -> HTMLResponse:
    service: RegistryService = request.app.state.service
    images = service.images_of(name)
    if not images:
        raise RegistryError(404, f"no extension named {name!r}")
    channels = sorted({c for i in images for c in i.channel_names})
    channel = DEFAULT_CHANNEL if DEFAULT_CHANNEL in channels else channels[0]
    transfer = service.storage.read_public(f"{extension_url_path(name, channel)}/{name}.conf")
    return templates.TemplateResponse(
        request,
        "extension.html",
        {
            "name": name,
            "images": images,
            "channels": channels,
            "paths": {c: "/" + extension_url_path(name, c) for c in channels},
            "transfer": transfer.decode() if transfer is not None else "",
            "keyring": "/" + KEYRING_BINARY,
            "base_url": _base(request),
        },
    )


def _base(request: Request) -> str:
    service: RegistryService = request.app.state.service
    return service.settings.public_url or str(request.base_url).rstrip("/")
