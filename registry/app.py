"""The registry application: `create_app()` is what `sysext serve` runs under uvicorn.

Route order matters: the API, the catalogue and its static files, the provisioning
routes, and last the catch-all that serves the materialized public tree.
"""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from registry import api, public, web
from registry.errors import RegistryError
from registry.logs import AccessLogMiddleware, configure_logging
from registry.service import RegistryService
from registry.settings import Settings, load_settings
from sysext import __version__
from sysext.errors import SysextError

log = logging.getLogger("registry")


def create_app(settings: Settings | None = None) -> FastAPI:
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
    # Butane/Ignition routes (issue 5) live in their own module.
    # TODO(integration): import normally once registry/provision_routes.py has landed.
    try:
        provision_routes = importlib.import_module("registry.provision_routes")
    except ModuleNotFoundError:
        provision_routes = None
    if provision_routes is not None:
        app.include_router(provision_routes.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    app.include_router(public.router)
    app.add_middleware(AccessLogMiddleware)
    return app
