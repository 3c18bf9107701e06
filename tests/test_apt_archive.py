"""The shipped apt recipes against the real Debian archive and the booted base roots.

The archive is reached through the mirror this machine's apt uses (read from its sources
when the tests run, never written down); when there is none, or it does not answer, every
test here is skipped with a warning saying so. The bases are the debootstrapped roots the
booted tests use (sysext/boot/rootfs.py: Debian 12 with systemd 254, Debian 13 with 257):
each image is built with `--base ROOT`, must hold its programs and none of the root's
files, pass `sysext validate --os-release ROOT/etc/os-release`, and, booted in a container
of that root, merge through the real systemd-sysext and run its programs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import requests

from sysext.boot.container import Container
from sysext.boot.report import render
from sysext.boot.trial import GuestOS, identify, inspect, root_os_release, stage
from sysext.build.debian.archive import FAMILIES
from sysext.build.debian.base import read_root
from sysext.build.debian.sources_list import archive_uri, machine_sources
from sysext.image.read import read_image
from sysext.recipe.model import available_recipes, bundled_recipes_dir, load_recipe
from tests.servers import CliResult, run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root(reason="needs root: the boot roots are built and booted as root"),
]

RECIPES = bundled_recipes_dir()
DEBIAN_12 = ("htop", "tmux", "strace", "tcpdump", "git")
# What each program says about itself, run from the merged tree.
PROGRAMS = {
    "htop": (["htop", "--version"], "htop 3."),
    "tmux": (["tmux", "-V"], "tmux 3."),
    "strace": (["strace", "-V"], "strace -- version 6."),
    "tcpdump": (["tcpdump", "--version"], "tcpdump version 4."),
    "git": (["git", "--version"], "git version 2."),
}


@pytest.fixture(scope="module")
def debian_archive() -> str:
    """The Debian mirror of this machine's apt sources, if it answers; else skip, loudly."""
    family = FAMILIES["debian"]
    uri = archive_uri(machine_sources(), frozenset(family.codenames.values()), security=False)
    reason = None
    if uri is None:
        reason = "this machine's apt sources name no Debian archive"
    else:
        try:
            response = requests.head(f"{uri}dists/bookworm/InRelease", timeout=15)
            if response.status_code >= 400:
                reason = f"the Debian mirror of this machine answers HTTP {response.status_code}"
        except requests.RequestException as exc:
            reason = f"the Debian mirror of this machine is unreachable ({type(exc).__name__})"
    if reason is not None:
        message = f"REAL DEBIAN ARCHIVE NOT TESTED: {reason}"
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    assert uri is not None
    return uri


def _env(cache: Path) -> dict[str, str]:
    # The archive's address comes from the machine's apt sources (no mirror rule), as a
    # user's build would take it.
    return {"SYSEXT_CACHE_DIR": str(cache), "SYSEXT_CONFIG": str(cache / "none.toml")}


