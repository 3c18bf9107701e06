"""Every command's --help reads well at 80 and 120 columns (issue 25).

The help is rendered by the real CLI in a subprocess with COLUMNS set, as a terminal of
that width would get it. A line of the description holding a single word of running text
is a failure: that is what hard-wrapped docstrings re-wrapped by the renderer looked like
("… nothing is written unless / every requested architecture …").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sysext.cli.help_text import reflow

# Run in a child with COLUMNS set: the help is reflowed for the width the CLI starts with.
RENDER_ALL = """
import json, sys
import typer
from typer.testing import CliRunner
from sysext.cli.main import app

paths = []
def walk(command, prefix):
    paths.append(prefix)
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        walk(sub, [*prefix, name])
walk(typer.main.get_command(app), [])
runner = CliRunner()
pages = {}
for path in paths:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (path, result.output)
    pages[" ".join(["sysext", *path])] = result.output
json.dump(pages, sys.stdout)
"""


def render_all(width: int) -> dict[str, str]:
    """Every command's and group's --help, as the real CLI renders it `width` columns wide."""
    env = {k: v for k, v in os.environ.items() if k != "TERMINAL_WIDTH"}
    env["COLUMNS"] = str(width)
    proc = subprocess.run(
        [sys.executable, "-c", RENDER_ALL], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    pages: dict[str, str] = json.loads(proc.stdout)
    return pages


def lone_words(text: str) -> list[str]:
    """Description lines (before the first option box) that hold one word of prose."""
    found = []
    for line in text.splitlines():
        if line.lstrip().startswith("╭"):
            break
        if line.startswith("     "):  # an example command, indented on purpose
            continue
        words = line.split()
        if len(words) == 1 and not words[0].endswith(":"):
            found.append(line.rstrip())
    return found


@pytest.mark.parametrize("width", [80, 120])
def test_no_help_line_holds_a_single_word(width: int) -> None:
    pages = render_all(width)
    assert len(pages) > 25  # every command and group, not just the top level
    problems = {path: found for path, page in pages.items() if (found := lone_words(page))}
    assert problems == {}
    # Nothing wider than the terminal either.
    for path, page in pages.items():
        assert max(len(line) for line in page.splitlines()) <= width, path


def test_reflow_keeps_examples_copyable() -> None:
    text = reflow(
        """Summary line.

        Writes OUTPUT/NAME-VERSION-ARCH.raw, merges OUTPUT/SHA256SUMS and writes one
        provenance file per image.

        Example (the catalogue for two architectures, published to a registry):
        SYSEXT_TOKEN=… sysext build --all --arch x86-64 --arch arm64 --output out/ --publish https://ext.example.com
        """,
        80,
    )
    lines = text.splitlines()
    assert lines[0] == "Summary line."
    assert all(len(line) <= 78 for line in lines)
    command = [line for line in lines if line.startswith("    ")]
    # Split between options, never inside one, with shell continuations.
    assert command[0].endswith(" \\") and command[-1].strip().startswith("--")
    joined = " ".join(line.strip().removesuffix(" \\") for line in command)
    assert joined == (
        "SYSEXT_TOKEN=… sysext build --all --arch x86-64 --arch arm64 --output out/ "
        "--publish https://ext.example.com"
    )
