"""Downloads into a content-addressed cache, verified while streaming.

Every payload of a recipe has a known sha256 before it is fetched (pinned in the recipe or
read from the upstream checksum file), so the cache is keyed by that hash:
`CACHE/downloads/sha256/HEX`. A cached blob is re-hashed on every use; a corrupt one is
thrown away and fetched again. Interrupted transfers continue from
`CACHE/downloads/partial/HEX.part` with an HTTP Range request. `file://` URLs and plain
local paths are read in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from sysext import __version__
from sysext.core.errors import SysextError
from sysext.core.mirrors import MirrorMap
from sysext.core.steps import byte_progress

log = logging.getLogger("sysext.core.download")

CHUNK = 1 << 20
# Network reads are smaller: a transfer that breaks off loses at most one of these, and the
# resume (HTTP Range) continues after the last one written.
NETWORK_CHUNK = 1 << 16
USER_AGENT = f"sysext/{__version__}"


class DownloadError(SysextError):
    """A download failed; the message names the URL."""


def _describe(url: str, fetched: str) -> str:
    return url if url == fetched else f"{url} (via mirror {fetched})"


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> Path:
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    return Path(url)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_cache_dir(path: Path) -> Path:
    """Create a directory of the cache, or say clearly why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SysextError(
            f"cache directory {path}: {exc.strerror}",
            "pass a writable --cache-dir or set SYSEXT_CACHE_DIR",
        ) from exc
    return path


