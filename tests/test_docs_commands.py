"""Every documented command a user types runs: the ```sh blocks of README.md and docs/*.md
that follow a line holding only `<!-- docs-test -->` are run, in order per file, by bash in
one scratch directory against a real registry (`REGISTRY` in the environment, the
project's CLI first on PATH). A block that fails, or a marker without a block, fails.

The registry (shared with test_provision_hosts.py) holds what the docs' examples name:
`podman` (any OS) and `kmod`, published per Flatcar version (4081.2.0 among others).
Blocks that need a host (writing /etc, systemctl) are not marked; the tests of the host
steps run them in scratch roots instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.registry_server import RegistryServer
from tests.test_provision_hosts import hosts_registry  # noqa: F401 (the shared registry)

REPO = Path(__file__).resolve().parent.parent
MARKER = "<!-- docs-test -->"
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"```sh\n(.*?)\n```", re.DOTALL)


def runnable_blocks(path: Path) -> list[str]:
    """The shell blocks right after each marker of `path` (blank lines may separate them)."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for found in re.finditer(rf"^{re.escape(MARKER)}$", text, re.MULTILINE):
        rest = text[found.end() :].lstrip("\n")
        block = _FENCE.match(rest)
        assert block is not None, f"{path.name}: {MARKER} is not followed by a ```sh block"
        blocks.append(block.group(1))
    return blocks


def test_the_docs_mark_the_commands_users_type() -> None:
    counts = {path.name: len(runnable_blocks(path)) for path in DOCUMENTS}
    assert counts["README.md"] >= 1 and counts["provisioning.md"] >= 2, counts


@pytest.mark.parametrize(
    "document", [d for d in DOCUMENTS if runnable_blocks(d)], ids=lambda d: d.name
)
def test_documented_commands_run(
    document: Path,
    hosts_registry: RegistryServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    registry = hosts_registry
    env = {
        **os.environ,
        "REGISTRY": registry.url,
        "SYSEXT_TOKEN": registry.admin_token,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "NO_COLOR": "1",
    }
    for block in runnable_blocks(document):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{document.name}:\n{block}\n---\n{result.stderr}"
