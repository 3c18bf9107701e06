"""Version discovery on recorded responses in the real shapes: GitHub's releases API
(release objects with their fields, 100 per page, `Link: rel="next"` pagination, prerelease
and draft flags), Kubernetes' per-minor marker files (no trailing newline), and the tag
schemes of the shipped recipes: moby's `docker-v` tags since 29.0 beside `v28…` and its
`api/`/`client/` module tags, containerd's `api/` releases, k3s `+k3sN`, Tailscale's
odd (unstable) and even (stable) minors, podman-static's every-release-a-prerelease,
CNI's unflagged release candidates and wasmtime's rolling `dev` release."""

from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from sysext.build.upstream_versions import resolve_version, upstream_versions
from sysext.core.config import load_settings
from sysext.core.download import Downloader
from sysext.core.errors import SysextError
from sysext.core.mirrors import parse_mirror_spec
from sysext.recipe.model import bundled_recipes_dir, load_recipe
from tests.servers import run_cli, serve_http

RECIPES = bundled_recipes_dir()
K3S = ("k3s", "k3s-arm64", "sha256sum-amd64.txt", "sha256sum-arm64.txt")


def release(
    tag: str,
    *,
    prerelease: bool = False,
    draft: bool = False,
    n: int = 1,
    assets: tuple[str, ...] = (),
) -> dict:
    """A release object as the GitHub API returns it (fields trimmed to the common ones)."""
    return {
        "url": f"https://api.github.com/repos/o/r/releases/{n}",
        "html_url": f"https://github.com/o/r/releases/tag/{tag}",
        "id": 100000 + n,
        "tag_name": tag,
        "target_commitish": "main",
        "name": tag,
        "draft": draft,
        "prerelease": prerelease,
        "created_at": "2026-01-01T00:00:00Z",
        "published_at": None if draft else "2026-01-01T00:00:00Z",
        "assets": [
            {
                "name": name,
                "browser_download_url": f"https://github.com/o/r/releases/download/{tag}/{name}",
                "digest": "sha256:" + "0" * 64,
            }
            for name in assets
        ],
        "body": "",
    }


class Recorded(http.server.BaseHTTPRequestHandler):
    responses: ClassVar[dict[str, tuple[bytes, dict[str, str]]]] = {}

    def do_GET(self) -> None:
        found = self.responses.get(self.path)
        if found is None:
            self.send_error(404)
            return
        body, headers = found
        self.send_response(200)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def pages(repo: str, repo_id: int, releases: list[dict], per_page: int = 100) -> None:
    """Record `releases` as the API pages them (the next link names the repository id)."""
    chunks = [releases[i : i + per_page] for i in range(0, len(releases), per_page)] or [[]]
    for index, chunk in enumerate(chunks):
        if index == 0:
            path = f"/api/repos/{repo}/releases?per_page=100"
        else:
            path = f"/api/repositories/{repo_id}/releases?per_page=100&page={index + 1}"
        headers = {"Content-Type": "application/json; charset=utf-8"}
        links = []
        if index + 1 < len(chunks):
            base = f"https://api.github.com/repositories/{repo_id}/releases?per_page=100"
            nxt, last = f"{base}&page={index + 2}", f"{base}&page={len(chunks)}"
            links = [f'<{nxt}>; rel="next"', f'<{last}>; rel="last"']
        if links:
            headers["Link"] = ", ".join(links)
        Recorded.responses[path] = (json.dumps(chunk).encode(), headers)


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    moby = [release(f"docker-v29.1.{p}", n=p) for p in (2, 1, 0)]
    moby += [release("docker-v29.0.0"), release("docker-v29.0.0-rc.1", prerelease=True)]
    moby += [release("api/v1.52.0"), release("client/v0.1.0")]
    moby += [release("v28.5.2"), release("v28.0.3"), release("v28.0.0-rc.1", prerelease=True)]
    moby += [release("v29.9.9", draft=True)]
    moby += [release(f"v28.4.{p}") for p in range(89)]  # fills page 1 …
    moby += [release("v27.5.1"), release("v27.0.3")]  # … page 2 holds 27.x
    pages("moby/moby", 7691631, moby)
    files = tuple(f"podman-linux-{a}.tar.gz{x}" for a in ("amd64", "arm64") for x in ("", ".asc"))
    podman = [release("v5.9.0", prerelease=True)]  # created, assets not uploaded yet
    podman += [
        release(f"v5.{m}.{p}", prerelease=True, assets=files)
        for m in range(8, -1, -1)
        for p in (4, 3, 2, 1)
    ]
    podman += [
        release(t, prerelease=True, assets=files)
        for t in ("v5.1.1-1", "v3.4.0-rc2", "v2.1.0-crun", "v4.9.4")
    ]
    pages("mgoltzsche/podman-static", 1, podman)
    pages(
        "k3s-io/k3s",
        2,
        [
            release("v1.32.0-rc1+k3s1", prerelease=True, assets=K3S),
            release("v1.31.11+k3s1"),  # not ready: no binaries yet
            release("v1.31.4+k3s2", assets=K3S),
            release("v1.31.10+k3s1", assets=K3S),
            release("v1.31.4+k3s1", assets=K3S),
            release("v1.30.9+k3s1", assets=K3S),
        ],
    )
    pages(
        "tailscale/tailscale",
        3,
        [
            release("v1.81.5"),
            release("v1.81.0-pre", prerelease=True),
            release("v1.80.3"),
            release("v1.80.0"),
            release("v1.79.2"),
            release("v1.78.1"),
        ],
    )
    pages(
        "containerd/containerd",
        4,
        [
            release("api/v1.9.0"),
            release("v2.1.4"),
            release("v2.2.0-beta.1", prerelease=True),
            release("v1.7.29"),
            release("v2.0.6"),
            release("v1.7.28"),
        ],
    )
    pages(
        "containernetworking/plugins",
        5,
        [release("v1.9.0-rc1"), release("v1.9.1"), release("v1.8.0")],
    )
    pages(
        "bytecodealliance/wasmtime",
        6,
        [release("dev", prerelease=True), release("v48.0.0"), release("v47.0.1")],
    )
    pages(
        "kubernetes/kubernetes",
        7,
        [release("v1.34.0-alpha.1", prerelease=True), release("v1.33.1"), release("v1.31.4")],
    )
    listing = "".join(
        f'<a href="{name}">{name}</a>   2025-01-01 00:00  70M\n'
        for name in (
            "docker-18.06.3-ce.tgz",
            "docker-27.5.1.tgz",
            "docker-28.5.2.tgz",
            "docker-29.1.2.tgz",
            "docker-rootless-extras-29.1.2.tgz",
        )
    )
    Recorded.responses["/docker/linux/static/stable/x86_64/"] = (
        f"<html><body><pre>{listing}</pre></body></html>".encode(),
        {"Content-Type": "text/html"},
    )
    Recorded.responses["/k8s/release/stable-1.31.txt"] = (b"v1.31.4", {})  # no newline
    Recorded.responses["/k8s/release/stable-1.30.txt"] = (b"v1.30.8\n", {})
    Recorded.responses["/k8s/release/stable.txt"] = (b"v1.33.1", {})
    with serve_http(Recorded) as url:
        yield url


