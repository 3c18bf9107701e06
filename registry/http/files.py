"""Serving the materialized public tree the way sysupdate, Ignition and curl expect (§5).

GET and HEAD; exact Content-Length; Last-Modified; a strong ETag with If-None-Match → 304;
single byte ranges (206, 416 when unsatisfiable, If-Range honoured); never a
Content-Encoding (sysupdate hashes the bytes as received); real 404s; a year of
`immutable` caching for images (a published name never changes content) and a short one
for manifests, signatures and transfer files. Images go out in 1 MiB chunks (64 KiB
chunks measured 6× slower here, DESIGN.md §4).

The file is opened once, before anything is sent, and streamed from that descriptor: a
snapshot swap in the middle of a response cannot mix two files' bytes or lengths.

Small files (manifests, signatures, transfer files, keyrings: what every host polls) are
kept in memory with their response headers precomputed (`SmallFileCache`): a hit costs
one stat() and one send, which is what lifts SHA256SUMS requests/s (docs/registry.md).
"""

from __future__ import annotations

import email.utils
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.lowlevel
from starlette.types import Receive, Scope, Send

from registry.storage.layout import cache_control, content_type

CHUNK = 1 << 20
SMALL_FILE = 256 << 10
CACHE_BYTES = 64 << 20  # per worker process; manifests are a few KiB each
Headers = Sequence[tuple[bytes, bytes]]
ReadRange = Callable[[int, int], bytes]  # bytes [start, end) of the file being answered


def open_public_file(root: Path, url_path: str) -> tuple[int, os.stat_result] | None:
    """Open `root/url_path` for reading, or None for anything that must be a 404.

    Refused: empty segments (directories), segments starting with '.' (so `..`, hidden
    temporaries `.#…` and never anything outside `root`), and anything not a regular file.
    """
    segments = url_path.split("/")
    if not url_path or any(not s or s.startswith(".") or "\\" in s for s in segments):
        return None
    try:
        fd = os.open(root.joinpath(*segments), os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return None
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def strong_etag(st: os.stat_result) -> str:
    # Files in the tree are never rewritten in place (new inode on every change), so
    # inode+size+mtime identify the bytes exactly: a valid *strong* validator.
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def _etag_matches(header: str, etag: str) -> bool:
    # If-None-Match uses the weak comparison (RFC 9110 §13.1.2).
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(start, end_exclusive), None to ignore the header, or "unsatisfiable"."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multi-ranges: answer with the whole file (allowed)
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                return "unsatisfiable" if suffix == 0 else None
            return (max(size - suffix, 0), size) if size else "unsatisfiable"
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start < 0 or (last and end <= start):
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size)


def read_cached(fd: int, size: int, offset: int) -> bytes | None:
    """Read without blocking when the bytes are in the page cache, else None.

    RWF_NOWAIT (Linux ≥ 4.14) fails with EAGAIN instead of waiting for the disk: hot
    images are read right on the event loop (a thread hop per 1 MiB chunk measured ~25%
    slower at 20 clients), cold ones in a worker thread so the loop never stalls.
    """
    buffer = bytearray(size)
    try:
        count = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
    except OSError:  # EAGAIN (not cached), or no RWF_NOWAIT support here
        return None
    if count <= 0:
        return None
    return bytes(memoryview(buffer)[:count])


@dataclass(frozen=True, slots=True)
class FileHeaders:
    """What the response headers say about one version of one file, computed once."""

    size: int
    etag: str
    last_modified: str
    validators: Headers  # sent with every answer, 304 included (RFC 9110 §15.4.5)
    content_type: bytes

    @classmethod
    def of(cls, name: str, st: os.stat_result) -> FileHeaders:
        etag = strong_etag(st)
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        validators = (
            (b"etag", etag.encode()),
            (b"last-modified", last_modified.encode()),
            (b"cache-control", cache_control(name).encode()),
            (b"accept-ranges", b"bytes"),
        )
        return cls(st.st_size, etag, last_modified, validators, content_type(name).encode())


@dataclass(slots=True)
class Outcome:
    """Status and body bytes of one answer, for the access log."""

    status: int = 0
    sent: int = 0


@dataclass(frozen=True, slots=True)
class SmallFile:
    """A small public file held in memory, valid while its path stats to `identity`."""

    fs_path: str
    identity: tuple[int, int, int, int]
    body: bytes
    meta: FileHeaders
    full_headers: Headers  # the plain 200 answer to GET and HEAD, ready to send


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


@dataclass
class SmallFileCache:
    """Small public files by URL path, each checked with one stat() per request.

    Correct across publishes without any invalidation message: the tree only ever
    changes by renaming a new file (or a new snapshot directory symlink) into place, so
    after a swap the path stats to another inode and the entry is re-read. (nginx's
    open_file_cache skips even that stat for a while; here one per request keeps a
    swapped manifest from being served stale at all.) Bounded by `budget` bytes, oldest
    entries out first.
    """

    root: Path
    budget: int = CACHE_BYTES
    entries: dict[str, SmallFile] = field(default_factory=dict)
    used: int = 0

    def lookup(self, url_path: str) -> SmallFile | None:
        entry = self.entries.get(url_path)
        if entry is None:
            return None
        try:
            st = os.stat(entry.fs_path)
        except OSError:
            st = None
        if st is not None and identity(st) == entry.identity:
            return entry
        self._drop(url_path)
        return None

    def load(self, url_path: str, fd: int, st: os.stat_result) -> SmallFile:
        """Read an opened small file (≤ SMALL_FILE) into the cache; the caller owns `fd`.

        Read from the descriptor whose fstat() is `st`, so bytes, ETag and length all
        describe one inode even when a publish swaps the path meanwhile.
        """
        body = os.pread(fd, st.st_size, 0)
        meta = FileHeaders.of(url_path.rsplit("/", 1)[-1], st)
        headers = (
            *meta.validators,
            (b"content-type", meta.content_type),
            (b"content-length", str(len(body)).encode()),
        )
        fs_path = os.fspath(self.root.joinpath(url_path))
        entry = SmallFile(fs_path, identity(st), body, meta, headers)
        if len(body) != st.st_size:
            return entry  # cannot happen to an immutable file: answer, but do not keep it
        self._drop(url_path)
        while self.entries and self.used + len(body) > self.budget:
            self._drop(next(iter(self.entries)))
        self.entries[url_path] = entry
        self.used += len(body)
        return entry

    def _drop(self, url_path: str) -> None:
        entry = self.entries.pop(url_path, None)
        if entry is not None:
            self.used -= len(entry.body)


