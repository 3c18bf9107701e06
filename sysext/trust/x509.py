"""X.509 certificates and PKCS#7 signatures of dm-verity root hashes.

systemd checks a DDI's `root-ARCH-verity-sig` partition with `PKCS7_verify()` against every
certificate in `/etc/verity.d/*.crt` (and the kernel keyring), flags
`PKCS7_NOINTERN|PKCS7_NOVERIFY`: the signature must be made by one of those certificates'
keys over the root hash written as lowercase hex, and certificates inside the signature are
ignored. systemd-repart and mkosi sign with `PKCS7_DETACHED|PKCS7_NOATTR|PKCS7_BINARY`; so
does `sign_root_hash` (cryptography's PKCS#7 builder, no certificates, no attributes), and
with an RSA key the signature is deterministic, so a DDI rebuilt from the same tree and key
is byte-identical.

cryptography can sign PKCS#7 but not verify it, so `verify_root_hash` reads the SignedData
with a small DER reader and checks each signer with the certificate's public key: the same
decision PKCS7_verify makes with those flags (signed attributes, if a signer used them, are
checked too: their messageDigest must match and the signature covers them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from sysext.core.atomic import atomic_path
from sysext.core.errors import SysextError

DEFAULT_SUBJECT = "sysext verity signing"
DEFAULT_DAYS = 3650
RSA_BITS = 2048  # mkosi genkey's size; kernels verify RSA in every version that has the check
_CERT_HINT = "pass a PEM certificate, e.g. one made by `sysext key generate --x509`"
_KEY_HINT = "pass the PEM private key that belongs to --signing-cert (unencrypted)"

# OIDs (RFC 5652, RFC 8017, RFC 5758) as DER content bytes.
_OID_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")
_OID_MESSAGE_DIGEST = bytes.fromhex("2a864886f70d010904")
_DIGESTS: dict[bytes, hashes.HashAlgorithm] = {
    bytes.fromhex("608648016503040201"): hashes.SHA256(),
    bytes.fromhex("608648016503040202"): hashes.SHA384(),
    bytes.fromhex("608648016503040203"): hashes.SHA512(),
}


class VeritySignatureError(SysextError):
    """A root-hash signature that does not verify (or cannot be read)."""


@dataclass(frozen=True)
class Signer:
    """A certificate and its private key: what signs a DDI's root hash."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    def sign(self, root_hex: str) -> bytes:
        return sign_root_hash(root_hex, self)


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lowercase hex (the DDI's `certificateFingerprint`)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def parse_certificates(data: bytes, source: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a bundle during a rotation holds two)."""
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise SysextError(f"{source}: no PEM certificate in it", _CERT_HINT)
    return found


def load_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SysextError(f"{path}: cannot read: {exc.strerror or exc}", _CERT_HINT) from None
    return parse_certificates(data, str(path))


def load_signer(cert_path: Path, key_path: Path) -> Signer:
    """The certificate and key for signing; refuses a key that is not the certificate's."""
    certificates = load_certificates(cert_path)
    if len(certificates) != 1:
        raise SysextError(
            f"{cert_path}: holds {len(certificates)} certificates; signing needs exactly one",
            "pass the single certificate that belongs to --signing-key",
        )
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except OSError as exc:
        raise SysextError(f"{key_path}: cannot read: {exc.strerror or exc}", _KEY_HINT) from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "not a PEM private key"
        raise SysextError(f"{key_path}: not a usable private key ({reason})", _KEY_HINT) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise SysextError(
            f"{key_path}: a {type(key).__name__} cannot sign verity root hashes",
            "use an RSA or ECDSA key (`sysext key generate --x509` makes RSA)",
        )
    certificate = certificates[0]
    public = certificate.public_key()
    if public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise SysextError(
            f"{key_path} is not the private key of {cert_path}",
            "pass the key the certificate was made for",
        )
    return Signer(certificate, key)


def generate_signer(
    key_out: Path, cert_out: Path, subject: str = DEFAULT_SUBJECT, days: int = DEFAULT_DAYS
) -> Signer:
    """A self-signed RSA certificate and its key, written as PEM (key 0600, atomic).

    Refuses to overwrite either file: replacing a signing key by accident orphans every
    host that trusts the old certificate.
    """
    for path in (key_out, cert_out):
        if Path(path).exists():
            raise SysextError(f"{path} already exists", "choose another file name or remove it")
    if days < 1:
        raise SysextError(f"--days {days}: a certificate must be valid for a day or more")
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with atomic_path(Path(key_out), 0o600) as tmp:
        tmp.write_bytes(key_pem)
    with atomic_path(Path(cert_out), 0o644) as tmp:
        tmp.write_bytes(certificate_pem(certificate))
    return Signer(certificate, key)


def sign_root_hash(root_hex: str, signer: Signer) -> bytes:
    """A detached PKCS#7 signature (DER) over the hex root hash, as systemd checks it."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(root_hex.encode("ascii"))
        .add_signer(signer.certificate, signer.key, hashes.SHA256())
        .sign(
            serialization.Encoding.DER,
            [
                pkcs7.PKCS7Options.DetachedSignature,
                pkcs7.PKCS7Options.NoCerts,
                pkcs7.PKCS7Options.NoAttributes,
                pkcs7.PKCS7Options.Binary,
            ],
        )
    )


# --- verification --------------------------------------------------------------------


class _DerError(ValueError):
    pass


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise _DerError("truncated")
    tag = data[pos]
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise _DerError("truncated")
    return tag, start, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) of each element in [start, end)."""
    out = []
    pos = start
    while pos < end:
        tag, cstart, cend = _tlv(data, pos)
        out.append((tag, pos, cstart, cend))
        pos = cend
    if pos != end:
        raise _DerError("overlong element")
    return out


@dataclass(frozen=True)
class _SignerInfo:
    issuer: bytes  # DER of the issuer Name
    serial: int
    digest: hashes.HashAlgorithm
    signed_attrs: bytes | None  # DER with the SET tag, as signed
    message_digest: bytes | None
    signature: bytes


def _signer_infos(der: bytes) -> list[_SignerInfo]:
    tag, start, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise _DerError("not a DER SEQUENCE")
    content = _children(der, start, end)
    if len(content) < 2 or der[content[0][2] : content[0][3]] != _OID_SIGNED_DATA:
        raise _DerError("not PKCS#7 SignedData")
    _, _, wrap_start, wrap_end = content[1]
    (_, _, sd_start, sd_end) = _children(der, wrap_start, wrap_end)[0]
    signed_data = _children(der, sd_start, sd_end)
    infos_tag, _, infos_start, infos_end = signed_data[-1]
    if infos_tag != 0x31:
        raise _DerError("no signerInfos")
    found = []
    for _, _, si_start, si_end in _children(der, infos_start, infos_end):
        fields = _children(der, si_start, si_end)
        sid_tag, _, sid_start, sid_end = fields[1]
        if sid_tag != 0x30:
            raise _DerError("signer identified by key identifier, not issuer and serial")
        sid = _children(der, sid_start, sid_end)
        issuer = der[sid[0][1] : sid[0][3]]
        serial = int.from_bytes(der[sid[1][2] : sid[1][3]], "big", signed=True)
        digest_alg = _children(der, fields[2][2], fields[2][3])[0]
        digest = _DIGESTS.get(der[digest_alg[2] : digest_alg[3]])
        if digest is None:
            raise _DerError("unsupported digest algorithm")
        rest = fields[3:]
        signed_attrs = message_digest = None
        if rest and rest[0][0] == 0xA0:
            _, attrs_pos, attrs_start, attrs_end = rest[0]
            signed_attrs = b"\x31" + der[attrs_pos + 1 : attrs_end]
            for _, _, a_start, a_end in _children(der, attrs_start, attrs_end):
                attr = _children(der, a_start, a_end)
                if der[attr[0][2] : attr[0][3]] == _OID_MESSAGE_DIGEST:
                    value = _children(der, attr[1][2], attr[1][3])[0]
                    message_digest = der[value[2] : value[3]]
            rest = rest[1:]
        signature_tag, _, sig_start, sig_end = rest[1]
        if signature_tag != 0x04:
            raise _DerError("no signature OCTET STRING")
        found.append(
            _SignerInfo(
                issuer, serial, digest, signed_attrs, message_digest, der[sig_start:sig_end]
            )
        )
    if not found:
        raise _DerError("no signer")
    return found


def _issuer_der(certificate: x509.Certificate) -> bytes:
    """The issuer Name exactly as encoded in the certificate (tbsCertificate field 3/4)."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    _, start, end = _tlv(der, 0)
    tbs = _children(der, start, end)[0]
    fields = _children(der, tbs[2], tbs[3])
    if fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    return der[fields[2][1] : fields[2][3]]


def _verify_one(info: _SignerInfo, content: bytes, certificate: x509.Certificate) -> bool:
    signed = content
    if info.signed_attrs is not None:
        h = hashes.Hash(info.digest)
        h.update(content)
        if info.message_digest != h.finalize():
            return False
        signed = info.signed_attrs
    public = certificate.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(info.signature, signed, padding.PKCS1v15(), info.digest)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(info.signature, signed, ec.ECDSA(info.digest))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def verify_root_hash(
    signature: bytes, root_hex: str, certificates: Sequence[x509.Certificate]
) -> x509.Certificate:
    """The certificate whose key signed `root_hex`; VeritySignatureError otherwise."""
    try:
        infos = _signer_infos(signature)
    except (_DerError, IndexError) as exc:
        raise VeritySignatureError(f"the root hash signature is not PKCS#7 ({exc})") from None
    content = root_hex.encode("ascii")
    for info in infos:
        for certificate in certificates:
            if certificate.serial_number != info.serial or _issuer_der(certificate) != info.issuer:
                continue
            if _verify_one(info, content, certificate):
                return certificate
            raise VeritySignatureError(
                f"the root hash signature does not verify with certificate "
                f"{fingerprint(certificate)[:16]}…",
                "the image or its signature was changed after signing",
            )
    names = ", ".join(fingerprint(c)[:16] for c in certificates) or "none"
    raise VeritySignatureError(
        f"the root hash is not signed by a trusted certificate (trusted: {names})",
        "pass the certificate the image was signed with (--cert)",
    )


def verify_signed_root(
    root_hex: str,
    signature: bytes,
    claimed_fingerprint: str | None,
    certificates: Sequence[x509.Certificate],
) -> x509.Certificate:
    """A DDI's verity-sig partition checked against trusted certificates: the signature must
    verify with one of them, and the certificateFingerprint the partition names (if any)
    must be that certificate's (a DDI that names another signer is lying about its origin)."""
    certificate = verify_root_hash(signature, root_hex, certificates)
    actual = fingerprint(certificate)
    if claimed_fingerprint is not None and claimed_fingerprint != actual:
        raise VeritySignatureError(
            f"the verity-sig partition names certificate {claimed_fingerprint[:16]}…, but "
            f"{actual[:16]}… made the signature",
            "rebuild the image: its signature partition was edited",
        )
    return certificate
