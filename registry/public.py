"""Routes serving the materialized public tree (DESIGN.md §3 layout)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from registry.files import PublicFileResponse, open_public_file

router = APIRouter()


class _Asgi(Response):
    """Adapter: lets a route return our ASGI callable."""

    def __init__(self, inner: PublicFileResponse) -> None:
        self.inner = inner
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.inner(scope, receive, send)


@router.api_route(
    "/{path:path}", methods=["GET", "HEAD"], include_in_schema=False, response_model=None
)
async def public_file(path: str, request: Request) -> Response:
    opened = open_public_file(request.app.state.settings.public_dir, path)
    if opened is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    fd, st = opened
    return _Asgi(PublicFileResponse(fd, st, path.rsplit("/", 1)[-1]))
