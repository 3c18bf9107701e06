"""Keys that already existed in the past, so that tests can make signatures that expired.

An OpenPGP signature cannot predate its key (gpg refuses both to make and to accept
one), so an honestly expired signature needs an older key: gpg makes it with
--faked-system-time, and sysext loads the exported secret key like any other.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
from pathlib import Path

from sysext.trust.gpg import gpg_home


def make_past_key(output: Path, days_ago: int, uid: str = "past key <past@example.com>") -> str:
    """Write an unprotected ed25519 key created `days_ago` days ago; return its fingerprint."""
    created = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)).timestamp())
    with gpg_home() as home:
        base = ["gpg", "--batch", "--no-tty", "--homedir", str(home.path)]
        faked = [*base, "--faked-system-time", f"{created}!", "--passphrase", ""]
        subprocess.run(
            [*faked, "--quick-gen-key", uid, "ed25519", "cert", "never"],
            check=True,
            capture_output=True,
        )
        listing = subprocess.run(
            [*base, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True
        ).stdout
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        subprocess.run(
            [*faked, "--quick-add-key", fingerprint, "ed25519", "sign", "never"],
            check=True,
            capture_output=True,
        )
        secret = subprocess.run(
            [*base, "--armor", "--export-secret-keys", fingerprint],
            check=True,
            capture_output=True,
        ).stdout
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(secret)
    output.chmod(0o600)
    return fingerprint


def gpg_verify_like_systemd(keyring: bytes, signature: bytes, data: bytes) -> tuple[int, str]:
    """systemd-pull's exact gpg command line (spec §3.4): (exit status, stderr)."""
    with tempfile.TemporaryDirectory(prefix="gpghome") as home:
        (Path(home) / "keyring.gpg").write_bytes(keyring)
        (Path(home) / "sig").write_bytes(signature)
        # The exact argv of systemd-pull 252–256 (verify_gpg()), only the paths differ.
        argv = [
            "gpg",
            "--no-options",
            "--no-default-keyring",
            "--no-auto-key-locate",
            "--no-auto-check-trustdb",
            "--batch",
            "--trust-model=always",
            f"--homedir={home}",
            f"--keyring={home}/keyring.gpg",
            "--verify",
            f"{home}/sig",
            "-",
        ]
        proc = subprocess.run(
            argv,
            input=data,
            capture_output=True,
            check=False,
        )
        return proc.returncode, proc.stderr.decode(errors="replace")


def sqv_verify(keyring: bytes, signature: bytes, data: bytes) -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="sqv") as scratch:
        paths = {n: Path(scratch) / n for n in ("keyring", "sig", "data")}
        for name, content in (("keyring", keyring), ("sig", signature), ("data", data)):
            paths[name].write_bytes(content)
        proc = subprocess.run(
            ["sqv", "--keyring", str(paths["keyring"]), str(paths["sig"]), str(paths["data"])],
            capture_output=True,
            check=False,
        )
        return proc.returncode, proc.stderr.decode(errors="replace")
