"""Trust over time on a registry: `sysext key rotate|status` and `sysext audit`.

Both talk to a running registry's admin API (`SYSEXT_TOKEN` = the admin token). The key
commands join the `sysext key` group beside the local `generate`/`export`.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from sysext.cli.registry_cmds import REGISTRY_OPTION
from sysext.cli.sysupdate_cmds import key_app
from sysext.client.api import RegistryClient


def _print_key_status(status: dict[str, Any]) -> None:
    print(f"active key: {status['active']}")
    print(f"keyring:    {' '.join(status['keyring'])}")
    lifetime = status["signature_lifetime_seconds"]
    print(
        "signatures: "
        + (f"expire {lifetime // 3600} h after signing" if lifetime else "never expire")
        + f", renewed every {status['resign_interval_seconds'] // 3600} h"
    )
    rotation = status["rotation"]
    if rotation is None:
        print("rotation:   none in progress")
        return
    what = (
        "new key served, old key still signs"
        if rotation["phase"] == "introducing"
        else "new key signs, old key still served"
    )
    print(
        f"rotation:   {rotation['phase']} ({what}); other key {rotation['other']};"
        f" next phase at {rotation['advance_at']}"
    )


@key_app.command("rotate")
def key_rotate(
    advance: bool = typer.Option(
        False,
        "--advance",
        help="Move the rotation in progress to its next phase now instead of starting one.",
    ),
    registry: str = REGISTRY_OPTION,
) -> None:
    """Rotate the registry's signing key; hosts set up by `sysext butane` follow.

    Phase 1: a new key, certified by the active one, joins /keyring.gpg; the old key still
    signs. Phase 2 (after the server's key_overlap, default 7d): the new key signs; the
    old one is still served. Phase 3: the old key leaves the keyring. Hosts' keyring timer
    adds a key only when a key they already trust certified it. Needs the admin token.

    Example: SYSEXT_TOKEN=$ADMIN sysext key rotate -r https://ext.example.com
    """
    client = RegistryClient.from_env(registry)
    if not advance:
        _print_key_status(client.request("POST", "keys/rotate"))
        return
    # Name the phase this advance leaves: a second advance sent at the same time (or a
    # retry after a lost answer) then gets a 409 instead of skipping the next phase.
    rotation = client.request("GET", "keys")["rotation"]
    phase = {"phase": rotation["phase"]} if rotation else {}
    _print_key_status(client.request("POST", "keys/advance", params=phase))


@key_app.command("status")
def key_status(registry: str = REGISTRY_OPTION) -> None:
    """The registry's active key, served keyring, rotation and signature lifetime.

    Example: sysext key status -r https://ext.example.com
    """
    _print_key_status(RegistryClient.from_env(registry, need_token=False).request("GET", "keys"))


def audit(
    limit: int = typer.Option(50, "--limit", "-n", help="How many entries (newest first)."),
    action: str | None = typer.Option(
        None, "--action", help="Only this action: image.publish, image.yank, token.create…"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
    registry: str = REGISTRY_OPTION,
) -> None:
    """The registry's audit trail: who wrote what, when and from where (admin token).

    Every upload, yank, promote, token and key change is recorded in the registry's
    database in the same transaction as the change; the trail cannot be edited.

    Example: SYSEXT_TOKEN=$ADMIN sysext audit -n 20 --action image.yank -r http://127.0.0.1:8080
    """
    client = RegistryClient.from_env(registry)
    params: dict[str, Any] = {"limit": limit}
    if action:
        params["action"] = action
    entries = client.request("GET", "audit", params=params)
    if as_json:
        for entry in entries:
            print(json.dumps(entry, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "when", "who", "action", "target", "from", "detail")
    for entry in entries:
        who = entry["principal"] + (f" (#{entry['token_id']})" if entry["token_id"] else "")
        table.add_row(
            str(entry["id"]),
            entry["at"],
            who,
            entry["action"],
            entry["target"],
            entry["client"],
            json.dumps(entry["detail"], sort_keys=True),
        )
    Console().print(table)  # the trail is the command's output: stdout, not the log


def register(app: typer.Typer) -> None:
    app.command()(audit)
