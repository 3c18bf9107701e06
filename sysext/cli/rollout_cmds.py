"""`sysext rollout set|halt|resume|status` and `sysext fleet`: staged rollouts (issue 21).

Thin clients of /api/v1/extensions/NAME/rollouts and /fleet; the token comes from
$SYSEXT_TOKEN, the registry from --registry or $SYSEXT_REGISTRY (docs/rollouts.md).
"""

from __future__ import annotations

import json
from typing import Any

import typer

from sysext.client.api import RegistryClient
from sysext.core.durations import parse_duration
from sysext.core.errors import SysextError
from sysext.core.urls import DEFAULT_CHANNEL

REGISTRY_OPTION = typer.Option(
    None, "--registry", "-r", help="Registry base URL (default: $SYSEXT_REGISTRY)."
)
CHANNEL_OPTION = typer.Option(DEFAULT_CHANNEL, "--channel", help="Channel of the rollout.")

rollout_app = typer.Typer(
    help=(
        "Staged rollouts: offer a version to a share of the managed hosts, then halt or "
        "resume it. The token comes from $SYSEXT_TOKEN; see docs/rollouts.md.\n\n"
        "Example: sysext rollout set podman 5.0.1 --percent 10 -r https://ext.example.com"
    ),
    no_args_is_help=True,
)


