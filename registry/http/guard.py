"""Connection limits uvicorn does not enforce, for a registry that faces clients directly.

Measured against uvicorn 0.54 with httptools (issue 13, finding 2): a connection that never
finishes its request headers is kept forever (any byte cancels the keep-alive timer, and
there is no timer before the first request), headers are buffered without a size limit
(five unfinished 50 MiB headers took the server from 110 to 367 MiB), and idle
connections hold file descriptors until `accept()` fails for everyone. uvicorn's
`limit_concurrency` only answers 503 *after* headers arrive, and `h11_max_incomplete_event_size`
exists only for the slower h11 parser.

`GuardedHttpToolsProtocol` is uvicorn's httptools protocol with four limits added:

- **header deadline**: a request's line and headers must be complete within
  `header_timeout` seconds of the connection opening (or of the previous response on a
  kept-alive connection); slow trickling does not extend it;
- **header size**: more than `max_header_bytes` without the end of the headers → `431`
  and close, so at most that much (plus one read) is buffered per connection;
- **connection cap**: at most `max_connections` per worker; a new connection beyond it
  closes the *oldest idle* one (waiting for headers or kept alive between requests),
  and only when every connection is busy serving is the new one answered `503`;
- **keep-alive**: idle kept-alive connections close after `keepalive_timeout` (uvicorn's
  own timer) and after `max_keepalive_requests` requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("registry")


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    max_header_bytes: int = 64 << 10
    max_connections: int = 512
    max_keepalive_requests: int = 1000


def _reply(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(text)).encode() + b"\r\n\r\n" + text
    )


TOO_LARGE = _reply(
    b"431 Request Header Fields Too Large", b'{"detail":"request headers too large"}'
)
TIMED_OUT = _reply(b"408 Request Timeout", b'{"detail":"request headers not received in time"}')
BUSY = _reply(b"503 Service Unavailable", b'{"detail":"too many connections, retry later"}')


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the limits above (set by `configure()`)."""

    limits: ClassVar[Limits] = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened = time.monotonic()
        self._in_headers = True
        self._header_bytes = 0
        self._answered = 0
        self._deadline: asyncio.TimerHandle | None = None

    # -- connection life ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        return self._in_headers and (self.cycle is None or self.cycle.response_complete)

    def _make_room(self) -> None:
        idle = sorted(
            (
                c
                for c in self.connections
                if c is not self and isinstance(c, GuardedHttpToolsProtocol) and c._idle()
            ),
            key=lambda c: c._opened,
        )
        excess = len(self.connections) - self.limits.max_connections
        for victim in idle[:excess]:
            victim.transport.close()  # idle: nothing of a response is lost
            self.connections.discard(victim)
        if len(self.connections) > self.limits.max_connections:
            log.warning("event=connection-refused reason=all-connections-busy")
            self._reject(BUSY)

    def _reject(self, response: bytes) -> None:
        self._disarm_deadline()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()
        self.connections.discard(self)

    # -- header deadline and size ------------------------------------------------------

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._deadline = self.loop.call_later(self.limits.header_timeout, self._too_slow)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self._in_headers and not self.transport.is_closing():
            # Nothing started (idle keep-alive) gets a silent close, a half-sent request 408.
            self._reject(TIMED_OUT if self._header_bytes else b"")

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.limits.max_header_bytes:
            self._reject(TOO_LARGE)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._disarm_deadline()
        super().on_headers_complete()
        self._answered += 1
        if self._answered >= self.limits.max_keepalive_requests and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What follows on this connection is the next request's headers.
        self._in_headers = True
        self._header_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_deadline()


def configure(limits: Limits) -> None:
    """Set the limits for connections this worker accepts from now on."""
    GuardedHttpToolsProtocol.limits = limits
