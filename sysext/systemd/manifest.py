"""SHA256SUMS exactly as systemd-sysupdate reads it (spec §3.3).

The writer emits the one safe form (lower-case hex, two spaces, plain basenames, LF,
final newline, sorted, no comments). The parser is as strict as systemd 252–256: one bad
line refuses the whole manifest, and the error names the line.

**Signature names.** systemd-pull 252–257 fetch only `SHA256SUMS.gpg`. From 258 on
(NEWS 258: ASCII-armored signatures) `pull_make_verification_jobs()` asks for
`SHA256SUMS.sha256.asc` first and `pull_job_restart_with_signature()` moves on to
`SHA256SUMS.sha256.gpg`, `SHA256SUMS.gpg`, `SHA256SUMS.asc` **only after an HTTP 404**
(pull-job.c; read in the 262 source). Every client verifies whatever it fetched with the
same `gpg --verify SIG -`, and gpg recognises binary and armored signatures by their
bytes, not by the name. So the one detached signature is published under the name each
generation asks for first (`SIGNATURE_NAMES`): one signature request per poll, on any
version, and no request that could meet a 403 (an S3 bucket without anonymous ListBucket
answers 403 for a missing key, which ends a 258+ update).

**Freshness marker.** systemd 260+ (`process_magic_file()` in sysupdate-resource.c) treat
a line naming `BEST-BEFORE-YYYY-MM-DD` as a marker: once that date's 00:00 UTC has passed
they refuse the whole manifest (ESTALE, unless `$SYSTEMD_SYSUPDATE_VERIFY_FRESHNESS=0`);
a date that does not parse makes the line an ordinary name again (with a warning); a hash
other than the empty file's only warns. 252–259 see a name no pattern matches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sysext.core.atomic import atomic_write
from sysext.core.errors import SysextError

MANIFEST_NAME = "SHA256SUMS"
SIGNATURE_NAME = "SHA256SUMS.gpg"  # what systemd 252–257 fetch, and nothing else
# What systemd 258+ fetch first; one 404 after another walks SIGNATURE_FALLBACK_258.
SIGNATURE_NAME_258 = "SHA256SUMS.sha256.asc"
SIGNATURE_FALLBACK_258 = (
    SIGNATURE_NAME_258,
    "SHA256SUMS.sha256.gpg",
    SIGNATURE_NAME,
    "SHA256SUMS.asc",
)
# Every name the signature is published under (same bytes): one request on any version.
SIGNATURE_NAMES = (SIGNATURE_NAME, SIGNATURE_NAME_258)
BEST_BEFORE_PREFIX = "BEST-BEFORE-"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# glibc strptime("%Y-%m-%d") as parse_calendar_date() calls it: 1–4 year digits, 1–2 for
# month and day, optional spaces before each number, nothing after.
_CALENDAR_DATE = re.compile(r" *([0-9]{1,4})- *([0-9]{1,2})- *([0-9]{1,2})")
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


# --- BEST-BEFORE-YYYY-MM-DD (systemd 260+) ---------------------------------------------------


def best_before_date(filename: str) -> dt.date | None:
    """The date of a `BEST-BEFORE-…` marker, or None when systemd 260+ would not treat
    `filename` as one (not the prefix, or a date parse_calendar_date() refuses: then the
    line is an ordinary name, matched against the patterns like any other)."""
    rest = filename.removeprefix(BEST_BEFORE_PREFIX)
    if rest == filename:
        return None
    match = _CALENDAR_DATE.fullmatch(rest)
    if match is None:
        return None
    year, month, day = (int(g) for g in match.groups())
    if year < 1970:  # timegm() before the epoch: parse_calendar_date() fails
        return None
    try:
        return dt.date(year, month, day)  # refuses Feb 30 like the normalisation check
    except ValueError:
        return None


def best_before_deadline(date: dt.date) -> dt.datetime:
    """The moment systemd 260+ start refusing a manifest marked BEST-BEFORE-`date`:
    00:00 UTC of that day (refused while `deadline < now`)."""
    return dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)


def best_before_entry(date: dt.date) -> ManifestEntry:
    """The marker line for `date`: the empty file's hash, as systemd expects."""
    return ManifestEntry(f"{BEST_BEFORE_PREFIX}{date:%Y-%m-%d}", EMPTY_SHA256)


def best_before_for(expires: dt.datetime) -> dt.date:
    """The marker date for a signature that expires at `expires`: the last 00:00 UTC not
    after it, so 260+ hosts never accept the manifest longer than gpg accepts its
    signature (at most a day less)."""
    return expires.astimezone(dt.UTC).date()


@dataclass(frozen=True)
class BestBefore:
    """A marker as systemd 260+ read it."""

    date: dt.date
    filename: str
    sha256: str

    @property
    def deadline(self) -> dt.datetime:
        return best_before_deadline(self.date)

    def expired(self, now: dt.datetime | None = None) -> bool:
        return self.deadline < (now or dt.datetime.now(dt.UTC))

    @property
    def hash_warning(self) -> str | None:
        if self.sha256 == EMPTY_SHA256:
            return None
        return (
            f"{self.filename}: its hash is not the empty file's; systemd 260+ warn and"
            " proceed (the content is reserved for future use)"
        )

    def describe(self) -> str:
        when = f"{self.deadline:%Y-%m-%d %H:%M} UTC"
        return f"{self.filename}: systemd 260+ refuse this manifest from {when}"

    def expired_message(self) -> str:
        return (
            f"SHA256SUMS lists {self.filename}: systemd 260+ refuse this manifest since"
            f" {self.deadline:%Y-%m-%d %H:%M} UTC ('Best before marker indicates out-of-date"
            " file list'); 252–259 ignore the line and would still update"
        )


def best_before_markers(entries: Iterable[ManifestEntry]) -> list[BestBefore]:
    """Every marker in `entries` (systemd 260+ honour them all: the earliest decides)."""
    found = []
    for entry in entries:
        date = best_before_date(entry.filename)
        if date is not None:
            found.append(BestBefore(date, entry.filename, entry.sha256))
    return sorted(found, key=lambda m: m.date)


def without_markers(entries: Iterable[ManifestEntry]) -> list[ManifestEntry]:
    """`entries` as systemd 260+ match them against patterns (markers taken out)."""
    return [e for e in entries if best_before_date(e.filename) is None]
