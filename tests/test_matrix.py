"""Matrix builds (`sysext build R1 R2 … --arch … [--publish URL]`) from upstream-shaped
trees served on 127.0.0.1: every row builds; a second run packs nothing; a changed recipe
rebuilds only its own images; a failing source fails only its rows and leaves nothing
partial; `--publish` against a real `sysext serve` uploads only what the registry lacks.

Packing is counted with a `mksquashfs` wrapper first on PATH that logs each packing call
(not version queries) and runs the real tool.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.recipe_cases import CASES, RECIPES, mirrors_env, publish_cases, recipe_copies
from tests.registry_server import RegistryServer, build_image
from tests.servers import CliResult, StaticServer, run_cli, serve_directory
from tests.upstream_fixtures import ARM, X86, SigningKey, Upstream
from tests.upstream_fixtures import containerd as containerd_upstream
from tests.upstream_fixtures import k3s as k3s_upstream
from tests.upstream_fixtures import tailscale as tailscale_upstream

VERSIONS = {"containerd": "0.0.2", "k3s": "0.0.4+k3s1", "tailscale": "0.0.6"}
UPSTREAMS = {
    "containerd": containerd_upstream,
    "k3s": k3s_upstream,
    "tailscale": tailscale_upstream,
}


class Matrix:
    """Recipes copied into a private directory, their fixtures served, a counting packer.

    With `gated`, each packing call waits until the file `self.gate` exists, so a test can
    look at a build while its images are being packed (and interrupt it there).
    """

    def __init__(
        self,
        tmp_path: Path,
        server: StaticServer,
        names: tuple[str, ...],
        *,
        gated: bool = False,
    ) -> None:
        self.tmp = tmp_path
        self.gate = tmp_path / "gate"
        self.server = server
        self.names = names
        self.recipes = tmp_path / "recipes"
        self.recipes.mkdir()
        self.out = tmp_path / "out"
        self.pack_log = tmp_path / "packs.log"
        self.pack_log.touch()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "mksquashfs"
        real = shutil.which("mksquashfs")
        wait = f"while [ ! -e {self.gate} ]; do sleep 0.05; done; " if gated else ""
        wrapper.write_text(
            "#!/bin/sh\n"
            f'case "$1" in -version) ;; *) echo "$@" >> {self.pack_log}; {wait}: ;; esac\n'
            f'exec {real} "$@"\n'
        )
        wrapper.chmod(0o755)
        self.path = f"{bin_dir}:{os.environ['PATH']}"
        self.upstream = Upstream()
        for name in names:
            (self.recipes / f"{name}.toml").write_text((RECIPES / f"{name}.toml").read_text())
            # Every recipe is built at its fixture's version: pin it as the default.
            text = (self.recipes / f"{name}.toml").read_text()
            (self.recipes / f"{name}.toml").write_text(
                text.replace('\nversion = "', f'\nversion = "{VERSIONS[name]}"\n# was "', 1)
            )
            for arch in (X86, ARM):
                UPSTREAMS[name](self.upstream, VERSIONS[name], arch)
        self.upstream.publish(server)

    def argv(self, *extra: str | Path) -> list[str | Path]:
        """`build` of every recipe for both architectures into ./out."""
        return [
            "build",
            *self.names,
            "--recipes-dir",
            self.recipes,
            "--cache-dir",
            self.tmp / "cache",
            "--arch",
            "x86-64",
            "--arch",
            "arm64",
            "--output",
            self.out,
            *extra,
        ]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Mirrors onto the served fixtures, and the counting packer first on PATH."""
        return {**mirrors_env(self.server), "PATH": self.path, **(extra or {})}

    def build(self, *extra: str | Path, env: dict[str, str] | None = None) -> CliResult:
        """Run `argv()` in the test's directory (where `--locked` finds ./RECIPE.lock.json)."""
        return run_cli(*self.argv(*extra), env=self.env(env), cwd=self.tmp)

    def lock(self, name: str, *arches: str) -> None:
        """`sysext lock NAME` for these architectures, into ./NAME.lock.json."""
        argv = ["lock", name, "--recipes-dir", self.recipes, "--cache-dir", self.tmp / "cache"]
        for arch in arches:
            argv += ["--arch", arch]
        done = run_cli(*argv, env=mirrors_env(self.server), cwd=self.tmp)
        assert done.returncode == 0, done.stderr

    def packs(self) -> int:
        return len(self.pack_log.read_text().splitlines())

    def images(self) -> list[str]:
        return sorted(p.name for p in self.out.glob("*.raw"))


