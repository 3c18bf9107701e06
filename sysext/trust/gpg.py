"""gpg as the OpenPGP engine for the two things pysequoia 0.1.35 cannot do.

* **Signatures that expire.** pysequoia's `sign()` takes no expiration (checked: its only
  options are the mode and armor; `Sig.expiration` can only be *read*). gpg's
  `--default-sig-expire` writes the critical "signature expiration time" subpacket
  (RFC 4880 §5.2.3.10), which gpg with systemd-pull's exact command line and sqv both
  enforce: an expired detached signature fails with exit 1 ("Expired signature").
* **Certifying another key** (`--quick-sign-key`): key rotation hands hosts the new key
  certified by the old one, which a host can check with the gpg it already has.

gpg is the verifier every host runs for `Verify=yes` (spec §3.4), so producing these
packets with it leaves no doubt that hosts read them the way we mean. Every call runs in a
throw-away home directory through the one subprocess wrapper, and the gpg-agent such a
home starts is stopped on exit, so nothing outlives one `with GpgHome()` block.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sysext.core.errors import SysextError
from sysext.core.process import run

_BASE = ("--batch", "--no-tty", "--no-options", "--no-auto-key-locate", "--pinentry-mode=loopback")


class GpgHome:
    """A private GNUPGHOME holding the keys of one operation."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _gpg(self, *args: str, input: bytes | None = None, hint: str | None = None) -> bytes:
        proc = run(
            ["gpg", *_BASE, "--homedir", str(self.path), *args],
            input=input,
            hint=hint,
            timeout=60,
        )
        return proc.stdout

    def import_keys(self, data: bytes) -> None:
        """Import public or (unprotected) secret keys."""
        self._gpg("--import", input=data, hint="the key must be an unprotected OpenPGP key")

    def detach_sign(
        self,
        fingerprint: str,
        data: bytes,
        *,
        lifetime: dt.timedelta | None,
        created: dt.datetime | None = None,
        armor: bool = False,
    ) -> bytes:
        """A detached signature by `fingerprint` (its signing subkey) of `data`.

        `lifetime`: the signature expires that long after its creation. `created`: make
        the signature as of that moment (gpg's --faked-system-time); the key must already
        have existed then. Used to prove that hosts refuse expired signatures.
        """
        args = ["--local-user", fingerprint, "--detach-sign", "--output", "-"]
        if lifetime is not None:
            seconds = int(lifetime.total_seconds())
            if seconds <= 0:
                raise SysextError("a signature lifetime must be positive")
            args += ["--default-sig-expire", f"seconds={seconds}"]
        if created is not None:
            args += ["--faked-system-time", f"{int(created.timestamp())}!"]
        if armor:
            args.append("--armor")
        return self._gpg(*args, input=data)

    def certify(self, certifier: str, target: str) -> None:
        """`certifier` (secret key imported) certifies every user ID of `target`."""
        self._gpg("--default-key", certifier, "--quick-sign-key", target)

    def export(self, *fingerprints: str) -> bytes:
        """Binary export of the given public keys (with all their certifications)."""
        return self._gpg("--export", *fingerprints)

    def close(self) -> None:
        # gpg starts a gpg-agent per home for secret-key operations; stop it with the home.
        run(["gpgconf", "--homedir", str(self.path), "--kill", "all"], check=False, timeout=30)
        shutil.rmtree(self.path, ignore_errors=True)


HOME_PARENT = Path("/tmp")  # short: gpg-agent sockets have a ~100-byte path limit
HOME_PREFIX = "sysext-gpg-"


@contextmanager
def gpg_home() -> Iterator[GpgHome]:
    """A fresh GNUPGHOME, named after this process so that leftovers can be told apart."""
    sweep_orphaned_homes()
    path = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-", dir=HOME_PARENT))
    home = GpgHome(path)
    try:
        yield home
    finally:
        home.close()


def sweep_orphaned_homes() -> None:
    """Stop the agent of, and remove, every home whose process died without closing it.

    A process killed mid-signature (a crashed registry worker, kill -9) cannot run its
    `finally`; its gpg-agent would otherwise live on. Homes of live processes (another
    registry, a concurrent `sysext sign`) are left alone.
    """
    for path in HOME_PARENT.glob(f"{HOME_PREFIX}*-*"):
        owner = path.name[len(HOME_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid() or _alive(int(owner)):
            continue
        GpgHome(path).close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
