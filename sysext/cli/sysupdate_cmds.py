"""Commands that speak systemd-sysupdate: keys, signing, verification, transfer files, check."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sysext.core.durations import parse_duration
from sysext.core.errors import SysextError
from sysext.core.steps import console
from sysext.core.urls import DEFAULT_CHANNEL
from sysext.systemd.architecture import Architecture
from sysext.systemd.manifest import (
    BEST_BEFORE_PREFIX,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    SIGNATURE_NAME_258,
    SIGNATURE_NAMES,
    best_before_date,
    best_before_for,
)
from sysext.trust.signing import (
    DEFAULT_UID,
    PASSPHRASE_ENV,
    export_public_key,
    generate_key,
    key_fingerprint,
    sign_directory,
    signature_times,
    verify_directory,
)

if TYPE_CHECKING:
    from sysext.client.checker import CheckReport
    from sysext.systemd.patterns import HostInfo

key_app = typer.Typer(
    help=(
        "Manage the OpenPGP key that signs SHA256SUMS.\n\n"
        "Example: `sysext key generate --output signing.key` then "
        "`sysext key export signing.key > import-pubring.gpg`."
    ),
    no_args_is_help=True,
)


def _passphrase() -> str | None:
    return os.environ.get(PASSPHRASE_ENV) or None


@key_app.command("generate")
def key_generate(
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the secret key."),
    uid: str = typer.Option(DEFAULT_UID, "--uid", help='User ID, e.g. "Ext Team <x@example>".'),
    x509: bool = typer.Option(
        False,
        "--x509",
        help="Make a verity signing key instead: an RSA key (PEM, 0600) and a self-signed "
        "X.509 certificate for DDIs (sysext pack/build --verity).",
    ),
    cert: Path | None = typer.Option(
        None, "--cert", help="With --x509: where the certificate goes (default: OUTPUT.crt)."
    ),
    subject: str | None = typer.Option(
        None, "--subject", help="With --x509: the certificate's common name."
    ),
    days: int = typer.Option(3650, "--days", help="With --x509: validity in days."),
) -> None:
    """Create an ed25519 (OpenPGP v4) signing key, written with mode 0600.

    Refuses to overwrite an existing file. If SYSEXT_KEY_PASSPHRASE is set, the key file is
    protected with that passphrase (and every later use needs it set too).

    With --x509: an RSA-2048 key and a self-signed certificate that sign the root hash of
    verity DDIs. Hosts trust the certificate in /etc/verity.d/ (sysext butane installs the
    registry's); the key stays with whoever builds. Prints the certificate's SHA-256
    fingerprint, the `certificateFingerprint` DDIs name.

    Example: sysext key generate --output signing.key --uid "Ext Team <ext@example.com>"

    Example: sysext key generate --x509 --output verity.key --subject "Ext Team verity"
    """
    if x509:
        from sysext.trust.x509 import DEFAULT_SUBJECT, generate_signer

        cert_path = cert or output.with_suffix(".crt")
        if cert_path == output:
            raise SysextError(
                f"{output}: the key and the certificate need two files", "pass --cert FILE.crt"
            )
        signer = generate_signer(output, cert_path, subject or DEFAULT_SUBJECT, days)
        print(signer.fingerprint)
        console.print(
            f"wrote {output} (0600, keep it secret) and {cert_path} (install on hosts as "
            "/etc/verity.d/NAME.crt, or trust it in the registry: SYSEXT_VERITY_CERTS)",
            soft_wrap=True,
        )
        return
    if cert is not None or subject is not None:
        raise SysextError("--cert and --subject belong to --x509", "add --x509 or drop them")
    fingerprint = generate_key(output, uid, passphrase=_passphrase())
    print(fingerprint)
    console.print(
        f"wrote {output} (0600); publish the public part with: sysext key export KEY",
        soft_wrap=True,
    )


@key_app.command("export")
def key_export(
    key: Path = typer.Argument(..., help="Secret key file from `sysext key generate`."),
    armor: bool = typer.Option(False, "--armor", "-a", help="ASCII armor (not for hosts)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
) -> None:
    """Print the public key (binary by default, as import-pubring.gpg needs).

    systemd's gpg call reads only binary keyrings: an armored one makes every signature fail
    with "No public key". Use --armor only to show the key to humans.

    Example: sysext key export signing.key --output /etc/systemd/import-pubring.gpg
    """
    data = export_public_key(key, armor=armor, passphrase=_passphrase())
    if output is not None:
        from sysext.core.atomic import atomic_write

        atomic_write(output, data, 0o644)
        return
    if not armor and sys.stdout.isatty():
        raise SysextError(
            "refusing to write a binary keyring to a terminal",
            "redirect it (> import-pubring.gpg), pass --output FILE, or use --armor",
        )
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def sign(
    directory: Path = typer.Argument(..., help="Directory holding NAME-VERSION-ARCH.raw images."),
    key: Path = typer.Option(..., "--key", "-k", help="Secret key from `sysext key generate`."),
    expires: str | None = typer.Option(
        None,
        "--expires",
        "-e",
        help="Signature lifetime (7d, 36h, 2w): hosts refuse the manifest after it, so a"
        " stale mirror cannot freeze them. Re-sign well before. Default: never expires.",
    ),
    best_before: str | None = typer.Option(
        None,
        "--best-before",
        help="Also list a BEST-BEFORE-YYYY-MM-DD marker: systemd 260+ refuse the manifest"
        " from 00:00 UTC of that day, older hosts ignore it. A date, a duration from now"
        " (14d), or 'expires': the last midnight before the --expires signature expires.",
    ),
) -> None:
    """(Re)write DIR/SHA256SUMS for the images in DIR and sign it.

    The signature is written as DIR/SHA256SUMS.gpg (what systemd 252–257 fetch) and, the
    same bytes, DIR/SHA256SUMS.sha256.asc (what 258+ fetch first): one signature request
    per poll on every version. Only files named like images (NAME-VERSION-ARCH.raw) are
    listed: sidecar files would match the hosts' patterns (systemd 252–256 ignore trailing
    text). Every file is written atomically. Passphrase from SYSEXT_KEY_PASSPHRASE. With
    --expires the signature carries an expiration time (made with gpg, which must be
    installed).

    Example: sysext sign out/ --key signing.key --expires 7d --best-before expires
    """
    lifetime = parse_duration(expires, what="--expires") if expires is not None else None
    marker = _best_before(best_before, lifetime) if best_before is not None else None
    entries = sign_directory(
        directory, key, passphrase=_passphrase(), lifetime=lifetime, best_before=marker
    )
    for entry in entries:
        print(f"{entry.sha256}  {entry.filename}")
    fingerprint = key_fingerprint(key, passphrase=_passphrase())
    _, expiry = signature_times((directory / SIGNATURE_NAME).read_bytes())
    until = f", expires {expiry:%Y-%m-%d %H:%M:%S} UTC" if expiry else ", never expires"
    images = len(entries) - (marker is not None)
    fresh = f"; systemd 260+ refuse it from {marker:%Y-%m-%d} 00:00 UTC" if marker else ""
    console.print(
        f"signed {images} image(s): {directory / MANIFEST_NAME},"
        f" {' and '.join(str(directory / n) for n in SIGNATURE_NAMES)}"
        f" (key {fingerprint}{until}){fresh}",
        soft_wrap=True,
    )


def _best_before(text: str, lifetime: dt.timedelta | None) -> dt.date:
    """--best-before: YYYY-MM-DD, a duration from now, or `expires` (from --expires)."""
    now = dt.datetime.now(dt.UTC)
    value = text.strip()
    if value.lower() == "expires":
        if lifetime is None:
            raise SysextError(
                "--best-before expires needs --expires",
                "give the signature a lifetime (--expires 7d), or a date/duration here",
            )
        return best_before_for(now + lifetime)
    if value[:1].isdigit() and "-" in value:
        date = best_before_date(BEST_BEFORE_PREFIX + value)
        if date is None or value != f"{date:%Y-%m-%d}":
            raise SysextError(
                f"--best-before {text!r} is not a date systemd reads",
                "write YYYY-MM-DD (e.g. 2027-01-31), a duration (14d) or 'expires'",
            )
        return date
    return best_before_for(now + parse_duration(value, what="--best-before"))


def verify(
    directory: Path = typer.Argument(..., help="Directory with SHA256SUMS and SHA256SUMS.gpg."),
    keyring: Path = typer.Option(..., "--keyring", help="Binary public keyring (key export)."),
) -> None:
    """Check DIR's signatures against the keyring, then every listed file's SHA-256.

    Fails exactly where a host would: missing, bad or expired signature (SHA256SUMS.gpg,
    and SHA256SUMS.sha256.asc that systemd 258+ read when present), a key not in the
    keyring, an armored keyring, a manifest line sysupdate refuses, a BEST-BEFORE marker
    whose day has come (systemd 260+), a changed or missing image. Reports when the
    signature expires and warns when less than half of its lifetime is left.

    Example: sysext verify out/ --keyring import-pubring.gpg
    """
    verdict, results = verify_directory(directory, keyring)
    info = verdict.signature
    bad = [r for r in results if not r.ok]
    for result in results:
        status = "OK" if result.ok else f"FAILED: {result.problem}"
        print(f"{result.entry.filename}: {status}")
    if bad:
        first = bad[0]
        raise SysextError(
            f"{len(bad)} of {len(results)} file(s) do not match SHA256SUMS"
            f" (first: {first.entry.filename}: {first.problem})",
            "rebuild or re-sign: sysext sign DIR --key KEY",
        )
    console.print(
        f"signature OK (key {info.signer}, {info.describe()}); {len(results)} file(s) match",
        soft_wrap=True,
    )
    if verdict.best_before is not None:
        console.print(verdict.best_before.describe(), soft_wrap=True)
    warnings = [*verdict.warnings, info.expiry_warning()]
    for warning in warnings:
        if warning:
            console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)


def check(
    url: str | None = typer.Argument(
        None, help="The transfer's Path=, e.g. REGISTRY/extensions/NAME (or use --transfer)."
    ),
    transfer_file: Path | None = typer.Option(
        None,
        "--transfer",
        "-t",
        help="Read Path=, MatchPattern=, MinVersion=, Verify= and the target from this"
        " transfer file (e.g. /etc/sysupdate.NAME.d/NAME.conf).",
    ),
    keyring: Path | None = typer.Option(
        None, "--keyring", help="Verify SHA256SUMS.gpg with this binary keyring (Verify=yes)."
    ),
    pattern: list[str] | None = typer.Option(
        None, "--pattern", "-p", help="MatchPattern= (repeatable; default NAME-@v-%a.raw)."
    ),
    os_release: Path | None = typer.Option(
        None, "--os-release", help="Host os-release for %w/%o/%A… (default: this machine)."
    ),
    arch: str | None = typer.Option(None, "--arch", help="Host architecture for %a (x86-64…)."),
    installed: Path | None = typer.Option(
        None, "--installed", help="Target directory with installed images (never downgrade)."
    ),
    min_version: str | None = typer.Option(None, "--min-version", help="MinVersion= to apply."),
    verify_payload: bool = typer.Option(
        False, "--verify-payload", help="Also download the chosen image and check its SHA-256."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    component: str | None = typer.Option(
        None,
        "--component",
        "-C",
        help="On a host: check extension NAME as its update unit does (its transfer file "
        "/etc/sysupdate.NAME.d/NAME.conf, the keyring this systemd reads, the OS's own "
        "extensions that would merge too).",
    ),
    root: Path = typer.Option(
        Path("/"), "--root", help="With --component: the host's files live under this root."
    ),
) -> None:
    """Say which version a host would install from a served directory, or why not.

    Fetches URL/SHA256SUMS (and with --keyring its signature, under the name systemd
    252–257 fetch and the names 258+ try until one does not answer 404), parses it with
    sysupdate's strict grammar, refuses it when a BEST-BEFORE marker's day has come (as
    systemd 260+ do), lists the versions the pattern sees (newest first) and
    picks the candidate like `systemd-sysupdate check-new`. Exits 0 when an update is
    available or the host is up to date; otherwise prints the exact reason and exits 2.

    With --transfer it reads the host's own transfer file instead, and (for Verify=yes)
    the host's keyring /etc/systemd/import-pubring.gpg unless --keyring is given.

    Example: sysext check https://ext.example.com/extensions/podman --keyring pubring.gpg

    Example: sysext check --transfer /etc/sysupdate.podman.d/podman.conf

    With --component NAME, on a host whose sysext-update-NAME.service failed: the same
    check with that host's transfer file and keyring (the order of its systemd version),
    plus warnings for Flatcar extensions that merge next to NAME although it replaces them.

    Example: sysext check --component podman
    """
    # Imported here: the checker speaks HTTP (requests), which no other command here needs.
    from sysext.client.checker import (
        CheckError,
        check_remote,
        component_keyring,
        component_transfer_file,
        host_keyring,
        keyring_warnings,
        transfer_check,
    )
    from sysext.systemd.patterns import HostInfo
    from sysext.systemd.selection import DEFAULT_INSTANCES_MAX
    from sysext.systemd.transfer import parse_transfer

    host_notes: list[str] = []
    if component is not None:
        if transfer_file is not None or url is not None:
            raise SysextError(
                "give --component or a URL/--transfer, not both",
                "--component NAME reads /etc/sysupdate.NAME.d/NAME.conf itself",
            )
        transfer_file = component_transfer_file(root, component)
        if keyring is None:
            keyring = component_keyring(root)
        host_notes += keyring_warnings(root)
        host_notes += _os_extension_notes(root, component, transfer_file)
    if os_release is not None:
        host = HostInfo.from_os_release_file(os_release, arch)
    else:
        local = HostInfo.local() if Path("/etc/os-release").exists() else None
        host = HostInfo(
            arch=Architecture.parse(arch).value if arch else Architecture.from_uname().value,
            os_release=local.os_release if local else {},
        )
    target_patterns: list[str] | None = None
    notes: tuple[str, ...] = ()
    instances_max = DEFAULT_INSTANCES_MAX
    protected: tuple[str, ...] = ()
    if transfer_file is not None:
        if url is not None or pattern:
            raise SysextError(
                "give either URL/--pattern or --transfer, not both",
                "the transfer file already names the URL and the patterns",
            )
        inputs = transfer_check(parse_transfer(_read_text(transfer_file)), host)
        url, pattern, target_patterns = inputs.url, inputs.patterns, inputs.target_patterns
        if installed is None and inputs.installed_dir is not None:
            installed = root / inputs.installed_dir.relative_to("/")
        min_version = min_version or inputs.min_version
        if inputs.verify and keyring is None:
            keyring = host_keyring()
        elif not inputs.verify:
            keyring = None
        notes = (*host_notes, *inputs.warnings)
        instances_max, protected = inputs.instances_max, inputs.protected
    if url is None:
        raise SysextError("no URL given", "pass the registry directory URL, or --transfer FILE")
    try:
        report = check_remote(
            url,
            keyring=keyring,
            patterns=pattern or None,
            host=host,
            installed_dir=installed,
            min_version=min_version,
            verify_payload=verify_payload,
            target_patterns=target_patterns,
            instances_max=instances_max,
            protected=protected,
        )
    except CheckError as exc:
        # Nothing for this VERSION_ID (e.g. after a Fedora CoreOS rebase): say so as the hint.
        bound = _os_bound_notes(transfer_file, host, component) if component else []
        if bound and transfer_file is not None:
            raise CheckError(exc.message, bound[0]) from None
        raise
    if component is not None and not report.available and transfer_file is not None:
        notes = (*notes, *_os_bound_notes(transfer_file, host, component))
    if notes:
        report = replace(report, warnings=notes + report.warnings)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report)
    if report.problem is not None:
        raise SysextError(report.problem, _problem_hint(report))


def _os_bound_notes(transfer_file: Path | None, host: HostInfo, name: str) -> list[str]:
    """An OS-bound transfer (`%w`) with nothing published for this host's VERSION_ID: the
    installed image no longer merges after an OS update (e.g. a Fedora CoreOS rebase)."""
    from sysext.systemd.transfer import parse_transfer

    if transfer_file is None:
        return []
    config = parse_transfer(_read_text(transfer_file))
    if not any("%w" in p for p in config.match_patterns("Source")):
        return []
    version_id = host.os_release.get("VERSION_ID", "?")
    return [
        f"{name} is published per OS version and no image exists for this host's "
        f"VERSION_ID={version_id}: an image built for another VERSION_ID does not merge "
        "here (systemd-sysext compares VERSION_ID); publish one built with "
        f"--os-version-id {version_id}"
    ]


def _os_extension_notes(root: Path, name: str, transfer_file: Path) -> list[str]:
    """Warnings for OS extensions the installed NAME replaces that this host still merges."""
    from sysext.provision.resolve import image_release_fields
    from sysext.systemd.os_extensions import host_merges, masking_advice, replaced
    from sysext.systemd.transfer import parse_transfer

    config = parse_transfer(_read_text(transfer_file))
    link_value = config.get("Target", "CurrentSymlink")
    if not link_value or not link_value.startswith("/"):
        return []
    link = root / link_value.lstrip("/")
    try:
        target = os.readlink(link)
    except OSError:
        return [f"{link_value} does not exist: {name} is not installed"]
    image = root / target.lstrip("/") if target.startswith("/") else link.parent / target
    try:
        release = image_release_fields(image, name)
    except SysextError as exc:
        return [f"cannot read {name}'s installed image: {exc.message}"]
    return [
        f"Flatcar's {os_name} still merges next to {name}, which replaces it: "
        f"{masking_advice(os_name)}"
        for os_name in replaced(release)
        if host_merges(root, os_name)
    ]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SysextError(f"{path}: no such transfer file") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise SysextError(f"{path}: not a text file") from None


def _problem_hint(report: CheckReport) -> str:
    if report.candidate is not None:
        return "serve each extension from its own directory and list only images in SHA256SUMS"
    if report.selection.obsolete:
        return "publish a version newer than MinVersion="
    return "publish a newer version, or check the installed directory"


def _print_report(report: CheckReport) -> None:
    sel = report.selection
    print(f"manifest:  {report.manifest_url} ({report.manifest_entries} entries)")
    if report.signer:
        expiry = report.signature_expires
        until = f"expires {expiry:%Y-%m-%d %H:%M:%S} UTC" if expiry else "never expires"
        print(f"signature: OK, key {report.signer}, {until}")
        if report.signature_requests_258 == 1:
            print(f"signature: systemd 258+ find it at {SIGNATURE_NAME_258} (one request)")
    else:
        print("signature: not checked (no --keyring; like Verify=no)")
    if report.best_before is not None:
        print(f"marker:    {report.best_before.describe()} (252–259 ignore it)")
    print(f"pattern:   {' '.join(report.patterns)}")
    print("available (newest first):")
    for item in report.available:
        mark = " <- candidate" if item.version == sel.candidate else ""
        print(f"  {item.version:<20} {item.filename}{mark}")
    if report.installed:
        print(f"installed: {', '.join(report.installed)}")
    if report.payload_verified:
        print(f"payload:   {report.payload_verified} SHA-256 OK")
    for warning in report.warnings:
        print(f"warning:   {warning}")
    if sel.candidate is not None:
        print(f"update:    {sel.candidate} ({sel.reason})")
        if report.vacuum:
            print(f"removes:   {', '.join(report.vacuum)} (InstancesMax, before installing)")
    elif report.problem is None:
        print(f"update:    none, up to date ({sel.reason})")


def transfer(
    name: str = typer.Argument(..., help="Extension name, e.g. podman."),
    registry: str = typer.Option(..., "--registry", help="Registry root URL (http/https)."),
    channel: str = typer.Option(DEFAULT_CHANNEL, "--channel", help="Channel to follow."),
    minor: str | None = typer.Option(
        None, "--minor", help="Follow only X.Y.* patch releases (pattern NAME-X.Y.@v-%a.raw)."
    ),
    os_bound: bool | None = typer.Option(
        None,
        "--os-bound/--any-os",
        help="Images are built per host VERSION_ID (pattern NAME-@v-%w-%a.raw), or not. "
        "Default: as the registry's own NAME.conf says (read over HTTP).",
        show_default=False,
    ),
    instances: int | None = typer.Option(
        None, "--instances", help="InstancesMax= (versions kept on the host; default 3)."
    ),
    file_format: str | None = typer.Option(
        None,
        "--format",
        help="conf (read by systemd 252-256; 257+ warn) or transfer (257+). Default: from "
        "--systemd-version, else conf. Install the same text under both names and every "
        "version reads it without a warning.",
        show_default=False,
    ),
    systemd_version: int | None = typer.Option(
        None,
        "--systemd-version",
        min=252,
        help="The host's systemd major version: picks the file name (.transfer for 257+, "
        ".conf before) that the install hint names.",
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Verify=no (unsigned registries only; not recommended)."
    ),
    commands: bool = typer.Option(
        False,
        "--commands",
        help="Print the shell commands that install NAME on a running host with this "
        "transfer file (as the registry's web page shows them) instead of the file.",
    ),
    variant: str = typer.Option(
        "flatcar",
        "--variant",
        help="Host layout: flatcar (/opt/extensions/NAME, /etc/extensions/NAME.raw) or fcos "
        "(/var/lib/extensions.d/NAME, /var/lib/extensions/NAME.raw, as fedora-sysexts).",
    ),
    host_id: str | None = typer.Option(
        None,
        "--host-id",
        help="A managed host's rollout ID (systemd-id128 machine-id --app-specific=…): the "
        "file that host ends up with, polling its rollout bucket (docs/rollouts.md).",
    ),
    group: str | None = typer.Option(None, "--group", help="The managed host's rollout group."),
    static: bool = typer.Option(
        False,
        "--static",
        help="With --host-id: poll the bucket directory without the host ID (a host reading "
        "an object store directly; the registry then cannot tell hosts apart).",
    ),
) -> None:
    """Print the systemd-sysupdate transfer file that keeps NAME updated.

    Install it as /etc/sysupdate.NAME.d/NAME.transfer (systemd 257+) and as NAME.conf
    (252-256), create the target directories (`mkdir -p /opt/extensions/NAME
    /etc/extensions`: systemd-sysupdate does not create them) and run
    `/usr/lib/systemd/systemd-sysupdate -C NAME update`, then `systemctl restart
    systemd-sysext.service` (as Flatcar documents). With Verify=yes (the default) the host
    must trust the registry key without losing its vendor keys: see the file's comment, or
    use --commands, which sets that up.

    Whether the images are bound to the host's OS version (`%w` in the pattern) is read
    from the registry's own NAME.conf, so both files always agree; --os-bound/--any-os
    decide it without asking the registry.

    Example: sysext transfer kubernetes --registry https://ext.example.com --minor 1.29

    Example: sysext transfer podman --registry https://ext.example.com --commands | sh
    """
    from sysext.provision.compose import host_layout
    from sysext.provision.model import Variant, parse_enum
    from sysext.systemd.transfer import TRANSFER_SUFFIX_SINCE, TransferSpec, render_transfer

    chosen = parse_enum(Variant, variant, "variant")
    if commands:
        from sysext.provision.host_commands import host_commands

        if os_bound is None:  # also refuses a NAME the registry does not serve there
            os_bound = _registry_os_bound(registry, name, channel)
        text = host_commands(name, registry, channel=channel, variant=chosen, os_bound=os_bound)
        sys.stdout.write(text)
        return
    layout = host_layout(name, chosen)
    if host_id is None and (group is not None or static):
        raise SysextError("--group and --static describe a managed host", "give --host-id too")
    if os_bound is None:
        os_bound = _registry_os_bound(registry, name, channel)
    spec = TransferSpec(
        target_dir=layout.images_dir,
        current_symlink=layout.link,
        name=name,
        base_url=registry,
        channel=channel,
        minor=minor,
        os_bound=os_bound,
        instances_max=instances,
        verify=not no_verify,
        host_id=host_id,
        group=group,
        static=static,
    )
    if file_format is None:
        newer = systemd_version is not None and systemd_version >= TRANSFER_SUFFIX_SINCE
        file_format = "transfer" if newer else "conf"
    elif systemd_version is not None and (
        (file_format == "transfer") != (systemd_version >= TRANSFER_SUFFIX_SINCE)
    ):
        raise SysextError(
            f"--format {file_format} does not fit systemd {systemd_version}",
            "systemd 257+ read .transfer (and .conf only with a warning); 252-256 only .conf: "
            "drop --format",
        )
    sys.stdout.write(render_transfer(spec, file_format=file_format))


def host_id(
    machine_id: str | None = typer.Option(
        None, "--machine-id", help="A machine ID (default: this host's /etc/machine-id)."
    ),
) -> None:
    """Print this host's rollout ID and bucket (what a managed host polls with).

    The same as `systemd-id128 machine-id --app-specific=APP_ID`; the machine ID itself is
    never printed nor sent anywhere.

    Example: sysext host-id
    """
    from sysext.core.rollout import app_specific_id, bucket_name, host_bucket

    if machine_id is None:
        try:
            machine_id = Path("/etc/machine-id").read_text(encoding="ascii").strip()
        except OSError as exc:
            raise SysextError(
                f"cannot read /etc/machine-id: {exc.strerror}", "pass --machine-id"
            ) from None
    ident = app_specific_id(machine_id)
    print(f"{ident} bucket {bucket_name(host_bucket(ident))}")


def _registry_os_bound(registry: str, name: str, channel: str) -> bool:
    """Ask the registry whether it serves `name` per OS version (its NAME.conf)."""
    from sysext.core.urls import extension_url_path
    from sysext.provision.resolve import HttpCatalog, served_os_bound

    catalog = HttpCatalog(registry)
    try:
        if catalog.read(f"{extension_url_path(name, channel)}/{MANIFEST_NAME}") is None:
            raise SysextError(
                f"the registry at {catalog.base_url} serves no {name!r} in channel {channel!r}",
                "check NAME and --channel, or write the file anyway with --os-bound/--any-os",
            )
        return served_os_bound(catalog, name, channel)
    except SysextError as exc:
        if exc.hint and "--os-bound" in exc.hint:
            raise
        raise SysextError(
            exc.message, "pass --os-bound or --any-os to write the file without the registry"
        ) from None


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.add_typer(key_app, name="key")
    app.command("sign")(sign)
    app.command("verify")(verify)
    app.command("check")(check)
    app.command("transfer")(transfer)
    app.command("host-id")(host_id)