def expected_images(names: tuple[str, ...]) -> list[str]:
    return sorted(f"{n}-{VERSIONS[n]}-{a}.raw" for n in names for a in ("x86-64", "arm64"))


def no_leftovers(out: Path) -> None:
    """Only images, their provenance and SHA256SUMS: no temporaries, no scratch dirs."""
    for path in out.iterdir():
        assert path.name == "SHA256SUMS" or path.name.endswith((".raw", ".provenance.json")), path


def test_matrix_builds_then_skips_then_rebuilds_only_what_changed(
    tmp_path: Path, static_server: StaticServer
) -> None:
    names = ("containerd", "k3s", "tailscale")
    matrix = Matrix(tmp_path, static_server, names)

    first = matrix.build()
    assert first.returncode == 0, first.stderr
    assert matrix.images() == expected_images(names)
    assert matrix.packs() == 6
    assert "6 built" in first.stderr
    assert sorted(Path(line).name for line in first.stdout.splitlines()) == matrix.images()
    sums = (matrix.out / "SHA256SUMS").read_text().splitlines()
    assert sorted(line.split("  ")[1] for line in sums) == matrix.images()
    no_leftovers(matrix.out)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in matrix.out.iterdir()}
    record = json.loads((matrix.out / "k3s-0.0.4+k3s1-arm64.provenance.json").read_text())
    assert record["key"].startswith("sha256:")

    # Same inputs: every row is "unchanged", nothing is packed, no file is rewritten.
    second = matrix.build()
    assert second.returncode == 0, second.stderr
    assert "6 unchanged" in second.stderr
    assert matrix.packs() == 6
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in matrix.out.iterdir()}
    assert after == before

    # A changed recipe rebuilds its two images, and only those.
    k3s = matrix.recipes / "k3s.toml"
    k3s.write_text(k3s.read_text().replace('description = "', 'description = "Changed: ', 1))
    third = matrix.build()
    assert third.returncode == 0, third.stderr
    assert "2 built, 4 unchanged" in third.stderr
    assert matrix.packs() == 8
    rebuilt = sorted(
        name for name, stamp in before.items() if (matrix.out / name).stat().st_mtime_ns != stamp[1]
    )
    assert rebuilt == [
        "SHA256SUMS",
        "k3s-0.0.4+k3s1-arm64.provenance.json",
        "k3s-0.0.4+k3s1-arm64.raw",
        "k3s-0.0.4+k3s1-x86-64.provenance.json",
        "k3s-0.0.4+k3s1-x86-64.raw",
    ]
    # --force packs again although nothing changed; a lone recipe keeps its old output.
    forced = run_cli(
        "build",
        "tailscale",
        "--recipes-dir",
        matrix.recipes,
        "--cache-dir",
        tmp_path / "cache",
        "--arch",
        "arm64",
        "--output",
        matrix.out,
        env={**mirrors_env(static_server), "PATH": matrix.path},
    )
    assert forced.returncode == 0, forced.stderr
    assert "unchanged: tailscale-0.0.6-arm64.raw" in forced.stderr
    assert forced.stdout.strip() == str(matrix.out / "tailscale-0.0.6-arm64.raw")
    assert matrix.packs() == 8


def test_a_failing_source_fails_only_its_rows(tmp_path: Path, static_server: StaticServer) -> None:
    names = ("k3s", "tailscale")
    matrix = Matrix(tmp_path, static_server, names)
    # The arm64 tarball no longer matches its upstream checksum file.
    tarball = static_server.root / "ts/stable/tailscale_0.0.6_arm64.tgz"
    tarball.write_bytes(tarball.read_bytes() + b"tampered")

    result = matrix.build()
    assert result.returncode == 1
    assert matrix.images() == [
        "k3s-0.0.4+k3s1-arm64.raw",
        "k3s-0.0.4+k3s1-x86-64.raw",
        "tailscale-0.0.6-x86-64.raw",
    ]
    assert "3 built, 1 failed" in result.stderr
    (failed,) = [line for line in result.stderr.splitlines() if ": failed" in line]
    assert "tailscale 0.0.6 arm64: failed" in failed
    assert "tailscale_0.0.6_arm64.tgz" in failed and "sha256 mismatch" in failed
    assert not (matrix.out / "tailscale-0.0.6-arm64.provenance.json").exists()
    no_leftovers(matrix.out)
    sums = (matrix.out / "SHA256SUMS").read_text()
    assert "tailscale-0.0.6-arm64.raw" not in sums
    assert list((tmp_path / "cache/downloads/partial").glob("*")) == []

    # Once upstream is fixed, only the missing row is built.
    Upstream(
        {k: v for k, v in matrix.upstream.files.items() if "tailscale_0.0.6_arm64" in k}
    ).publish(static_server)
    again = matrix.build()
    assert again.returncode == 0, again.stderr
    assert "1 built, 3 unchanged" in again.stderr
    assert matrix.images() == expected_images(names)


