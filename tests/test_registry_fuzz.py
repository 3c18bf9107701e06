"""OpenAPI-driven fuzzing (schemathesis) of a real registry: no input may cause a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.registry_server import build_image, running_registry

pytestmark = pytest.mark.slow


def test_no_server_errors(tmp_path: Path) -> None:
    image = build_image(tmp_path / "images", "hello", "1.0")
    with running_registry(tmp_path / "data") as reg:
        env = {"SYSEXT_TOKEN": reg.admin_token, "SYSEXT_REGISTRY": reg.url}
        assert run_cli("publish", image, env=env).returncode == 0
        st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
        # Authenticated, so the write paths run their validation too; bounded examples
        # keep it well under a minute.
        proc = subprocess.run(
            [
                st,
                "run",
                f"{reg.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "15",
                "--phases",
                "examples,coverage,fuzzing",
                "--seed",
                "1",
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "-H",
                f"Authorization: Bearer {reg.admin_token}",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,  # schemathesis keeps a cache directory in its working directory
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:] + reg.log()[-3000:]
        summary = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
        assert summary, proc.stdout[-2000:]
        assert int(summary[2]) == int(summary[1]) >= 100  # it really sent many requests
        # The fuzzer's garbage left nothing half-written behind.
        assert list((reg.data / "tmp").iterdir()) == []
