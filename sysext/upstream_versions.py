"""`sysext versions RECIPE`: which upstream versions exist, newest first.

Feeds are declared in the recipe's `[versions]` table:

* `github = "owner/repo"`: the GitHub releases API
  (`https://api.github.com/repos/OWNER/REPO/releases`), fetched through the mirror map so
  that air-gapped users and tests can serve the same JSON elsewhere. Drafts are skipped,
  pre-releases too unless `include_prereleases = true`; `tag_prefix` ("v") is removed.
* `pypi = "project"`: `pip index versions`, so the user's pip configuration applies.

Versions that systemd-sysupdate could not express (spec §2.4) are dropped; the rest are
ordered with systemd's own comparison (sysext.versioning).
"""

from __future__ import annotations

import json
import re
import sys

from sysext.download import Downloader
from sysext.errors import SysextError, ToolError
from sysext.process import run
from sysext.recipe import Recipe, VersionFeed
from sysext.versioning import sort_versions, version_is_valid

GITHUB_API = "https://api.github.com"


def upstream_versions(recipe: Recipe, downloader: Downloader) -> list[str]:
    feed = recipe.versions
    if feed is None:
        raise SysextError(
            f"recipe {recipe.file_label} has no [versions] table",
            'add e.g. [versions] github = "owner/repo" or pypi = "project"',
        )
    tags = github_release_tags(feed, downloader) if feed.github else pypi_versions(feed)
    versions = []
    for tag in tags:
        version = tag[len(feed.tag_prefix) :] if tag.startswith(feed.tag_prefix) else tag
        if version_is_valid(version):
            versions.append(version)
    return sort_versions(set(versions), newest_first=True)


def github_release_tags(feed: VersionFeed, downloader: Downloader) -> list[str]:
    url = f"{GITHUB_API}/repos/{feed.github}/releases?per_page=100"
    data = downloader.fetch_bytes(url)
    try:
        releases = json.loads(data)
    except ValueError as exc:
        raise SysextError(f"{url}: not JSON ({exc})") from exc
    if not isinstance(releases, list):
        message = releases.get("message") if isinstance(releases, dict) else None
        raise SysextError(f"{url}: unexpected answer" + (f": {message}" if message else ""))
    tags = []
    for release in releases:
        if not isinstance(release, dict) or not isinstance(release.get("tag_name"), str):
            continue
        if release.get("draft") or (release.get("prerelease") and not feed.include_prereleases):
            continue
        tags.append(release["tag_name"])
    return tags


_AVAILABLE = re.compile(r"^Available versions:\s*(.*)$", re.MULTILINE)


def pypi_versions(feed: VersionFeed) -> list[str]:
    assert feed.pypi is not None
    argv = [sys.executable, "-m", "pip", "index", "versions", feed.pypi]
    if feed.include_prereleases:
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
