"""`sysext check`: read a served directory exactly as systemd-sysupdate 252–256 would,
and as 258–262 would where they differ.

Fetches `URL/SHA256SUMS` (and, when a keyring is given, the signature under the name
252–257 ask for, `SHA256SUMS.gpg`, and the names 258+ walk through, moving on only after a
404: manifest.SIGNATURE_FALLBACK_258) the way systemd-pull does (§3.1, §3.2, §5: plain
GET, no content encoding, redirects followed, 2xx only, ≥ 6 bytes), parses it strictly
(§3.3), verifies the signature (§3.4), honours a `BEST-BEFORE-` marker as 260+ do, lists
what the patterns see, and picks the candidate (§4.3). Every way a host of any of these
versions would fail becomes one CheckError with the reason; warnings cover what a host
would silently get wrong or pay for (extra signature requests).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests
import urllib3

from sysext import __version__
from sysext.core.errors import SysextError
from sysext.systemd.manifest import (
    MANIFEST_NAME,
    MIN_DOWNLOAD_BYTES,
    SIGNATURE_FALLBACK_258,
    SIGNATURE_NAME,
    SIGNATURE_NAME_258,
    BestBefore,
    ManifestEntry,
    best_before_markers,
    parse_manifest,
    without_markers,
)
from sysext.systemd.patterns import (
    HostInfo,
    Pattern,
    PatternMatch,
    expand_match_patterns,
    expand_specifiers,
    match_many,
    parse_pattern,
)
from sysext.systemd.selection import DEFAULT_INSTANCES_MAX, Selection, select_candidate, vacuum_plan
from sysext.systemd.transfer import TransferConfig, transfer_problems
from sysext.systemd.versioning import sort_versions, version_is_valid
from sysext.trust.signing import MAX_SIGNATURE_BYTES, verify_signature

USER_AGENT = f"systemd-pull/sysext-check-{__version__}"
_CHUNK = 1 << 20
# Compression magics systemd-pull 252–256 looks at (import_uncompress_detect(), §3.6).
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DECOMPRESSED_MAGICS = {b"\xfd7zXZ\x00": "xz", b"\x1f\x8b": "gzip", b"BZh": "bzip2"}


class CheckError(SysextError):
    """A reason why systemd-sysupdate on the host would fail."""


class NotFoundError(CheckError):
    """HTTP 404 (or a missing file: URL): the one failure systemd-pull 258+ fall back on."""


# --- URL building (import_url_append_component(), §3.1) -----------------------------------


def append_url_component(url: str, component: str) -> str:
    """Drop ?query and #fragment, strip trailing slashes, append `/component` verbatim."""
    cut = len(url)
    for mark in ("?", "#"):
        index = url.find(mark)
        if index >= 0:
            cut = min(cut, index)
    base = url[:cut].rstrip("/")
    return f"{base}/{component}"


def manifest_url(path: str) -> str:
    return append_url_component(path, MANIFEST_NAME)


def signature_url(path: str, name: str = SIGNATURE_NAME) -> str:
    # The manifest URL with its last component replaced (same result as appending).
    manifest = manifest_url(path)
    return manifest[: manifest.rfind("/") + 1] + name


def payload_url(path: str, filename: str) -> str:
    return append_url_component(path, filename)


# --- fetching -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    url: str
    body: bytes
    final_url: str


def _session() -> requests.Session:
    session = requests.Session()
    # systemd-pull sends no Accept-Encoding: the SHA-256 is over the raw body (§5).
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept-Encoding"] = "identity"
    return session


def _http_failure(url: str, status: int, reason: str) -> CheckError:
    if status == 404:
        return NotFoundError(
            f"{url}: HTTP 404 Not Found",
            "the host fails the same way; check the URL (Path= in the transfer file)",
        )
    return CheckError(
        f"{url}: HTTP {status} {reason}; systemd-pull accepts only 2xx",
        "a registry must answer 200 for files and a real 404 for missing ones",
    )


