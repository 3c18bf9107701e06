"""SHA256SUMS exactly as systemd-sysupdate reads it (spec §3.3).

The writer emits the one safe form (lower-case hex, two spaces, plain basenames, LF,
final newline, sorted, no comments). The parser is as strict as systemd 252–256: one bad
line refuses the whole manifest, and the error names the line.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sysext.core.atomic import atomic_write
from sysext.core.errors import SysextError

MANIFEST_NAME = "SHA256SUMS"
SIGNATURE_NAME = "SHA256SUMS.gpg"
# 252–256 refuse downloads shorter than this (pull-job.c compression sniffing, §3.3).
MIN_DOWNLOAD_BYTES = 6
_HEX = frozenset(b"0123456789abcdefABCDEF")
_LOWER_HEX64 = re.compile(r"[0-9a-f]{64}")
_MERGE_LOCK = threading.Lock()


class ManifestError(SysextError):
    """A manifest systemd-sysupdate would refuse; `line` is 1-based (0: whole file)."""

    def __init__(self, line: int, reason: str, hint: str | None = None) -> None:
        where = f"line {line}: " if line else ""
        super().__init__(f"SHA256SUMS {where}{reason}", hint)
        self.line = line
        self.reason = reason


@dataclass(frozen=True, order=True)
class ManifestEntry:
    filename: str
    sha256: str  # 64 lower-case hex digits
    binary: bool = False


def filename_problem(name: str) -> str | None:
    """Why systemd's filename_is_valid() (plus the control-char check) refuses `name`."""
    if not name:
        return "empty file name"
    if name in (".", ".."):
        return f"invalid file name {name!r}"
    if "/" in name:
        return f"file name {name!r} contains '/'"
    if len(name.encode()) > 255:
        return "file name longer than 255 bytes"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return f"file name {name!r} contains a control character (CRLF line ending?)"
    return None


def format_manifest(entries: Iterable[ManifestEntry]) -> bytes:
    """The canonical SHA256SUMS bytes for `entries` (sorted by name, one per name)."""
    by_name: dict[str, ManifestEntry] = {}
    for entry in entries:
        problem = filename_problem(entry.filename)
        if problem:
            raise ManifestError(0, problem)
        if not _LOWER_HEX64.fullmatch(entry.sha256.lower()):
            raise ManifestError(0, f"{entry.filename}: not a SHA-256 digest: {entry.sha256!r}")
        if entry.filename.startswith("\\") or " " in entry.filename:
            raise ManifestError(
                0, f"{entry.filename!r}: names must not start with '\\' or hold spaces"
            )
        by_name[entry.filename] = entry
    lines = [f"{by_name[n].sha256.lower()}  {n}\n" for n in sorted(by_name)]
    return "".join(lines).encode("utf-8")


def parse_manifest(data: bytes) -> list[ManifestEntry]:
    """Parse SHA256SUMS the way resource_load_from_web() does; raise ManifestError.

    Works on the bytes with one moving offset (systemd's own approach), so a manifest of
    thousands of lines parses in linear time.
    """
    if b"\0" in data:
        raise ManifestError(0, "contains a NUL byte")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(0, f"not valid UTF-8 (byte {exc.start})") from None
    entries: list[ManifestEntry] = []
    pos = 0
    line = 0
    size = len(data)
    while pos < size:
        line += 1
        # hash (64) + ' ' + marker + at least a newline
        if size - pos < 67:
            raise ManifestError(line, "corrupt manifest: line too short (blank line?)")
        if data[pos] == ord("\\"):
            raise ManifestError(line, "escaped file names are not supported by sysupdate")
        digest = _unhex_window(data[pos : pos + 64], line)
        p = pos + 64
        if data[p] != ord(" "):
            raise ManifestError(line, "expected a space after the digest")
        p += 1
        if data[p] not in b" *":
            raise ManifestError(
                line, "expected two spaces or ' *' after the digest (found one space)"
            )
        binary = data[p] == ord("*")
        p += 1
        end = data.find(b"\n", p)
        if end < 0:
            raise ManifestError(line, "truncated manifest: the last line has no final newline")
        name = data[p:end].decode("utf-8")
        problem = filename_problem(name)
        if problem:
            raise ManifestError(line, problem)
        entries.append(ManifestEntry(name, digest, binary))
        pos = end + 1
    return entries


_UNHEX_SKIPPED = frozenset(b" \t\n\r\v\f")


def _unhex_window(window: bytes, line: int) -> str:
    """Decode the 64-byte digest window; whitespace inside it is skipped (unhexmem quirk)."""
    if b"\n" in window:
        raise ManifestError(line, "corrupt manifest: line too short")
    digits = bytes(c for c in window if c not in _UNHEX_SKIPPED)
    if len(digits) % 2 or any(c not in _HEX for c in digits):
        raise ManifestError(line, "the digest is not hexadecimal (comment or blank line?)")
    if len(digits) != 64:
        raise ManifestError(line, "the digest is not 64 hex digits")
    return digits.decode("ascii").lower()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest_file(path: Path) -> list[ManifestEntry]:
    if not path.exists():
        return []
    return parse_manifest(path.read_bytes())


def merge_into_manifest(path: Path, new: Iterable[ManifestEntry]) -> list[ManifestEntry]:
    """Add or replace entries in the manifest at `path`, written atomically.

    Entries for files no longer present in the directory are dropped, so the manifest
    never lists something a host cannot download.
    """
    directory = path.parent
    # Read-modify-write: matrix builds finish images in several threads at once.
    with _MERGE_LOCK:
        merged = {e.filename: e for e in read_manifest_file(path)}
        for entry in new:
            merged[entry.filename] = entry
        kept = [e for e in merged.values() if (directory / e.filename).exists()]
        atomic_write(path, format_manifest(kept))
    return sorted(kept)
