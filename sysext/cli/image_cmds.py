"""`sysext pack`, `sysext inspect`, `sysext validate`: make and look at extension images."""

from __future__ import annotations

import dataclasses
import json
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sysext.core.errors import SysextError
from sysext.core.steps import console
from sysext.systemd.architecture import Architecture

if TYPE_CHECKING:
    from sysext.image.lint import LintReport
    from sysext.image.read import ImageContents, ImageEntry
    from sysext.trust.x509 import Signer

VERITY_HELP = (
    "Write a Discoverable Disk Image instead of a plain file system: the file system, its "
    "dm-verity hash tree and the root hash signed with --signing-cert/--signing-key, so "
    "hosts verify every block when it is read (see docs/verity.md)."
)
SIGNING_CERT_HELP = "PEM certificate that signs the verity root hash (with --verity)."
SIGNING_KEY_HELP = "PEM private key of --signing-cert (unencrypted; with --verity)."


def verity_signer(verity: bool, cert: Path | None, key: Path | None) -> Signer | None:
    """The signer --verity asks for, loaded and checked before anything is built."""
    if not verity:
        if cert is not None or key is not None:
            raise SysextError(
                "--signing-cert/--signing-key sign verity images",
                "add --verity to build a signed DDI, or drop them",
            )
        return None
    if cert is None or key is None:
        raise SysextError(
            "--verity needs --signing-cert CERT and --signing-key KEY",
            "make a pair with: sysext key generate --x509 --output verity.key "
            "(writes verity.crt too)",
        )
    from sysext.trust.x509 import load_signer

    return load_signer(cert, key)


def pack_command(
    tree: Path = typer.Argument(..., help="Prepared tree holding usr/ (and/or opt/)."),
    name: str = typer.Option(..., "--name", "-n", help="Extension (activation) name."),
    version: str = typer.Option(..., "--version", help="Version, e.g. 5.3.1 (sysupdate chars)."),
    arch: str | None = typer.Option(
        None, "--arch", "-a", help="systemd architecture (x86-64, arm64…); default: this host."
    ),
    os_spec: str = typer.Option(
        "_any", "--os", help="ID[:SYSEXT_LEVEL] of the target OS, e.g. flatcar:1.0 (default _any)."
    ),
    os_version_id: str | None = typer.Option(
        None,
        "--os-version-id",
        help="Bind the image to hosts with this os-release VERSION_ID (needs --os ID without "
        "a level); names it NAME-VERSION-VERSIONID-ARCH.raw, e.g. --os flatcar "
        "--os-version-id 3815.2.0.",
    ),
    image_format: str = typer.Option("squashfs", "--format", help="squashfs or erofs."),
    compression: str | None = typer.Option(
        None,
        "--compression",
        help="zstd (default, level 16), xz, gzip, lz4, lz4hc; erofs: lz4hc (default), lz4.",
    ),
    level: int | None = typer.Option(
        None,
        "--level",
        help="Compression level: zstd 1-22 (default 16), gzip 1-9 (default 9), lz4hc on "
        "erofs 0-12 (default 9); xz and lz4 take none.",
    ),
    block_size: int | None = typer.Option(
        None,
        "--block-size",
        help="squashfs block size in bytes (default: 1048576).",
    ),
    output: Path = typer.Option(Path("."), "--output", "-o", help="Output directory."),
    reload_manager: bool = typer.Option(
        False,
        "--reload-manager",
        help="Set EXTENSION_RELOAD_MANAGER=1 (automatic when units ship).",
    ),
    allow_setuid: list[str] = typer.Option(
        [], "--allow-setuid", help="Image path allowed to keep a setuid/setgid bit (repeatable)."
    ),
    verity: bool = typer.Option(False, "--verity", help=VERITY_HELP),
    signing_cert: Path | None = typer.Option(None, "--signing-cert", help=SIGNING_CERT_HELP),
    signing_key: Path | None = typer.Option(None, "--signing-key", help=SIGNING_KEY_HELP),
) -> None:
    """Turn a prepared tree into OUT/NAME-VERSION-ARCH.raw with its release file.

    The tree may hold only usr/ and opt/. The image is written atomically, SHA256SUMS in the
    output directory is updated, and NAME-VERSION-ARCH.provenance.json records how it was
    made. Rebuilding the same tree gives the same bytes (times come from SOURCE_DATE_EPOCH,
    default 0).

    With --os-version-id V (and --os ID, no level) the image carries VERSION_ID=V, so
    only hosts with that exact VERSION_ID merge it, and it is named
    NAME-VERSION-V-ARCH.raw for `sysext transfer --os-bound` (MatchPattern NAME-@v-%w-%a.raw).

    Example: sysext pack ./root --name hello --version 1.0 --arch x86-64 --os flatcar:1.0
    --output ./out

    Example: sysext pack ./root --name kmod --version 1.0 --os flatcar
    --os-version-id 3815.2.0 --output ./out

    Example (a signed dm-verity DDI; the key pair from `sysext key generate --x509 --output
    verity.key`): sysext pack ./root --name hello --version 1.0 --verity --signing-cert
    verity.crt --signing-key verity.key --output ./out
    """
    from sysext.build.pack import pack
    from sysext.image.formats import Compression, ImageFormat
    from sysext.systemd.extension_release import ExtensionRelease, check_os_binding

    signer = verity_signer(verity, signing_cert, signing_key)
    os_id, level_spec = ExtensionRelease.parse_os_spec(os_spec)
    check_os_binding(os_id, level_spec, os_version_id)
    release = ExtensionRelease(
        name=name,
        version=version,
        arch=Architecture.parse(arch) if arch else Architecture.from_uname(),
        os_id=os_id,
        sysext_level=level_spec,
        version_id=os_version_id,
        reload_manager=reload_manager,
    )
    built = pack(
        tree,
        release,
        output,
        image_format=ImageFormat.parse(image_format),
        compression=Compression.parse(compression) if compression else None,
        level=level,
        allow_setuid=frozenset(allow_setuid),
        block_size=block_size,
        verity_signer=signer,
    )
    for warning in built.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    print(built.path)
    print(f"sha256 {built.sha256}")
    print(f"size   {built.size}")
    if built.root_hash is not None:
        print(f"verity root hash {built.root_hash}")
        print(f"signed by        {built.verity_signer}")


