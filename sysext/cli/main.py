"""Entry point of the `sysext` command.

Each command group lives in its own module and registers itself on the shared Typer app
through `register(app)`. User errors (`SysextError`) print one line plus a hint and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape

from sysext import __version__
from sysext.cli import (
    build_cmds,
    image_cmds,
    lock_cmds,
    provision_cmds,
    registry_cmds,
    rollout_cmds,
    sysupdate_cmds,
    trust_cmds,
    try_cmds,
)
from sysext.cli.help_text import reflow_app
from sysext.core.errors import SysextError
from sysext.core.steps import console

app = typer.Typer(
    name="sysext",
    help=(
        "Build, sign and publish systemd system extensions.\n\n"
        "Typical flow: `sysext build podman` → `sysext publish` to a registry "
        "(`sysext serve`) → hosts fetch it with systemd-sysupdate, configured by "
        "`sysext transfer` or at first boot by `sysext butane`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        print(f"sysext {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every step and command."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


for _module in (
    build_cmds,
    lock_cmds,
    image_cmds,
    sysupdate_cmds,
    registry_cmds,
    rollout_cmds,
    provision_cmds,
    trust_cmds,
    try_cmds,
):
    _module.register(app)
reflow_app(app)  # after every command is registered: help_text.py says why


def main() -> None:
    # Typer's standalone mode prints usage errors itself and exits 2; SysextError escapes
    # from the command functions and becomes one line here.
    try:
        app()
    except SysextError as exc:
        # escape(): messages quote recipe keys like [versions], which are not rich markup.
        console.print(f"[red]error:[/red] {escape(exc.message)}", soft_wrap=True)
        if exc.hint:
            console.print(f"[dim]hint:[/dim] {escape(exc.hint)}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
