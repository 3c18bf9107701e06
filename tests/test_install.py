"""The two README commands install cleanly: no warning banners in the middle of the
Quick start (issue 25). Both scripts are idempotent, so running them again here re-does
the Python part of the install on this checkout and prints what a newcomer would see."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.registry_server import free_port
from tests.servers import ROOT

WARNING = re.compile(r"\bwarning\b|deprecat|^\s*!!|\*{10}", re.IGNORECASE)


def run_script(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["bash", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


@pytest.mark.slow
def test_setup_says_what_it_does_and_nothing_else() -> None:
    output = run_script("scripts/setup.sh")
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "setup printed nothing"
    assert [line for line in lines if not line.startswith("==> ")] == []
    assert lines[-1].startswith("==> ready: sysext ")


@pytest.mark.slow
def test_quickstart_prints_no_warnings(tmp_path: Path) -> None:
    output = run_script(
        "scripts/quickstart.sh",
        env={
            "QUICKSTART_EXIT": "1",
            "PORT": str(free_port()),
            "SYSEXT_DATA": str(tmp_path / "data"),
        },
    )
    assert [line for line in output.splitlines() if WARNING.search(line)] == []
    assert "==> what a host running systemd-sysupdate would see" in output
    assert "Done. The registry serves:" in output
