"""`kind = "url"`: a file on a web server (or file:// / a local path), always verified.

Where the expected content comes from, first match wins:

1. a `--locked` build: the lock file's sha256 (a changed upstream file is an error);
2. a `sha256` pin in the recipe for this version and architecture;
3. a detached OpenPGP signature (`signature_url`) made by a key whose fingerprint the
   recipe pins (`signing_keys`, certificate from `key_url`), checked with pysequoia;
4. the upstream checksum file (`checksum_url`), fetched fresh on every build, never cached;
5. `integrity = "github-digest"`: the sha256 GitHub's releases API records for the asset
   (every upload since June 2025), for GitHub release assets with nothing else;
6. `integrity = "lock"` (upstream publishes nothing), or a GitHub asset without a digest:
   only `sysext lock` may fetch it, and builds need `--locked`.

Nothing unverified enters the download cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from sysext.build.extract import ArchiveFormat
from sysext.build.lockfile import LockError
from sysext.build.sources.base import FetchContext, Fetched, ImageTerms, Resolved, register
from sysext.build.sources.checksums import find_sha256
from sysext.build.upstream_signature import (
    UpstreamSignatureError,
    pinned_certificates,
    verify_file,
)
from sysext.core.atomic import atomic_write
from sysext.core.download import DownloadError, is_local
from sysext.core.errors import SysextError

if TYPE_CHECKING:
    from sysext.recipe.model import SourceSpec, Where


def url_file_name(url: str) -> str:
    path = urllib.parse.urlparse(url).path if "://" in url else url
    return urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])


def _label(spec: SourceSpec, ctx: FetchContext) -> str:
    return f"recipe {ctx.recipe.file_label}: sources[{spec.index}]"


def checksum_file_sha256(spec: SourceSpec, ctx: FetchContext, file_name: str) -> str:
    """The hash the upstream checksum file lists for `file_name`."""
    assert spec.checksum_url is not None
    checksum_url = ctx.expand(spec, spec.checksum_url, "checksum_url")
    text = ctx.downloader.fetch_bytes(checksum_url).decode("utf-8", "replace")
    found = find_sha256(text, file_name)
    if found is None:
        raise SysextError(
            f"{checksum_url}: no sha256 line for {file_name}",
            "check the recipe's checksum_url and url templates",
        )
    return found


def expected_sha256(spec: SourceSpec, ctx: FetchContext, url: str, file_name: str) -> str:
    """The pinned hash for this version and arch, or the one in the upstream checksum file."""
    pinned = ctx.pinned_sha256(spec)
    if pinned:
        return pinned
    if spec.checksum_url is None:
        raise SysextError(
            f"{_label(spec, ctx)}: no sha256 pinned for version {ctx.version} on "
            f"{ctx.arch.systemd_name}",
            f'add sources.sha256."{ctx.version}".{ctx.arch.systemd_name} = "…" to the recipe '
            "(after checking the file out of band), or a checksum_url",
        )
    return checksum_file_sha256(spec, ctx, file_name)


def _key_material(spec: SourceSpec, ctx: FetchContext) -> tuple[bytes, str]:
    assert spec.key_url is not None
    location = ctx.expand(spec, spec.key_url, "key_url")
    if is_local(location) and not location.startswith("file://"):
        path = Path(location)
        if not path.is_absolute():
            path = ctx.recipe.path.resolve().parent / path
        try:
            return path.read_bytes(), location
        except OSError as exc:
            raise SysextError(f"{_label(spec, ctx)}.key_url: {location}: {exc.strerror}") from exc
    return ctx.downloader.fetch_bytes(location, limit=1 << 20), location


def fetch_signed(spec: SourceSpec, ctx: FetchContext, url: str, name: str) -> tuple[Path, str]:
    """Download `url`, check its detached signature against the pinned keys, cache it."""
    assert spec.signature_url is not None
    keys = " or ".join(spec.signing_keys)
    signature_url = ctx.expand(spec, spec.signature_url, "signature_url")
    signature_name = url_file_name(signature_url)
    try:
        signature = ctx.downloader.fetch_bytes(signature_url, limit=1 << 20)
    except DownloadError as exc:
        raise UpstreamSignatureError(
            f"{signature_name}: signature missing ({exc.message.rsplit(': ', 1)[-1]}); "
            f"{name} cannot be checked against key {keys}",
            "upstream has not published the signature (yet); do not use the file unsigned",
        ) from None
    material, key_label = _key_material(spec, ctx)
    certs = pinned_certificates(material, spec.signing_keys, key_label=url_file_name(key_label))
    path, sha256 = ctx.downloader.fetch_unverified(url, label=name)
    try:
        verify_file(path, signature, certs, file_label=name, signature_label=signature_name)
    except UpstreamSignatureError:
        if path.is_relative_to(ctx.downloader.cache_dir):
            path.unlink(missing_ok=True)
        raise
    stored = ctx.downloader.store(path, sha256)
    _remember_signed(spec, ctx, url, signature, sha256)
    return stored, sha256


def _signed_record(ctx: FetchContext, url: str) -> Path:
    digest = hashlib.sha256(url.encode()).hexdigest()
    return ctx.cache_dir / "downloads" / "signed" / f"{digest}.json"


def _signed_facts(spec: SourceSpec, signature: bytes) -> dict[str, object]:
    return {
        "signature_sha256": hashlib.sha256(signature).hexdigest(),
        "keys": sorted(spec.signing_keys),
    }


def _remember_signed(
    spec: SourceSpec, ctx: FetchContext, url: str, signature: bytes, sha256: str
) -> None:
    """Record which payload this very signature verified, so that a rebuild can name the
    payload from the signature alone (sysext.build_key) instead of downloading it again."""
    record = {**_signed_facts(spec, signature), "sha256": sha256}
    path = _signed_record(ctx, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, sort_keys=True).encode())


def signed_sha256(spec: SourceSpec, ctx: FetchContext, url: str) -> str | None:
    """The payload the current upstream signature verified before (same signature bytes,
    same pinned keys) when it is still in the cache; None otherwise."""
    assert spec.signature_url is not None
    try:
        record = json.loads(_signed_record(ctx, url).read_text())
        signature = ctx.downloader.fetch_bytes(
            ctx.expand(spec, spec.signature_url, "signature_url"), limit=1 << 20
        )
    except (OSError, ValueError, DownloadError):
        return None
    sha256 = record.get("sha256") if isinstance(record, dict) else None
    if not isinstance(sha256, str) or {k: record.get(k) for k in ("signature_sha256", "keys")} != (
        _signed_facts(spec, signature)
    ):
        return None
    if not (ctx.cache_dir / "downloads" / "sha256" / sha256).is_file():
        return None
    return sha256


_RELEASE_ASSET = re.compile(
    r"https://github\.com/(?P<repo>[^/]+/[^/]+)/releases/download/(?P<tag>[^/]+)/(?P<asset>[^/]+)"
)


def github_asset_digest(url: str, ctx: FetchContext, label: str) -> str | None:
    """The `sha256:` digest GitHub's API lists for the release asset at `url`, or None for
    assets uploaded before GitHub recorded digests (June 2025)."""
    match = _RELEASE_ASSET.fullmatch(url)
    if match is None:
        raise SysextError(
            f'{label}: integrity = "github-digest" needs a GitHub release asset URL, got {url}'
        )
    api = f"https://api.github.com/repos/{match['repo']}/releases/tags/{match['tag']}"
    try:
        release = json.loads(ctx.downloader.fetch_bytes(api))
    except ValueError as exc:
        raise SysextError(f"{api}: not JSON ({exc})") from exc
    asset_name = urllib.parse.unquote(match["asset"])
    for asset in release.get("assets", []) if isinstance(release, dict) else []:
        if isinstance(asset, dict) and asset.get("name") == asset_name:
            digest = asset.get("digest")
            if isinstance(digest, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                return digest.removeprefix("sha256:")
            return None
    raise SysextError(
        f"{api}: release {match['tag']} has no asset {asset_name}",
        "upstream may still be uploading; check the version and the recipe's url",
    )


class UrlSource:
    name = "url"

    def check(self, spec: SourceSpec, where: Where) -> None:
        if spec.url is None:
            raise (where / "url").error('missing (e.g. "https://…/tool-{version}-{arch}.tar.gz")')
        if (
            spec.sha256.empty
            and spec.checksum_url is None
            and spec.signature_url is None
            and not spec.lock_required
        ):
            raise where.error(
                "needs `sha256` or `checksum_url`",
                "downloads are always verified: pin the hash, name the upstream checksum file "
                'or signature, or set integrity = "lock" when upstream publishes neither',
            )

    def terms(self, spec: SourceSpec, ctx: FetchContext) -> ImageTerms | None:
        return None

    def resolve(self, spec: SourceSpec, ctx: FetchContext) -> Resolved | None:
        """The payload's identity from the lock, a pin or the upstream checksum file (a few
        bytes); None where only the download itself can tell (a signature, first use)."""
        assert spec.url is not None
        url = ctx.expand(spec, spec.url, "url")
        upstream_name = url_file_name(url)
        file_name = (
            ctx.expand(spec, spec.file_name, "file_name") if spec.file_name else upstream_name
        )
        entry = ctx.locked(spec, url)
        if entry is not None:
            return Resolved(url, entry.sha256, file_name)
        if ctx.pinned_sha256(spec) or (spec.signature_url is None and spec.checksum_url):
            return Resolved(url, expected_sha256(spec, ctx, url, upstream_name), file_name)
        if spec.signature_url is not None and not ctx.downloader.refresh:
            signed = signed_sha256(spec, ctx, url)
            return None if signed is None else Resolved(url, signed, file_name)
        if spec.signature_url is None and spec.github_digest:
            # GitHub's API answer (a few bytes) names the asset exactly, as at fetch time.
            digest = github_asset_digest(url, ctx, _label(spec, ctx))
            if digest is not None:
                return Resolved(url, digest, file_name)
        return None

    def fetch(self, spec: SourceSpec, ctx: FetchContext) -> Fetched:
        assert spec.url is not None
        url = ctx.expand(spec, spec.url, "url")
        upstream_name = url_file_name(url)
        file_name = (
            ctx.expand(spec, spec.file_name, "file_name") if spec.file_name else upstream_name
        )
        path, sha256, how = self._fetch_verified(spec, ctx, url, upstream_name)
        fmt = spec.format or ArchiveFormat.from_filename(file_name)
        return Fetched(
            path=path, format=fmt, origin=url, sha256=sha256, file_name=file_name, integrity=how
        )

    def _fetch_verified(
        self, spec: SourceSpec, ctx: FetchContext, url: str, name: str
    ) -> tuple[Path, str, str]:
        entry = ctx.locked(spec, url)
        if entry is not None:
            try:
                return ctx.downloader.fetch(url, entry.sha256, label=name), entry.sha256, "lock"
            except DownloadError as exc:
                if "sha256 mismatch" not in exc.message:
                    raise
                lock_name = ctx.lock.path.name if ctx.lock else "the lock"
                raise LockError(
                    f"UPSTREAM FILE CHANGED: {url} no longer has the sha256 {entry.sha256} "
                    f"locked in {lock_name}",
                    "upstream replaced a released file; find out why before re-locking it",
                ) from None
        if ctx.pinned_sha256(spec):
            sha256 = expected_sha256(spec, ctx, url, name)
            return ctx.downloader.fetch(url, sha256, label=name), sha256, "pin"
        if spec.signature_url is not None:
            path, sha256 = fetch_signed(spec, ctx, url, name)
            return path, sha256, "openpgp:" + " ".join(spec.signing_keys)
        if spec.checksum_url is not None:
            sha256 = checksum_file_sha256(spec, ctx, name)
            return ctx.downloader.fetch(url, sha256, label=name), sha256, "checksum-file"
        if spec.github_digest:
            digest = github_asset_digest(url, ctx, _label(spec, ctx))
            if digest is not None:
                return ctx.downloader.fetch(url, digest, label=name), digest, "github-digest"
        # integrity = "lock": upstream vouches for nothing.
        if not ctx.locking:
            what = (
                "GitHub lists no digest for it (uploaded before June 2025)"
                if spec.github_digest
                else "upstream publishes no checksum or signature"
            )
            raise SysextError(
                f"{_label(spec, ctx)}: {name}: {what}, so only a locked build may use it",
                f"record it once: sysext lock {ctx.recipe.name} --version {ctx.version} --arch "
                f"{ctx.arch.systemd_name}; then build with --locked",
            )
        path, sha256 = ctx.downloader.fetch_unverified(url, label=name)
        return ctx.downloader.store(path, sha256), sha256, "first-use"

    def tools(self) -> dict[str, str]:
        return {"python-requests": requests.__version__}


register(UrlSource())
