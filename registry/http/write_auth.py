"""Every API write (but a host's report), and every admin-only read, is authenticated
before anything else runs (an ASGI middleware); refused writes are audited.

FastAPI reads and validates a JSON body and the query before any dependency or endpoint
code runs, so without this a client with no token learned `422` (and made the server parse
its input) instead of `401`: `GET /api/v1/audit?limit=abc` answered 422 (issue 19, finding
15). Endpoints still check scopes and admin rights themselves, under their writer lock.

A write answered 401 or 403, here or by the endpoint, is recorded in the audit trail
(`write.denied`) before the answer leaves, so whoever reads the trail sees failed attempts
too. A client without a token can send such requests as fast as it likes, so each worker
records at most DENIED_PER_MINUTE of them a minute and counts the rest in the next entry
(`suppressed`): the trail stays a trail, not a disk-filling amplifier.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.errors import RegistryError
from registry.service import audit
from registry.service.auth import Principal, authenticate, bearer_token, require_admin
from registry.service.core import RegistryService

log = logging.getLogger("registry")

DENIED_PER_MINUTE = 60
# Admin-only reads and what the admin does there (the 403 says it).
ADMIN_READS = {"/api/v1/audit": "read the audit trail", "/api/v1/tokens": "list tokens"}
_DENIED = (401, 403)
# The one write without a token: a managed host's report (hosts have no credentials). It
# changes no state anything acts on, and is bounded in size and rate (host_reports.py).
ANONYMOUS_WRITE = re.compile(r"/api/v1/extensions/[^/]+/reports")


class DeniedBudget:
    """At most `per_minute` recorded refusals per minute (per worker); the rest counted."""

    def __init__(self, per_minute: int = DENIED_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._window = 0
        self._used = 0
        self._suppressed = 0

    def take(self) -> int | None:
        """None: do not record this one; else the number suppressed since the last one."""
        minute = int(time.monotonic() // 60)
        with self._lock:
            if minute != self._window:
                self._window, self._used = minute, 0
            if self._used >= self.per_minute:
                self._suppressed += 1
                return None
            self._used += 1
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed


class WritesNeedAToken:
    """Authenticate every API write and admin read before its input is read or parsed."""

    def __init__(self, app: ASGIApp, service: RegistryService) -> None:
        self.app = app
        self.service = service
        self.budget = DeniedBudget()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        write = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        if write and scope["method"] == "POST" and ANONYMOUS_WRITE.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        admin_read = None if write else ADMIN_READS.get(scope["path"].rstrip("/"))
        if not write and admin_read is None:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization")
        principal: Principal | None = None
        try:
            principal = await run_in_threadpool(self._authenticate, header)
            if admin_read is not None:
                require_admin(principal, admin_read)
        except RegistryError as exc:
            if write:
                await self._record_denied(scope, principal, exc.status, exc.detail)
            response = JSONResponse({"detail": exc.detail}, status_code=exc.status)
            await response(scope, receive, send)
            return
        if not write:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._auditing_send(scope, principal, send))

    def _auditing_send(self, scope: Scope, principal: Principal, send: Send) -> Send:
        """`send`, except that a 401/403 answer is held until its refusal is recorded."""
        held: list[Message] = []

        async def auditing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in _DENIED:
                held.append(message)
                return
            if held:
                held.append(message)
                if message["type"] != "http.response.body" or message.get("more_body"):
                    return
                body = b"".join(m.get("body", b"") for m in held[1:])
                await self._record_denied(scope, principal, held[0]["status"], _detail(body))
                for waiting in held:
                    await send(waiting)
                held.clear()
                return
            await send(message)

        return auditing_send

    async def _record_denied(
        self, scope: Scope, principal: Principal | None, status: int, reason: str
    ) -> None:
        suppressed = self.budget.take()
        if suppressed is None:
            return
        client = scope.get("client")
        actor = audit.Actor(
            principal or audit.SYSTEM,
            audit.client_text(client[0] if client else ""),
            None if principal is not None else "anonymous",
        )
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{scope['method']} {scope['path']}" + (f"?{query}" if query else "")
        detail: dict[str, Any] = {"status": status, "reason": reason[:300]}
        if suppressed:
            detail["suppressed"] = suppressed
        try:
            await run_in_threadpool(
                audit.record_now, self.service.sessions, actor, audit.Action.DENIED, target, detail
            )
        except Exception:  # the refusal stands even when it cannot be recorded
            log.exception("event=audit-failed action=write.denied")

    def _authenticate(self, header: str | None) -> Principal:
        with self.service.sessions() as session:
            return authenticate(session, bearer_token(header), self.service.settings.admin_token)


def _detail(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    detail = answer.get("detail") if isinstance(answer, dict) else None
    return detail if isinstance(detail, str) else ""
