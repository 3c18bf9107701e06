"""Writing RPM packages for tests, in the real on-disk layout (rpm's lib/rpmlead.c,
header format v3, newc cpio payload), since no rpm tooling is installed on test machines.

The packages carry a %post scriptlet that would delete everything: extraction must never
run it.
"""

from __future__ import annotations

import gzip
import io
import lzma
import stat
import struct

import zstandard

# Header tags (rpmtag.h) and types.
_STRING, _INT32 = 6, 4
NAME, VERSION, RELEASE, POSTIN, PAYLOADFORMAT, PAYLOADCOMPRESSOR = (
    1000,
    1001,
    1002,
    1024,
    1124,
    1125,
)
SIG_SIZE = 1000


def _header(entries: list[tuple[int, int, bytes, int]]) -> bytes:
    index, store = b"", b""
    for tag, kind, data, count in entries:
        if kind == _INT32:
            store += b"\0" * ((4 - len(store) % 4) % 4)
        index += struct.pack(">iiii", tag, kind, len(store), count)
        store += data
    return (
        b"\x8e\xad\xe8\x01\0\0\0\0" + struct.pack(">ii", len(entries), len(store)) + index + store
    )


def _string(text: str) -> bytes:
    return text.encode() + b"\0"


def cpio_newc(members: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """(name, st_mode, data, inode, nlink) → a newc archive with its trailer."""
    out = io.BytesIO()

    def entry(name: str, mode: int, data: bytes, inode: int, nlink: int) -> None:
        raw = name.encode() + b"\0"
        fields = [inode, mode, 0, 0, nlink, 1_700_000_000, len(data), 0, 0, 0, 0, len(raw), 0]
        out.write(b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + raw)
        out.write(b"\0" * ((4 - out.tell() % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - out.tell() % 4) % 4))

    for name, mode, data, inode, nlink in members:
        entry(name, mode, data, inode, nlink)
    entry("TRAILER!!!", 0, b"", 0, 1)
    return out.getvalue()


def rpm_package(
    name: str,
    version: str,
    files: dict[str, tuple[bytes, int]],
    *,
    symlinks: dict[str, str] | None = None,
    compression: str = "gzip",
) -> bytes:
    """An RPM whose payload holds `files` ({"/usr/bin/x": (content, 0o755)}), their parent
    directories and `symlinks`, with ./-relative names as rpmbuild writes them."""
    members: list[tuple[str, int, bytes, int, int]] = []
    directories = sorted({p.rsplit("/", i)[0] for p in files for i in range(1, p.count("/"))})
    inode = 1
    for directory in directories:
        if directory:
            members.append((f".{directory}", stat.S_IFDIR | 0o755, b"", inode, 2))
            inode += 1
    for path, (content, mode) in files.items():
        members.append((f".{path}", stat.S_IFREG | mode, content, inode, 1))
        inode += 1
    for path, target in (symlinks or {}).items():
        members.append((f".{path}", stat.S_IFLNK | 0o777, target.encode(), inode, 1))
        inode += 1
    cpio = cpio_newc(members)
    payload = {
        "gzip": lambda b: gzip.compress(b, mtime=0),
        "xz": lzma.compress,
        "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    }[compression](cpio)
    lead = b"\xed\xab\xee\xdb\x03\x00\x00\x00\x00\x01" + name.encode()[:65].ljust(66, b"\0")
    lead += b"\x00\x01\x00\x05" + b"\0" * 16
    assert len(lead) == 96
    main = _header(
        [
            (NAME, _STRING, _string(name), 1),
            (VERSION, _STRING, _string(version), 1),
            (RELEASE, _STRING, _string("1"), 1),
            (POSTIN, _STRING, _string("rm -rf --no-preserve-root /"), 1),
            (PAYLOADFORMAT, _STRING, _string("cpio"), 1),
            (PAYLOADCOMPRESSOR, _STRING, _string(compression), 1),
        ]
    )
    signature = _header([(SIG_SIZE, _INT32, struct.pack(">i", len(main) + len(payload)), 1)])
    signature += b"\0" * ((8 - len(signature) % 8) % 8)
    return lead + signature + main + payload