def _iter_body(session: requests.Session, url: str, limit: int | None) -> Iterator[bytes]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
        try:
            with open(path, "rb") as f:
                while block := f.read(_CHUNK):
                    yield block
        except FileNotFoundError:
            raise NotFoundError(f"{url}: no such file") from None
        except IsADirectoryError:
            raise CheckError(f"{url}: is a directory") from None
        return
    if parsed.scheme not in ("http", "https"):
        raise CheckError(
            f"{url}: unsupported URL scheme {parsed.scheme!r}",
            "sysupdate only fetches http://, https:// and file: URLs",
        )
    try:
        response = session.get(url, stream=True, timeout=(15, 60), allow_redirects=True)
    except requests.RequestException as exc:
        raise CheckError(f"{url}: cannot connect ({type(exc).__name__})") from None
    with response:
        if not 200 <= response.status_code < 300:
            raise _http_failure(url, response.status_code, response.reason or "")
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise CheckError(
                f"{url}: served with Content-Encoding: {encoding}",
                "serve files as-is: systemd-pull does not ask for or undo content encoding",
            )
        expected = response.headers.get("Content-Length")
        received = 0
        try:
            for block in response.raw.stream(_CHUNK, decode_content=False):
                received += len(block)
                if limit is not None and received > limit:
                    raise CheckError(f"{url}: larger than the {limit} bytes systemd-pull accepts")
                yield block
        except requests.RequestException as exc:
            raise CheckError(f"{url}: download failed ({type(exc).__name__})") from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # truncated, reset…
            raise CheckError(f"{url}: download failed ({_short(exc)})") from None
        if expected is not None and expected.isdigit() and int(expected) != received:
            raise CheckError(
                f"{url}: Content-Length {expected} but {received} bytes received",
                "systemd-pull fails such downloads ('Download truncated')",
            )


