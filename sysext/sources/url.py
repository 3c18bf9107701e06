"""`kind = "url"`: a file on a web server (or file:// / a local path), verified by sha256.

The hash comes from the recipe's pins (`sha256`), or else from the upstream checksum file
(`checksum_url`, sha256sum format) — fetched fresh on every build, never cached, since it
is what decides whether a cached blob may be used.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

import requests

from sysext.errors import SysextError
from sysext.extract import ArchiveFormat
from sysext.sources.base import FetchContext, Fetched, Resolved, register
from sysext.sources.checksums import find_sha256

if TYPE_CHECKING:
    from sysext.recipe import SourceSpec, Where


def url_file_name(url: str) -> str:
    path = urllib.parse.urlparse(url).path if "://" in url else url
    return urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])


def expected_sha256(spec: SourceSpec, ctx: FetchContext, url: str, file_name: str) -> str:
    """The pinned hash for this version and arch, or the one in the upstream checksum file."""
    pinned = ctx.pinned_sha256(spec)
    if pinned:
        return pinned
    label = f"recipe {ctx.recipe.file_label}: sources[{spec.index}]"
    if spec.checksum_url is None:
        raise SysextError(
            f"{label}: no sha256 pinned for version {ctx.version} on {ctx.arch.systemd_name}",
            f'add sources.sha256."{ctx.version}".{ctx.arch.systemd_name} = "…" to the recipe '
            "(after checking the file out of band), or a checksum_url",
        )
    checksum_url = ctx.expand(spec, spec.checksum_url, "checksum_url")
    text = ctx.downloader.fetch_bytes(checksum_url).decode("utf-8", "replace")
    found = find_sha256(text, file_name)
    if found is None:
        raise SysextError(
            f"{checksum_url}: no sha256 line for {file_name}",
            "check the recipe's checksum_url and url templates",
        )
    return found


class UrlSource:
    name = "url"
    keys = frozenset({"url", "checksum_url", "file_name"})

    def check(self, spec: SourceSpec, where: Where) -> None:
        if spec.url is None:
            raise (where / "url").error('missing (e.g. "https://…/tool-{version}-{arch}.tar.gz")')
        if spec.sha256.empty and spec.checksum_url is None:
            raise where.error(
                "needs `sha256` or `checksum_url`",
                "downloads are always verified: pin the hash or name the upstream checksum file",
            )

    def resolve(self, spec: SourceSpec, ctx: FetchContext) -> Resolved:
        # A pin or the upstream checksum file (a few bytes) names the payload exactly.
        assert spec.url is not None
        url = ctx.expand(spec, spec.url, "url")
        file_name = (
            ctx.expand(spec, spec.file_name, "file_name") if spec.file_name else url_file_name(url)
        )
        return Resolved(url, expected_sha256(spec, ctx, url, url_file_name(url)), file_name)

    def fetch(self, spec: SourceSpec, ctx: FetchContext) -> Fetched:
        resolved = self.resolve(spec, ctx)
        url, sha256, file_name = resolved.origin, resolved.sha256, resolved.file_name
        path = ctx.downloader.fetch(url, sha256, label=file_name)
        fmt = spec.format or ArchiveFormat.from_filename(file_name)
        return Fetched(path=path, format=fmt, origin=url, sha256=sha256, file_name=file_name)

    def tools(self) -> dict[str, str]:
        return {"python-requests": requests.__version__}


register(UrlSource())
