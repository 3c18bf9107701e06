"""Upload validation: is this file an extension image hosts will accept under its name?

Checked before anything becomes visible (issue 4): a squashfs or erofs image; exactly one
`extension-release.NAME` and NAME is the file name's (hosts activate it as
`/etc/extensions/NAME.raw`, so sysext looks for exactly that file, spec §1.2); its
ARCHITECTURE equals the file name's arch (systemd's vocabulary, spec §1.4); and
SYSEXT_VERSION_ID, when present, equals the file name's version (or, for an image bound to
one OS VERSION_ID, the file name's version is VERSION-VERSIONID) — hosts pick versions from
file names (sysupdate's @v), so a name that lies about its contents would be offered as an
update it is not.

Then the image gets exactly the lint `sysext validate` runs (sysext/image/lint.py, one
implementation), and any of its errors refuses the upload with the lint's own message: a
registry must not sign what hosts would refuse or silently skip (issue 13, finding 4).
Messages name the published file name, never the server's temporary file.

A verity DDI (issue 22) passes the same lint, which rebuilds its hash tree from the data
and checks the partition UUIDs against the root hash; then its root-hash signature must
verify with one of the certificates the registry trusts (registry/trust/verity.py), or
the upload is refused: hosts would refuse it, or worse, trust a stranger's image.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from registry.errors import RegistryError
from registry.service.names import ImageName, parse_image_filename
from sysext.core.errors import SysextError, ToolError
from sysext.core.process import run
from sysext.image.ddi import VerityCheck
from sysext.image.lint import lint_image
from sysext.image.read import read_image
from sysext.image.summary import ImageSummary, summarize
from sysext.systemd.extension_release import BOUND_NAME_HINT, bound_name_problem
from sysext.trust.x509 import (
    VeritySignatureError,
    fingerprint,
    load_certificates,
    verify_signed_root,
)

ACCEPTED_FORMATS = ("squashfs", "erofs")
# Uploads are validated in a child process with these limits: the server's own memory
# never depends on what an image holds, and a pathological image costs one bounded child.
CHILD_MEMORY = 1 << 30  # address space (RLIMIT_AS), not RSS: imports alone map ~300 MiB
CHILD_SECONDS = 120
# Between the child's trusted and retired verity certificates on its command line.
RETIRED_MARK = "--retired"


@dataclass(frozen=True)
class ValidatedImage:
    """What the registry records about an accepted upload."""

    format: str  # "squashfs" or "erofs"
    # The release's VERSION_ID when the file is named NAME-VERSION-VERSIONID-ARCH.raw (an
    # OS-bound image, served with MatchPattern=NAME-@v-%w-%a.raw); None for the plain form.
    os_version_id: str | None = None
    # Release fields and what the image ships, stored with it for the API and the pages.
    summary: ImageSummary = field(default_factory=ImageSummary)
    # A signed verity DDI: its root hash and the SHA-256 of the trusted certificate whose
    # key signed it (None, None: a plain file system image).
    verity_root_hash: str | None = None
    verity_signer: str | None = None


def validate_image(
    path: Path,
    expected: ImageName,
    verity_certs: tuple[Path, ...] = (),
    retired_certs: tuple[Path, ...] = (),
) -> ValidatedImage:
    """Check an upload; raise RegistryError(422, reason) when it is not acceptable.

    `verity_certs`: the certificates a verity DDI's signature must verify with;
    `retired_certs`: those a rotation retired, only to say so when one made the signature."""
    try:
        contents = read_image(path)
    except SysextError as exc:
        reason = _hide_path(exc.message, path)
        raise RegistryError(
            422, f"{expected.filename}: not a readable extension image: {reason}"
        ) from None
    fmt = str(getattr(contents.format, "value", contents.format))
    if fmt not in ACCEPTED_FORMATS:
        raise RegistryError(
            422, f"{expected.filename}: {fmt} images are not accepted (squashfs or erofs)"
        )
    releases = sorted(contents.release_files)
    if not releases and contents.release_errors:
        bad, reason = sorted(contents.release_errors.items())[0]
        raise RegistryError(
            422, f"{expected.filename}: extension-release.{bad} cannot be read: {reason}"
        )
    if not releases:
        raise RegistryError(
            422,
            f"{expected.filename}: no usr/lib/extension-release.d/extension-release.* inside",
        )
    if len(releases) > 1:
        raise RegistryError(
            422,
            f"{expected.filename}: {len(releases)} extension-release files inside "
            f"({', '.join(releases)}); exactly one is allowed",
        )
    if releases[0] != expected.name:
        raise RegistryError(
            422,
            f"{expected.filename}: holds extension-release.{releases[0]}, expected "
            f"extension-release.{expected.name}",
        )
    arch = contents.release_files[releases[0]].get("ARCHITECTURE")
    if arch != expected.arch:
        shown = f"ARCHITECTURE={arch}" if arch else "no ARCHITECTURE="
        raise RegistryError(
            422,
            f"{expected.filename}: extension-release.{expected.name} has {shown}, "
            f"the file name says {expected.arch}",
        )
    release = contents.release_files[releases[0]]
    os_version_id = _os_binding(release, expected)
    try:
        report = lint_image(path, contents=contents, filename=expected.filename)
    except SysextError as exc:
        raise RegistryError(422, f"{expected.filename}: {_hide_path(exc.message, path)}") from None
    if report.errors:
        first = report.errors[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise RegistryError(
            422,
            f"{expected.filename}: {_hide_path(first.message, path)} [{first.code}]{more}; "
            "`sysext validate` shows every finding",
        )
    root_hash = signer = None
    if report.verity is not None:
        root_hash, signer = _verity_signer(report.verity, verity_certs, expected, retired_certs)
    return ValidatedImage(fmt, os_version_id, summarize(contents, expected.name), root_hash, signer)


def _verity_signer(
    checked: VerityCheck,
    verity_certs: tuple[Path, ...],
    expected: ImageName,
    retired_certs: tuple[Path, ...] = (),
) -> tuple[str, str]:
    """(root hash, signer fingerprint) of a DDI the lint passed, or the one-line refusal."""
    if not verity_certs:
        raise RegistryError(
            422,
            f"{expected.filename}: a verity disk image, but this registry trusts no verity "
            "certificate (the operator sets --verity-cert or SYSEXT_VERITY_CERTS)",
        )
    signature = checked.signature
    assert signature is not None  # the lint refuses an unsigned DDI
    trusted = [c for p in verity_certs for c in load_certificates(p)]
    try:
        certificate = verify_signed_root(
            checked.root_hash, signature.signature, signature.certificate_fingerprint, trusted
        )
    except VeritySignatureError as exc:
        retired = _retired_signer(checked, retired_certs)
        if retired is not None:
            raise RegistryError(
                422,
                f"{expected.filename}: verity signature refused: signed by certificate "
                f"{retired[:16]}…, which this registry retired (a certificate rotation's "
                "last phase); sign it with the current key",
            ) from None
        raise RegistryError(
            422, f"{expected.filename}: verity signature refused: {exc.message}"
        ) from None
    return checked.root_hash, fingerprint(certificate)


def _retired_signer(checked: VerityCheck, retired_certs: tuple[Path, ...]) -> str | None:
    """The retired certificate that really made the signature (checked, not just the
    fingerprint the image claims), if any: worth its own message."""
    signature = checked.signature
    if signature is None or not retired_certs:
        return None
    retired = [c for p in retired_certs for c in load_certificates(p)]
    try:
        certificate = verify_signed_root(
            checked.root_hash, signature.signature, signature.certificate_fingerprint, retired
        )
    except VeritySignatureError:
        return None
    return fingerprint(certificate)


def _hide_path(message: str, path: Path) -> str:
    """The client never learns where the server keeps its temporary files."""
    return message.replace(str(path), "the upload").replace(str(path.parent), "…")


def _os_binding(release: Mapping[str, str], expected: ImageName) -> str | None:
    """The VERSION_ID the image is bound to (None: any OS), checked against its file name.

    An image whose release pins VERSION_ID= is merged only by hosts with exactly that
    VERSION_ID (spec §1.3 step 8), so it is always published OS-bound, as
    NAME-VERSION-VERSIONID-ARCH.raw for `MatchPattern=NAME-@v-%w-%a.raw` (spec §2.3).
    Under a plain name it would be served with NAME-@v-%a.raw to every host and listed as
    "any OS" (issue 19, finding 6), so that name is refused. Neither part may contain
    '-', or one name would mean two bindings (extension_release.bound_name_problem).
    """
    version = release.get("SYSEXT_VERSION_ID")
    bound = release.get("VERSION_ID") or None
    where = f"{expected.filename}: extension-release.{expected.name} has"
    if bound is None:
        if version is not None and expected.version != version:
            raise RegistryError(
                422, f"{where} SYSEXT_VERSION_ID={version}, the file name says {expected.version}"
            )
        return None
    own = version if version is not None else expected.version.removesuffix(f"-{bound}")
    wanted = f"{expected.name}-{own}-{bound}-{expected.arch}.raw"
    if expected.version == own:
        raise RegistryError(
            422,
            f"{where} VERSION_ID={bound}, so it is OS-bound and must be published as "
            f"{wanted} (hosts find it with {expected.name}-@v-%w-%a.raw); under "
            f"{expected.filename} every host would be offered it",
        )
    if expected.version != f"{own}-{bound}" or not own:
        shown = f"SYSEXT_VERSION_ID={version} and " if version is not None else ""
        raise RegistryError(
            422,
            f"{where} {shown}VERSION_ID={bound}, the file name says {expected.version} "
            f"(expected {wanted})",
        )
    problem = bound_name_problem(own, bound)
    if problem:
        raise RegistryError(422, f"{expected.filename}: {problem}; {BOUND_NAME_HINT}")
    return bound


def validate_upload(
    path: Path,
    expected: ImageName,
    timeout: float = CHILD_SECONDS,
    verity_certs: tuple[Path, ...] = (),
    retired_certs: tuple[Path, ...] = (),
) -> ValidatedImage:
    """validate_image() in a child process bounded in memory and time (same answers).

    A 2.3 MB squashfs with 500k symlinks needs ~160 MB to list; done in the server it
    would stay in the server's RSS. Out of memory or time is a 422 like any refusal.
    """
    proc = _run_child(path, expected, timeout, verity_certs, retired_certs)
    return _child_answer(proc.stdout, proc.returncode, expected)


def _run_child(
    path: Path,
    expected: ImageName,
    timeout: float,
    verity_certs: tuple[Path, ...] = (),
    retired_certs: tuple[Path, ...] = (),
) -> subprocess.CompletedProcess[bytes]:
    try:
        return run(
            [sys.executable, "-m", "registry.service.validation", str(path), expected.name,
             expected.filename, *map(str, verity_certs), RETIRED_MARK,
             *map(str, retired_certs)],
            check=False,
            timeout=timeout,
        )  # fmt: skip
    except ToolError:
        raise RegistryError(
            422,
            f"{expected.filename}: not validated within {timeout:.0f} s; the image is too "
            "complex for this registry",
        ) from None


def _child_answer(stdout: bytes, returncode: int, expected: ImageName) -> ValidatedImage:
    try:
        answer = json.loads(stdout)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or returncode != 0:
        raise RegistryError(
            422,
            f"{expected.filename}: validation ran out of memory or failed "
            f"(exit {returncode}); the image is too large or corrupt for this registry",
        )
    if "detail" in answer:
        raise RegistryError(int(answer["status"]), str(answer["detail"]))
    summary = answer.get("summary") or {}
    return ValidatedImage(
        format=str(answer["format"]),
        os_version_id=answer.get("os_version_id"),
        summary=ImageSummary(
            release=MappingProxyType(dict(summary.get("release") or {})),
            binaries=tuple(summary.get("binaries") or ()),
            units=tuple(summary.get("units") or ()),
        ),
        verity_root_hash=answer.get("verity_root_hash"),
        verity_signer=answer.get("verity_signer"),
    )


def _child_main(argv: list[str]) -> int:
    """`python -m registry.service.validation PATH NAME FILENAME [CERT...] -- [RETIRED...]`:
    one JSON answer on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    path, name, filename, *certs = argv
    split = certs.index(RETIRED_MARK) if RETIRED_MARK in certs else len(certs)
    trusted, retired = certs[:split], certs[split + 1 :]
    try:
        validated = validate_image(
            Path(path),
            parse_image_filename(name, filename),
            tuple(Path(c) for c in trusted),
            tuple(Path(c) for c in retired),
        )
        result: dict[str, object] = {
            "format": validated.format,
            "os_version_id": validated.os_version_id,
            "summary": {
                "release": dict(validated.summary.release),
                "binaries": list(validated.summary.binaries),
                "units": list(validated.summary.units),
            },
            "verity_root_hash": validated.verity_root_hash,
            "verity_signer": validated.verity_signer,
        }
    except RegistryError as exc:
        result = {"status": exc.status, "detail": exc.detail}
    except (ValueError, MemoryError, RecursionError) as exc:
        kind = "needs too much memory" if isinstance(exc, MemoryError) else str(exc)
        result = {"status": 422, "detail": f"{filename}: not acceptable: {kind}"}
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
