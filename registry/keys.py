"""The registry's OpenPGP signing key: created on first start, published as a keyring.

The secret key stays under `DATA/keys` (0600). Hosts get the public part as
`/keyring.gpg` (binary, what `import-pubring.gpg` must be, spec §3.4/§8) and
`/keyring.asc` (armored, for humans and Butane inline sources).
"""

from __future__ import annotations

import os
from pathlib import Path

import pysequoia

from sysext import signing
from sysext.atomic import atomic_write
from sysext.urls import KEYRING_ARMORED, KEYRING_BINARY

KEY_UID = "sysext registry <registry@localhost>"


class Signer:
    """The registry's key, loaded once per process (signing happens on every publish)."""

    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path
        self._tsk: pysequoia.Tsk | None = None
        self._keyring: bytes | None = None

    def _loaded(self) -> pysequoia.Tsk:
        if self._tsk is None:
            self._tsk = signing.load_key(self.key_path)
        return self._tsk

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
        return signing.key_fingerprint(self.key_path)

    def public_keyring(self, armor: bool = False) -> bytes:
        if armor:
            return signing.export_public_key(self.key_path, armor=True)
        if self._keyring is None:
            self._keyring = signing.export_public_key(self.key_path)
        return self._keyring

    def sign(self, data: bytes) -> bytes:
        return signing.sign_with(self._loaded(), data, armor=False)

    def write_keyrings(self, public_dir: Path) -> None:
        for name, armor in ((KEYRING_BINARY, False), (KEYRING_ARMORED, True)):
            data = self.public_keyring(armor=armor)
            target = public_dir / name
            if not target.exists() or target.read_bytes() != data:
                atomic_write(target, data)
