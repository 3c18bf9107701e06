"""Reading the payload of an RPM package: its files, never its scripts.

An RPM is a 96-byte lead, a signature header (padded to 8 bytes), the main header, then the
payload: a cpio archive in the "newc" format (`070701`, or `070702` with checksums),
compressed with gzip, xz, zstd or bzip2. Scriptlets live in the main header and are
skipped with it; nothing in a package is ever executed. The compression is recognised by
its magic bytes, so the header's payload tags need not be trusted.

`payload_entries()` yields one `CpioEntry` per member, in archive order; sysext.extract
writes them with the same safety rules as tar members (no escaping paths or links, no
devices, setuid only when allowed).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast

import zstandard

from sysext.core.errors import SysextError

_LEAD_MAGIC = b"\xed\xab\xee\xdb"
_HEADER_MAGIC = b"\x8e\xad\xe8\x01"
_CPIO_MAGICS = (b"070701", b"070702")
_TRAILER = "TRAILER!!!"
_MAX_NAME = 4096


@dataclass(frozen=True)
class CpioEntry:
    name: str
    mode: int  # st_mode: type and permission bits
    inode: int
    nlink: int
    size: int
    data: IO[bytes]  # the member's content (a symlink's target); valid until the next entry

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)


def _skip_header(f: IO[bytes], label: str, *, pad: bool) -> None:
    start = f.read(16)
    if len(start) < 16 or start[:4] != _HEADER_MAGIC:
        raise SysextError(f"{label}: not an RPM package (bad header structure)")
    entries = int.from_bytes(start[8:12], "big")
    store = int.from_bytes(start[12:16], "big")
    size = 16 * entries + store
    if pad:
        size += (8 - (16 + size) % 8) % 8
    f.seek(size, io.SEEK_CUR)


def _decompressed(f: IO[bytes], label: str) -> IO[bytes]:
    magic = f.read(6)
    f.seek(-len(magic), io.SEEK_CUR)
    if magic.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=f))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(f)
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f))
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(f)
    if magic.startswith(_CPIO_MAGICS):
        return f
    raise SysextError(
        f"{label}: RPM payload compression not supported (magic {magic.hex()})",
        "supported: gzip, xz, zstd, bzip2",
    )


class _Bounded(io.RawIOBase):
    """The next `size` bytes of a stream, read once."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f = f
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            return 0
        data = self._f.read(min(len(buffer), self.left))
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)


def _read_exactly(f: IO[bytes], size: int, label: str) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise SysextError(f"{label}: truncated RPM payload")
    return data


def payload_entries(f: IO[bytes], label: str) -> Iterator[CpioEntry]:
    """The cpio members of the RPM read from `f` (positioned at its start)."""
    lead = f.read(96)
    if len(lead) < 96 or lead[:4] != _LEAD_MAGIC:
        raise SysextError(f"{label}: not an RPM package (no lead)")
    _skip_header(f, label, pad=True)
    _skip_header(f, label, pad=False)
    cpio = _decompressed(f, label)
    try:
        yield from _cpio_entries(cpio, label)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise SysextError(f"{label}: unreadable RPM payload ({exc})") from exc


def _cpio_entries(cpio: IO[bytes], label: str) -> Iterator[CpioEntry]:
    offset = 0
    while True:
        header = _read_exactly(cpio, 110, label)
        if header[:6] not in _CPIO_MAGICS:
            raise SysextError(f"{label}: RPM payload is not a newc cpio archive")
        try:
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise SysextError(f"{label}: corrupt cpio header in the RPM payload") from exc
        inode, mode, nlink, size, name_size = fields[0], fields[1], fields[4], fields[6], fields[11]
        if not 0 < name_size <= _MAX_NAME:
            raise SysextError(f"{label}: corrupt cpio member name in the RPM payload")
        raw_name = _read_exactly(cpio, name_size, label)
        name = raw_name.rstrip(b"\0").decode("utf-8", "surrogateescape")
        offset += 110 + name_size
        _read_exactly(cpio, (4 - offset % 4) % 4, label)
        offset += (4 - offset % 4) % 4
        if name == _TRAILER:
            return
        window = _Bounded(cpio, size)
        yield CpioEntry(name, mode, inode, nlink, size, io.BufferedReader(window))
        while window.left > 0:  # what the consumer did not read
            if not window.read(min(window.left, 1 << 20)):
                raise SysextError(f"{label}: truncated RPM payload")
        offset += size
        _read_exactly(cpio, (4 - offset % 4) % 4, label)
        offset += (4 - offset % 4) % 4
