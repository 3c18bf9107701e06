"""The registry application: `create_app()` is what `sysext serve` runs under uvicorn.

GET/HEAD outside the app's own prefixes are served from the materialized public tree by
an ASGI layer in front of FastAPI (public.py); the API, the catalogue, its static files
and the provisioning routes go through FastAPI.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from registry import api, provision_routes, public, web
from registry.errors import RegistryError
from registry.logs import AccessLogMiddleware, configure_logging
from registry.service import RegistryService
from registry.settings import Settings, load_settings
from sysext import __version__
from sysext.errors import SysextError

log = logging.getLogger("registry")


def create_app(settings: Settings | None = None) -> ASGIApp:
    """Build the app; prepares the data directory (migrations, key, tree) first."""
    configure_logging()
    settings = settings or load_settings()
    service = RegistryService(settings)
    fingerprint, created = service.prepare()
    log.info(
        "event=ready data=%s key=%s key_created=%s base_url=%s",
        settings.data_dir,
        fingerprint,
        created,
        settings.base_url,
    )
    app = FastAPI(
        title="sysext registry",
        version=__version__,
        description=(
            "Publishes systemd system extensions in systemd-sysupdate's layout. Hosts "
            "fetch `/extensions/NAME/SHA256SUMS` (+ `.gpg`) and the images; writes under "
            "`/api/v1` need a token."
        ),
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.fingerprint = fingerprint

    @app.exception_handler(RegistryError)
    async def _registry_error(_request: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(SysextError)
    async def _sysext_error(_request: Request, exc: SysextError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=422)

    app.include_router(api.router)
    app.include_router(provision_routes.router)  # Butane/Ignition configs (issue 5)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    # The public tree is answered in front of FastAPI (whose per-request wrappers cost
    # more than serving a cached manifest, docs/registry.md); it logs its own requests,
    # everything else is logged around the FastAPI app.
    if settings.uses_s3:
        return public.RedirectTree(AccessLogMiddleware(app), settings.base_url)
    return public.PublicTree(AccessLogMiddleware(app), settings.public_dir)
