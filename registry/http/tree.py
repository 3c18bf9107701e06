"""Serving the materialized public tree (DESIGN.md §3 layout) ahead of the FastAPI app.

Hosts poll SHA256SUMS often and download big images; these requests take a short pure-ASGI
path in front of FastAPI (no routing, no dependency injection, no validation, none of
FastAPI's per-request wrappers), and small files are answered from memory
(`files.SmallFileCache`). Everything under the app's own prefixes, any other method and
the lifespan go on to the wrapped app.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from registry.http.files import (
    SMALL_FILE,
    Outcome,
    PublicFileResponse,
    SmallFileCache,
    open_public_file,
    send_small,
)
from registry.http.logs import log_request
from registry.service.fleet import (
    FleetRecorder,
    fallback_paths,
    image_path,
    parse_rollout_path,
)

APP_PREFIXES = ("/api/", "/catalog/", "/static/")
APP_PATHS = frozenset({"/", "/openapi.json", "/favicon.ico"})
NOT_FOUND = b'{"detail":"Not Found"}'
BAD_PATH = b'{"detail":"invalid request path: control characters are not allowed"}'
# NUL and other control characters are in no served name and would reach open(), the
# database or the log as they are: refused for every route before anything looks at them.
_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F))
NOT_FOUND_HEADERS = (
    (b"content-type", b"application/json"),
    (b"content-length", str(len(NOT_FOUND)).encode()),
)


class PublicTree:
    """GET/HEAD of the public tree; logs its own requests (one line each, logs.py).

    A managed host's `rollouts/…/BB/HOSTID/FILE` is answered with the bucket's
    `rollouts/…/BB/FILE` and noted in `fleet` (registry/service/fleet.py); a group without
    a directory of its own reads the ungrouped bucket, an extension without a rollout tree
    its channel directory (fleet.fallback_paths)."""

    def __init__(
        self,
        app: ASGIApp,
        public_dir: Path,
        fleet: FleetRecorder | None = None,
    ) -> None:
        self.app = app
        self.public_dir = public_dir
        self._root = str(public_dir)  # string joins: pathlib costs more than the stat
        self.cache = SmallFileCache(public_dir)
        self.fleet = fleet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not _CONTROL.isdisjoint(path) or b"%00" in scope.get("query_string", b""):
            started = time.monotonic()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": (
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(BAD_PATH)).encode()),
                    ),
                }
            )
            await send({"type": "http.response.body", "body": BAD_PATH})
            log_request(scope, 400, len(BAD_PATH), started)
            return
        if (
            scope["method"] not in ("GET", "HEAD")
            or path in APP_PATHS
            or path.startswith(APP_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        outcome = Outcome()
        served = False
        url_path = path[1:]
        rollout = parse_rollout_path(url_path) if path.startswith("/rollouts/") else None
        if rollout is not None:
            url_path = rollout.static_path
            for fallback in fallback_paths(rollout):
                if os.path.isdir(f"{self._root}/{url_path.rsplit('/', 1)[0]}"):
                    break
                url_path = fallback
        try:
            if rollout is not None and rollout.filename.endswith(".raw"):
                # Images keep one URL, the channel's, so caches and CDNs hold each once.
                await _redirect(send, "/" + image_path(rollout), 302, outcome)
                served = True
            else:
                served = await self._serve(scope, receive, send, url_path, outcome)
        finally:
            if served or outcome.status:
                log_request(scope, outcome.status, outcome.sent, started)
            if rollout is not None and self.fleet is not None:
                # A queue append; the database is written by the fleet thread (fleet.py).
                self.fleet.record(rollout, outcome.status in (200, 206, 302, 304))
        if not served:
            # No such file and a person's browser asking: the app answers with its HTML
            # 404 page (and logs the request itself).
            await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, url_path: str, outcome: Outcome
    ) -> bool:
        """Answer from the tree; False (nothing sent) for a missing file asked by a browser."""
        entry = self.cache.lookup(url_path)
        if entry is not None:
            await send_small(scope, send, entry, outcome)
            return True
        opened = open_public_file(self.public_dir, url_path)
        if opened is None and _accepts_html(scope):
            return False
        if opened is None:
            outcome.status = 404
            await send({"type": "http.response.start", "status": 404, "headers": NOT_FOUND_HEADERS})
            body = b"" if scope["method"] == "HEAD" else NOT_FOUND
            await send({"type": "http.response.body", "body": body})
            outcome.sent = len(body)
            return True
        fd, st = opened
        if st.st_size <= SMALL_FILE:
            try:
                entry = self.cache.load(url_path, fd, st)
            finally:
                os.close(fd)
            await send_small(scope, send, entry, outcome)
            return True
        response = PublicFileResponse(fd, st, url_path.rsplit("/", 1)[-1], outcome)
        await response(scope, receive, send)
        return True


async def _redirect(send: Send, location: str, status: int, outcome: Outcome) -> None:
    headers = ((b"location", location.encode()), (b"content-length", b"0"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
    outcome.status = status


def _accepts_html(scope: Scope) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"accept":
            return b"text/html" in value
    return False


class RedirectTree:
    """With object storage the public tree lives in the bucket: GET/HEAD of it from a
    replica answer 307 to the same path under the public URL (hosts normally go there
    directly; systemd-pull and curl follow redirects)."""

    def __init__(
        self,
        app: ASGIApp,
        base_url: str,
        fleet: FleetRecorder | None = None,
        trees: Callable[[], dict[tuple[str, str], frozenset[str]]] | None = None,
    ) -> None:
        self.app = app
        self.base_url = base_url.rstrip("/")
        self.fleet = fleet
        # (name, channel) → groups of the rollout trees in the bucket (cached by the caller).
        self.trees = trees

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
        started = time.monotonic()
        rollout = parse_rollout_path(path[1:]) if path.startswith("/rollouts/") else None
        if rollout is not None:
            # The bucket holds the bucket's directory; the host ID stays with us. Which
            # directories exist is the database's knowledge (no request to the bucket).
            path = "/" + rollout.static_path
            trees = self.trees() if self.trees is not None else {}
            groups = trees.get((rollout.name, rollout.channel))
            fallbacks = fallback_paths(rollout)
            if groups is None or rollout.filename.endswith(".raw"):
                path = "/" + fallbacks[-1]  # images: one shared URL (see PublicTree)
            elif rollout.group is not None and rollout.group not in groups:
                path = "/" + fallbacks[0]
            if self.fleet is not None:
                self.fleet.record(rollout, True)
        location = (self.base_url + path).encode()
        headers = ((b"location", location), (b"content-length", b"0"))
        await send({"type": "http.response.start", "status": 307, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        log_request(scope, 307, 0, started)
