"""`sysext butane` and `sysext verify-config`: provisioning configs for new hosts."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import typer

from sysext.core.atomic import atomic_write
from sysext.core.errors import SysextError
from sysext.core.steps import console
from sysext.core.urls import DEFAULT_CHANNEL
from sysext.systemd.architecture import Architecture

BUTANE_HELP = (
    "Print a Butane config (or Ignition JSON) installing extensions at first boot.\n\n"
    "The extensions are verified by SHA-256 and kept updated with systemd-sysupdate.\n\n"
    "Each NAME (or NAME@VERSION) is resolved now against the registry's SHA256SUMS for "
    "--arch and --channel (newest version unless given), so the config pins an exact file "
    "and its hash.\n\n"
    "The registry key is installed as /etc/sysext/keyring.gpg; the host's vendor keys stay "
    "trusted for its own updates (systemd 252-261: a combined /etc/systemd/import-pubring.gpg "
    "rebuilt before every update; 262: $SYSTEMD_OPENPGP_KEYRING in the update units). "
    "--keyring skip installs no key.\n\n"
    "Example:\n\n"
    "  sysext butane podman crio@1.31.3 --registry https://ext.example.com > host.bu\n\n"
    "  sysext butane podman --registry https://ext.example.com --variant fcos --ignition "
    "-o host.ign\n\n"
    "An extension published per OS version (NAME-VERSION-VERSIONID-ARCH.raw) needs the "
    "host's VERSION_ID:\n\n"
    "  sysext butane nvidia --os-version 3975.2.0 --registry https://ext.example.com\n\n"
    "The registry's verity certificates (/verity.crt) go to /etc/verity.d/; with "
    "--require-signed hosts merge nothing but signed verity images (docs/verity.md):\n\n"
    "  sysext butane podman --require-signed --systemd-version 257 --registry "
    "https://ext.example.com"
)

VERIFY_HELP = (
    "Download every file source of an Ignition or Butane config and check it against the "
    "config's verification.hash, as Ignition will at first boot.\n\n"
    "Exits 2 on a mismatch, an unreachable source, or a remote source without a hash "
    "(Ignition would install it unchecked). Run it before handing a config to a fleet.\n\n"
    "Example:\n\n"
    "  sysext verify-config host.ign"
)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        atomic_write(output, text.encode("utf-8"))
    except OSError as exc:
        raise SysextError(
            f"cannot write {output}: {exc.strerror}", "check the directory exists"
        ) from None


def butane(
    extensions: list[str] = typer.Argument(
        ...,
        metavar="NAME[@VERSION]...",
        show_default=False,
        help="Extensions to install, e.g. podman or crio@1.31.3 (default: newest in --channel).",
    ),
    registry: str = typer.Option(
        ..., "--registry", envvar="SYSEXT_REGISTRY", help="Registry base URL hosts will use."
    ),
    channel: str = typer.Option(DEFAULT_CHANNEL, "--channel", help="Registry channel."),
    arch: str = typer.Option("x86-64", "--arch", help="Host architecture (systemd name)."),
    os_version: str | None = typer.Option(
        None,
        "--os-version",
        help="The host's os-release VERSION_ID (e.g. 3975.2.0); required for extensions "
        "the registry serves per OS version, ignored by the others.",
    ),
    version: str | None = typer.Option(
        None, "--version", help="Version of a single NAME (same as NAME@VERSION)."
    ),
    variant: str = typer.Option("flatcar", "--variant", help="flatcar or fcos."),
    ignition: bool = typer.Option(False, "--ignition", help="Print Ignition JSON, not Butane."),
    ignition_version: str = typer.Option(
        "3.3.0",
        "--ignition-version",
        help="Ignition spec: 3.3.0, 3.4.0, or (fcos only) 3.5.0 (Butane fcos 1.6.0), "
        "3.6.0 (fcos 1.7.0).",
    ),
    no_updates: bool = typer.Option(
        False, "--no-updates", help="Install only; no transfer file, timer or keyring."
    ),
    on_update: str = typer.Option(
        "restart",
        "--on-update",
        help="After an update: restart (systemctl restart systemd-sysext.service, as Flatcar "
        "documents), refresh (systemd-sysext refresh), reboot-marker (touch "
        "/run/reboot-required) or notify (systemd 262: systemd-sysupdate-notify-sysext.socket "
        "activates; needs --systemd-version 262).",
    ),
    timer: bool | None = typer.Option(
        None,
        "--timer/--no-timer",
        help="Enable the update timer. Default: on for flatcar; off for fcos (its SELinux "
        "policy does not let systemd-sysupdate run as a service yet).",
        show_default=False,
    ),
    keyring: str = typer.Option(
        "combine",
        "--keyring",
        help="combine: trust the registry key for the extensions and keep the vendor keys "
        "for the OS; skip: install no key.",
    ),
    systemd_version: int | None = typer.Option(
        None,
        "--systemd-version",
        min=252,
        help="The hosts' systemd major version, if known: 257+ get only NAME.transfer, "
        "252-256 only NAME.conf (default: both, which every version reads without a "
        "warning); 262+ also get NAME.component metadata and --on-update notify. With "
        "--require-signed: a systemd-sysext.service drop-in for 255-258, sysext.conf for 259+.",
    ),
    merge_into: Path | None = typer.Option(
        None,
        "--merge-into",
        help="Add the entries to this Butane file and print the result (the file is not "
        "changed unless it is also --output; its comments are not kept).",
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
    check: bool = typer.Option(
        False, "--check", help="Also download every source and check its hash."
    ),
    rollout: bool = typer.Option(
        False,
        "--rollout",
        help="Managed host (staged rollouts): it derives a rollout ID from its machine ID at "
        "boot and polls its rollout bucket (docs/rollouts.md).",
    ),
    group: str | None = typer.Option(
        None, "--group", help="Rollout group of the host, e.g. canary (implies --rollout)."
    ),
    report_to: str | None = typer.Option(
        None,
        "--report-to",
        help="Registry URL managed hosts report each update's outcome to (default: "
        "--registry; give the registry here when hosts poll a bucket or a mirror).",
    ),
    no_report: bool = typer.Option(
        False, "--no-report", help="Managed hosts do not report their update outcomes."
    ),
    require_signed: bool = typer.Option(
        False,
        "--require-signed",
        help="Hosts merge only signed verity images: every image must be one, and an image "
        "policy refusing anything else is installed (needs --systemd-version, 255+).",
    ),
) -> None:
    # Imported by the commands that use it, not at the CLI's start: the provisioning
    # package pulls in yaml, requests and cryptography, which every command would pay for.
    from sysext.provision import (
        ExtensionRef,
        HttpCatalog,
        ProvisionOptions,
        generate_config,
        merge_into_butane,
        render_butane,
        render_ignition,
        verify_config_sources,
    )
    from sysext.provision.ignition import ignition_document
    from sysext.provision.merge import read_butane_file
    from sysext.provision.model import IgnitionVersion, KeyringMode, OnUpdate, Variant, parse_enum

    if group is not None:
        from sysext.core.rollout import group_problem

        problem = group_problem(group)
        if problem:
            raise SysextError(problem, "e.g. --group canary")
        if no_updates:
            raise SysextError("--group needs updates", "drop --no-updates")
    if report_to is not None:
        if no_report:
            raise SysextError("--report-to and --no-report contradict", "give one of them")
        if not (rollout or group is not None):
            raise SysextError("--report-to needs a managed host", "add --rollout or --group")
        if not report_to.startswith(("http://", "https://")) or any(
            c.isspace() or c in "\"'\\" for c in report_to
        ):
            raise SysextError(
                f"--report-to {report_to!r} is not an http(s) URL",
                "e.g. --report-to https://ext.example.com",
            )
    refs = [ExtensionRef.parse(text) for text in extensions]
    if version is not None:
        if len(refs) != 1 or refs[0].version is not None:
            raise SysextError(
                "--version applies to exactly one NAME without @VERSION",
                "write NAME@VERSION for each extension instead",
            )
        refs = [ExtensionRef.parse(f"{refs[0].name}@{version}")]
    if merge_into is not None and ignition:
        raise SysextError(
            "--merge-into writes Butane; it cannot be combined with --ignition",
            "merge, then transpile the result with butane",
        )
    options = ProvisionOptions(
        variant=parse_enum(Variant, variant, "variant"),
        ignition_version=parse_enum(IgnitionVersion, ignition_version, "Ignition version"),
        updates=not no_updates,
        on_update=parse_enum(OnUpdate, on_update, "--on-update action"),
        keyring=parse_enum(KeyringMode, keyring, "--keyring mode"),
        timer=timer,
        systemd_version=systemd_version,
        rollout=rollout or group is not None,
        group=group,
        report=not no_report,
        report_url=report_to,
        require_signed=require_signed,
    )
    user_text = read_butane_file(merge_into) if merge_into is not None else None
    config = generate_config(
        HttpCatalog(registry),
        refs,
        arch=Architecture.parse(arch),
        channel=channel,
        options=options,
        os_version=os_version,
    )
    if check:
        for result in verify_config_sources(ignition_document(config)):
            console.print(f"ok {result.path} sha256 {result.sha256} ({result.size} bytes)")
    if user_text is not None and merge_into is not None:
        text = merge_into_butane(user_text, config, source=str(merge_into))
    elif ignition:
        text = render_ignition(config)
    else:
        text = render_butane(config)
    _write(text, output)


def verify_config(
    config_file: Path = typer.Argument(
        ...,
        metavar="CONFIG",
        show_default=False,
        help="An Ignition (.ign, JSON) or Butane (.bu, YAML) config.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    from sysext.provision.verify import load_config, verify_config_sources

    results = verify_config_sources(load_config(config_file))
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
        return
    for result in results:
        state = "verified" if result.verified else "inline"
        print(f"{state}  {result.path}  sha256-{result.sha256}  {result.size} bytes")
    console.print(f"{len(results)} source(s) checked against {config_file}")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("butane", help=BUTANE_HELP)(butane)
    app.command("verify-config", help=VERIFY_HELP)(verify_config)
