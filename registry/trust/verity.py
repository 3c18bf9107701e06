"""The verity certificates a registry trusts: which signed DDIs it accepts, and what it
serves at /verity.crt for hosts to put in /etc/verity.d/.

Set by `--verity-cert FILE` (repeatable), SYSEXT_VERITY_CERTS (comma-separated files) or
`verity_certs = [...]` in the config file. During a certificate rotation both the old and
the new certificate are listed: uploads signed by either are accepted and hosts provisioned
meanwhile trust both (docs/verity.md). Its last phase moves the old one to
`--verity-retired-cert` (SYSEXT_VERITY_RETIRED_CERTS): no longer served, and an upload
signed by it is refused saying it was retired, not as a stranger's. Without any trusted
certificate, the registry refuses every DDI: it cannot tell a signed image from one signed
by anybody.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from sysext.core.errors import SysextError
from sysext.trust.x509 import certificate_pem, fingerprint, load_certificates

VERITY_CERTS_NAME = "verity.crt"  # URL path of the PEM bundle in the public tree


def load_trusted(paths: Sequence[Path]) -> list[x509.Certificate]:
    """Every certificate of every file, each once; SysextError names a bad file (at start)."""
    found: dict[str, x509.Certificate] = {}
    for path in paths:
        try:
            for certificate in load_certificates(path):
                found.setdefault(fingerprint(certificate), certificate)
        except SysextError as exc:
            raise SysextError(
                f"verity certificate: {exc.message}",
                "--verity-cert / SYSEXT_VERITY_CERTS name PEM certificate files",
            ) from None
    return list(found.values())


def check_rotation(
    trusted: Sequence[Path], retired: Sequence[Path]
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(trusted, retired) certificates; SysextError when one is both (at start): a
    retirement that was not carried out, or a typo in the rotation's next step."""
    current = load_trusted(trusted)
    gone = load_trusted(retired)
    both = {fingerprint(c) for c in current} & {fingerprint(c) for c in gone}
    if both:
        raise SysextError(
            f"verity certificate {sorted(both)[0][:16]}… is both trusted and retired",
            "a rotation's last phase removes the old certificate from --verity-cert "
            "(SYSEXT_VERITY_CERTS) when it adds it to --verity-retired-cert",
        )
    return current, gone


def bundle(certificates: Sequence[x509.Certificate]) -> bytes | None:
    """The PEM bundle served at /verity.crt, None when the registry trusts none."""
    if not certificates:
        return None
    return b"".join(certificate_pem(c) for c in certificates)
