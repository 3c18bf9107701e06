"""`sysext versions RECIPE` and `--version latest|TRACK`: which upstream versions exist.

Feeds are declared in the recipe's `[versions]` table (recipes/README.md):

* `github = "owner/repo"`: the GitHub releases API, every page (`Link: rel="next"`),
  fetched through the mirror map so that air-gapped users and tests can serve the same
  JSON elsewhere. Drafts are always skipped; prereleases by the recipe's policy
  (`prereleases = "skip" | "include" | "by-version"`), since some upstreams flag every
  release as a prerelease (podman-static) and others flag none (CNI release candidates).
* `pypi = "project"`: `pip index versions`, so the user's pip configuration applies.
* `asset`: with a GitHub feed, a release counts only once an asset matching this glob is
  attached (podman-static and k3s create the release before uploading its files).
* `index_url`: an HTML directory listing (download.docker.com has no API), read with
  `tag_pattern`.

Tags become versions through `tag_prefix` (one or several, e.g. moby's `docker-v29.1.2`
beside `v28.5.2`) or a `tag_pattern` regex; tags matching neither are not versions of this
recipe (containerd's `api/v1.9.0`). `include` keeps only matching versions (Tailscale's
even minors). Versions sysupdate could not express (spec §2.4) are dropped; the rest are
ordered with systemd's own comparison (sysext.versioning). When nothing is left, the
error says what was found and which setting to change.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from sysext.core.download import Downloader
from sysext.core.errors import SysextError, ToolError
from sysext.core.process import run
from sysext.recipe.model import Recipe, VersionFeed
from sysext.systemd.versioning import sort_versions, version_is_valid

GITHUB_API = "https://api.github.com"
MAX_PAGES = 20  # 2,000 releases: far more than any recipe needs, bounded all the same
_PRERELEASE = re.compile(r"(?i)[-.~](rc|alpha|beta|pre|dev|preview)[.-]?\d*")
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


@dataclass(frozen=True)
class Release:
    """One upstream release as the feed reports it."""

    tag: str
    prerelease: bool = False
    assets: tuple[str, ...] | None = None  # None: the feed does not say


def upstream_versions(recipe: Recipe, downloader: Downloader) -> list[str]:
    """Every version of the recipe's feed, newest first; an error when none is usable."""
    feed = _feed(recipe)
    if feed.github:
        releases = github_releases(feed.github, downloader)
        source = f"GitHub releases of {feed.github}"
    elif feed.index_url:
        releases = index_releases(feed, downloader)
        source = f"the listing {feed.index_url}"
    else:
        # PyPI lists versions, not tags: no tag scheme applies.
        plain = VersionFeed.model_validate(
            {"pypi": feed.pypi, "tag_prefix": "", "prereleases": feed.prereleases}
        )
        releases = [Release(v) for v in pypi_versions(feed)]
        return select_versions(releases, plain, f"PyPI versions of {feed.pypi}", recipe.file_label)
    return select_versions(releases, feed, source, recipe.file_label)


def _feed(recipe: Recipe) -> VersionFeed:
    if recipe.versions is None:
        raise SysextError(
            f"recipe {recipe.file_label} has no [versions] table",
            'add e.g. [versions] github = "owner/repo" or pypi = "project"',
        )
    return recipe.versions


def tag_version(feed: VersionFeed, tag: str) -> str | None:
    """The version a tag stands for, or None when the tag is not one of this recipe's."""
    if feed.tag_pattern:
        match = re.fullmatch(feed.tag_pattern, tag)
        return match.group("version") if match else None
    for prefix in sorted(feed.tag_prefixes, key=len, reverse=True):
        if tag.startswith(prefix) and tag[len(prefix) :][:1].isdigit():
            return tag[len(prefix) :]
    return None


def is_prerelease_version(version: str) -> bool:
    return bool(_PRERELEASE.search(version))


def select_versions(
    releases: Iterable[Release], feed: VersionFeed, source: str, label: str
) -> list[str]:
    """Apply the recipe's tag scheme, prerelease policy and filter; newest first."""
    releases = list(releases)
    if not releases:
        raise SysextError(f"{source}: no releases at all", "check the feed in [versions]")
    flagged = sum(1 for r in releases if r.prerelease)
    versions: set[str] = set()
    unmatched: list[str] = []
    not_ready: list[str] = []
    for release in releases:
        version = tag_version(feed, release.tag)
        if version is None:
            unmatched.append(release.tag)
            continue
        if feed.prereleases == "skip" and release.prerelease:
            continue
        if feed.prereleases == "by-version" and is_prerelease_version(version):
            continue
        if feed.include and not re.search(feed.include, version):
            continue
        if feed.asset and release.assets is not None:
            wanted = feed.asset.replace("{version}", version)
            if not any(fnmatch.fnmatchcase(name, wanted) for name in release.assets):
                not_ready.append(version)  # created before its files were uploaded
                continue
        if version_is_valid(version):
            versions.add(version)
    if versions:
        return sort_versions(versions, newest_first=True)
    total = len(releases)
    if feed.prereleases == "skip" and flagged == total:
        raise SysextError(
            f"recipe {label}: all {total} releases in {source} are marked prerelease",
            'set prereleases = "by-version" in [versions] (skip only -rc/-beta/… versions) '
            'or prereleases = "include"',
        )
    if len(unmatched) == total:
        scheme = (
            f"tag_pattern {feed.tag_pattern!r}"
            if feed.tag_pattern
            else f"tag_prefix {', '.join(repr(p) for p in feed.tag_prefixes)}"
        )
        raise SysextError(
            f"recipe {label}: none of the {total} tags in {source} matches {scheme} "
            f"(e.g. {', '.join(repr(t) for t in unmatched[:3])})",
            "set tag_prefix (several are allowed) or tag_pattern in [versions]",
        )
    if not_ready:
        raise SysextError(
            f"recipe {label}: {len(not_ready)} releases in {source} have no asset matching "
            f"{feed.asset!r} (yet), e.g. {not_ready[0]}",
            "upstream may still be uploading; otherwise check `asset` in [versions]",
        )
    raise SysextError(
        f"recipe {label}: {source} has {total} releases ({flagged} marked prerelease) but "
        "none is left after the recipe's prerelease policy and `include` filter",
        "check prereleases and include in [versions]",
    )


