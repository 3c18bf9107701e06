"""A wheel (not only an editable install) carries the recipes and the web catalogue."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.servers import ROOT, run_cli


@pytest.mark.slow
def test_wheel_ships_recipes_and_web_files(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("sysext-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "sysext-0.1.0.data/data/share/sysext"
    for recipe in sorted((ROOT / "recipes").glob("*.toml")):
        assert f"{data}/recipes/{recipe.name}" in names
    assert f"{data}/web/templates/index.html" in names
    assert f"{data}/web/static/style.css" in names
    assert "registry/db/migrations/env.py" in names


def test_recipes_dir_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "only-this.toml").write_text("")
    result = run_cli("build", "podman", env={"SYSEXT_RECIPES_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert f"error: no recipe named 'podman' in {tmp_path}" in result.stderr
    assert "available: only-this" in result.stderr
    assert not (tmp_path / "out").exists()
