"""The registry's key-rotation state machine (registry/trust/keys.py), without a server: phases,
who signs, what the keyring serves, the certification hosts rely on, and recovery from a
crash in the middle of a phase change. The end-to-end proof with a provisioned host and
the real systemd-sysupdate is tests/test_trust_over_time.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from registry.errors import RegistryError
from registry.trust.keys import Signer, SigningPolicy
from sysext.trust import signing

MANIFEST = b"0" * 64 + b"  hello-1.0-x86-64.raw\n"


def fingerprints(keyring: bytes) -> list[str]:
    return [str(c.fingerprint).upper() for c in signing.load_keyring(keyring)]


def certifiers(keyring: bytes, fingerprint: str) -> set[str]:
    """Key ids that made a (valid) certification of `fingerprint`'s user IDs, per gpg."""
    with tempfile.TemporaryDirectory(prefix="g") as home:
        base = ["gpg", "--batch", "--no-options", "--homedir", home]
        subprocess.run([*base, "--import"], input=keyring, capture_output=True, check=True)
        out = subprocess.run(
            [*base, "--with-colons", "--check-signatures", fingerprint],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)
    return {line.split(":")[4] for line in out.splitlines() if line.startswith("sig:!")}


def test_rotation_phases(tmp_path: Path) -> None:
    signer = Signer(tmp_path / "keys" / "signing.pgp", SigningPolicy(lifetime=None))
    key_a, created = signer.ensure_key()
    assert created and fingerprints(signer.public_keyring()) == [key_a]

    rotation = signer.rotate(dt.timedelta(days=7))
    key_b = rotation.other
    assert rotation.phase == "introducing" and key_b != key_a
    keyring = signer.public_keyring()
    assert fingerprints(keyring) == [key_a, key_b]
    # B carries A's certification (what hosts check); A still signs.
    assert key_a[-16:] in certifiers(keyring, key_b)
    assert signing.verify_detached(keyring, MANIFEST, signer.sign(MANIFEST)) == key_a
    with pytest.raises(RegistryError, match="already in progress"):
        signer.rotate(dt.timedelta(days=7))
    assert signer.advance() is None  # not due yet

    assert signer.advance(force=True) == "retiring"
    keyring = signer.public_keyring()
    assert fingerprints(keyring) == [key_b, key_a]
    assert signing.verify_detached(keyring, MANIFEST, signer.sign(MANIFEST)) == key_b
    # A signature by A is no longer "current": the registry re-signs it with B.
    old = signing.sign_detached(tmp_path / "keys" / "previous.pgp", MANIFEST)
    assert not signer.signature_is_current(MANIFEST, old)
    assert signer.signature_is_current(MANIFEST, signer.sign(MANIFEST))

    assert signer.advance(force=True) == "done"
    assert fingerprints(signer.public_keyring()) == [key_b]
    assert (tmp_path / "keys" / "retired" / f"{key_a}.pgp").is_file()
    assert signer.rotation() is None
    # The key with A's certification is what stays served (checked with A's public key at
    # hand, as a host that still trusts A has it).
    with_a = signer.public_keyring() + signing.export_public_key(
        tmp_path / "keys" / "retired" / f"{key_a}.pgp"
    )
    assert key_a[-16:] in certifiers(with_a, key_b)


def test_a_crash_in_the_middle_of_a_phase_change_is_completed(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    signer = Signer(keys / "signing.pgp", SigningPolicy(lifetime=None))
    key_a, _ = signer.ensure_key()
    key_b = signer.rotate(dt.timedelta(days=7)).other
    # What advance() does before it writes the new state, and then the process dies.
    shutil.copy2(keys / "signing.pgp", keys / "previous.pgp")
    os.replace(keys / "next.pgp", keys / "signing.pgp")
    assert json.loads((keys / "rotation.json").read_text())["phase"] == "introducing"

    restarted = Signer(keys / "signing.pgp", SigningPolicy(lifetime=None))
    assert fingerprints(restarted.public_keyring()) == [key_b, key_a]  # both still served
    assert restarted.advance(force=True) == "retiring"
    rotation = restarted.rotation()
    assert rotation is not None and rotation.other == key_a
    assert fingerprints(restarted.public_keyring()) == [key_b, key_a]


def test_expiry_policy_decides_when_to_resign(tmp_path: Path) -> None:
    week = dt.timedelta(days=7)
    signer = Signer(tmp_path / "keys" / "signing.pgp", SigningPolicy(week, dt.timedelta(days=1)))
    signer.ensure_key()
    signature = signer.sign(MANIFEST)
    info = signing.verify_signature(signer.public_keyring(), MANIFEST, signature)
    assert info.created is not None and info.expires == info.created + week
    assert signer.signature_is_current(MANIFEST, signature)
    later = info.created + dt.timedelta(days=1, seconds=1)
    assert not signer.signature_is_current(MANIFEST, signature, now=later)
    # A signature without expiry does not satisfy a registry that wants one, and back.
    plain = signing.sign_with(signing.load_key(signer.key_path), MANIFEST)
    assert not signer.signature_is_current(MANIFEST, plain)
    never = Signer(signer.key_path, SigningPolicy(lifetime=None))
    assert never.signature_is_current(MANIFEST, plain)
    assert not never.signature_is_current(MANIFEST, signature)


def test_concurrent_batches_each_sign_with_their_own_gpg_home(tmp_path: Path) -> None:
    """Writes to different extensions may sign at the same time (PostgreSQL locks each
    extension on its own): one thread's batch ending must not close another's gpg home."""
    import threading

    signer = Signer(tmp_path / "keys" / "signing.pgp", SigningPolicy(dt.timedelta(days=7)))
    signer.ensure_key()
    inside = threading.Barrier(2)
    first_done = threading.Event()
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with signer.batch():
                inside.wait(timeout=60)
                if name == "second":
                    first_done.wait(timeout=60)  # sign after the other batch has closed
                    home = signer._home  # this thread's own home, still open
                    assert home is not None and (home.path / "pubring.kbx").is_file()
                results[name] = signer.sign(MANIFEST)
            if name == "first":
                first_done.set()
        except BaseException as exc:  # reported below
            errors.append(exc)
            first_done.set()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(results) == ["first", "second"]
    for signature in results.values():
        assert signing.verify_signature(signer.public_keyring(), MANIFEST, signature).expires
