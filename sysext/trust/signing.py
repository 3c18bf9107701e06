"""OpenPGP keys and detached SHA256SUMS signatures that systemd-sysupdate accepts (§3.4, §8).

Hosts verify with `gpg --verify SIG -` against `/etc/systemd/import-pubring.gpg`, which must
be a **binary** keyring of a v4 key (gpg 2.2 rejects v6 keys; an armored keyring gives
"No public key"). Keys are made with pysequoia (ed25519, v4) and verification here is pure
Python, so `sysext verify`/`check` need no gpg; tests cross-check with the real gpg and sqv.

Key files hold the armored transferable secret key, mode 0600. With a passphrase the file
is instead an OpenPGP message symmetrically encrypted with it (pysequoia cannot protect
the secret key packets themselves); `gpg --decrypt KEY | gpg --import` recovers it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pysequoia
from pysequoia.packet import PacketPile, Tag

from sysext.core.atomic import atomic_path
from sysext.core.durations import format_duration
from sysext.core.errors import SysextError
from sysext.systemd.architecture import SYSTEMD_ARCHITECTURES, Architecture
from sysext.systemd.manifest import (
    BEST_BEFORE_PREFIX,
    MANIFEST_NAME,
    MIN_DOWNLOAD_BYTES,
    SIGNATURE_NAME,
    SIGNATURE_NAME_258,
    SIGNATURE_NAMES,
    BestBefore,
    ManifestEntry,
    best_before_date,
    best_before_deadline,
    best_before_entry,
    best_before_markers,
    format_manifest,
    parse_manifest,
    sha256_file,
    without_markers,
)
from sysext.systemd.versioning import version_is_valid
from sysext.trust.gpg import gpg_home

PASSPHRASE_ENV = "SYSEXT_KEY_PASSPHRASE"
DEFAULT_UID = "sysext signing key"
# systemd-pull caps the .gpg download at 1 MiB (pull_make_verification_jobs()).
MAX_SIGNATURE_BYTES = 1 << 20
_ARMOR_START = b"-----BEGIN PGP"
_ENCRYPTED_KEY_MARKER = b"-----BEGIN PGP MESSAGE-----"
_PASSPHRASE_HINT = f"set {PASSPHRASE_ENV} to the key's passphrase"


class SignatureError(SysextError):
    """A signature a host would reject (or that cannot be checked at all)."""


@dataclass(frozen=True)
class SignatureInfo:
    """A signature that verified: who made it, when, and until when hosts accept it."""

    signer: str  # fingerprint of the signing certificate (primary key)
    created: dt.datetime | None
    expires: dt.datetime | None  # None: never

    def remaining(self, now: dt.datetime | None = None) -> dt.timedelta | None:
        if self.expires is None:
            return None
        return self.expires - (now or _now())

    def expiry_warning(self, now: dt.datetime | None = None) -> str | None:
        """A warning when less than half of the signature's lifetime is left.

        A registry re-signs daily a signature that lives a week, so its signatures never
        get there; one that does has missed several re-signings (or is a replayed copy).
        """
        remaining = self.remaining(now)
        if remaining is None or self.created is None or self.expires is None:
            return None
        if remaining * 2 < self.expires - self.created:
            return (
                f"the signature expires in {format_duration(remaining)} ({_iso(self.expires)});"
                " hosts refuse the manifest after that: re-sign it"
            )
        return None

    def describe(self, now: dt.datetime | None = None) -> str:
        if self.expires is None:
            return "never expires"
        remaining = self.remaining(now)
        assert remaining is not None
        return f"expires {_iso(self.expires)} (in {format_duration(remaining)})"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class VerifiedEntry:
    entry: ManifestEntry
    ok: bool
    problem: str | None = None


# --- keys ---------------------------------------------------------------------------------


def generate_key(output: Path, uid: str = DEFAULT_UID, *, passphrase: str | None = None) -> str:
    """Create a v4 ed25519 signing key at `output` (0600, atomic); return its fingerprint."""
    output = Path(output)
    if output.exists() or output.is_symlink():
        raise SysextError(
            f"{output}: already exists; refusing to overwrite a key",
            "choose another --output, or delete the old key first if you really mean it",
        )
    if not uid.strip():
        raise SysextError("the key's user ID must not be empty", 'pass --uid "Name <mail>"')
    # v4 by default: never Profile.RFC9580, whose v6 keys gpg 2.2 and sqv reject (DESIGN §4).
    tsk = pysequoia.Tsk.generate(uid)
    if passphrase:
        data = pysequoia.encrypt(bytes(tsk), passwords=[passphrase], armor=True)
    else:
        data = str(tsk).encode()
    with atomic_path(output, 0o600) as tmp:
        tmp.write_bytes(data)
    return tsk.extract_certificate().fingerprint.upper()


def load_key(key_path: Path, *, passphrase: str | None = None) -> pysequoia.Tsk:
    """Read a key file written by generate_key() (or any unprotected OpenPGP secret key)."""
    key_path = Path(key_path)
    try:
        data = key_path.read_bytes()
    except FileNotFoundError:
        raise SysextError(
            f"{key_path}: no such key file", "create one with: sysext key generate --output KEY"
        ) from None
    if data.lstrip().startswith(_ENCRYPTED_KEY_MARKER):
        if not passphrase:
            raise SysextError(f"{key_path}: the key is protected by a passphrase", _PASSPHRASE_HINT)
        try:
            decrypted = pysequoia.decrypt(data, passwords=[passphrase]).bytes
        except RuntimeError:
            raise SysextError(f"{key_path}: wrong passphrase", _PASSPHRASE_HINT) from None
        data = decrypted or b""
    hint = "a public keyring cannot sign; use the key written by `sysext key generate`"
    try:
        tsk = pysequoia.Tsk.from_bytes(data)
        has_secret = any(
            packet.tag in (Tag.SecretKey, Tag.SecretSubkey)
            for packet in PacketPile.from_bytes(data)
        )
    except RuntimeError as exc:
        raise SysextError(
            f"{key_path}: not an OpenPGP secret key ({_first_line(exc)})", hint
        ) from None
    if not has_secret:
        raise SysextError(f"{key_path}: not an OpenPGP secret key (public key only)", hint)
    return tsk


def export_public_key(
    key_path: Path, *, armor: bool = False, passphrase: str | None = None
) -> bytes:
    """The public key of `key_path`; binary unless `armor` (hosts need binary, §3.4)."""
    cert = load_key(key_path, passphrase=passphrase).extract_certificate()
    return str(cert).encode() if armor else bytes(cert)


def key_fingerprint(key_path: Path, *, passphrase: str | None = None) -> str:
    return load_key(key_path, passphrase=passphrase).extract_certificate().fingerprint.upper()


def sign_detached(
    key_path: Path,
    data: bytes,
    *,
    passphrase: str | None = None,
    armor: bool = False,
    lifetime: dt.timedelta | None = None,
    created: dt.datetime | None = None,
) -> bytes:
    """A detached signature of `data`; binary by default (both forms verify on hosts)."""
    tsk = load_key(key_path, passphrase=passphrase)
    return sign_with(tsk, data, armor=armor, lifetime=lifetime, created=created)


def sign_with(
    tsk: pysequoia.Tsk,
    data: bytes,
    *,
    armor: bool = False,
    lifetime: dt.timedelta | None = None,
    created: dt.datetime | None = None,
) -> bytes:
    """Sign with an already loaded key (the registry keeps one loaded).

    With a `lifetime` the signature carries an expiration time, which pysequoia cannot
    write: gpg makes it then (sysext/trust/gpg.py). `created` backdates the signature (tests).
    """
    if lifetime is not None or created is not None:
        return sign_many_with(tsk, [data], armor=armor, lifetime=lifetime, created=created)[0]
    try:
        signer = tsk.signer()
    except RuntimeError as exc:
        raise SysextError(f"the key cannot sign: {_first_line(exc)}") from None
    return pysequoia.sign(signer, data, mode=pysequoia.SignatureMode.DETACHED, armor=armor)


def sign_many_with(
    tsk: pysequoia.Tsk,
    items: list[bytes],
    *,
    armor: bool = False,
    lifetime: dt.timedelta | None = None,
    created: dt.datetime | None = None,
) -> list[bytes]:
    """Expiring signatures of several documents with one gpg home (one key import)."""
    if lifetime is None and created is None:
        return [sign_with(tsk, item, armor=armor) for item in items]
    fingerprint = tsk.extract_certificate().fingerprint.upper()
    with gpg_home() as home:
        home.import_keys(str(tsk).encode())
        return [
            home.detach_sign(fingerprint, item, lifetime=lifetime, created=created, armor=armor)
            for item in items
        ]


# --- verification -------------------------------------------------------------------------


def _read(source: bytes | Path) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "keyring"
    try:
        return Path(source).read_bytes(), str(source)
    except FileNotFoundError:
        raise SignatureError(
            f"{source}: no such keyring file",
            "fetch the registry's binary key: curl -o FILE REGISTRY/keyring.gpg",
        ) from None


def load_keyring(keyring: bytes | Path) -> list[pysequoia.Cert]:
    """The certificates of a keyring the way systemd's gpg call would accept it.

    An armored keyring is refused: `gpg --keyring=FILE` does not read armored files, and a
    host then reports "No public key" for every signature (§3.4, §8).
    """
    data, label = _read(keyring)
    if not data.strip():
        raise SignatureError(f"{label}: the keyring is empty")
    if data.lstrip().startswith(_ARMOR_START):
        raise SignatureError(
            f"{label}: the keyring is ASCII-armored; systemd's gpg call rejects it"
            " ('No public key')",
            "use a binary keyring: `sysext key export KEY` (no --armor), the registry's"
            " /keyring.gpg, or `gpg --dearmor`",
        )
    try:
        certs = pysequoia.Cert.split_bytes(data)
    except RuntimeError as exc:
        raise SignatureError(f"{label}: not an OpenPGP keyring ({_first_line(exc)})") from None
    if not certs:
        raise SignatureError(f"{label}: no keys in the keyring")
    return certs


def _key_ids(cert: pysequoia.Cert) -> set[str]:
    ids: set[str] = set()
    for packet in PacketPile.from_bytes(bytes(cert)):
        for value in (packet.key_id, packet.fingerprint):
            if value:
                ids.add(value.lower())
    return ids


def verify_detached(keyring: bytes | Path, data: bytes, signature: bytes) -> str:
    """Check a detached signature of `data`; return the signing certificate's fingerprint.

    Raises SignatureError naming the reason a host would fail: no/short signature, a key
    not in the keyring, an expired signature, or a signature that does not match the bytes.
    """
    return verify_signature(keyring, data, signature).signer


def signature_times(signature: bytes) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(created, expires) of a detached signature, without verifying it."""
    try:
        sig = pysequoia.Sig.from_bytes(signature)
    except RuntimeError:
        return None, None
    return _utc(sig.created), _utc(sig.expiration)


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def verify_signature(
    keyring: bytes | Path, data: bytes, signature: bytes, *, now: dt.datetime | None = None
) -> SignatureInfo:
    """verify_detached() with the signature's creation and expiration times.

    An expired signature is refused as gpg (systemd's command line) and sqv refuse it:
    both exit 1 ("Expired signature"), and systemd-sysupdate fails the update.
    """
    certs = load_keyring(keyring)
    if len(signature) < MIN_DOWNLOAD_BYTES:
        raise SignatureError(
            f"the signature is {len(signature)} bytes; systemd 252–256 fail such downloads",
            "re-sign the manifest: sysext sign DIR --key KEY",
        )
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise SignatureError("the signature is larger than the 1 MiB systemd-pull accepts")
    try:
        sig = pysequoia.Sig.from_bytes(signature)
    except RuntimeError as exc:
        raise SignatureError(
            f"not an OpenPGP detached signature ({_first_line(exc)})",
            "SHA256SUMS.gpg must be a detached signature (inline/clear-signed is unsupported)",
        ) from None
    created, expires = _utc(sig.created), _utc(sig.expiration)
    if expires is not None and expires <= (now or _now()):
        raise SignatureError(
            f"the signature expired at {_iso(expires)}; hosts refuse it"
            " (gpg: 'Expired signature'), so they stay on their current version",
            "the registry must re-sign its manifests (a running `sysext serve` does so"
            " daily); by hand: sysext sign DIR --key KEY --expires 7d",
        )
    issuer = (sig.issuer_fingerprint or sig.issuer_key_id or "").lower()
    known = set().union(*(_key_ids(c) for c in certs))
    if issuer and not any(issuer.endswith(k) or k.endswith(issuer) for k in known):
        raise SignatureError(
            f"no public key: signed by {issuer.upper()}, which is not in the keyring",
            "give the host the registry's key (REGISTRY/keyring.gpg) beside its vendor"
            " keyring, as `sysext butane` and `sysext transfer --commands` set it up"
            " (docs/provisioning.md, 'The keyring'); the signer is usually a signing"
            " subkey: `gpg --show-keys --with-subkey-fingerprints FILE` lists the primary"
            " and subkey fingerprints of a keyring",
        )
    try:
        result = pysequoia.verify(bytes=data, store=lambda _ids: certs, signature=sig)
    except RuntimeError:
        raise SignatureError(
            "BAD signature: SHA256SUMS does not match SHA256SUMS.gpg",
            "the manifest was changed after signing (or by a concurrent writer); re-sign it",
        ) from None
    if not result.valid_sigs:
        raise SignatureError("no valid signature found")
    return SignatureInfo(str(result.valid_sigs[0].certificate).upper(), created, expires)