def github_releases(repo: str, downloader: Downloader) -> list[Release]:
    """Every non-draft release of `repo`, following the API's pagination."""
    url: str | None = f"{GITHUB_API}/repos/{repo}/releases?per_page=100"
    releases: list[Release] = []
    pages = 0
    while url and pages < MAX_PAGES:
        data, link = downloader.fetch_page(url)
        pages += 1
        try:
            page = json.loads(data)
        except ValueError as exc:
            raise SysextError(f"{url}: not JSON ({exc})") from exc
        if not isinstance(page, list):
            message = page.get("message") if isinstance(page, dict) else None
            raise SysextError(f"{url}: unexpected answer" + (f": {message}" if message else ""))
        for item in page:
            if not isinstance(item, dict) or not isinstance(item.get("tag_name"), str):
                continue
            if item.get("draft"):
                continue
            assets = item.get("assets")
            names = (
                tuple(a["name"] for a in assets if isinstance(a, dict) and "name" in a)
                if isinstance(assets, list)
                else None
            )
            releases.append(Release(item["tag_name"], bool(item.get("prerelease")), names))
        match = _NEXT.search(link or "")
        url = match.group(1) if match else None
    return releases


_HREF = re.compile(r'href="([^"]+)"')


def index_releases(feed: VersionFeed, downloader: Downloader) -> list[Release]:
    """File names linked from an HTML directory listing, as tags."""
    assert feed.index_url is not None
    text = downloader.fetch_bytes(feed.index_url).decode("utf-8", "replace")
    return [Release(href.rsplit("/", 1)[-1]) for href in _HREF.findall(text)]


_AVAILABLE = re.compile(r"^Available versions:\s*(.*)$", re.MULTILINE)


def pypi_versions(feed: VersionFeed) -> list[str]:
    assert feed.pypi is not None
    argv = [sys.executable, "-m", "pip", "index", "versions", feed.pypi]
    if feed.prereleases != "skip":
        argv.append("--pre")
    try:
        proc = run(argv)
    except ToolError as exc:
        raise SysextError(
            f"pip index versions {feed.pypi} failed: {exc}",
            "check the project name and pip's index configuration",
        ) from exc
    match = _AVAILABLE.search(proc.stdout.decode("utf-8", "replace"))
    if match is None:
        raise SysextError(f"pip index versions {feed.pypi}: no version list in its output")
    return [v.strip() for v in match.group(1).split(",") if v.strip()]


# -- --version latest / --version TRACK ------------------------------------------------------

_TRACK = re.compile(r"\d+(\.\d+)?")


def resolve_version(recipe: Recipe, requested: str | None, downloader: Downloader) -> str:
    """The concrete version a build uses.

    None is the recipe's default. `latest` is the newest version of the feed (or the
    recipe's `latest_url` marker). A track such as `1.31` is the newest `1.31.x`: read from
    the recipe's `track_url` marker when it has one (Kubernetes' `stable-1.31.txt`), else
    picked from the feed. Anything else is taken literally.
    """
    if requested is None:
        return recipe.version
    if recipe.package_source is not None:
        # An apt source resolves `latest` or a package version against the archive itself.
        return requested
    feed = recipe.versions
    if requested == "latest":
        if feed is not None and feed.latest_url:
            return _marker(feed, feed.latest_url, downloader)
        return upstream_versions(recipe, downloader)[0]
    if feed is None or not _TRACK.fullmatch(requested):
        return requested
    if feed.track_url:
        return _marker(feed, feed.track_url.replace("{track}", requested), downloader)
    if recipe.versions is not None and recipe.versions.pypi:
        return requested
    found = [
        v
        for v in upstream_versions(recipe, downloader)
        if v == requested or v.startswith((requested + ".", requested + "-", requested + "+"))
    ]
    if not found:
        raise SysextError(
            f"{recipe.name}: no upstream version in the {requested} track",
            f"list them with `sysext versions {recipe.name}`",
        )
    return found[0]


def _marker(feed: VersionFeed, url: str, downloader: Downloader) -> str:
    # Marker files upstream may lack a trailing newline (or have one): strip either way.
    text = downloader.fetch_bytes(url, limit=4096).decode("utf-8", "replace").strip()
    version = tag_version(feed, text) or text
    if not version_is_valid(version):
        raise SysextError(f"{url}: {text!r} is not a version", "check the recipe's [versions]")
    return version
