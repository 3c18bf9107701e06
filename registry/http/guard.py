"""Connection limits uvicorn does not enforce, for a registry that faces clients directly.

Measured against uvicorn 0.54 with httptools (issue 13, finding 2): a connection that never
finishes its request headers is kept forever (any byte cancels the keep-alive timer, and
there is no timer before the first request), headers are buffered without a size limit
(five unfinished 50 MiB headers took the server from 110 to 367 MiB), and idle
connections hold file descriptors until `accept()` fails for everyone. uvicorn's
`limit_concurrency` only answers 503 *after* headers arrive, and `h11_max_incomplete_event_size`
exists only for the slower h11 parser. Issue 19 (finding 2) found the phases after the
headers open too: a body trickled at one byte every 3 s, into a request that was already
answered (a GET of a public file declaring a 1 GB body, a PUT after its 401) or not, and a
client that never reads its response, each held a connection for as long as it liked,
counted as busy, so ~2,000 of them made every new request a 503.

`GuardedHttpToolsProtocol` is uvicorn's httptools protocol with a deadline in every phase
of a connection, a header size limit and a connection cap:

- **headers**: a request's line and headers must be complete within `header_timeout`
  seconds of the connection opening (or of the previous response on a kept-alive
  connection); slow trickling does not extend it. More than `max_header_bytes` → `431`
  and close, whether the headers arrive in many reads or one (the size is counted both
  on the raw bytes of unfinished headers and on the parsed request line and fields);
- **body**: a request body must keep up with `min_rate` bytes/s after `stall_timeout`
  seconds of grace (the deadline starts at `stall_timeout` and every `min_rate` bytes
  received add a second, as Apache's mod_reqtimeout does), and be complete within
  `upload_timeout`; time the server itself does not read (its buffer full while the app
  works, or before it asked for the body of an `Expect: 100-continue`) is not counted.
  Too slow before the answer → `408` and close;
- **answered, body still coming** ("linger"): once the response is complete, the rest of
  the body is read and dropped (so a client still sending gets the answer, not a reset)
  for at most `linger_timeout` seconds, under the same body rule;
- **sending**: while the response waits in the server's buffer for a client that does not
  take it (the transport paused writing, or the connection is closing with bytes left),
  the client must take `min_rate` bytes/s after `stall_timeout` seconds of grace, or the
  connection is reset (a plain close would wait for the buffer to drain, forever, and
  the kernel would keep what it holds for the client after that);
- **keep-alive**: idle kept-alive connections close after `keepalive_timeout` (uvicorn's
  own timer) and after `max_keepalive_requests` requests;
- **connection cap**: at most `max_connections` per worker; a new connection beyond it
  closes first connections that were answered and still trickle a body, then the oldest
  idle ones (waiting for headers or kept alive between requests), then responses stalled
  for a second or more on a client that does not read (the longest stalled first), and
  only when every connection is busy serving is the new one answered `503`.

One timer per connection, armed for the earliest deadline of its phase and re-evaluated
when it fires (bytes arriving only move deadlines later, so they never touch the timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("registry")


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    max_header_bytes: int = 64 << 10
    max_connections: int = 512
    max_keepalive_requests: int = 1000
    upload_timeout: float = 3600.0
    min_rate: int = 1024
    stall_timeout: float = 10.0
    linger_timeout: float = 30.0


def _reply(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(text)).encode() + b"\r\n\r\n" + text
    )


TOO_LARGE = _reply(
    b"431 Request Header Fields Too Large", b'{"detail":"request headers too large"}'
)
TIMED_OUT = _reply(b"408 Request Timeout", b'{"detail":"request headers not received in time"}')
BODY_TIMED_OUT = _reply(
    b"408 Request Timeout", b'{"detail":"request body not received in time (too slow)"}'
)
BUSY = _reply(b"503 Service Unavailable", b'{"detail":"too many connections, retry later"}')

# Cut-offs are counted and logged as one line per LOG_EVERY seconds: under attack a line
# per connection would be thousands a minute.
LOG_EVERY = 10.0
_cuts: dict[str, int] = {}
_cuts_flush: asyncio.TimerHandle | None = None


def _count_cut(loop: asyncio.AbstractEventLoop, reason: str) -> None:
    global _cuts_flush
    _cuts[reason] = _cuts.get(reason, 0) + 1
    if _cuts_flush is None:
        _cuts_flush = loop.call_later(LOG_EVERY, _flush_cuts)


def _flush_cuts() -> None:
    global _cuts_flush
    _cuts_flush = None
    counts = " ".join(f"{reason}={count}" for reason, count in sorted(_cuts.items()))
    _cuts.clear()
    log.warning("event=connections-cut seconds=%.0f %s", LOG_EVERY, counts)


# What the kernel may hold for a client beyond what is in flight (TCP_NOTSENT_LOWAT).
# Autotuning grew the send buffer of a client that never reads (4 KiB window) to 2.8 MB
# on loopback: 2,000 slow readers pinned gigabytes of kernel memory, and the server copied
# all of it. The bytes in flight are not limited, so throughput to a reading client is not
# either; the server writes whenever less than this waits in the kernel.
UNSENT_LIMIT = 128 << 10


# A response is "stalled" (evictable before refusing a new connection) once its client
# has not taken 48 KiB of it for this long.
STALLED = 1.0


def _reset(transport: asyncio.Transport) -> None:
    """Close with a reset: the kernel drops what it still holds for the client at once.

    A plain close (even asyncio's abort) leaves the kernel sending the rest to a client
    that does not read it: an orphaned socket holding up to its send buffer (megabytes
    on loopback) for minutes of zero-window probes.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _HeadersTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request already answered 431."""


class _WatchedFlow(FlowControl):
    """uvicorn's flow control, telling the protocol when the server pauses or resumes
    reading: time the server does not read is not held against a slow body."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        super().__init__(transport)
        self._protocol = protocol

    def pause_reading(self) -> None:
        super().pause_reading()
        self._protocol._update_body_clock()

    def resume_reading(self) -> None:
        super().resume_reading()
        self._protocol._update_body_clock()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the limits above (set by `configure()`)."""

    limits: ClassVar[Limits] = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        now = self.loop.time()
        self._opened = now
        self._answered = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # headers
        self._in_headers = True
        self._header_started = now
        self._header_bytes = 0  # raw bytes of unfinished headers
        self._parsed_header_bytes = 0  # request line and fields, as parsed
        self._refused = False
        # body: None when no body is expected
        self._body_started: float | None = None
        self._body_bytes = 0
        self._held_since: float | None = None  # the server is not reading the body
        self._held_total = 0.0
        self._answered_at: float | None = None  # response complete, body still coming
        # sending: a stall episode, from when the client stopped taking the response
        self._send_since: float | None = None
        self._send_base = 0

    # -- connection life ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _WatchedFlow(transport, self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, UNSENT_LIMIT)
        self._header_started = self.loop.time()
        self._tick()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _evictable(self) -> tuple[int, float] | None:
        """Eviction order under the cap (lowest first), None: busy, never evicted.

        Answered connections still trickling a body lose nothing by closing; idle ones
        next, those whose last response still sits unread in the buffer after them. Last,
        and only instead of refusing the new connection, responses whose client has not
        taken any for a while (the longest stalled first): a reading client's stalls last
        milliseconds.
        """
        if self.transport is None or self.transport.is_closing():
            return None
        if self._answered_at is not None:
            return (0, self._answered_at)
        if self._in_headers and (self.cycle is None or self.cycle.response_complete):
            return (2 if self.transport.get_write_buffer_size() else 1, self._opened)
        if self._send_since is not None and self.loop.time() - self._send_since >= STALLED:
            return (3, self._send_since)
        return None

    def _make_room(self) -> None:
        ranked = sorted(
            (rank, id(c), c)
            for c in self.connections
            if c is not self
            and isinstance(c, GuardedHttpToolsProtocol)
            and (rank := c._evictable()) is not None
        )
        excess = len(self.connections) - self.limits.max_connections
        for _, _, victim in ranked[:excess]:
            victim._evict()
        if len(self.connections) > self.limits.max_connections:
            _count_cut(self.loop, "refused-all-busy")
            self._reject(BUSY)

    def _evict(self) -> None:
        if self._answered_at is not None:
            reason = "evicted-answered"
        elif self._in_headers:
            reason = "evicted-idle"
        else:
            reason = "evicted-stalled"
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
        _count_cut(self.loop, reason)
        self._disarm()
        # The descriptor is needed now: a buffer nobody reads is not waited for.
        if self.transport.get_write_buffer_size():
            _reset(self.transport)
        else:
            self.transport.close()
        self.connections.discard(self)

    def _reject(self, response: bytes) -> None:
        """Answer `response` (if any) and close; the app can write nothing after it."""
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # uvicorn's send() drops what the app still sends
            cycle.message_event.set()  # and receive() tells the app the client is gone
        if not self.transport.is_closing():
            if self.transport.get_write_buffer_size():
                # It does not take what it was sent before: it would not read this either.
                # (Bytes only the kernel still holds are delivered after a plain close: a
                # slow but reading client gets the tail of its download.)
                _reset(self.transport)
            else:
                if response:
                    self.transport.write(response)
                self.transport.close()
                self._watch_send()
        self.connections.discard(self)

    # -- the one timer -----------------------------------------------------------------

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline(self) -> tuple[float, str] | None:
        """The earliest deadline of the connection's phases, and which one it is."""
        limits = self.limits
        found: list[tuple[float, str]] = []
        if self._send_since is not None:
            taken = max(0, self._send_base - self.transport.get_write_buffer_size())
            allowed = limits.stall_timeout + taken / limits.min_rate
            found.append((self._send_since + allowed, "send"))
        if self.transport.is_closing():
            return min(found, default=None)
        if self._in_headers and (self.cycle is None or self.cycle.response_complete):
            found.append((self._header_started + limits.header_timeout, "headers"))
        if self._body_started is not None and self._held_since is None:
            allowed = limits.stall_timeout + self._body_bytes / limits.min_rate
            allowed = min(limits.upload_timeout, allowed)
            found.append((self._body_started + self._held_total + allowed, "body"))
        if self._answered_at is not None:
            found.append((self._answered_at + limits.linger_timeout, "linger"))
        return min(found, default=None)

    def _tick(self) -> None:
        """Cut the connection if its deadline passed, else have the timer fire by then."""
        if self.transport is None:
            return
        found = self._deadline()
        if found is None:
            self._disarm()
            return
        at, phase = found
        if at <= self.loop.time():
            self._cut(phase)
        elif self._timer is None or self._timer_at > at:
            self._disarm()
            self._timer_at = at
            self._timer = self.loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._tick()

    def _cut(self, phase: str) -> None:
        _count_cut(self.loop, phase)
        if phase == "send":
            # Nothing more can reach this client: drop the buffer, free the descriptor.
            self._disarm()
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            _reset(self.transport)
            self.connections.discard(self)
        elif phase == "headers":
            # Nothing started (idle keep-alive) gets a silent close, a half-sent request 408.
            self._reject(TIMED_OUT if self._header_bytes else b"")
        elif self.cycle is not None and not self.cycle.response_started:
            self._reject(BODY_TIMED_OUT)
        else:
            self._reject(b"")  # answered already, or mid-response: nothing to add

    # -- headers ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        # uvicorn's data_received, except that a request refused inside a parser callback
        # (431) is not also answered 400 and logged as invalid.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refused:
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        if self._in_headers and self._header_bytes > self.limits.max_header_bytes:
            self._refuse_headers()
            return
        self._tick()

    def _refuse_headers(self) -> None:
        self._refused = True
        _count_cut(self.loop, "headers-too-large")
        self._reject(TOO_LARGE)

    def _count_header_bytes(self, size: int) -> None:
        # The raw count above misses headers that arrive complete in one read: the parser
        # has consumed them before it could be checked (a 70 KB header got a 200).
        self._parsed_header_bytes += size
        if self._parsed_header_bytes > self.limits.max_header_bytes:
            self._refuse_headers()
            raise _HeadersTooLarge

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_header_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count_header_bytes(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        now = self.loop.time()
        self._body_started = now  # until on_message_complete says there is no more
        self._body_bytes = 0
        self._held_since = None
        self._held_total = 0.0
        self._answered_at = None
        super().on_headers_complete()
        self._answered += 1
        if self._answered >= self.limits.max_keepalive_requests and self.cycle is not None:
            self.cycle.keep_alive = False
        self._update_body_clock()

    # -- body ----------------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def _update_body_clock(self) -> None:
        """Stop the body clock while the server holds the body, restart it after."""
        if self._body_started is None:
            return
        cycle = self.cycle
        held = self.flow.read_paused or (
            cycle is not None and cycle.waiting_for_100_continue and not cycle.response_complete
        )
        if held and self._held_since is None:
            self._held_since = self.loop.time()
        elif not held and self._held_since is not None:
            self._held_total += self.loop.time() - self._held_since
            self._held_since = None
            self._tick()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What follows on this connection is the next request's headers.
        self._in_headers = True
        self._header_bytes = 0
        self._body_started = None
        self._held_since = None
        if self._answered_at is not None:
            self._answered_at = None
            self._header_started = self.loop.time()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            self._watch_send()
            return
        now = self.loop.time()
        self._header_started = now
        if self._body_started is not None:
            self._answered_at = now  # answered before the whole body arrived: linger
        self._tick()

    # -- sending -----------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_since is None:
            self._send_since = self.loop.time()
            self._send_base = self.transport.get_write_buffer_size()
        self._tick()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._send_since = None
        if self.transport.is_closing():
            self._watch_send()  # what is left must still be taken
        else:
            self._tick()

    def _watch_send(self) -> None:
        """A closing connection with bytes left waits for them (asyncio's close): start a
        stall episode so a client that never reads them is aborted instead."""
        if self._send_since is None and self.transport.get_write_buffer_size():
            self._send_since = self.loop.time()
            self._send_base = self.transport.get_write_buffer_size()
        self._tick()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
            self._watch_send()


def raise_descriptor_limit(ceiling: int = 1 << 16) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (at most `ceiling`); returns it.

    The soft default of 1024 (systemd's for services) exists for programs using select();
    the event loop uses epoll, and systemd.exec(5) asks such programs to raise it
    themselves. With 1024, a worker's connections and the images they send ran out of
    descriptors under 2,000 slow clients (issue 19).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


def configure(limits: Limits) -> None:
    """Set the limits for connections this worker accepts from now on."""
    GuardedHttpToolsProtocol.limits = limits
