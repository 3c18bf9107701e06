"""The registry's OpenPGP signing keys: creation, expiring signatures and key rotation.

The secret keys stay under `DATA/keys` (0600). Hosts get the public part as
`/keyring.gpg` (binary, what `import-pubring.gpg` must be, spec §3.4/§8) and
`/keyring.asc` (armored, for humans and Butane inline sources).

**Expiring signatures.** With `signature_lifetime` set (default 7 days) every SHA256SUMS.gpg
carries an expiration time; gpg with systemd-pull's command line and sqv refuse it once
passed, so a stale mirror or a man in the middle can freeze a host on old files for at most
that long. The registry re-signs every manifest once its signature is older than
`resign_interval` (default 1 day), so a registry that is down for less than six days never
lets a signature expire. Each re-signing also moves the manifest's `BEST-BEFORE-` marker
(SigningPolicy.best_before): the day the signature expires, which systemd 260+ enforce
without looking at the signature (and older hosts ignore).

**Rotation** (`sysext key rotate`), three phases, each `key_overlap` long by default:

1. *introducing*: a new key B is made and certified by the active key A; the served
   keyring holds A and B (B carrying A's certification), manifests are still signed by A.
   Hosts' keyring updaters (sysext/provision/keyring_update.py) add B because A, which they
   trust, certified it.
2. *retiring*: B signs the manifests; the keyring still holds A for hosts that have not
   fetched it yet.
3. *done*: A is dropped from the keyring (its secret moves to `keys/retired/`); B keeps
   A's certification, so a host that only ever trusted A still accepts B later.

Phases advance by time (the maintenance loop) or on demand (`sysext key rotate --advance`).
Every worker process reloads the keys when the files change (`_stamp()`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pysequoia

from registry.errors import RegistryError
from sysext.core.atomic import atomic_write
from sysext.core.errors import SysextError
from sysext.core.urls import KEYRING_ARMORED, KEYRING_BINARY
from sysext.systemd.manifest import best_before_for
from sysext.trust import signing
from sysext.trust.gpg import GpgHome, gpg_home

KEY_UID = "sysext registry <registry@localhost>"


@dataclass(frozen=True)
class SigningPolicy:
    """How long signatures live and when they are renewed (both None/0: never expire)."""

    lifetime: dt.timedelta | None = dt.timedelta(days=7)
    resign_interval: dt.timedelta = dt.timedelta(days=1)

    @property
    def lists_best_before(self) -> bool:
        """Whether served manifests carry a BEST-BEFORE marker (systemd 260+).

        The marker has a day's resolution and must not outlive the signature, so it lands
        up to a day before the expiry (manifest.best_before_for); a lifetime of at least a
        day plus two re-sign intervals keeps it a full interval past the next re-signing,
        so a registry that misses one re-signing never trips it. Shorter lifetimes (and
        "never") list none: gpg's expiry alone guards those.
        """
        if self.lifetime is None:
            return False
        return self.lifetime >= dt.timedelta(days=1) + 2 * self.resign_interval

    def best_before(self, now: dt.datetime) -> dt.date | None:
        """The marker date for a manifest signed at `now`, or None (no marker)."""
        if not self.lists_best_before or self.lifetime is None:
            return None
        return best_before_for(now + self.lifetime)


@dataclass(frozen=True)
class Rotation:
    """The rotation in progress, as stored in DATA/keys/rotation.json."""

    phase: str  # "introducing" | "retiring"
    other: str  # fingerprint of the next key (introducing) or the previous one (retiring)
    started: dt.datetime
    advance_at: dt.datetime
    overlap_seconds: int

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "other": self.other,
            "started": self.started.isoformat(),
            "advance_at": self.advance_at.isoformat(),
            "overlap_seconds": self.overlap_seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rotation:
        return cls(
            phase=str(data["phase"]),
            other=str(data["other"]),
            started=dt.datetime.fromisoformat(data["started"]),
            advance_at=dt.datetime.fromisoformat(data["advance_at"]),
            overlap_seconds=int(data["overlap_seconds"]),
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Signer:
    """The registry's keys, loaded once per process and reloaded when a rotation moves."""

    def __init__(self, key_path: Path, policy: SigningPolicy | None = None) -> None:
        self.key_path = key_path
        self.keys_dir = key_path.parent
        self.policy = policy or SigningPolicy()
        self._stamp_seen: tuple[Any, ...] | None = None
        self._tsk: pysequoia.Tsk | None = None
        self._keyring: bytes | None = None
        # One gpg home per thread: API requests for different extensions may sign at once
        # (PostgreSQL locks per extension), and a home is closed when its batch ends.
        self._local = threading.local()

    @property
    def _home(self) -> GpgHome | None:
        home: GpgHome | None = getattr(self._local, "home", None)
        return home

    # -- files ----------------------------------------------------------------------

    @property
    def _next_path(self) -> Path:
        return self.keys_dir / "next.pgp"

    @property
    def _previous_path(self) -> Path:
        return self.keys_dir / "previous.pgp"

    @property
    def _state_path(self) -> Path:
        return self.keys_dir / "rotation.json"

    def _certified_path(self, fingerprint: str) -> Path:
        return self.keys_dir / "certified" / f"{fingerprint}.gpg"

    def _stamp(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for path in (self.key_path, self._state_path):
            try:
                st = path.stat()
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def _fresh(self) -> None:
        stamp = self._stamp()
        if stamp != self._stamp_seen:
            self._stamp_seen = stamp
            self._tsk = None
            self._keyring = None
            home = self._home
            if home is not None:  # a batch spanning a rotation: use the new key
                home.import_keys(str(self._loaded_tsk()).encode())

    def _loaded_tsk(self) -> pysequoia.Tsk:
        if self._tsk is None:
            self._tsk = signing.load_key(self.key_path)
        return self._tsk

    def _loaded(self) -> pysequoia.Tsk:
        self._fresh()
        return self._loaded_tsk()

    def rotation(self) -> Rotation | None:
        try:
            return Rotation.from_json(json.loads(self._state_path.read_text()))
        except FileNotFoundError:
            return None

    # -- key ------------------------------------------------------------------------

    def ensure_key(self) -> tuple[str, bool]:
        """Create the key if missing; returns (fingerprint, created)."""
        if self.key_path.exists():
            return self.fingerprint(), False
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.key_path.parent, 0o700)
        fingerprint = signing.generate_key(self.key_path, KEY_UID)
        os.chmod(self.key_path, 0o600)
        return fingerprint, True

    def fingerprint(self) -> str:
        return str(self._loaded().extract_certificate().fingerprint).upper()

    def _public_cert(self, key_path: Path) -> bytes:
        """A key's public part, with the certification an older key made of it (if any)."""
        fingerprint = signing.key_fingerprint(key_path)
        certified = self._certified_path(fingerprint)
        if certified.is_file():
            return certified.read_bytes()
        return signing.export_public_key(key_path)

    def public_keyring(self, armor: bool = False) -> bytes:
        """The keyring hosts install: the active key, plus the other key of a rotation."""
        self._fresh()
        if self._keyring is None:
            parts = [self._public_cert(self.key_path)]
            if self.rotation() is not None:
                # The next key (introducing) or the previous one (retiring); both files
                # are looked at so that a rotation interrupted mid-advance still serves
                # both keys until advance() completes it.
                active = self.fingerprint()
                for other in (self._next_path, self._previous_path):
                    if other.exists() and signing.key_fingerprint(other) != active:
                        parts.append(self._public_cert(other))
            self._keyring = b"".join(parts)
        if armor:
            return pysequoia.armor(self._keyring, pysequoia.ArmorKind.PublicKey).encode()
        return self._keyring

    def write_keyrings(self, public_dir: Path) -> None:
        for name, armor in ((KEYRING_BINARY, False), (KEYRING_ARMORED, True)):
            data = self.public_keyring(armor=armor)
            target = public_dir / name
            if not target.exists() or target.read_bytes() != data:
                atomic_write(target, data)

    # -- signatures -----------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Sign many manifests with one gpg home (one key import, one agent)."""
        if self._home is not None or self.policy.lifetime is None:
            yield
            return
        with gpg_home() as home:
            home.import_keys(str(self._loaded()).encode())
            self._local.home = home
            try:
                yield
            finally:
                self._local.home = None

    def sign(self, data: bytes) -> bytes:
        tsk = self._loaded()
        lifetime = self.policy.lifetime
        if lifetime is None:
            return signing.sign_with(tsk, data, armor=False)
        home = self._home
        if home is None:
            return signing.sign_with(tsk, data, armor=False, lifetime=lifetime)
        fingerprint = str(tsk.extract_certificate().fingerprint).upper()
        return home.detach_sign(fingerprint, data, lifetime=lifetime)

    def best_before(self, now: dt.datetime | None = None) -> dt.date | None:
        """The BEST-BEFORE date a manifest signed now lists (SigningPolicy.best_before)."""
        return self.policy.best_before(now or _now())

    def signature_is_current(
        self, manifest: bytes, signature: bytes, now: dt.datetime | None = None
    ) -> bool:
        """True when `signature` is by the active key and need not be renewed yet."""
        now = now or _now()
        active = bytes(self._loaded().extract_certificate())
        try:
            info = signing.verify_signature(active, manifest, signature, now=now)
        except SysextError:
            return False  # another key (a rotation), tampered, or expired: sign again
        lifetime = self.policy.lifetime
        if lifetime is None:
            return info.expires is None
        if info.expires is None or info.created is None:
            return False
        return now - info.created < min(self.policy.resign_interval, lifetime / 2)

    # -- rotation -------------------------------------------------------------------

    def rotate(self, overlap: dt.timedelta, now: dt.datetime | None = None) -> Rotation:
        """Start a rotation: a new key, certified by the active one, joins the keyring."""
        now = now or _now()
        if self.rotation() is not None:
            raise RegistryError(
                409,
                "a key rotation is already in progress; finish it first"
                " (sysext key rotate --advance)",
            )
        if self._next_path.exists():
            self._next_path.unlink()
        fingerprint = signing.generate_key(self._next_path, KEY_UID)
        os.chmod(self._next_path, 0o600)
        self._certify(certifier=self.key_path, target=self._next_path)
        rotation = Rotation(
            "introducing", fingerprint, now, now + overlap, int(overlap.total_seconds())
        )
        self._write_state(rotation)
        return rotation

    def _certify(self, certifier: Path, target: Path) -> None:
        certifier_tsk = signing.load_key(certifier)
        target_fpr = signing.key_fingerprint(target)
        with gpg_home() as home:
            home.import_keys(str(certifier_tsk).encode())
            home.import_keys(signing.export_public_key(target))
            home.certify(str(certifier_tsk.extract_certificate().fingerprint).upper(), target_fpr)
            certified = home.export(target_fpr)
        path = self._certified_path(target_fpr)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, certified)

    def _write_state(self, rotation: Rotation | None) -> None:
        if rotation is None:
            self._state_path.unlink(missing_ok=True)
        else:
            atomic_write(self._state_path, json.dumps(rotation.to_json()).encode(), 0o600)
        self._fresh()

    def advance(self, now: dt.datetime | None = None, *, force: bool = False) -> str | None:
        """Move a rotation to its next phase when its time has come (or now, with `force`).

        Returns the phase entered ("retiring", "done") or None when nothing changed.
        """
        now = now or _now()
        rotation = self.rotation()
        if rotation is None or (not force and now < rotation.advance_at):
            return None
        overlap = dt.timedelta(seconds=rotation.overlap_seconds)
        if rotation.phase == "introducing":
            # Files first, then the state: a crash in between leaves a state that the next
            # advance() completes (the new key may already be active), and the active key
            # file is replaced atomically.
            if self.fingerprint() != rotation.other:
                shutil.copy2(self.key_path, self._previous_path)
                os.chmod(self._previous_path, 0o600)
                os.replace(self._next_path, self.key_path)
                self._fresh()
            old_fpr = signing.key_fingerprint(self._previous_path)
            seconds = int(overlap.total_seconds())
            self._write_state(Rotation("retiring", old_fpr, now, now + overlap, seconds))
            return "retiring"
        retired = self.keys_dir / "retired"
        retired.mkdir(mode=0o700, exist_ok=True)
        if self._previous_path.exists():
            os.replace(self._previous_path, retired / f"{rotation.other}.pgp")
        self._write_state(None)
        return "done"

    def status(self) -> dict[str, Any]:
        rotation = self.rotation()
        lifetime = self.policy.lifetime
        return {
            "active": self.fingerprint(),
            "keyring": [
                str(c.fingerprint).upper()
                for c in pysequoia.Cert.split_bytes(self.public_keyring())
            ],
            "rotation": rotation.to_json() if rotation else None,
            "signature_lifetime_seconds": int(lifetime.total_seconds()) if lifetime else None,
            "resign_interval_seconds": int(self.policy.resign_interval.total_seconds()),
        }