def test_publish_uploads_only_what_the_registry_lacks(
    tmp_path: Path,
    static_server: StaticServer,
    registry_server: RegistryServer,
) -> None:
    names = ("k3s", "tailscale")
    matrix = Matrix(tmp_path, static_server, names)
    admin = {"SYSEXT_TOKEN": registry_server.admin_token}
    api = f"{registry_server.url}/api/v1"

    # Half-way failure: a token that may write k3s only publishes k3s, tailscale fails.
    created = requests.post(
        f"{api}/tokens",
        json={"scopes": ["k3s"]},
        headers=registry_server.headers(),
        timeout=10,
    )
    created.raise_for_status()
    partial = matrix.build(
        "--publish", registry_server.url, env={"SYSEXT_TOKEN": created.json()["token"]}
    )
    assert partial.returncode == 1
    assert "2 published, 2 failed" in partial.stderr, partial.stderr
    assert matrix.images() == expected_images(names)  # building itself succeeded
    k3s_before = requests.get(f"{api}/extensions/k3s", timeout=10).json()["images"]
    assert sorted(i["filename"] for i in k3s_before) == [
        "k3s-0.0.4+k3s1-arm64.raw",
        "k3s-0.0.4+k3s1-x86-64.raw",
    ]
    assert requests.get(f"{api}/extensions/tailscale", timeout=10).status_code == 404

    # Re-run with a token that may write both: builds nothing, uploads only tailscale.
    rerun = matrix.build("--publish", registry_server.url, env=admin)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 published, 2 already published" in rerun.stderr, rerun.stderr
    assert matrix.packs() == 4
    assert requests.get(f"{api}/extensions/k3s", timeout=10).json()["images"] == k3s_before
    local = {
        line.split("  ")[1]: line.split("  ")[0]
        for line in (matrix.out / "SHA256SUMS").read_text().splitlines()
    }
    for name in names:
        served = requests.get(f"{registry_server.url}/extensions/{name}/SHA256SUMS", timeout=10)
        for line in served.text.splitlines():
            digest, filename = line.split("  ")
            if filename.startswith("BEST-BEFORE-"):  # the registry's freshness marker
                continue
            assert local[filename] == digest

    # Idempotent: a third run publishes nothing; another channel gets the same bytes.
    third = matrix.build("--publish", registry_server.url, env=admin)
    assert third.returncode == 0, third.stderr
    assert "4 already published" in third.stderr
    beta = matrix.build("--publish", registry_server.url, "--channel", "beta", env=admin)
    assert beta.returncode == 0, beta.stderr
    assert "4 published" in beta.stderr
    images = requests.get(f"{api}/extensions/tailscale", timeout=10).json()["images"]
    assert all(sorted(i["channels"]) == ["beta", "stable"] for i in images)

    # `sysext publish --all OUT` asks the same question for the images of a directory.
    extra = tmp_path / "extra"
    extra.mkdir()
    build_image(extra, "k3s", "0.0.9")
    shutil.copy(matrix.out / "tailscale-0.0.6-arm64.raw", extra)
    (extra / "SHA256SUMS").write_text(
        "".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
            for p in sorted(extra.glob("*.raw"))
        )
    )
    listed = run_cli("publish", "--all", extra, "-r", registry_server.url, env=admin)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "published: k3s-0.0.9-x86-64.raw (into stable)",
        "already published: tailscale-0.0.6-arm64.raw (in beta, stable)",
    ]

    # A newer sysext that packs differently (here: another compressor) must not break the
    # nightly run: versions the channel has are not built again, nothing is packed.
    repacked = matrix.build("--publish", registry_server.url, "--compression", "gzip", env=admin)
    assert repacked.returncode == 0, repacked.stderr
    assert "4 already published" in repacked.stderr, repacked.stderr
    assert repacked.stderr.count("is in stable already") >= 4, repacked.stderr
    assert matrix.packs() == 4
    # --force builds them anyway, and immutability speaks: other bytes under the same name.
    forced = matrix.build(
        "--publish", registry_server.url, "--compression", "gzip", "--force", env=admin
    )
    assert forced.returncode == 1
    assert "4 failed" in forced.stderr, forced.stderr
    assert "the registry has other bytes under this name" in forced.stderr
    assert matrix.packs() == 8
    after = requests.get(f"{api}/extensions/k3s", timeout=10).json()["images"]

    def digests(images: list[dict[str, str]]) -> set[tuple[str, str]]:
        return {(i["filename"], i["sha256"]) for i in images if i["version"] != "0.0.9"}

    assert digests(after) == digests(k3s_before)


