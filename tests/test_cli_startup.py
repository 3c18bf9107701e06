"""The CLI starts without importing what its commands only need when they run (issue 25).

Every `sysext …` used to import the recipe models (pydantic), the whole provisioning
package, requests, cryptography and typer's help renderer before doing anything: about
0.6 s of CPU for `sysext --version`, paid on every command by users and by the hundreds
of CLI runs in this suite. These tests pin the module list instead of a time, so they
cannot be flaky: `python -X importtime` names every module a run imports.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sysext import __version__

# Not needed to build the commands: each is imported by the commands that use it.
HEAVY = (
    "pydantic",  # typer itself imports it to convert option values, but not for --version
    "requests",
    "urllib3",
    "cryptography",
    "yaml",
    "fastapi",
    "sqlalchemy",
    "uvicorn",
    "registry",
    "rich.markdown",
    "rich.table",
    "rich.progress",
    "typer.rich_utils",
    "sysext.recipe.model",
    "sysext.provision.compose",
    "sysext.provision.resolve",
    "sysext.build.pipeline",
    "sysext.image.read",
    "sysext.client.checker",
)


def imported_by(*args: str) -> tuple[set[str], str]:
    """The modules `sysext ARGS…` imports, and what it printed on stdout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    env |= {"COLUMNS": "100", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sysext.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # "import time: self [us] | cumulative | <indent>name"
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    # The list really is the CLI's (-m runs sysext.cli.main as __main__, unlisted).
    assert {"sysext.cli.build_cmds", "sysext.cli.help_text", "typer"} <= modules
    return modules, proc.stdout


def heavy(modules: set[str], names: tuple[str, ...] = HEAVY) -> list[str]:
    """The modules of `names` (packages with their submodules) found in `modules`."""
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


def test_version_imports_nothing_heavy() -> None:
    modules, out = imported_by("--version")
    assert out == f"sysext {__version__}\n"
    assert heavy(modules) == []


@pytest.mark.parametrize("command", ["build", "butane", "check", "transfer", "token"])
def test_help_imports_no_command_dependencies(command: str) -> None:
    modules, out = imported_by(command, "--help")
    assert f"sysext {command}" in out
    # Rendering help needs typer's renderer (rich tables, markdown) and nothing else.
    renderer = ("rich.markdown", "rich.table", "typer.rich_utils", "pydantic")
    assert heavy(modules, tuple(n for n in HEAVY if n not in renderer)) == []


def test_transfer_imports_only_what_it_uses() -> None:
    """A transfer file from given facts: no registry is asked, so no HTTP client."""
    modules, out = imported_by(
        "transfer", "podman", "--registry", "http://127.0.0.1:9", "--os-bound"
    )
    assert "MatchPattern=podman-@v-%w-%a.raw" in out
    assert "sysext.systemd.transfer" in modules and "sysext.provision.compose" in modules
    needed = ("sysext.provision.compose", "pydantic")  # pydantic: typer's value conversion
    assert heavy(modules, tuple(n for n in HEAVY if n not in needed)) == []


def test_provision_package_is_a_lazy_facade() -> None:
    """`sysext.provision.model` alone stays cheap; the package's names still import."""
    code = (
        "import sys\n"
        "import sysext.provision.model\n"
        "print(sorted(m for m in sys.modules if m.startswith(('sysext.provision.', 'yaml',"
        " 'requests', 'cryptography'))))\n"
        "import sysext.provision as p\n"
        "from sysext.provision import generate_config\n"
        "from sysext.provision.generate import generate_config as direct\n"
        "assert generate_config is direct\n"
        "for name in p.__all__:\n"
        "    value = getattr(p, name)\n"
        "    assert getattr(sys.modules[value.__module__], name) is value, name\n"
        "print(sorted(set(p.__all__) - set(dir(p))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['sysext.provision.model']", "[]"]


def test_provision_package_refuses_unknown_names() -> None:
    import sysext.provision

    with pytest.raises(AttributeError, match="no attribute 'render_html'"):
        sysext.provision.render_html  # noqa: B018


@pytest.mark.parametrize("terminal_width", [None, "97"])
def test_help_width_is_the_width_typer_renders_at(terminal_width: str | None) -> None:
    """help_width() reads TERMINAL_WIDTH itself instead of importing typer.rich_utils (which
    loads rich's tables and markdown): it must still agree with typer's own reading."""
    code = (
        "from rich.console import Console\n"
        "from typer import rich_utils\n"
        "from sysext.cli.help_text import help_width\n"
        "print(help_width(), rich_utils.MAX_WIDTH or Console().width)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TERMINAL_WIDTH"}
    env["COLUMNS"] = "113"
    if terminal_width is not None:
        env["TERMINAL_WIDTH"] = terminal_width
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    ours, typers = proc.stdout.split()
    assert ours == typers == (terminal_width or "113")
