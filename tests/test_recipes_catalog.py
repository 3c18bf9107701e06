"""The shipped recipe catalogue, built against upstream-shaped releases.

For every recipe and each architecture it supports, the release trees of
tests/upstream_fixtures.py (several upstream versions where the layout changed: cri-o 1.30
and 1.33, containerd 1.7 and 2.x, docker 27 and 29, podman 4.9, 5.4.1 and 5.8, tailscale
before and after its online target, wasmtime before and after wasmtime-min) are served
from 127.0.0.1 through the mirror setting and built by the CLI, once per test session:
signed upstreams with a test key pinned in the recipe copy, lock-only upstreams through
`sysext lock` and `build --locked`, Kubernetes through its per-minor marker
(`--version 1.31`). Each image must be root-owned, carry its X_SYSEXT_* description, keep
licences and READMEs out of bin directories, and name only existing programs in its
units (checked by systemd-analyze too). As root, each host-architecture image is merged
with the real systemd-sysext and every program it ships is run from the merged tree.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from sysext.image.lint import lint_image
from sysext.image.read import read_file, read_image
from sysext.image.staging import STANDARD_BIN_DIRS, STANDARD_HOST_BINARIES, exec_lines, is_unit_file
from sysext.recipe.model import available_recipes, load_recipe
from tests.recipe_cases import (
    BIN_DIRS,
    CASES,
    FLATCAR,
    HOST,
    RECIPES,
    STRAY,
    Built,
    Case,
    build_case,
    publish_cases,
    recipe_copies,
)
from tests.servers import StaticServer, serve_directory
from tests.upstream_fixtures import (
    MIRROR_DIRS,
    X86,
    SigningKey,
)


@pytest.fixture(scope="session")
def upstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    """Every case's upstream release, published once and served for the whole session."""
    root = tmp_path_factory.mktemp("upstreams") / "www"
    root.mkdir()
    key = SigningKey()
    publish_cases(CASES, root, key)
    (root / "fingerprint").write_text(key.fingerprint)
    with serve_directory(root) as server:
        yield server


@pytest.fixture(scope="session")
def catalogue(
    upstream_server: StaticServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Built]:
    """Build every case once (all its architectures in one command)."""
    work = tmp_path_factory.mktemp("catalogue")
    recipes = recipe_copies(work / "recipes", (upstream_server.root / "fingerprint").read_text())
    return {case.id: build_case(case, upstream_server.url, recipes, work) for case in CASES}


def test_every_shipped_recipe_has_a_case() -> None:
    covered = {case.recipe for case in CASES}
    # Recipes of Debian packages are proven against the real archive: test_apt_archive.py.
    apt = {
        name
        for name in available_recipes(RECIPES)
        if load_recipe(RECIPES / f"{name}.toml").package_source is not None
    }
    assert set(available_recipes(RECIPES)) - covered - apt == {"shellcheck"}  # test_build.py


@pytest.mark.parametrize("name", available_recipes(RECIPES))
def test_recipe_points_at_its_real_upstream(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.toml")
    for arch in recipe.architectures:
        for spec in recipe.sources:
            if spec.kind == "url" and spec.applies_to(arch):
                url = recipe.expand(spec.url or "", recipe.version, arch, "url")
                assert url.startswith("https://"), url
                assert not url.startswith("https://127."), url


def _unit_targets(image: Path, entries: Collection[str]) -> list[str]:
    """Every Exec*= program of every shipped unit, checked to be in the image or a standard
    host path; returned for the merged-tree check."""
    programs = []
    for path in entries:
        if not is_unit_file(path):
            continue
        for _, _, command in exec_lines(read_file(image, path).decode()):
            if not command:
                continue
            binary = command.lstrip("@-:+!|").split()[0]
            if binary.lstrip("/") in entries:
                programs.append(binary)
                continue
            directory, base = os.path.split(binary)
            assert directory in STANDARD_BIN_DIRS and base in STANDARD_HOST_BINARIES, (
                f"{path}: {binary} is neither in the image nor a standard host binary"
            )
    return programs


def unit_diagnostics(unit_dir: Path) -> list[str]:
    """What the real systemd (`systemd-analyze verify`) says about the unit files, drop-ins
    included, in `unit_dir`. Missing binaries are not reported (they are in the image)."""
    names = sorted(p.name for p in unit_dir.iterdir() if p.suffix in {".service", ".socket"})
    names += sorted(p.name[: -len(".d")] for p in unit_dir.glob("*.target.d"))
    if not names:
        return []
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=unit_dir,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_LEVEL": "info"},
        capture_output=True,
        text=True,
        check=False,
    )
    return [line for line in proc.stderr.splitlines() if str(unit_dir) in line]