def test_matrix_refuses_bad_requests_before_building(tmp_path: Path) -> None:
    out = tmp_path / "out"
    both = run_cli("build", "k3s", "--all", "--output", out)
    assert both.returncode == 2
    assert "error: pass recipe names or --all, not both" in both.stderr
    neither = run_cli("build", "--output", out)
    assert neither.returncode == 2
    assert "error: no recipe given" in neither.stderr
    no_token = run_cli(
        "build",
        "k3s",
        "--publish",
        "http://127.0.0.1:9",
        "--output",
        out,
        env={"SYSEXT_TOKEN": ""},
    )
    assert no_token.returncode == 2
    assert "SYSEXT_TOKEN is not set" in no_token.stderr
    assert not out.exists()


@pytest.mark.parametrize("spec", ["latest", "1.2"])
def test_version_specs_resolve_against_the_feed(
    tmp_path: Path, static_server: StaticServer, spec: str
) -> None:
    """`latest` and a track X.Y pick from the recipe's GitHub releases feed (mirrored)."""
    from sysext.build.matrix import resolve_version
    from sysext.core.config import load_settings
    from sysext.core.download import Downloader
    from sysext.recipe.model import load_recipe

    releases = [
        {"tag_name": t, "draft": False, "prerelease": p}
        for t, p in (("v1.3.0", True), ("v1.2.10", False), ("v1.2.9", False), ("v1.10.0", False))
    ]
    api = static_server.root / "api/repos/tailscale/tailscale"
    api.mkdir(parents=True)
    (api / "releases").write_text(json.dumps(releases))
    env = {"SYSEXT_MIRRORS": f"https://api.github.com/={static_server.url}/api/"}
    settings = load_settings(cache_dir=tmp_path / "cache", env=env)
    downloader = Downloader(settings.cache_dir, settings.mirrors)
    recipe = load_recipe(RECIPES / "tailscale.toml")
    expected = {"latest": "1.10.0", "1.2": "1.2.10"}[spec]
    assert resolve_version(recipe, spec, downloader) == expected


def test_signed_sources_are_not_downloaded_again_when_unchanged(tmp_path: Path) -> None:
    """podman is verified by its upstream OpenPGP signature: a rebuild decides from the
    signature alone (the same bytes verified the cached payload before), so the payload may
    even be gone upstream."""
    case = next(c for c in CASES if c.recipe == "podman" and c.version == "5.8.4")
    www = tmp_path / "www"
    www.mkdir()
    key = SigningKey()
    publish_cases([case], www, key)
    recipes = recipe_copies(tmp_path / "recipes", key.fingerprint)
    with serve_directory(www) as upstream:
        argv = ["build", "podman", "--version", case.version, "--arch", "x86-64"]
        argv += ["--recipes-dir", str(recipes), "--cache-dir", str(tmp_path / "cache")]
        argv += ["--output", str(tmp_path / "out")]
        first = run_cli(*argv, env=mirrors_env(upstream.url))
        assert first.returncode == 0, first.stderr
        payloads = list(www.rglob("*.tar.gz"))
        assert payloads
        for payload in payloads:
            payload.unlink()  # the signatures stay
        second = run_cli(*argv, env=mirrors_env(upstream.url))
        assert second.returncode == 0, second.stderr
        assert "unchanged: podman-5.8.4-x86-64.raw" in second.stderr


def failed_lines(result: CliResult) -> list[str]:
    """The progress lines of failed rows (one per row when stderr is not a terminal)."""
    return [line for line in result.stderr.splitlines() if ": failed (" in line]