@dataclass(frozen=True)
class Downloader:
    """Fetches URLs through the mirror map into the cache (see the module docstring)."""

    cache_dir: Path
    mirrors: MirrorMap = field(default_factory=MirrorMap)
    refresh: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.25

    # -- small files (checksum lists, API JSON): never cached, never partial ---------------

    def fetch_bytes(self, url: str, *, limit: int = 16 << 20) -> bytes:
        """GET a small document; raise DownloadError naming the URL on any failure."""
        if is_local(url):
            path = local_path(url)
            try:
                return path.read_bytes()[: limit + 1]
            except OSError as exc:
                raise DownloadError(f"cannot read {url}: {exc.strerror}") from exc
        return self.fetch_page(url, limit=limit)[0]

    def fetch_page(self, url: str, *, limit: int = 16 << 20) -> tuple[bytes, str]:
        """GET a small document and its `Link` header (paginated APIs)."""
        if is_local(url):
            return self.fetch_bytes(url, limit=limit), ""
        target = self.mirrors.rewrite(url)
        with self._session() as session, self._request(session, url, target) as response:
            data = bytearray()
            for chunk in response.iter_content(CHUNK):
                data += chunk
                if len(data) > limit:
                    raise DownloadError(f"{_describe(url, target)}: larger than {limit} bytes")
            return bytes(data), response.headers.get("Link", "")

    # -- payloads whose hash is only known after a signature check -------------------------

    def fetch_unverified(self, url: str, *, label: str | None = None) -> tuple[Path, str]:
        """Download `url` to a private partial file; return it and its sha256.

        The caller verifies it (a detached signature) and then calls `store()`; nothing
        unverified ever enters the content-addressed cache.
        """
        if is_local(url):
            path = local_path(url)
            if not path.is_file():
                raise DownloadError(f"{url}: no such file")
            return path, sha256_of(path)
        name = hashlib.sha256(url.encode()).hexdigest()
        directory = ensure_cache_dir(self.cache_dir / "downloads" / "unverified")
        # A private file per call: matrix builds may fetch one URL in two rows at once (a
        # recipe and an OEM image sharing an agent), and nothing here is resumed anyway.
        fd, partial_name = tempfile.mkstemp(prefix=f"{name}.", suffix=".part", dir=directory)
        os.close(fd)
        partial = Path(partial_name)
        partial.unlink()
        target = self.mirrors.rewrite(url)
        self._download(url, target, partial, label or url.rsplit("/", 1)[-1])
        return partial, sha256_of(partial)

    def store(self, path: Path, sha256: str) -> Path:
        """Move a verified download into the cache under its hash; return the cached blob."""
        if not str(path).startswith(str(self.cache_dir)):
            return path  # a local file: used in place, never moved
        blob = self.cache_dir / "downloads" / "sha256" / sha256
        ensure_cache_dir(blob.parent)
        os.replace(path, blob)
        return blob

    # -- payloads: verified against a known sha256, cached by it ---------------------------

    def fetch(self, url: str, sha256: str, *, label: str | None = None) -> Path:
        """Return a local file whose content has `sha256`, downloading it if needed."""
        sha256 = sha256.lower()
        if is_local(url):
            return self._verify_local(url, sha256)
        # Matrix builds run several fetches at once; two of them wanting the same blob (a
        # tool shared by two recipes or versions) must not append to one partial file.
        with _blob_lock(sha256):
            return self._fetch_blob(url, sha256, label)

    def _fetch_blob(self, url: str, sha256: str, label: str | None) -> Path:
        blob = self.cache_dir / "downloads" / "sha256" / sha256
        if blob.exists():
            if not self.refresh and sha256_of(blob) == sha256:
                log.info("cache hit for %s", url)
                return blob
            log.warning("cached copy of %s is corrupt or --refresh was given; refetching", url)
            blob.unlink()
        partial = self.cache_dir / "downloads" / "partial" / f"{sha256}.part"
        ensure_cache_dir(partial.parent)
        if self.refresh:
            partial.unlink(missing_ok=True)
        target = self.mirrors.rewrite(url)
        self._download(url, target, partial, label or url.rsplit("/", 1)[-1])
        got = sha256_of(partial)
        if got != sha256:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"{_describe(url, target)}: sha256 mismatch (expected {sha256}, got {got})",
                "the upstream file changed or the download was corrupted; check the recipe's "
                "sha256 and rerun with --refresh",
            )
        ensure_cache_dir(blob.parent)
        os.replace(partial, blob)
        return blob

    def _verify_local(self, url: str, sha256: str) -> Path:
        path = local_path(url)
        if not path.is_file():
            raise DownloadError(f"{url}: no such file")
        got = sha256_of(path)
        if got != sha256:
            raise DownloadError(
                f"{url}: sha256 mismatch (expected {sha256}, got {got})",
                "the file changed; check the recipe's sha256",
            )
        return path

    def _download(self, url: str, target: str, partial: Path, label: str) -> None:
        # urllib3's Retry covers refused connections and 5xx answers; a stream that breaks
        # half-way is continued here from the bytes already on disk (HTTP Range).
        attempt = 0
        with self._session() as session, byte_progress() as progress:
            task = progress.add_task(label, total=None)
            while True:
                have = partial.stat().st_size if partial.exists() else 0
                headers = {"Range": f"bytes={have}-"} if have else {}
                try:
                    with self._request(session, url, target, headers=headers) as response:
                        if have and response.status_code == 416:
                            return  # the partial file is already complete
                        if have and response.status_code != 206:
                            have = 0  # the server ignored Range: start over
                        length = response.headers.get("Content-Length")
                        total = have + int(length) if length and length.isdigit() else None
                        progress.update(task, total=total, completed=have)
                        with open(partial, "ab" if have else "wb") as out:
                            for chunk in response.iter_content(NETWORK_CHUNK):
                                out.write(chunk)
                                progress.advance(task, len(chunk))
                    return
                except (
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ConnectionError,
                ) as exc:
                    attempt += 1
                    if attempt > self.retries:
                        raise DownloadError(
                            f"{_describe(url, target)}: transfer interrupted: {exc}",
                            "rerun the build; the download resumes where it stopped",
                        ) from exc
                    log.warning("transfer of %s interrupted (%s); resuming", target, exc)
                    time.sleep(self.backoff * 2**attempt)

    @contextlib.contextmanager
    def _session(self) -> Iterator[requests.Session]:
        retry = Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            backoff_factor=self.backoff,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "HEAD"}),
            raise_on_status=False,
        )
        if not log.isEnabledFor(logging.DEBUG):
            # urllib3 logs each retry as a warning; the user gets one error line instead.
            logging.getLogger("urllib3").setLevel(logging.ERROR)
        session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            yield session
        finally:
            session.close()

    @contextlib.contextmanager
    def _request(
        self,
        session: requests.Session,
        url: str,
        target: str,
        headers: dict[str, str] | None = None,
    ) -> Iterator[requests.Response]:
        where = _describe(url, target)
        try:
            response = session.get(
                target,
                headers=headers or {},
                stream=True,
                timeout=(self.connect_timeout, self.read_timeout),
            )
        except requests.exceptions.Timeout as exc:
            raise DownloadError(
                f"{where}: timed out", "the server is slow or unreachable; retry later"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise DownloadError(
                f"{where}: cannot connect ({_root_cause(exc)})",
                "check the network, or map the URL to a reachable mirror with SYSEXT_MIRRORS",
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise DownloadError(f"{where}: {exc}") from exc
        try:
            if response.status_code >= 400 and response.status_code != 416:
                raise DownloadError(
                    f"{where}: HTTP {response.status_code} {response.reason}",
                    "check the version and architecture, or the mirror setting",
                )
            yield response
        finally:
            response.close()


_BLOB_LOCKS: dict[str, threading.Lock] = {}
_BLOB_LOCKS_GUARD = threading.Lock()


def _blob_lock(sha256: str) -> threading.Lock:
    with _BLOB_LOCKS_GUARD:
        return _BLOB_LOCKS.setdefault(sha256, threading.Lock())


def _root_cause(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return marker.lower()
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
