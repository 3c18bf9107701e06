"""Structured logs: one `key=value` line per request (and per registry event)."""

from __future__ import annotations

import logging
import sys
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("registry.access")


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("time=%(asctime)s level=%(levelname)s %(message)s"))
    for name in ("registry", "registry.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def _quote(value: str) -> str:
    if value and all(c.isprintable() and c not in ' "=' for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AccessLogMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware buffering), so streaming stays streaming."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                "method=%s path=%s status=%d bytes=%d duration_ms=%.1f client=%s",
                scope["method"],
                _quote(scope["path"]),
                status or 500,
                sent,
                (time.monotonic() - started) * 1000,
                client[0],
            )
