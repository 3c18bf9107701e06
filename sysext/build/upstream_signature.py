"""Checking upstream's detached OpenPGP signatures against fingerprints pinned in a recipe.

Where an upstream signs its release files (podman-static `.asc`, runc `.asc`, the SSM
agent's `.sig`) the recipe pins the fingerprints of the certificates allowed to sign and
says where the certificate is published (`key_url`). The certificate fetched from there is
only used when its primary fingerprint is pinned, so a swapped key file cannot vouch for a
swapped download: trust comes from the recipe, not from the server. Verification is
pysequoia's (Sequoia-PGP), armored or binary signatures alike.

Every failure is one line naming the file, the signature and the key.
"""

from __future__ import annotations

from pathlib import Path

import pysequoia

from sysext.core.errors import SysextError

_MAX_SIGNATURE = 1 << 20


class UpstreamSignatureError(SysextError):
    """An upstream file's signature is missing, made by another key, or does not match."""


def pinned_certificates(
    key_material: bytes, pinned: tuple[str, ...], *, key_label: str
) -> list[pysequoia.Cert]:
    """The certificates in `key_material` whose primary fingerprint is pinned."""
    try:
        certs = pysequoia.Cert.split_bytes(key_material)
    except RuntimeError:
        certs = []
    if not certs:
        raise UpstreamSignatureError(
            f"{key_label}: no OpenPGP certificate in it (expected key {_short(pinned)})",
            "check the recipe's key_url",
        )
    wanted = {p.upper() for p in pinned}
    chosen = [c for c in certs if c.fingerprint.upper() in wanted]
    if not chosen:
        found = ", ".join(c.fingerprint.upper() for c in certs)
        raise UpstreamSignatureError(
            f"{key_label}: holds key {found}, not the pinned key {_short(pinned)}",
            "the published key changed: check the new one out of band before pinning it",
        )
    return chosen


def verify_file(
    path: Path,
    signature: bytes,
    certs: list[pysequoia.Cert],
    *,
    file_label: str,
    signature_label: str,
) -> str:
    """Check `signature` over the file at `path`; return the signing certificate's
    fingerprint or raise UpstreamSignatureError."""
    keys = _short(tuple(c.fingerprint.upper() for c in certs))
    if not signature.strip() or len(signature) > _MAX_SIGNATURE:
        raise UpstreamSignatureError(
            f"{signature_label}: not a detached OpenPGP signature ({len(signature)} bytes); "
            f"{file_label} cannot be checked against key {keys}"
        )
    try:
        sig = pysequoia.Sig.from_bytes(signature)
    except RuntimeError:
        raise UpstreamSignatureError(
            f"{signature_label}: not a detached OpenPGP signature; "
            f"{file_label} cannot be checked against key {keys}"
        ) from None
    issuer = (sig.issuer_fingerprint or sig.issuer_key_id or "").upper()
    known = {fpr for c in certs for fpr in _subkey_fingerprints(c)}
    if issuer and not any(k.endswith(issuer) for k in known):
        raise UpstreamSignatureError(
            f"{signature_label}: {file_label} is signed by key {issuer}, not by the pinned "
            f"key {keys}",
            "a key the recipe does not trust made this signature; do not use the file",
        )
    try:
        result = pysequoia.verify(file=str(path), store=lambda _ids: certs, signature=sig)
    except RuntimeError:
        raise UpstreamSignatureError(
            f"{file_label}: BAD signature {signature_label} for key {keys}: the file is not "
            "what the key signed",
            "the download was altered or corrupted; do not use it",
        ) from None
    if not result.valid_sigs:
        raise UpstreamSignatureError(
            f"{file_label}: BAD signature {signature_label} for key {keys}"
        )
    return str(result.valid_sigs[0].certificate).upper()


def _subkey_fingerprints(cert: pysequoia.Cert) -> set[str]:
    from pysequoia.packet import PacketPile

    out = {cert.fingerprint.upper()}
    for packet in PacketPile.from_bytes(bytes(cert)):
        if packet.fingerprint:
            out.add(packet.fingerprint.upper())
    return out


def _short(fingerprints: tuple[str, ...]) -> str:
    return " or ".join(fingerprints)