# --- directories --------------------------------------------------------------------------


def is_image_name(name: str) -> bool:
    """True for `NAME-VERSION-ARCH.raw` (ARCH in systemd's vocabulary) or an
    architecture-independent `NAME-VERSION.raw`, with a version sysupdate accepts.

    This is what goes into a host-facing SHA256SUMS; provenance, sidecars and other files
    stay out, because 252–256 patterns match names that merely *start* like an image (§7.2).
    """
    if not name.endswith(".raw") or name.startswith("."):
        return False
    stem = name[: -len(".raw")]
    arch = next((a for a in SYSTEMD_ARCHITECTURES if stem.endswith(f"-{a}")), None)
    if arch is not None:
        stem = stem[: -len(arch) - 1]
    elif any(stem.endswith(f"-{u}") for a in Architecture for u in a.upstream_names):
        return False  # x86_64/amd64/aarch64: a misspelt architecture, not a version
    # NAME may itself contain '-': any split point with a valid version will do.
    return any(c == "-" and i > 0 and version_is_valid(stem[i + 1 :]) for i, c in enumerate(stem))


def image_entries(directory: Path) -> list[ManifestEntry]:
    """Manifest entries for the images in `directory` (hashes computed now)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SysextError(f"{directory}: not a directory")
    return [
        ManifestEntry(p.name, sha256_file(p))
        for p in sorted(directory.iterdir())
        if p.is_file() and is_image_name(p.name)
    ]


def write_signed_manifest(
    directory: Path, manifest: bytes, signature: bytes, *, mode: int = 0o644
) -> None:
    """Replace DIR/SHA256SUMS and its signature under every name of SIGNATURE_NAMES
    (SHA256SUMS.gpg for systemd 252–257, SHA256SUMS.sha256.asc for 258+), all fully
    written before any moves.

    The signatures are renamed into place first, then the manifest: a reader that fetches
    the manifest first and sees the new one always finds the new signature beside it.
    Renames cannot be one atomic step, so a reader racing the few microseconds between
    them may still see a mismatch and retry; serve versioned directories behind one
    symlink swap if that matters.
    """
    directory = Path(directory)
    with contextlib.ExitStack() as stack:
        # Entered first, left last: the manifest moves after every signature.
        manifest_tmp = stack.enter_context(atomic_path(directory / MANIFEST_NAME, mode))
        manifest_tmp.write_bytes(manifest)
        for name in SIGNATURE_NAMES:
            stack.enter_context(atomic_path(directory / name, mode)).write_bytes(signature)


def sign_directory(
    directory: Path,
    key_path: Path,
    *,
    passphrase: str | None = None,
    lifetime: dt.timedelta | None = None,
    best_before: dt.date | None = None,
    now: dt.datetime | None = None,
) -> list[ManifestEntry]:
    """(Re)write DIR/SHA256SUMS for the images in DIR and its detached signature (under
    both names, write_signed_manifest()); with `best_before`, the manifest also lists the
    BEST-BEFORE marker of that date (systemd 260+ refuse it from that day on)."""
    directory = Path(directory)
    tsk = load_key(key_path, passphrase=passphrase)  # fail before touching anything
    if best_before is not None and best_before_deadline(best_before) <= (now or _now()):
        raise SysextError(
            f"--best-before {best_before:%Y-%m-%d} is not in the future: systemd 260+"
            " hosts would refuse the manifest at once",
            "give a later date (hosts refuse it from 00:00 UTC of that day), or a"
            " duration such as 7d",
        )
    entries = image_entries(directory)
    if not entries:
        raise SysextError(
            f"{directory}: no images (NAME-VERSION-ARCH.raw) to sign",
            "build one first: sysext build RECIPE --output DIR",
        )
    marker = best_before_entry(best_before) if best_before is not None else None
    listed = [*entries, marker] if marker is not None else entries
    manifest = format_manifest(listed)
    signature = sign_with(tsk, manifest, lifetime=lifetime)
    if marker is not None:
        # Served as the empty file its line names, so every listed name downloads.
        with atomic_path(directory / marker.filename, 0o644) as tmp:
            tmp.write_bytes(b"")
    write_signed_manifest(directory, manifest, signature)
    current = marker.filename if marker is not None else None
    for old in directory.glob(f"{BEST_BEFORE_PREFIX}*"):
        # Earlier markers (empty files this command wrote); anything else stays.
        stale = old.name != current and best_before_date(old.name) is not None
        if stale and old.is_file() and old.stat().st_size == 0:
            old.unlink()
    return listed


@dataclass(frozen=True)
class DirectoryVerdict:
    """What `verify_directory` found, beyond the per-file results."""

    signature: SignatureInfo
    best_before: BestBefore | None = None  # the earliest marker, if any
    warnings: tuple[str, ...] = ()


def verify_directory(
    directory: Path, keyring: bytes | Path, *, now: dt.datetime | None = None
) -> tuple[DirectoryVerdict, list[VerifiedEntry]]:
    """Check DIR's signatures (SHA256SUMS.gpg, and SHA256SUMS.sha256.asc when present)
    and BEST-BEFORE marker, then every listed file's hash.

    Returns the verdict and one result per manifest entry (markers are not files: they
    are reported in the verdict instead); raises SignatureError/ManifestError when the
    manifest itself cannot be trusted, or when systemd 260+ would refuse it as stale.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    signature_path = directory / SIGNATURE_NAME
    if not manifest_path.is_file():
        raise SysextError(f"{manifest_path}: missing", "create it with: sysext sign DIR --key KEY")
    if not signature_path.is_file():
        raise SignatureError(
            f"{signature_path}: missing; hosts with Verify=yes refuse an unsigned manifest",
            "sign it: sysext sign DIR --key KEY",
        )
    manifest = manifest_path.read_bytes()
    signature = signature_path.read_bytes()
    info = verify_signature(keyring, manifest, signature, now=now)
    warnings: list[str] = []
    newer = directory / SIGNATURE_NAME_258
    if not newer.is_file():
        warnings.append(
            f"{newer.name} is missing: systemd 258+ hosts ask for it first and need three"
            " signature requests per poll (or fail behind a bucket that answers 403);"
            " re-sign with: sysext sign DIR --key KEY"
        )
    elif (other := newer.read_bytes()) != signature:
        try:
            verify_signature(keyring, manifest, other, now=now)
        except SignatureError as exc:
            raise SignatureError(
                f"{newer.name} (what systemd 258+ verify): {exc.message}", exc.hint
            ) from None
    entries = parse_manifest(manifest)
    markers = best_before_markers(entries)
    marker = markers[0] if markers else None
    if marker is not None:
        if marker.expired(now):
            raise SignatureError(
                marker.expired_message(),
                "re-sign with a later date: sysext sign DIR --key KEY --best-before 7d",
            )
        warnings += [w for m in markers if (w := m.hash_warning)]
    results: list[VerifiedEntry] = []
    for entry in without_markers(entries):
        path = directory / entry.filename
        if not path.is_file():
            results.append(VerifiedEntry(entry, False, "listed but missing"))
            continue
        actual = sha256_file(path)
        if actual != entry.sha256:
            results.append(
                VerifiedEntry(entry, False, f"sha256 mismatch (listed {entry.sha256}, is {actual})")
            )
        else:
            results.append(VerifiedEntry(entry, True))
    return DirectoryVerdict(info, marker, tuple(warnings)), results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