def test_locked_matrix_builds_each_recipe_from_its_own_lock(
    tmp_path: Path, static_server: StaticServer
) -> None:
    names = ("k3s", "tailscale")
    matrix = Matrix(tmp_path, static_server, names)
    for name in names:
        matrix.lock(name, "x86-64", "arm64")

    first = matrix.build("--locked")
    assert first.returncode == 0, first.stderr
    assert "4 built" in first.stderr
    assert matrix.images() == expected_images(names)
    for image in matrix.images():
        record = json.loads((matrix.out / image.replace(".raw", ".provenance.json")).read_text())
        assert {s["integrity"] for s in record["inputs"]["sources"]} == {"lock"}, image
    no_leftovers(matrix.out)

    # The lock is not part of the build key: the second locked run packs nothing.
    second = matrix.build("--locked")
    assert second.returncode == 0, second.stderr
    assert "4 unchanged" in second.stderr
    assert matrix.packs() == 4

    # --lock-file names one recipe's lock: refused with several, before anything is built.
    other = tmp_path / "elsewhere"
    both = matrix.build("--locked", "--lock-file", tmp_path / "k3s.lock.json", "-o", other)
    assert both.returncode == 2
    assert both.stderr.splitlines()[0] == (
        "error: --lock-file names one recipe's lock, and this build has several recipes"
    )
    assert not other.exists()


def test_locked_matrix_without_a_recipes_lock_fails_only_its_rows(
    tmp_path: Path, static_server: StaticServer
) -> None:
    names = ("k3s", "tailscale")
    matrix = Matrix(tmp_path, static_server, names)
    matrix.lock("k3s", "x86-64", "arm64")

    result = matrix.build("--locked")
    assert result.returncode == 1
    assert "2 built, 2 failed" in result.stderr
    failed = failed_lines(result)
    assert sorted(line.split("] ", 1)[1].split(":")[0] for line in failed) == [
        "tailscale 0.0.6 arm64",
        "tailscale 0.0.6 x86-64",
    ]
    for line in failed:
        assert "no lock file tailscale.lock.json: run `sysext lock tailscale`" in line
    # The summary table gives the same reason on the failed rows.
    table = [line for line in result.stderr.splitlines() if "│ tailscale" in line]
    assert len(table) == 2 and all("no lock file tailscale.lock.json" in t for t in table)
    assert matrix.images() == ["k3s-0.0.4+k3s1-arm64.raw", "k3s-0.0.4+k3s1-x86-64.raw"]
    no_leftovers(matrix.out)

    # A lock without arm64: only that row is refused, naming what is missing.
    matrix.lock("tailscale", "x86-64")
    again = matrix.build("--locked")
    assert again.returncode == 1
    assert "1 built, 2 unchanged, 1 failed" in again.stderr
    (line,) = failed_lines(again)
    assert "tailscale 0.0.6 arm64: failed" in line
    assert "tailscale.lock.json: no entry for tailscale 0.0.6 arm64 source" in line
    assert "tailscale-0.0.6-arm64.raw" not in matrix.images()
    no_leftovers(matrix.out)


def test_locked_matrix_with_a_changed_upstream_file_fails_only_its_rows(
    tmp_path: Path, static_server: StaticServer
) -> None:
    names = ("k3s", "tailscale")
    matrix = Matrix(tmp_path, static_server, names)
    for name in names:
        matrix.lock(name, "x86-64", "arm64")
    locked = json.loads((tmp_path / "tailscale.lock.json").read_text())
    (entry,) = [e for e in locked["entries"] if e["arch"] == "arm64" and e["url"].endswith(".tgz")]
    # Upstream re-uploads the arm64 tarball with other bytes and a checksum file that
    # agrees: only the lock notices. The cache filled by `sysext lock` is gone.
    tarball = static_server.root / "ts/stable/tailscale_0.0.6_arm64.tgz"
    tarball.write_bytes(tarball.read_bytes() + b"tampered")
    checksum = tarball.with_name(tarball.name + ".sha256")
    checksum.write_text(hashlib.sha256(tarball.read_bytes()).hexdigest() + "\n")
    shutil.rmtree(tmp_path / "cache")

    result = matrix.build("--locked")
    assert result.returncode == 1
    assert "3 built, 1 failed" in result.stderr
    (line,) = failed_lines(result)
    assert "tailscale 0.0.6 arm64: failed" in line
    assert (
        f"UPSTREAM FILE CHANGED: {entry['url']} no longer has the sha256 {entry['sha256']} "
        "locked in tailscale.lock.json" in line
    )
    assert matrix.images() == [
        "k3s-0.0.4+k3s1-arm64.raw",
        "k3s-0.0.4+k3s1-x86-64.raw",
        "tailscale-0.0.6-x86-64.raw",
    ]
    assert not (matrix.out / "tailscale-0.0.6-arm64.provenance.json").exists()
    assert "tailscale-0.0.6-arm64.raw" not in (matrix.out / "SHA256SUMS").read_text()
    no_leftovers(matrix.out)
    assert list((tmp_path / "cache/downloads/partial").glob("*")) == []
