"""Trailing-slash redirects whose Location never comes from the request's Host header.

Starlette's router answers `GET /api/v1/extensions/` with `307 Location:
http://HOST/api/v1/extensions`, HOST being whatever the client sent in `Host:` (issue 19,
finding 10): behind a cache that is a poisoned redirect to another site. The app turns
that off (`redirect_slashes=False`) and this fallback, run where the router would answer
404, redirects with a relative Location (RFC 9110 §10.2.2) to the same path with or
without its trailing slash, when a route matches that.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send


class SlashRedirect:
    """The router's `default` app: a relative 307 to the other slash form, else `fallback`."""

    def __init__(self, routes: Sequence[BaseRoute], fallback: ASGIApp) -> None:
        self.routes = routes
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        location = self._location(scope) if scope["type"] == "http" else None
        if location is None:
            await self.fallback(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 307,
                "headers": [(b"location", location), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    def _location(self, scope: Scope) -> bytes | None:
        path: str = scope["path"]
        if path == "/" or not path.startswith("/"):
            return None
        other = path.rstrip("/") if path.endswith("/") else path + "/"
        # "//host" would be a scheme-relative URL: another site again.
        if not other.startswith("/") or other.startswith("//") or "\\" in other:
            return None
        probe = {**scope, "path": other}
        if not any(route.matches(probe)[0] is not Match.NONE for route in self.routes):
            return None
        raw = scope.get("raw_path") or path.encode()
        target = raw.rstrip(b"/") if path.endswith("/") else raw + b"/"
        query = scope.get("query_string", b"")
        return target + (b"?" + query if query else b"")