def _short(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.splitlines()[0][:200]


def fetch(session: requests.Session, url: str, *, limit: int | None = None) -> bytes:
    return b"".join(_iter_body(session, url, limit))


# --- the check ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AvailableVersion:
    version: str
    filename: str
    sha256: str
    url: str
    suspicious: str | None = None  # why this may not be an image of this extension


@dataclass(frozen=True)
class CheckReport:
    path: str
    manifest_url: str
    signature_url: str | None
    patterns: tuple[str, ...]
    manifest_entries: int
    available: tuple[AvailableVersion, ...]  # newest first
    ignored: tuple[str, ...]  # manifest names no pattern matches
    installed: tuple[str, ...]
    selection: Selection
    signer: str | None = None  # fingerprint when the signature was verified
    signature_expires: dt.datetime | None = None  # None: never (or not checked)
    payload_verified: str | None = None  # file name whose SHA-256 was checked
    warnings: tuple[str, ...] = field(default=())
    # Signature requests a 258+ host makes per poll (1 when SHA256SUMS.sha256.asc exists).
    signature_requests_258: int | None = None
    best_before: BestBefore | None = None  # the earliest marker (systemd 260+), if any
    # Installed versions `update` would delete first (transfer_vacuum(), space=1).
    vacuum: tuple[str, ...] = ()

    @property
    def candidate(self) -> AvailableVersion | None:
        chosen = self.selection.candidate
        return next((a for a in self.available if a.version == chosen), None)

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def problem(self) -> str | None:
        """Why `systemd-sysupdate update` would not end with a usable extension."""
        candidate = self.candidate
        if candidate is not None and candidate.suspicious:
            return f"the host would install {candidate.filename}: {candidate.suspicious}"
        if self.selection.candidate is not None or self.selection.up_to_date:
            return None
        return self.selection.reason

    def to_json(self) -> dict[str, Any]:
        sel = self.selection
        return {
            "path": self.path,
            "manifest_url": self.manifest_url,
            "signature_url": self.signature_url,
            "verified_by": self.signer,
            "signature_expires": (
                self.signature_expires.isoformat() if self.signature_expires else None
            ),
            "signature_requests_258": self.signature_requests_258,
            "best_before": self.best_before.date.isoformat() if self.best_before else None,
            "patterns": list(self.patterns),
            "manifest_entries": self.manifest_entries,
            "available": [
                {
                    "version": a.version,
                    "filename": a.filename,
                    "sha256": a.sha256,
                    "url": a.url,
                    "suspicious": a.suspicious,
                }
                for a in self.available
            ],
            "ignored": list(self.ignored),
            "installed": list(self.installed),
            "candidate": sel.candidate,
            "newest_available": sel.newest_available,
            "newest_installed": sel.newest_installed,
            "reason": sel.reason,
            "payload_verified": self.payload_verified,
            "would_remove": list(self.vacuum),
            "warnings": list(self.warnings),
            "ok": self.ok,
            "problem": self.problem,
        }


def default_pattern(url: str) -> str:
    """NAME-@v-%a.raw, NAME being the URL's last path component (the registry layout)."""
    path = urllib.parse.urlsplit(append_url_component(url, "x")).path
    parts = [p for p in path.split("/") if p][:-1]
    if not parts:
        raise CheckError(
            f"cannot guess the extension name from {url!r}",
            "pass --pattern NAME-@v-%a.raw",
        )
    return f"{parts[-1]}-@v-%a.raw"


def _suspicion(match: PatternMatch, name: str, patterns: list[Pattern]) -> str | None:
    if match_many(patterns, name, strict=True) is None:
        return (
            "the pattern matched only a prefix of the name (systemd 252–256 ignore trailing"
            " text, §7.2); keep sidecar files out of SHA256SUMS"
        )
    head = match.version.split("-", 1)[0]
    if "-" in match.version and head and not any(c.isdigit() for c in head):
        return (
            f"version {match.version!r} looks like another extension's name"
            " (the docker/docker-compose trap, §2.3); give each extension its own directory"
        )
    return None


def installed_versions(directory: Path, patterns: Iterable[Pattern]) -> list[str]:
    """Versions of the regular files in a target directory (symlinks are ignored, §2.5)."""
    if not directory.is_dir():
        return []
    pats = list(patterns)
    found: list[str] = []
    for entry in sorted(directory.iterdir()):
        if entry.is_symlink() or not entry.is_file() or entry.name.startswith(".#"):
            continue
        match = match_many(pats, entry.name)
        if match is not None:
            found.append(match.version)
    return found


def check_remote(
    url: str,
    *,
    keyring: Path | bytes | None,
    patterns: list[str] | None,
    host: HostInfo,
    installed_dir: Path | None = None,
    installed: Iterable[str] = (),
    min_version: str | None = None,
    verify_payload: bool = False,
    target_patterns: list[str] | None = None,
    instances_max: int = DEFAULT_INSTANCES_MAX,
    protected: Iterable[str] = (),
    session: requests.Session | None = None,
) -> CheckReport:
    """Do what `systemd-sysupdate check-new` does for one url-file transfer, and explain.

    `patterns` are the source patterns (default NAME-@v-%a.raw from the URL);
    `target_patterns` recognise installed files in `installed_dir` (default: the source
    patterns, as sysupdate copies them when [Target] has none).
    """
    session = session or _session()
    raw_patterns = patterns or [default_pattern(url)]
    compiled = [parse_pattern(expand_specifiers(p, host, max_length=255)) for p in raw_patterns]
    compiled_target = [
        parse_pattern(expand_specifiers(p, host, max_length=255)) for p in target_patterns or []
    ] or compiled
    m_url = manifest_url(url)
    manifest = fetch(session, m_url)
    if len(manifest) < MIN_DOWNLOAD_BYTES:
        raise CheckError(
            f"{m_url}: {len(manifest)} bytes; systemd 252–256 fail downloads shorter than"
            f" {MIN_DOWNLOAD_BYTES} bytes, so this is an error on hosts, not 'no versions'",
            "publish at least one image before pointing hosts at this directory",
        )
    s_url: str | None = None
    signer: str | None = None
    expires: dt.datetime | None = None
    requests_258: int | None = None
    warnings: list[str] = []
    if keyring is not None:
        s_url = signature_url(url)
        signatures = _fetch_signatures(session, url)
        requests_258 = signatures.requests_258
        info = verify_signature(keyring, manifest, signatures.legacy)
        if signatures.newer != signatures.legacy:
            try:
                verify_signature(keyring, manifest, signatures.newer)
            except SysextError as exc:
                raise CheckError(
                    f"{signatures.newer_url} (what systemd 258+ verify): {exc.message}",
                    exc.hint,
                ) from None
        signer, expires = info.signer, info.expires
        if requests_258 > 1:
            warnings.append(
                f"systemd 258+ hosts make {requests_258} signature requests per poll"
                f" ({SIGNATURE_NAME_258} is missing, they move on after each 404): publish"
                f" the signature under that name too (sysext sign and the registry do)"
            )
    entries = parse_manifest(manifest)
    markers = best_before_markers(entries)
    if markers and markers[0].expired():
        raise CheckError(
            markers[0].expired_message(),
            "re-sign with a fresh marker (a running registry does so on every re-signing;"
            " by hand: sysext sign DIR --key KEY --best-before 7d)",
        )
    warnings += [w for m in markers if (w := m.hash_warning)]
    available, ignored, classify_warnings = _classify(url, without_markers(entries), compiled)
    warnings += classify_warnings
    if keyring is not None:
        expiry_warning = info.expiry_warning()
        if expiry_warning:
            warnings.append(expiry_warning)
    installed_list = list(installed)
    if installed_dir is not None:
        installed_list += installed_versions(installed_dir, compiled_target)
        if not installed_dir.is_dir():
            # Seen with the real 254 client: resource_resolve_path() chases [Target] Path=
            # without CHASE_NONEXISTENT, so 254+ stop before downloading (252 created it).
            warnings.append(
                f"target directory {installed_dir} does not exist: systemd 254+ fail with"
                f" \"Failed to resolve '{installed_dir}'\"; create it first (mkdir -p)"
            )
    if not available:
        names = ", ".join(sorted(set(ignored))[:5]) or "none"
        raise CheckError(
            f"no entry of {m_url} matches {' '.join(p.text for p in compiled)} (listed: {names})",
            "check --arch/--os-release (for %a/%w) and the MatchPattern= of the transfer",
        )
    selection = select_candidate(
        [a.version for a in available], installed_list, min_version=min_version
    )
    vacuum = (
        vacuum_plan(
            installed_list,
            instances_max=instances_max,
            protected=protected,
            candidate=selection.candidate,
        )
        if selection.candidate is not None
        else []
    )
    report = CheckReport(
        path=url,
        manifest_url=m_url,
        signature_url=s_url,
        patterns=tuple(p.text for p in compiled),
        manifest_entries=len(entries),
        available=tuple(available),
        ignored=tuple(ignored),
        installed=tuple(sort_versions(installed_list, newest_first=True)),
        selection=selection,
        signer=signer,
        signature_expires=expires,
        warnings=tuple(warnings),
        vacuum=tuple(vacuum),
        signature_requests_258=requests_258,
        best_before=markers[0] if markers else None,
    )
    if verify_payload:
        target = report.candidate or next(
            (a for a in available if a.version == selection.newest_available), None
        )
        if target is not None:
            extra = _verify_payload(session, target)
            report = replace(
                report, payload_verified=target.filename, warnings=tuple(warnings + extra)
            )
    return report


@dataclass(frozen=True)
class _Signatures:
    legacy: bytes  # SHA256SUMS.gpg, all 252–257 fetch
    newer: bytes  # the first name of SIGNATURE_FALLBACK_258 that did not answer 404
    newer_url: str
    requests_258: int  # how many requests that took a 258+ host


def _fetch_signatures(session: requests.Session, url: str) -> _Signatures:
    """The signature as 252–257 fetch it and as 258+ fetch it (pull-common.c, §3.4)."""
    legacy_url = signature_url(url)
    try:
        legacy = fetch(session, legacy_url, limit=MAX_SIGNATURE_BYTES)
    except CheckError as exc:
        raise CheckError(
            f"signature: {exc.message} (systemd 252–257 ask for no other name)",
            "with Verify=yes the detached SHA256SUMS.gpg is mandatory; sign the"
            " directory (sysext sign) or the host refuses every update",
        ) from None
    for count, name in enumerate(SIGNATURE_FALLBACK_258, start=1):
        candidate = signature_url(url, name)
        if candidate == legacy_url:
            return _Signatures(legacy, legacy, candidate, count)
        try:
            newer = fetch(session, candidate, limit=MAX_SIGNATURE_BYTES)
        except NotFoundError:
            continue
        except CheckError as exc:
            raise CheckError(
                f"signature: {exc.message}; systemd 258+ try the next signature name only"
                " after a 404, so hosts on 258+ fail here ('Failed to retrieve signature"
                " file')",
                f"publish the signature as {SIGNATURE_NAME_258} too (sysext sign and the"
                " registry do), or make the server answer 404 for missing files",
            ) from None
        return _Signatures(legacy, newer, candidate, count)
    raise AssertionError("SHA256SUMS.gpg is in the fallback chain")  # pragma: no cover


def _classify(
    url: str, entries: list[ManifestEntry], patterns: list[Pattern]
) -> tuple[list[AvailableVersion], list[str], list[str]]:
    found: list[AvailableVersion] = []
    ignored: list[str] = []
    warnings: list[str] = []
    for entry in entries:  # BEST-BEFORE markers taken out, as systemd 260+ do
        match = match_many(patterns, entry.filename)
        if match is None:
            ignored.append(entry.filename)
            continue
        listed_hash = match.fields.get("sha256")
        if listed_hash is not None and listed_hash.lower() != entry.sha256:
            raise CheckError(
                f"{entry.filename}: the @h hash in the name differs from its SHA256SUMS line",
                "sysupdate refuses the whole manifest for this",
            )
        suspicious = _suspicion(match, entry.filename, patterns)
        if suspicious:
            warnings.append(f"{entry.filename}: {suspicious}")
        if " " in entry.filename:
            warnings.append(f"{entry.filename!r}: spaces do not survive URL building (§3.3)")
        found.append(
            AvailableVersion(
                match.version,
                entry.filename,
                entry.sha256,
                payload_url(url, entry.filename),
                suspicious,
            )
        )
    ordered = sort_versions([a.version for a in found], newest_first=True)
    rank = {v: i for i, v in reversed(list(enumerate(ordered)))}
    found.sort(key=lambda a: (rank[a.version], a.filename))
    return found, ignored, warnings


def _verify_payload(session: requests.Session, target: AvailableVersion) -> list[str]:
    """GET the image and compare its SHA-256 with the manifest, like `--verify <hex>`."""
    digest = hashlib.sha256()
    head = b""
    for block in _iter_body(session, target.url, None):
        if len(head) < 8:
            head += block[:8]
        digest.update(block)
    actual = digest.hexdigest()
    if actual != target.sha256:
        raise CheckError(
            f"{target.filename}: SHA-256 mismatch (manifest {target.sha256}, served {actual})",
            "the host fails with 'DOWNLOAD INVALID'; re-sign after replacing files",
        )
    warnings: list[str] = []
    if head.startswith(_ZSTD_MAGIC):
        warnings.append(
            f"{target.filename} is zstd-compressed: systemd 252–257 store it still compressed"
        )
    for magic, kind in _DECOMPRESSED_MAGICS.items():
        if head.startswith(magic):
            warnings.append(f"{target.filename} is {kind}: sysupdate installs it decompressed")
    return warnings


# --- reading the inputs from a transfer file ----------------------------------------------

# Keyrings systemd-pull 252–257 use for Verify=yes: the first that exists, never merged
# (src/import/pull-common.c verify_gpg(), v252 to v257).
HOST_KEYRINGS = (
    Path("/etc/systemd/import-pubring.gpg"),
    Path("/usr/lib/systemd/import-pubring.gpg"),
)
# systemd 258 renamed the keyrings (commit ff401d5d, NEWS 258): /etc/systemd/import-pubring.pgp,
# then the legacy /etc/systemd/import-pubring.gpg, then /usr/lib/systemd/import-pubring.pgp;
# on 258–261 the first that exists is used alone. 262 reads $SYSTEMD_OPENPGP_KEYRING alone if
# set, else the /etc one plus the vendor one (NEWS 262), see component_keyring().
HOST_KEYRINGS_258 = (
    Path("/etc/systemd/import-pubring.pgp"),
    Path("/etc/systemd/import-pubring.gpg"),
    Path("/usr/lib/systemd/import-pubring.pgp"),
)


@dataclass(frozen=True)
class TransferCheck:
    """What `check_remote` needs, read from a transfer file as sysupdate reads it."""

    url: str
    patterns: list[str]
    target_patterns: list[str]
    installed_dir: Path | None
    min_version: str | None
    verify: bool
    instances_max: int = DEFAULT_INSTANCES_MAX
    protected: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def transfer_check(config: TransferConfig, host: HostInfo) -> TransferCheck:
    """The url-file → regular-file inputs of a parsed transfer file (spec §2.2, §2.3)."""
    problems = transfer_problems(config)
    if problems:
        raise CheckError(f"transfer file: {problems[0]}", "fix the transfer file; see §2.2")
    warnings: list[str] = []
    url = expand_specifiers(config.get("Source", "Path") or "", host)

    def patterns_of(section: str) -> list[str]:
        found: list[str] = []
        for value in config.values(section, "MatchPattern"):
            if not value.strip():
                found.clear()
                continue
            expanded = expand_match_patterns(value, host)
            if expanded.warning:
                warnings.append(
                    f"[{section}] {expanded.warning}: dropped {' '.join(expanded.dropped)}"
                )
            found += [p for p in expanded.patterns if p not in found]
        return found

    source = patterns_of("Source")
    if not source:
        raise CheckError("transfer file: Source specification lacks MatchPattern=")
    target = patterns_of("Target") or source
    min_version = config.get("Transfer", "MinVersion")
    if min_version and "%" in min_version:
        # 252–256 validate the unexpanded value, so any specifier invalidates the line.
        warnings.append(f"MinVersion={min_version} is ignored by systemd 252–256 (specifier)")
        min_version = None
    target_dir = config.get("Target", "Path")
    verify = (config.get("Transfer", "Verify", "yes") or "yes").lower() in (
        "1", "yes", "y", "true", "t", "on",
    )  # fmt: skip
    instances_max = DEFAULT_INSTANCES_MAX
    raw_max = config.get("Target", "InstancesMax")
    if raw_max:
        if not raw_max.isdigit():
            raise CheckError(f"transfer file: InstancesMax={raw_max} is not a number")
        # Values below 2 are bumped to 2 with a warning (config_parse_instances_max()).
        instances_max = max(int(raw_max), 2)
    protected: list[str] = []
    for value in config.values("Transfer", "ProtectVersion"):
        try:
            expanded = expand_specifiers(value, host)
        except SysextError as exc:
            warnings.append(f"ProtectVersion={value} ignored: {exc.message}")
            continue
        if version_is_valid(expanded):
            protected.append(expanded)
        else:  # e.g. %A on a host without IMAGE_VERSION: ignored with a warning
            warnings.append(f"ProtectVersion={value} ignored: {expanded!r} is not a valid version")
    return TransferCheck(
        url=url,
        patterns=source,
        target_patterns=target,
        installed_dir=Path(target_dir) if target_dir else None,
        min_version=min_version or None,
        verify=verify,
        instances_max=instances_max,
        protected=tuple(protected),
        warnings=tuple(warnings),
    )


def host_systemd_version(root: Path = Path("/")) -> int | None:
    """The host's systemd major version, from its libsystemd-shared-NNN.so (no exec)."""
    for pattern in (
        "usr/lib/systemd/libsystemd-shared-*.so",
        "usr/lib/*/systemd/libsystemd-shared-*.so",
    ):
        for found in sorted(root.glob(pattern)):
            number = found.name.removeprefix("libsystemd-shared-").removesuffix(".so")
            if number.split(".")[0].isdigit():
                return int(number.split(".")[0])
    return None


def host_keyring(root: Path = Path("/"), systemd_version: int | None = None) -> Path:
    """The keyring a host's Verify=yes uses (§3.4, and the 258 order); error when none
    exists. `systemd_version` None: read from the host, 252–257 order when unknown."""
    version = systemd_version if systemd_version is not None else host_systemd_version(root)
    candidates = HOST_KEYRINGS_258 if version is not None and version >= 258 else HOST_KEYRINGS
    for path in candidates:
        if (root / path.relative_to("/")).exists():
            return root / path.relative_to("/")
    raise CheckError(
        "Verify=yes, but none of " + ", ".join(str(p) for p in candidates) + " exists",
        "trust the registry key without dropping the vendor one: sysext transfer NAME "
        "--registry URL --commands prints the steps (docs/provisioning.md, The keyring)",
    )


# Where `sysext butane` keeps the registry's keys; its update units pass it to systemd-pull
# 262+ as $SYSTEMD_OPENPGP_KEYRING (sysext/provision/keyring_combine.py).
REGISTRY_KEYRING = Path("/etc/sysext/keyring.gpg")


def component_keyring(root: Path = Path("/"), systemd_version: int | None = None) -> Path:
    """The keyring a `sysext-update-NAME.service` verifies with: the registry keyring on
    systemd 262+ (the unit sets $SYSTEMD_OPENPGP_KEYRING), else what this systemd reads."""
    version = systemd_version if systemd_version is not None else host_systemd_version(root)
    registry = root / REGISTRY_KEYRING.relative_to("/")
    if version is not None and version >= 262 and registry.exists():
        return registry
    try:
        return host_keyring(root, version)
    except CheckError:
        if registry.exists():  # not combined yet: keyring_warnings says so
            return registry
        raise


def component_transfer_file(root: Path, name: str, systemd_version: int | None = None) -> Path:
    """The transfer file systemd-sysupdate reads for component NAME: NAME.transfer on 257+
    when it exists (then NAME.conf is ignored), else NAME.conf (spec §2.1)."""
    version = systemd_version if systemd_version is not None else host_systemd_version(root)
    directory = root / f"etc/sysupdate.{name}.d"
    transfer = directory / f"{name}.transfer"
    if (version is None or version >= 257) and transfer.exists():
        return transfer
    return directory / f"{name}.conf"


def keyring_warnings(root: Path = Path("/"), systemd_version: int | None = None) -> list[str]:
    """What makes a host verify with another keyring than the one sysext configs install."""
    version = systemd_version if systemd_version is not None else host_systemd_version(root)
    etc_pgp = root / "etc/systemd/import-pubring.pgp"
    etc_gpg = root / "etc/systemd/import-pubring.gpg"
    registry = root / REGISTRY_KEYRING.relative_to("/")
    if registry.exists() and not etc_gpg.exists() and (version is None or version < 262):
        return [
            f"{etc_gpg} does not exist: sysext-keyring.service has not combined the vendor "
            f"keyring with {REGISTRY_KEYRING} yet (systemctl start sysext-keyring.service); "
            "systemd before 262 cannot verify the extension until it has"
        ]
    if etc_pgp.exists() and etc_gpg.exists() and (version is None or version >= 258):
        return [
            f"{etc_pgp} exists: systemd 258+ verify with it and ignore {etc_gpg} "
            "(the file sysext configs install); put the registry key into the .pgp keyring"
        ]
    return []