def downloader(url: str, tmp_path: Path) -> Downloader:
    env = {"SYSEXT_MIRRORS": f"https://api.github.com/={url}/api/,https://dl.k8s.io/={url}/k8s/"}
    settings = load_settings(cache_dir=tmp_path / "cache", env=env)
    return Downloader(settings.cache_dir, settings.mirrors)


def versions(name: str, url: str, tmp_path: Path, recipe: Path | None = None) -> list[str]:
    return upstream_versions(
        load_recipe(recipe or RECIPES / f"{name}.toml"), downloader(url, tmp_path)
    )


def test_docker_tags_before_and_after_29_across_pages(api: str, tmp_path: Path) -> None:
    found = versions("docker", api, tmp_path)
    assert found[:6] == ["29.1.2", "29.1.1", "29.1.0", "29.0.0", "28.5.2", "28.4.88"]
    assert found[-3:] == ["28.0.3", "27.5.1", "27.0.3"]  # 27.x only on page 2
    assert len(found) == 4 + 2 + 89 + 2
    assert not [v for v in found if "rc" in v or "/" in v or v.startswith("docker")]
    assert "29.9.9" not in found  # a draft


def test_docker_versions_through_the_cli(api: str) -> None:
    env = {"SYSEXT_MIRRORS": f"https://api.github.com/={api}/api/"}
    result = run_cli("versions", "docker", "--limit", "3", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["29.1.2 *", "29.1.1", "29.1.0"]


def test_podman_static_flags_every_release_as_prerelease(api: str, tmp_path: Path) -> None:
    found = versions("podman", api, tmp_path)
    assert found[:3] == ["5.8.4", "5.8.3", "5.8.2"]
    assert "3.4.0-rc2" not in found and "5.1.1-1" in found and "2.1.0-crun" in found
    strict = tmp_path / "podman.toml"
    strict.write_text(
        (RECIPES / "podman.toml").read_text().replace('prereleases = "by-version"', "")
    )
    with pytest.raises(SysextError) as info:
        versions("podman", api, tmp_path, strict)
    assert info.value.message == (
        "recipe podman.toml: all 41 releases in GitHub releases of mgoltzsche/podman-static "
        "are marked prerelease"
    )
    assert info.value.hint is not None and 'prereleases = "by-version"' in info.value.hint


def test_k3s_versions_order_their_k3s_suffix(api: str, tmp_path: Path) -> None:
    assert versions("k3s", api, tmp_path) == [
        "1.31.10+k3s1",
        "1.31.4+k3s2",
        "1.31.4+k3s1",
        "1.30.9+k3s1",
    ]
    recipe = load_recipe(RECIPES / "k3s.toml")
    assert resolve_version(recipe, "1.31", downloader(api, tmp_path)) == "1.31.10+k3s1"
    assert resolve_version(recipe, "latest", downloader(api, tmp_path)) == "1.31.10+k3s1"


def test_tailscale_keeps_only_even_stable_minors(api: str, tmp_path: Path) -> None:
    assert versions("tailscale", api, tmp_path) == ["1.80.3", "1.80.0", "1.78.1"]


def test_containerd_tracks_skip_api_releases(api: str, tmp_path: Path) -> None:
    assert versions("containerd", api, tmp_path) == ["2.1.4", "2.0.6", "1.7.29", "1.7.28"]
    recipe = load_recipe(RECIPES / "containerd.toml")
    assert resolve_version(recipe, "1.7", downloader(api, tmp_path)) == "1.7.29"
    with pytest.raises(SysextError, match=r"^containerd: no upstream version in the 1\.6 track$"):
        resolve_version(recipe, "1.6", downloader(api, tmp_path))


def test_unflagged_release_candidates_and_rolling_dev_are_skipped(api: str, tmp_path: Path) -> None:
    assert versions("cni-plugins", api, tmp_path) == ["1.9.1", "1.8.0"]
    assert versions("wasmtime", api, tmp_path) == ["48.0.0", "47.0.1"]


def test_kubernetes_patch_track_per_minor_from_markers(api: str, tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES / "kubernetes.toml")
    dl = downloader(api, tmp_path)
    assert resolve_version(recipe, "1.31", dl) == "1.31.4"
    assert resolve_version(recipe, "1.30", dl) == "1.30.8"
    assert resolve_version(recipe, "latest", dl) == "1.33.1"
    assert resolve_version(recipe, "1.31.2", dl) == "1.31.2"  # a full version is literal
    assert versions("kubernetes", api, tmp_path) == ["1.33.1", "1.31.4"]


def test_tag_scheme_mismatch_says_what_was_found(api: str, tmp_path: Path) -> None:
    odd = tmp_path / "docker.toml"
    odd.write_text((RECIPES / "docker.toml").read_text().replace('["docker-v", "v"]', '"release-"'))
    with pytest.raises(SysextError) as info:
        versions("docker", api, tmp_path, odd)
    assert info.value.message == (
        "recipe docker.toml: none of the 101 tags in GitHub releases of moby/moby matches "
        "tag_prefix 'release-' (e.g. 'docker-v29.1.2', 'docker-v29.1.1', 'docker-v29.1.0')"
    )


def test_comma_separated_mirror_list() -> None:
    rules = parse_mirror_spec(
        "https://github.com/=http://m/gh/, https://dl.k8s.io/=http://m/k8s/", source="env"
    )
    assert (
        rules.rewrite("https://dl.k8s.io/release/stable.txt") == "http://m/k8s/release/stable.txt"
    )
    assert rules.rewrite("https://github.com/a/b") == "http://m/gh/a/b"
    with pytest.raises(SysextError, match="is mapped twice"):
        parse_mirror_spec("https://a/=http://x/,https://a/=http://y/", source="env")
    with pytest.raises(SysextError, match="does not start with an upstream URL"):
        parse_mirror_spec("github.com=http://x/", source="env")


def test_directory_listing_feed_with_a_tag_pattern(api: str, tmp_path: Path) -> None:
    """download.docker.com has no API: its index page, read with a pattern, is a feed."""
    recipe = tmp_path / "docker.toml"
    recipe.write_text(
        (RECIPES / "docker.toml")
        .read_text()
        .replace(
            'github = "moby/moby"\ntag_prefix = ["docker-v", "v"]',
            'index_url = "https://download.docker.com/linux/static/stable/x86_64/"\n'
            "tag_pattern = 'docker-(?P<version>\\d+\\.\\d+\\.\\d+)\\.tgz'",
        )
    )
    settings = load_settings(
        cache_dir=tmp_path / "cache",
        env={"SYSEXT_MIRRORS": f"https://download.docker.com/={api}/docker/"},
    )
    found = upstream_versions(load_recipe(recipe), Downloader(settings.cache_dir, settings.mirrors))
    assert found == ["29.1.2", "28.5.2", "27.5.1"]


def test_release_without_its_assets_is_not_ready(api: str, tmp_path: Path) -> None:
    """podman-static and k3s create the release first and upload files afterwards."""
    assert "5.9.0" not in versions("podman", api, tmp_path)
    assert "1.31.11+k3s1" not in versions("k3s", api, tmp_path)
    waiting = tmp_path / "k3s.toml"
    waiting.write_text(
        (RECIPES / "k3s.toml").read_text().replace("sha256sum-amd64.txt", "k3s-riscv64")
    )
    with pytest.raises(SysextError) as info:
        versions("k3s", api, tmp_path, waiting)
    assert info.value.message == (
        "recipe k3s.toml: 5 releases in GitHub releases of k3s-io/k3s have no asset matching "
        "'k3s-riscv64' (yet), e.g. 1.31.11+k3s1"
    )