def _build(names: tuple[str, ...], root: Path, out: Path, cache: Path) -> CliResult:
    return run_cli(
        "build", *names, "--base", root, "-o", out, "--compression", "zstd", env=_env(cache)
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apt-cache")


@pytest.fixture(scope="module")
def debian12_images(
    debian_archive: str, boot_root: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("debian12")
    result = _build(DEBIAN_12, boot_root, out, cache)
    assert result.returncode == 0, result.stderr
    return {name: next(out.glob(f"{name}-*-12-x86-64.raw")) for name in DEBIAN_12}


@pytest.fixture(scope="module")
def debian13_git(
    debian_archive: str,
    boot_root_newest: Path,
    cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    out = tmp_path_factory.mktemp("debian13")
    result = _build(("git",), boot_root_newest, out, cache)
    assert result.returncode == 0, result.stderr
    return next(out.glob("git-*-13-x86-64.raw"))


def test_every_apt_recipe_is_proven_here() -> None:
    apt = {
        name
        for name in available_recipes(RECIPES)
        if load_recipe(RECIPES / f"{name}.toml").package_source is not None
    }
    assert apt == set(DEBIAN_12)


def _check_against_base(image: Path, root: Path, program: str) -> None:
    contents = read_image(image)
    files = {e.path for e in contents.entries if e.kind != "dir"}
    assert f"usr/bin/{program}" in files
    base = read_root(root)
    assert base.files is not None
    shared = sorted(f for f in files if f in base.files)
    assert shared == [], f"{image.name} ships files of the base: {shared[:5]}"
    assert not any(e.path.split("/", 1)[0] not in ("usr", "opt") for e in contents.entries)
    validated = run_cli("validate", image, "--os-release", root / "etc/os-release")
    assert validated.returncode == 0, validated.stdout + validated.stderr


@pytest.mark.parametrize("name", DEBIAN_12)
def test_debian12_images_hold_only_what_the_base_lacks(
    name: str, debian12_images: dict[str, Path], boot_root: Path
) -> None:
    image = debian12_images[name]
    _check_against_base(image, boot_root, name)
    release = read_image(image).release_files[name]
    assert (release["ID"], release["VERSION_ID"]) == ("debian", "12")
    packages = dict(p.split("=", 1) for p in release["X_SYSEXT_PACKAGES"].split())
    assert name in packages
    assert not set(packages) & set(read_root(boot_root).packages)


def test_debian13_git_holds_only_what_the_base_lacks(
    debian13_git: Path, boot_root_newest: Path
) -> None:
    _check_against_base(debian13_git, boot_root_newest, "git")
    release = read_image(debian13_git).release_files["git"]
    assert (release["ID"], release["VERSION_ID"]) == ("debian", "13")
    # Debian 12's image is bound to 12: a Debian 13 host does not merge it.
    assert release["SYSEXT_VERSION_ID"].startswith("2.")


def _boot_and_run(root: Path, images: list[Path], names: list[str]) -> dict[str, str]:
    extensions = [identify(image) for image in images]
    outputs = {}
    with Container(root) as box:
        stage(box, extensions, GuestOS.DEBIAN)
        box.boot()
        report = inspect(box, extensions, root_os_release(root, GuestOS.DEBIAN))
        context = render(report)
        for extension in report.extensions:
            assert extension.merged, context
        assert report.failed_units == (), context
        for name in names:
            argv, _ = PROGRAMS[name]
            done = box.run(argv)
            outputs[name] = (done.stdout + done.stderr).decode("utf-8", "replace")
            assert done.returncode == 0, f"{name}: {outputs[name]}\n{context}"
        outputs["which"] = box.text(
            ["sh", "-c", f"for n in {' '.join(names)}; do command -v $n; done"]
        )
        outputs["etc"] = box.text(
            ["sh", "-c", "ls /etc/apparmor.d/usr.bin.tcpdump /etc/bash_completion.d/git-prompt"]
        )
        outputs["user"] = box.text(["getent", "passwd", "tcpdump"])
    return outputs


def test_debian12_images_run_in_the_booted_base(
    debian12_images: dict[str, Path], boot_root: Path
) -> None:
    outputs = _boot_and_run(boot_root, list(debian12_images.values()), list(DEBIAN_12))
    for name in DEBIAN_12:
        assert PROGRAMS[name][1] in outputs[name], outputs[name]
        assert f"/usr/bin/{name}" in outputs["which"]
    # /etc files arrived through the tmpfiles.d lines; tcpdump's user through its unit.
    assert "/etc/apparmor.d/usr.bin.tcpdump" in outputs["etc"]
    assert "/etc/bash_completion.d/git-prompt" in outputs["etc"]
    assert outputs["user"].startswith("tcpdump:"), outputs


def test_debian13_git_runs_in_the_booted_base(debian13_git: Path, boot_root_newest: Path) -> None:
    outputs = _boot_and_run(boot_root_newest, [debian13_git], ["git"])
    assert PROGRAMS["git"][1] in outputs["git"], outputs["git"]
    assert "/usr/bin/git" in outputs["which"]


def test_locked_rebuild_is_byte_identical(
    debian12_images: dict[str, Path], boot_root: Path, cache: Path, tmp_path: Path
) -> None:
    lock = tmp_path / "htop.lock.json"
    env = _env(cache)
    locked = run_cli("lock", "htop", "--base", boot_root, "--lock-file", lock, env=env)
    assert locked.returncode == 0, locked.stderr
    out = tmp_path / "out"
    again = run_cli(
        "build", "htop", "--base", boot_root, "-o", out, "--compression", "zstd", "--locked",
        "--lock-file", lock, env=env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    (image,) = out.glob("*.raw")
    assert image.name == debian12_images["htop"].name
    assert image.read_bytes() == debian12_images["htop"].read_bytes()


def test_try_builds_an_apt_recipe_against_the_root_it_boots(
    debian_archive: str, boot_root_newest: Path, cache: Path
) -> None:
    """`sysext try git --base debian-13`: git resolved against that very root, merged there."""
    result = run_cli("try", "git", "--base", "debian-13", "--run", "git --version", env=_env(cache))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "git version 2." in result.stdout + result.stderr
