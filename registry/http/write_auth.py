"""Every API write is authenticated before its body is read (an ASGI middleware)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.errors import RegistryError
from registry.service.auth import Principal, authenticate, bearer_token
from registry.service.core import RegistryService


class WritesNeedAToken:
    """Authenticate every API write before its body is read or parsed.

    FastAPI reads and validates a JSON body before any dependency or endpoint code runs, so
    without this a client with no token learned `422` (and made the server parse its body)
    instead of `401`. Endpoints still check scopes and admin rights themselves.
    """

    def __init__(self, app: ASGIApp, service: RegistryService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in ("GET", "HEAD", "OPTIONS")
            and scope["path"].startswith("/api/")
        ):
            header = Headers(scope=scope).get("authorization")
            try:
                await run_in_threadpool(self._authenticate, header)
            except RegistryError as exc:
                response = JSONResponse({"detail": exc.detail}, status_code=exc.status)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _authenticate(self, header: str | None) -> Principal:
        with self.service.sessions() as session:
            return authenticate(session, bearer_token(header), self.service.settings.admin_token)