def _mode_string(entry: ImageEntry) -> str:
    type_bits = {
        "dir": stat.S_IFDIR,
        "file": stat.S_IFREG,
        "symlink": stat.S_IFLNK,
        "fifo": stat.S_IFIFO,
        "socket": stat.S_IFSOCK,
        "char-device": stat.S_IFCHR,
        "block-device": stat.S_IFBLK,
    }.get(entry.kind, 0)
    return stat.filemode(type_bits | entry.mode)


def _ddi_json(contents: ImageContents, report: LintReport | None) -> dict[str, object] | None:
    if contents.ddi is None:
        return None
    checked = report.verity if report is not None else None
    signature = checked.signature if checked is not None else None
    return {
        "partitions": [
            {
                "number": p.number,
                "type": p.type_name,
                "uuid": str(p.uuid),
                "offset": p.offset,
                "size": p.size,
                "label": p.label,
            }
            for p in contents.ddi.partitions
        ],
        # Only once the tree was checked against the data (None: it does not match).
        "root_hash": checked.root_hash if checked is not None else None,
        "signed": signature is not None,
        "certificate_fingerprint": signature.certificate_fingerprint if signature else None,
    }


def _contents_json(contents: ImageContents, report: LintReport | None) -> dict[str, object]:
    data: dict[str, object] = {
        "format": contents.format.value,
        "compression": contents.compression,
        "size": contents.size,
        "ddi": _ddi_json(contents, report),
        "release_files": {k: dict(v) for k, v in contents.release_files.items()},
        "entries": [
            {
                "path": e.path,
                "kind": e.kind,
                "mode": f"{e.mode:04o}",
                "uid": e.uid,
                "gid": e.gid,
                "size": e.size,
                **({"target": e.target} if e.target is not None else {}),
                **({"xattrs": [name for name, _ in e.xattrs]} if e.xattrs else {}),
            }
            for e in contents.entries
        ],
    }
    if report is not None:
        data["checks"] = [
            {"severity": f.severity.value, "code": f.code, "message": f.message}
            for f in report.findings
        ]
        if report.host is not None:
            data["host"] = {"merges": report.host.merges, "reason": report.host.reason}
    return data