def _seconds(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    return int(parse_duration(text, what=what).total_seconds())


def _steps(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise SysextError(
            f"invalid --steps {text!r}", "comma-separated percentages, e.g. 1,10,50,100"
        ) from None


def _request(client: RegistryClient, method: str, path: str, **kwargs: Any) -> Any:
    """The API call, with hints that fit rollouts (the client's own speak of uploads)."""
    try:
        return client.request(method, path, **kwargs)
    except SysextError as exc:
        hint = exc.hint
        if " 409:" in exc.message:
            hint = "a rollout only moves forward; halt it, or yank and publish a newer version"
        elif " 404:" in exc.message:
            hint = "check NAME, VERSION and --channel (`sysext rollout status NAME`)"
        elif "needs a canary" in exc.message:
            hint = "add --canary N (how many canary hosts), or leave out --canary-activated"
        elif " 422:" in exc.message:
            hint = "`sysext rollout set --help` lists the options and what each takes"
        raise SysextError(exc.message, hint) from None


def _line(info: dict[str, Any]) -> str:
    groups = ", ".join(f"{g} {p}%" for g, p in sorted(info["groups"].items()))
    extra = f"; groups: {groups}" if groups else ""
    if info["steps"]:
        steps = ",".join(str(s) for s in info["steps"])
        extra += f"; schedule {steps} every {info['every_seconds']}s"
        if info["next_step_at"]:
            extra += f", next at {info['next_step_at']}"
    activated = bool(info.get("canary_activated"))
    if info["canary"]:
        state = "passed" if info["canary_done"] else "waiting"
        gate = "; gate: fetched and reported activated" if activated else ""
        extra += f"; canary {info['canary']} ({state}{gate})"
        if activated and not info["canary_done"] and info.get("canary_fetched") is not None:
            extra += (
                f"; canary hosts so far: {info['canary_fetched']} fetched, "
                f"{info['canary_reported_activated']} of them reported activated"
            )
    if info.get("failure_reports"):
        # Unverified (reports carry no credentials): shown for the operator, never acted on.
        extra += f"; {info['failure_reports']} host(s) reported a failure (not acted on)"
    if info["window_seconds"]:
        what = "a fetch and an activation report" if activated else "a fetch"
        extra += f"; auto-pause after {info['window_seconds']}s without {what}"
    return (
        f"{info['version']} ({info['channel']}): {info['stage']}; {info['percent']}% of "
        f"hosts{extra}; {info['hosts']} managed host(s) on it"
    )


@rollout_app.command("set")
def set_(
    name: str = typer.Argument(..., help="Extension name."),
    version: str = typer.Argument(..., help="Version (may be published afterwards)."),
    percent: int | None = typer.Option(None, "--percent", help="Share of hosts, 0-100."),
    channel: str = CHANNEL_OPTION,
    group: str | None = typer.Option(None, "--group", help="Set --percent for this group only."),
    canary: int | None = typer.Option(
        None,
        "--canary",
        help="Offer it to N hosts first; the percentage applies once they fetched it.",
    ),
    steps: str | None = typer.Option(
        None, "--steps", help="Schedule: percentages to move through, e.g. 1,10,50,100."
    ),
    every: str | None = typer.Option(None, "--every", help="Time between steps, e.g. 1h."),
    window: str | None = typer.Option(
        None, "--window", help="Pause by itself when no host fetched it within this time."
    ),
    canary_activated: bool | None = typer.Option(
        None,
        "--canary-activated/--canary-fetched",
        help=(
            "With --canary: a canary host (and, for --window, any host) counts only once it "
            "fetched the image AND reported it activated; --canary-fetched: fetches only."
        ),
    ),
    registry: str = REGISTRY_OPTION,
) -> None:
    """Create or change the rollout of VERSION.

    A rollout only moves forward: lowering a percentage is refused (halt it instead).

    Example: sysext rollout set podman 5.0.1 --percent 10 -r https://ext.example.com

    Example: sysext rollout set podman 5.0.1 --steps 1,10,50,100 --every 1h --canary 3

    Example: sysext rollout set podman 5.0.1 --percent 10 --canary 3 --canary-activated
    """
    if (
        percent is None
        and not steps
        and canary is None
        and window is None
        and canary_activated is None
    ):
        raise SysextError("nothing to set", "give --percent, --steps/--every, --canary or --window")
    body = {
        "percent": percent,
        "group": group,
        "canary": canary,
        "steps": _steps(steps),
        "every_seconds": _seconds(every, "--every"),
        "window_seconds": _seconds(window, "--window"),
        "canary_activated": canary_activated,
    }
    client = RegistryClient.from_env(registry)
    info = _request(
        client,
        "PUT",
        f"extensions/{name}/rollouts/{version}",
        params={"channel": channel},
        json=body,
    )
    print(_line(info))


@rollout_app.command("halt")
def halt(
    name: str = typer.Argument(..., help="Extension name."),
    version: str = typer.Argument(..., help="Version."),
    channel: str = CHANNEL_OPTION,
    registry: str = REGISTRY_OPTION,
) -> None:
    """Offer VERSION to no new host; hosts that installed it keep it (sysupdate never
    downgrades: roll back by yanking it and publishing a newer version).

    Example: sysext rollout halt podman 5.0.1 -r https://ext.example.com
    """
    client = RegistryClient.from_env(registry)
    info = _request(
        client, "POST", f"extensions/{name}/rollouts/{version}/halt", params={"channel": channel}
    )
    print(_line(info))


@rollout_app.command("resume")
def resume(
    name: str = typer.Argument(..., help="Extension name."),
    version: str = typer.Argument(..., help="Version."),
    percent: int | None = typer.Option(None, "--percent", help="Resume at this share."),
    channel: str = CHANNEL_OPTION,
    registry: str = REGISTRY_OPTION,
) -> None:
    """Resume a halted (or auto-paused) rollout, optionally at a higher percentage.

    Example: sysext rollout resume podman 5.0.1 --percent 100 -r https://ext.example.com
    """
    client = RegistryClient.from_env(registry)
    info = _request(
        client,
        "POST",
        f"extensions/{name}/rollouts/{version}/resume",
        params={"channel": channel},
        json={"percent": percent},
    )
    print(_line(info))


@rollout_app.command("status")
def status(
    name: str = typer.Argument(..., help="Extension name."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
    registry: str = REGISTRY_OPTION,
) -> None:
    """Show the rollouts of NAME and the managed hosts on each version.

    Example: sysext rollout status podman -r https://ext.example.com
    """
    client = RegistryClient.from_env(registry, need_token=False)
    info = _request(client, "GET", f"extensions/{name}/rollouts")
    fleet = _request(client, "GET", f"extensions/{name}/fleet")
    if as_json:
        print(json.dumps({**info, "fleet": fleet}, indent=2, sort_keys=True))
        return
    if not info["rollouts"]:
        print(f"{name}: no rollout; every published version is offered to every host")
    for rollout in info["rollouts"]:
        print(_line(rollout))
    versions = ", ".join(f"{v}: {e['hosts']}" for v, e in fleet["versions"].items())
    print(f"managed hosts seen: {fleet['hosts']}" + (f" ({versions})" if versions else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")