def test_unit_diagnostics_reports_a_key_in_the_wrong_section(tmp_path: Path) -> None:
    (tmp_path / "demo.service").write_text(
        "[Service]\nExecStart=/bin/true\nStartLimitIntervalSec=5\n"
    )
    (tmp_path / "demo.service.d").mkdir()
    (tmp_path / "demo.service.d/10-x.conf").write_text("[Service]\nBogus=1\n")
    found = unit_diagnostics(tmp_path)
    assert len(found) == 2, found
    assert "demo.service:3: Unknown key 'StartLimitIntervalSec' in section [Service]" in found[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_recipe_builds_from_its_upstream_layout(
    catalogue: dict[str, Built], case: Case, tmp_path: Path
) -> None:
    built = catalogue[case.id]
    for step in built.steps:
        assert step.returncode == 0, step.stderr
    assert built.result.returncode == 0, built.result.stderr
    recipe = load_recipe(RECIPES / f"{case.recipe}.toml")
    for arch in case.arches:
        image = built.image(arch)
        # In-process (what `sysext inspect --json` prints; the CLI's rendering of these
        # fields is tested in test_upstream_integrity.py).
        contents = read_image(image)
        assert lint_image(image, contents=contents).errors == ()
        (release,) = contents.release_files.values()
        assert release["ARCHITECTURE"] == arch.systemd_name
        assert release["SYSEXT_VERSION_ID"] == case.version
        assert release["X_SYSEXT_UPSTREAM_VERSION"] == case.version
        assert release["X_SYSEXT_DESCRIPTION"] == recipe.description
        assert release["X_SYSEXT_HOMEPAGE"] == recipe.homepage
        assert release["X_SYSEXT_LICENSE"] == recipe.license
        assert release.get("X_SYSEXT_REPLACES", "") == " ".join(recipe.replaces)
        entries = {e.path: e for e in contents.entries}
        assert all((e.uid, e.gid) == (0, 0) for e in entries.values())
        assert all(p.split("/")[0] in {"usr", "opt"} for p in entries), sorted(entries)
        assert not [p for p in entries if p.startswith("usr/local")]
        stray = [
            p for p in entries if p.startswith(BIN_DIRS) and STRAY.search(p.rsplit("/", 1)[-1])
        ]
        assert stray == [], f"documentation in a bin directory: {stray}"
        for path in case.present:
            assert path in entries, path
        for path in case.absent:
            assert path not in entries and not any(p.startswith(path + "/") for p in entries)
        for path, target in case.links.items():
            assert (entries[path].kind, entries[path].target) == ("symlink", target)
        for path in case.prints:
            if entries[path].kind == "file":
                assert entries[path].mode == 0o755, path
        units = [p for p in entries if is_unit_file(p)]
        assert ("EXTENSION_RELOAD_MANAGER" in release) == bool(units)
        _unit_targets(image, set(entries))
        if arch is X86 and units:
            extracted = tmp_path / arch.systemd_name
            subprocess.run(
                ["unsquashfs", "-q", "-d", extracted, image, "usr/lib/systemd"],
                check=True,
                capture_output=True,
            )
            assert unit_diagnostics(extracted / "usr/lib/systemd/system") == []
    provenance = json.loads(
        (
            built.out / f"{case.recipe}-{case.version}-{case.arches[0].systemd_name}"
            ".provenance.json"
        ).read_text()
    )
    sources = provenance["inputs"]["sources"]
    assert all(s["origin"].startswith(tuple(MIRROR_DIRS)) for s in sources)
    # How each file was verified: the lock for lock-only upstreams, the pinned key where
    # upstream signs, else the upstream checksum file; never trust on first use in a build.
    signed = {spec.id for spec in recipe.sources if spec.signing_keys}
    digests = {spec.id for spec in recipe.sources if spec.github_digest}
    for source in sources:
        if case.locked:
            assert source["integrity"] == "lock"
        elif source["id"] in signed:
            assert source["integrity"].startswith("openpgp:"), source
        elif source["id"] in digests:
            assert source["integrity"] == "github-digest", source
        else:
            assert source["integrity"] == "checksum-file", source


_RUN_ALL = r"""
for program in $PROGRAMS; do
  printf '%s\t' "$program"
  "$R/$program" --version 2>&1 | head -n 1
done
for program in $UNIT_PROGRAMS; do
  test -x "$R$program" || echo "MISSING $program"
done
"""


@pytest.mark.root
@pytest.mark.parametrize(
    "case", [c for c in CASES if HOST in c.arches], ids=[c.id for c in CASES if HOST in c.arches]
)
def test_merged_image_runs_every_program_it_ships(catalogue: dict[str, Built], case: Case) -> None:
    from tests.merge_helper import merge_and_run

    built = catalogue[case.id]
    assert built.result.returncode == 0, built.result.stderr
    image = built.image(HOST)
    contents = read_image(image)
    entries = {e.path: e for e in contents.entries}

    def program(path: str) -> bool:
        """An executable file, or a link to one in the image (not a link to a directory)."""
        entry = entries[path]
        if entry.kind == "symlink" and entry.target:
            base = "" if entry.target.startswith("/") else os.path.dirname(path)
            resolved = os.path.normpath(os.path.join(base, entry.target.lstrip("/")))
            entry = entries.get(resolved, entry)
        return entry.kind == "file" and bool(entry.mode & 0o111)

    programs = sorted(
        path
        for path in entries
        if path.startswith(
            (*BIN_DIRS, "usr/lib/systemd/system-generators/", "usr/lib/systemd/user-generators/")
        )
        and program(path)
    )
    unit_programs = _unit_targets(image, set(entries))
    command = [
        "env",
        "R={root}",
        f"PROGRAMS={' '.join(programs)}",
        f"UNIT_PROGRAMS={' '.join(unit_programs)}",
        "sh",
        "-c",
        _RUN_ALL,
    ]
    merged = merge_and_run([image], FLATCAR, command)
    assert merged.merge.returncode == 0, merged
    assert merged.merged_names == [case.recipe], merged
    assert "MISSING" not in merged.command.stdout, merged.command.stdout
    printed = dict(line.split("\t", 1) for line in merged.command.stdout.splitlines())
    assert sorted(printed) == programs
    for program, line in printed.items():
        assert line and "not found" not in line and "No such file" not in line, (program, line)
    for program, expected in case.prints.items():
        assert printed[program] == expected, (program, printed[program])