def _conditional_headers(scope: Scope) -> tuple[str | None, str | None, str | None]:
    """If-None-Match, Range and If-Range of a request (names are lower-case in ASGI)."""
    inm = range_header = if_range = None
    for key, value in scope["headers"]:
        if key == b"if-none-match":
            inm = value.decode("latin-1")
        elif key == b"range":
            range_header = value.decode("latin-1")
        elif key == b"if-range":
            if_range = value.decode("latin-1")
    return inm, range_header, if_range


async def send_small(scope: Scope, send: Send, entry: SmallFile, outcome: Outcome) -> None:
    """Answer from memory; the common case (no conditional header) sends ready-made headers."""
    inm, range_header, if_range = _conditional_headers(scope)
    if inm is None and range_header is None:
        body = b"" if scope["method"] == "HEAD" else entry.body
        outcome.status = 200
        await send({"type": "http.response.start", "status": 200, "headers": entry.full_headers})
        await send({"type": "http.response.body", "body": body})
        outcome.sent = len(body)
        return
    plan = _plan(entry.meta, inm, range_header, if_range)
    await _send_planned(scope, send, plan, outcome, lambda start, end: entry.body[start:end])


@dataclass(frozen=True, slots=True)
class _Plan:
    status: int
    headers: list[tuple[bytes, bytes]]
    start: int = 0
    end: int = 0
    body: bytes | None = None  # a fixed body (416), else bytes [start, end) of the file


def _plan(
    meta: FileHeaders, inm: str | None, range_header: str | None, if_range: str | None
) -> _Plan:
    headers = list(meta.validators)
    if inm is not None and _etag_matches(inm, meta.etag):
        return _Plan(304, headers, body=b"")
    headers.append((b"content-type", meta.content_type))
    size = meta.size
    status, start, end = 200, 0, size
    if range_header and (if_range is None or if_range in (meta.etag, meta.last_modified)):
        parsed = parse_range(range_header, size)
        if parsed == "unsatisfiable":
            body = b"range not satisfiable\n"
            headers[-1] = (b"content-type", b"text/plain; charset=utf-8")
            headers += [
                (b"content-range", f"bytes */{size}".encode()),
                (b"content-length", str(len(body)).encode()),
            ]
            return _Plan(416, headers, body=body)
        if isinstance(parsed, tuple):
            status, (start, end) = 206, parsed
            headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
    headers.append((b"content-length", str(end - start).encode()))
    return _Plan(status, headers, start, end)


async def _send_planned(
    scope: Scope, send: Send, plan: _Plan, outcome: Outcome, read: ReadRange
) -> bool:
    """Send the start and any non-streamed body; True when the caller must stream."""
    outcome.status = plan.status
    await send({"type": "http.response.start", "status": plan.status, "headers": plan.headers})
    if plan.body is not None or scope["method"] == "HEAD":
        body = b"" if scope["method"] == "HEAD" else plan.body or b""
        await send({"type": "http.response.body", "body": body})
        outcome.sent = len(body)
        return False
    if plan.end - plan.start <= SMALL_FILE:
        # Manifests, signatures, transfer files: one read, one send.
        body = read(plan.start, plan.end)
        await send({"type": "http.response.body", "body": body})
        outcome.sent = len(body)
        return False
    return True


@dataclass
class PublicFileResponse:
    """An ASGI response streaming an already opened file descriptor (closed at the end)."""

    fd: int
    st: os.stat_result
    name: str
    outcome: Outcome = field(default_factory=Outcome)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            plan = _plan(FileHeaders.of(self.name, self.st), *_conditional_headers(scope))
            read: ReadRange = lambda start, end: os.pread(self.fd, end - start, start)  # noqa: E731
            if await _send_planned(scope, send, plan, self.outcome, read):
                await self._stream(receive, send, plan.start, plan.end)
        finally:
            os.close(self.fd)

    async def _stream(self, receive: Receive, send: Send, start: int, end: int) -> None:
        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch_disconnect)
            offset = start
            while offset < end:
                size = min(CHUNK, end - offset)
                chunk = read_cached(self.fd, size, offset) or await anyio.to_thread.run_sync(
                    os.pread, self.fd, size, offset
                )
                if not chunk:  # the file cannot shrink (immutable); end cleanly anyway
                    await send({"type": "http.response.body", "body": b""})
                    break
                offset += len(chunk)
                self.outcome.sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": offset < end})
                # Once the client is gone, uvicorn's send() returns without suspending:
                # without this checkpoint the watcher never runs and the loop reads the
                # rest of the image into nothing, stalling every other request of the
                # worker (seen as ~300 ms p99 for SHA256SUMS right after a download run).
                await anyio.lowlevel.checkpoint()
            group.cancel_scope.cancel()
