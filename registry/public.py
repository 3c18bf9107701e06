"""Serving the materialized public tree (DESIGN.md §3 layout) ahead of the FastAPI router.

Hosts poll SHA256SUMS often and download big images; these requests take a short pure-ASGI
path (no routing, no dependency injection, no validation), which measured ~2× the
requests/s of a catch-all FastAPI route. Everything under the app's own prefixes, and any
other method, goes on to FastAPI.
"""

from __future__ import annotations

from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from registry.files import PublicFileResponse, open_public_file

APP_PREFIXES = ("/api/", "/catalog/", "/static/")
APP_PATHS = frozenset({"/", "/openapi.json"})
NOT_FOUND = b'{"detail":"Not Found"}'


class PublicTree:
    def __init__(self, app: ASGIApp, public_dir: Path) -> None:
        self.app = app
        self.public_dir = public_dir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or path in APP_PATHS
            or path.startswith(APP_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        opened = open_public_file(self.public_dir, path.removeprefix("/"))
        if opened is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(NOT_FOUND)).encode()),
                    ],
                }
            )
            body = b"" if scope["method"] == "HEAD" else NOT_FOUND
            await send({"type": "http.response.body", "body": body})
            return
        fd, st = opened
        await PublicFileResponse(fd, st, path.rsplit("/", 1)[-1])(scope, receive, send)
