"""The registry application: `create_app()` is what `sysext serve` runs under uvicorn.

GET/HEAD outside the app's own prefixes are served from the materialized public tree by
an ASGI layer in front of FastAPI (tree.py); the API, the catalogue, its static files
and the provisioning routes go through FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp

from registry.errors import RegistryError
from registry.http import api, guard, key_routes, provision_routes, rollout_routes, tree, web
from registry.http.headers import SecurityHeaders
from registry.http.logs import AccessLogMiddleware, configure_logging
from registry.http.slashes import SlashRedirect
from registry.http.write_auth import WritesNeedAToken
from registry.service import rollout_ops
from registry.service.core import RegistryService
from registry.settings import Settings, load_settings
from sysext import __version__
from sysext.core.errors import SysextError
from sysext.core.logfmt import log_value

log = logging.getLogger("registry")


_frozen = False


def _freeze_startup_objects() -> None:
    """Take what start-up built (modules, the app, SQLAlchemy's mappers, the service) out of
    the garbage collector's sight, once per process: it lives as long as the worker, yet
    every full collection walked all of it — profiled under a poll flood, a full
    collection held the interpreter lock for hundreds of milliseconds, each one a stall of
    every request in flight (the poll path's p99). Objects frozen here are still freed by
    reference counting; only a reference cycle among them that becomes garbage stays."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


async def _maintenance_loop(service: RegistryService) -> None:
    """Re-sign ageing manifests and advance key rotations while the registry runs.

    Checks every 1/24 of the re-sign interval (at most hourly): cheap when nothing is due
    (a signature parse per directory), and it keeps the renewal well inside the interval.
    Every worker runs it; the writer lock and the "due" test make the extra runs no-ops.
    """
    period = min(3600.0, max(1.0, service.signer.policy.resign_interval.total_seconds() / 24))
    while True:
        await asyncio.sleep(period)
        try:
            entered = await run_in_threadpool(service.maintain)
        except Exception:  # keep serving; the next round retries
            log.exception("event=maintenance_failed")
        else:
            if entered:
                log.info("event=key_rotation phase=%s", entered)


async def _rollout_loop(service: RegistryService, period: float) -> None:
    """Every `period` seconds advance rollout schedules, end canary phases, auto-pause,
    sample the fleet (rollout_ops.tick; every worker runs it, the writer lock makes each
    change once). Host sightings are written by the fleet thread (fleet.py); the tick
    writes this worker's first, so it decides on what the worker has seen."""
    while True:
        await asyncio.sleep(period)
        try:
            await run_in_threadpool(service.fleet.flush, service)
            for line in await run_in_threadpool(rollout_ops.tick, service):
                log.info("event=rollout %s", line)
        except Exception:  # keep serving; the next round retries
            log.exception("event=rollout_tick_failed")


def create_app(settings: Settings | None = None) -> ASGIApp:
    """Build the app; prepares the data directory (migrations, key, tree) first."""
    configure_logging()
    settings = settings or load_settings()
    guard.raise_descriptor_limit()  # before the connection cap is derived from it
    guard.configure(
        guard.Limits(
            header_timeout=settings.header_timeout,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.connection_cap,
            max_keepalive_requests=settings.max_keepalive_requests,
            upload_timeout=settings.upload_timeout,
            min_rate=settings.min_rate,
            stall_timeout=settings.stall_timeout,
            linger_timeout=settings.linger_timeout,
        )
    )
    service = RegistryService(settings)
    fingerprint, created = service.prepare()
    log.info(
        "event=ready data=%s key=%s key_created=%s base_url=%s",
        log_value(settings.data_dir),
        fingerprint,
        created,
        log_value(settings.base_url),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _freeze_startup_objects()
        service.fleet.start(service)
        tasks = [
            asyncio.create_task(_maintenance_loop(service)),
            asyncio.create_task(_rollout_loop(service, float(settings.rollout_tick))),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            try:
                service.fleet.stop(service)  # and write what this worker saw last
            except Exception:
                log.exception("event=fleet_flush_failed")

    app = FastAPI(
        lifespan=lifespan,
        title="sysext registry",
        version=__version__,
        description=(
            "Publishes systemd system extensions in systemd-sysupdate's layout. Hosts "
            "fetch `/extensions/NAME/SHA256SUMS` (+ `.gpg`) and the images; writes under "
            "`/api/v1` need a token."
        ),
        docs_url=None,  # web.py serves /api/docs with local Swagger UI files (no CDN)
        redoc_url=None,
        # Starlette's slash redirects put the client's Host header into Location; the
        # router's fallback below redirects with a relative Location instead (slashes.py).
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.fingerprint = fingerprint

    @app.exception_handler(RegistryError)
    async def _registry_error(_request: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    data_dir = str(settings.data_dir.resolve())

    @app.exception_handler(SysextError)
    async def _sysext_error(_request: Request, exc: SysextError) -> JSONResponse:
        # Clients never learn where the server keeps its files.
        return JSONResponse({"detail": exc.message.replace(data_dir, "DATA")}, status_code=422)

    app.add_middleware(WritesNeedAToken, service=service)
    # Outermost of the app's own layers, so refusals and the HTML 404 carry them too.
    app.add_middleware(SecurityHeaders)  # CSP on pages, nosniff everywhere (headers.py)
    app.include_router(api.router)
    app.include_router(key_routes.router)  # signing keys and rotation (issue 14)
    app.include_router(provision_routes.router)  # Butane/Ignition configs (issue 5)
    app.include_router(rollout_routes.router)  # staged rollouts, fleet view (issue 21)
    web.install(app)  # the catalogue, its static files, /api/docs, the HTML 404
    app.router.default = SlashRedirect(app.router.routes, app.router.default)
    # The public tree is answered in front of FastAPI (whose per-request wrappers cost
    # more than serving a cached manifest, docs/registry.md); it logs its own requests,
    # everything else is logged around the FastAPI app.
    if settings.uses_s3:
        return tree.RedirectTree(
            AccessLogMiddleware(app),
            settings.base_url,
            service.fleet,
            service.rollout_trees,
        )
    return tree.PublicTree(AccessLogMiddleware(app), settings.public_dir, service.fleet)
