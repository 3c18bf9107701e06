"""Upstream integrity through the CLI: detached OpenPGP signatures checked against the
fingerprint pinned in the recipe (good, wrong key, tampered file, missing signature, a
swapped key file), and lock files (`sysext lock`, `build --locked`, a file not in the lock,
an upstream file that changed after locking). Each failure is one exact line and leaves
nothing in the output directory."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.servers import CliResult, StaticServer, run_cli
from tests.upstream_fixtures import SigningKey, script, tarball

VERSION = "1.2.3"
BASE = f"https://github.com/example/tool/releases/download/v{VERSION}/"
ASSET = "tool-linux-amd64.tar.gz"


def recipe_text(fingerprint: str, *, lock: bool = False) -> str:
    integrity = (
        'integrity = "lock"\n'
        if lock
        else (
            'signature_url = "https://github.com/example/tool/releases/download/v{version}/'
            'tool-linux-{arch}.tar.gz.asc"\n'
            f'signing_keys = ["{fingerprint}"]\n'
            'key_url = "https://github.com/example/tool/raw/KEYS.asc"\n'
        )
    )
    return (
        'name = "tool"\nversion = "1.2.3"\narchitectures = ["x86-64"]\n'
        'description = "A tool"\nhomepage = "https://example.org/tool"\nlicense = "MIT"\n'
        'replaces = ["tool-flatcar"]\n'
        '[arch_map]\nx86-64 = "amd64"\n[[sources]]\nid = "tool"\n'
        'url = "https://github.com/example/tool/releases/download/v{version}/'
        'tool-linux-{arch}.tar.gz"\n' + integrity + "strip_components = 1\n"
        '[[install]]\nfrom = "tool"\nto = "usr/bin/tool"\nmode = "0755"\n'
    )


class Release:
    def __init__(self, tmp_path: Path, server: StaticServer, *, lock: bool = False) -> None:
        self.tmp = tmp_path
        self.server = server
        self.key = SigningKey()
        self.blob = tarball({"tool": script("tool 1.2.3")}, "tool")
        self.dir = server.root / "gh/example/tool/releases/download" / f"v{VERSION}"
        self.dir.mkdir(parents=True)
        (self.dir / ASSET).write_bytes(self.blob)
        (self.dir / f"{ASSET}.asc").write_bytes(self.key.sign(self.blob, armor=True))
        keys = server.root / "gh/example/tool/raw/KEYS.asc"
        keys.parent.mkdir(parents=True)
        keys.write_bytes(self.key.armored)
        self.recipe = tmp_path / "tool.toml"
        self.recipe.write_text(recipe_text(self.key.fingerprint, lock=lock))
        self.out = tmp_path / "out"
        self.lock_file = tmp_path / "tool.lock.json"

    def run(self, command: str, *extra: str | Path) -> CliResult:
        env = {"SYSEXT_MIRRORS": f"https://github.com/={self.server.url}/gh/"}
        args: list[str | Path] = [command, self.recipe, "--arch", "x86-64"]
        args += ["--cache-dir", self.tmp / "cache", *extra]
        if command == "build":
            args += ["--output", self.out]
        return run_cli(*args, env=env)


def one_error(result: CliResult) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_good_signature_builds_and_records_the_key(
    tmp_path: Path, static_server: StaticServer
) -> None:
    release = Release(tmp_path, static_server)
    result = release.run("build")
    assert result.returncode == 0, result.stderr
    provenance = json.loads((release.out / "tool-1.2.3-x86-64.provenance.json").read_text())
    (source,) = provenance["inputs"]["sources"]
    assert source["integrity"] == f"openpgp:{release.key.fingerprint}"
    # Self-describing: the recipe's metadata is in extension-release.tool.
    shown = run_cli("inspect", release.out / "tool-1.2.3-x86-64.raw", "--json")
    fields = json.loads(shown.stdout)["release_files"]["tool"]
    assert {k: v for k, v in fields.items() if k.startswith("X_SYSEXT_")} == {
        "X_SYSEXT_DESCRIPTION": "A tool",
        "X_SYSEXT_HOMEPAGE": "https://example.org/tool",
        "X_SYSEXT_LICENSE": "MIT",
        "X_SYSEXT_UPSTREAM_VERSION": "1.2.3",
        "X_SYSEXT_REPLACES": "tool-flatcar",
    }
    text = run_cli("inspect", release.out / "tool-1.2.3-x86-64.raw")
    assert "X_SYSEXT_REPLACES=tool-flatcar" in text.stdout


def test_signature_by_another_key_is_refused(tmp_path: Path, static_server: StaticServer) -> None:
    release = Release(tmp_path, static_server)
    other = SigningKey()
    (release.dir / f"{ASSET}.asc").write_bytes(other.sign(release.blob, armor=True))
    issuer = other.sig_issuer(release.blob)
    assert one_error(release.run("build")) == (
        f"error: {ASSET}.asc: {ASSET} is signed by key {issuer}, not by the pinned key "
        f"{release.key.fingerprint}"
    )
    assert not release.out.exists()


def test_tampered_file_is_refused(tmp_path: Path, static_server: StaticServer) -> None:
    release = Release(tmp_path, static_server)
    (release.dir / ASSET).write_bytes(release.blob + b"\0")
    assert one_error(release.run("build")) == (
        f"error: {ASSET}: BAD signature {ASSET}.asc for key {release.key.fingerprint}: the "
        "file is not what the key signed"
    )
    assert not release.out.exists()
    assert not list((tmp_path / "cache/downloads").rglob("*.part"))


def test_missing_signature_is_refused(tmp_path: Path, static_server: StaticServer) -> None:
    release = Release(tmp_path, static_server)
    (release.dir / f"{ASSET}.asc").unlink()
    assert one_error(release.run("build")) == (
        f"error: {ASSET}.asc: signature missing (HTTP 404 File not found); {ASSET} cannot be "
        f"checked against key {release.key.fingerprint}"
    )
    assert not release.out.exists()


def test_swapped_key_file_is_refused(tmp_path: Path, static_server: StaticServer) -> None:
    """The certificate is only trusted when its fingerprint is the one pinned."""
    release = Release(tmp_path, static_server)
    impostor = SigningKey()
    (static_server.root / "gh/example/tool/raw/KEYS.asc").write_bytes(impostor.armored)
    (release.dir / f"{ASSET}.asc").write_bytes(impostor.sign(release.blob, armor=True))
    assert one_error(release.run("build")) == (
        f"error: KEYS.asc: holds key {impostor.fingerprint}, not the pinned key "
        f"{release.key.fingerprint}"
    )


# -- lock files ---------------------------------------------------------------------------


def test_lock_only_upstream_needs_a_lock(tmp_path: Path, static_server: StaticServer) -> None:
    release = Release(tmp_path, static_server, lock=True)
    assert one_error(release.run("build")) == (
        f"error: recipe tool.toml: sources[0]: {ASSET}: upstream publishes no checksum or "
        "signature, so only a locked build may use it"
    )
    locked = release.run("build", "--locked", "--lock-file", release.lock_file)
    assert one_error(locked) == f"error: {release.lock_file}: no such lock file"


def test_lock_then_locked_build_then_changed_upstream(
    tmp_path: Path, static_server: StaticServer
) -> None:
    release = Release(tmp_path, static_server, lock=True)
    locked = release.run("lock", "--lock-file", release.lock_file)
    assert locked.returncode == 0, locked.stderr
    document = json.loads(release.lock_file.read_text())
    assert document == {
        "format": 1,
        "recipe": "tool",
        "entries": [
            {
                "version": VERSION,
                "arch": "x86-64",
                "source": "tool",
                "url": BASE + ASSET,
                "sha256": hashlib.sha256(release.blob).hexdigest(),
                "size": len(release.blob),
            }
        ],
    }
    built = release.run("build", "--locked", "--lock-file", release.lock_file)
    assert built.returncode == 0, built.stderr

    # Another version is not in the lock: refused before any download.
    other = release.run("build", "--locked", "--lock-file", release.lock_file, "--version", "1.2.4")
    assert one_error(other) == (
        "error: tool.lock.json: no entry for tool 1.2.4 x86-64 source 'tool'; --locked "
        "builds use only locked files"
    )

    # Upstream re-uploads the release with other bytes: a loud error, nothing written.
    (release.dir / ASSET).write_bytes(tarball({"tool": script("tool 1.2.3 rebuilt")}, "tool"))
    out = release.out
    for path in out.iterdir():
        path.unlink()
    out.rmdir()
    shutil.rmtree(tmp_path / "cache")
    changed = release.run("build", "--locked", "--lock-file", release.lock_file)
    assert one_error(changed) == (
        f"error: UPSTREAM FILE CHANGED: {BASE}{ASSET} no longer has the sha256 "
        f"{document['entries'][0]['sha256']} locked in tool.lock.json"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "not a lock file"),
        ('{"format": 1, "recipe": "other", "entries": []}', "this lock is for recipe 'other'"),
        ('{"format": 1, "recipe": "tool"}', "malformed lock file (missing or bad 'entries')"),
    ],
)
def test_bad_lock_files(
    tmp_path: Path, static_server: StaticServer, text: str, expected: str
) -> None:
    release = Release(tmp_path, static_server, lock=True)
    release.lock_file.write_text(text)
    error = one_error(release.run("build", "--locked", "--lock-file", release.lock_file))
    assert expected in error


# -- GitHub's per-asset digest --------------------------------------------------------------


@pytest.mark.parametrize("case", ["good", "wrong", "none"])
def test_github_asset_digest(tmp_path: Path, static_server: StaticServer, case: str) -> None:
    """The sha256 GitHub's releases API records for an asset (uploads since June 2025)."""
    release = Release(tmp_path, static_server, lock=True)
    release.recipe.write_text(
        release.recipe.read_text().replace('integrity = "lock"', 'integrity = "github-digest"')
    )
    digest = {
        "good": "sha256:" + hashlib.sha256(release.blob).hexdigest(),
        "wrong": "sha256:" + "0" * 64,
        "none": None,
    }[case]
    asset: dict[str, object] = {"name": ASSET, "size": len(release.blob)}
    if digest:
        asset["digest"] = digest
    api = static_server.root / f"api/repos/example/tool/releases/tags/v{VERSION}"
    api.parent.mkdir(parents=True)
    api.write_text(json.dumps({"tag_name": f"v{VERSION}", "assets": [asset]}))
    env = {
        "SYSEXT_MIRRORS": f"https://github.com/={static_server.url}/gh/,"
        f"https://api.github.com/={static_server.url}/api/"
    }
    result = run_cli(
        "build",
        release.recipe,
        "--arch",
        "x86-64",
        "--cache-dir",
        tmp_path / "cache",
        "--output",
        release.out,
        env=env,
    )
    if case == "good":
        assert result.returncode == 0, result.stderr
        provenance = json.loads((release.out / "tool-1.2.3-x86-64.provenance.json").read_text())
        assert provenance["inputs"]["sources"][0]["integrity"] == "github-digest"
    elif case == "wrong":
        assert f"{BASE}{ASSET} (via mirror " in one_error(result)
        assert "sha256 mismatch (expected " + "0" * 64 in result.stderr
        assert not release.out.exists()
    else:
        assert one_error(result) == (
            f"error: recipe tool.toml: sources[0]: {ASSET}: GitHub lists no digest for it "
            "(uploaded before June 2025), so only a locked build may use it"
        )