def inspect_command(
    image: Path = typer.Argument(..., help="An extension image (.raw)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Show an image's extension-release fields, files (owner, mode, size), compression, checks.

    Example: sysext inspect out/hello-1.0-x86-64.raw --json
    """
    from sysext.image.lint import lint_image
    from sysext.image.read import read_image

    contents = read_image(image)
    report = lint_image(image, contents=contents)
    if as_json:
        json.dump(_contents_json(contents, report), sys.stdout, indent=2)
        print()
        return
    print(f"image       {image}")
    container = ", in a verity DDI" if contents.ddi is not None else ""
    print(f"format      {contents.format.value}, compression {contents.compression}{container}")
    print(f"size        {contents.size} bytes")
    _print_ddi(contents, report)
    for name, fields in contents.release_files.items():
        print(f"release     usr/lib/extension-release.d/extension-release.{name}")
        for key, value in fields.items():
            print(f"  {key}={value}")
    if not contents.release_files:
        print("release     (none)")
    print(f"files       {len(contents.entries)} entries")
    for e in contents.entries:
        link = f" -> {e.target}" if e.target is not None else ""
        xattrs = f" [xattrs: {', '.join(n for n, _ in e.xattrs)}]" if e.xattrs else ""
        print(f"  {_mode_string(e)} {e.uid}/{e.gid} {e.size:>10} {e.path}{link}{xattrs}")
    _print_findings(report)


def _print_ddi(contents: ImageContents, report: LintReport) -> None:
    ddi = _ddi_json(contents, report)
    if ddi is None:
        return
    print("partitions")
    for p in contents.ddi.partitions if contents.ddi else ():
        print(f"  {p.number} {p.type_name:<24} {p.uuid} {p.size:>10} bytes at {p.offset}")
    print(f"root hash   {ddi['root_hash'] or '(hash tree does not match the data)'}")
    if ddi["signed"]:
        shown = ddi["certificate_fingerprint"] or "(certificate not named)"
        print(f"signed by   {shown} (sha256 of the certificate; checked with validate --cert)")
    else:
        print("signed by   nobody (no verity-sig partition)")


def _print_findings(report: LintReport) -> None:
    if not report.findings:
        print("checks      ok")
        return
    print("checks")
    for f in report.findings:
        print(f"  {f.severity.value}: {f.message} [{f.code}]")


def validate_command(
    image: Path = typer.Argument(..., help="An extension image (.raw)."),
    os_release: Path | None = typer.Option(
        None, "--os-release", help="A host's os-release file: would systemd-sysext merge it?"
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="The host's architecture for --os-release (default: this machine)."
    ),
    initrd: bool = typer.Option(False, "--initrd", help="Evaluate as in the initrd (scope)."),
    allow_setuid: list[str] = typer.Option(
        [], "--allow-setuid", help="Image path allowed to be setuid/setgid (repeatable)."
    ),
    allow_xattr: list[str] = typer.Option(
        [],
        "--allow-xattr",
        help="Image path allowed to carry security.*/trusted.* xattrs, e.g. file "
        "capabilities (repeatable).",
    ),
    certs: list[Path] = typer.Option(
        [],
        "--cert",
        help="For a verity DDI: PEM certificate(s) hosts trust (their /etc/verity.d/*.crt); "
        "the root hash signature must verify with one of them (repeatable).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Lint an image; with --os-release, say whether that host's systemd-sysext merges it.

    Checks the file system as Linux checks it when mounting (superblock, tables, erofs
    checksum and features), the release file and its name, ARCHITECTURE spelling, the
    version (sysupdate's characters), the file name NAME-VERSION-ARCH.raw against the
    release fields, the contents (only usr/ and opt/, no os-release, owner 0:0, no device
    nodes, no setuid program without --allow-setuid, no file capabilities or other
    security.*/trusted.* xattrs without --allow-xattr, no links that resolve to host
    secrets) and that the programs of shipped units exist. A registry refuses uploads with
    the same errors (and allows neither setuid nor xattrs).

    With --os-release, follows systemd-sysext's (252–256) checks in order (scope,
    architecture, ID, SYSEXT_LEVEL / VERSION_ID) and names the step that rejects the image.
    Exit status: 0 fine, 1 errors found or not merged, 2 unusable input.

    A verity DDI is also checked block by block: the hash tree must be the data's, the
    partition UUIDs the root hash's, and there must be a signature; with --cert, the
    signature must verify with one of those certificates, as a host checks it.

    Example: sysext validate out/hello-1.0-x86-64.raw --os-release /etc/os-release

    Example: sysext validate out/hello-1.0-x86-64.raw --cert verity.crt
    """
    from sysext.image.lint import Severity, lint_image
    from sysext.systemd.osrelease import read_os_release

    host = read_os_release(os_release) if os_release else None
    host_arch = Architecture.parse(arch) if arch else None
    report = lint_image(
        image,
        host_os_release=host,
        host_arch=host_arch,
        scope="initrd" if initrd else "system",
        allow_setuid=allow_setuid,
        allow_xattrs=allow_xattr,
    )
    report, verified_by = _check_signature(report, certs)
    if as_json:
        data = _contents_json(report.contents, report)
        data.pop("entries")
        data["ok"] = report.ok
        if data["ddi"] is not None:
            data["ddi"]["verified_by"] = verified_by  # type: ignore[index]
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        for f in report.findings:
            print(f"{f.severity.value}: {f.message} [{f.code}]")
        if report.host is not None:
            verdict = "merges" if report.host.merges else "would NOT merge"
            print(f"host: {verdict}: {report.host.reason}")
        if report.verity is not None:
            print(f"verity: root hash {report.verity.root_hash}, hash tree matches the data")
        if verified_by is not None:
            print(f"verity: signature verified with certificate {verified_by}")
        errors = len(report.errors)
        warnings = sum(1 for f in report.findings if f.severity is Severity.WARNING)
        print(f"{image.name}: {errors} error(s), {warnings} warning(s)")
    if not report.ok:
        raise typer.Exit(1)


def _check_signature(report: LintReport, certs: list[Path]) -> tuple[LintReport, str | None]:
    """Add the --cert verdict to the lint findings (crypto lives in sysext.trust); return
    the fingerprint of the certificate that verified the signature, if one did."""
    if not certs:
        return report, None
    if report.contents.ddi is None:
        raise SysextError(
            "--cert checks verity signatures; this image is a plain file system",
            "drop --cert, or build a signed DDI with --verity",
        )
    checked = report.verity
    if checked is None or checked.signature is None:
        return report, None  # the lint already says why there is nothing to verify
    from sysext.image.lint import Finding, Severity
    from sysext.trust.x509 import VeritySignatureError, load_certificates, verify_signed_root

    trusted = [c for path in certs for c in load_certificates(path)]
    signature = checked.signature
    try:
        certificate = verify_signed_root(
            checked.root_hash, signature.signature, signature.certificate_fingerprint, trusted
        )
    except VeritySignatureError as exc:
        finding = Finding(Severity.ERROR, "verity-signature", exc.message)
        return dataclasses.replace(report, findings=(*report.findings, finding)), None
    from sysext.trust.x509 import fingerprint

    return report, fingerprint(certificate)


def register(app: typer.Typer) -> None:
    """Add pack, inspect and validate to the main app."""
    app.command("pack")(pack_command)
    app.command("inspect")(inspect_command)
    app.command("validate")(validate_command)
