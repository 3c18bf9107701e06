"""Verify a SHA256SUMS signature: sysext (pysequoia, in-process) vs gpg (systemd's exact
command line, §3.4) vs sqv, measured in the same run; then what an *expiring* signature
costs to make (gpg, sysext/trust/gpg.py) against pysequoia's non-expiring one.

    .venv/bin/python bench/bench_signing.py [--rounds N] [--lines N]

Prints seconds per operation and the ratio against the reference. Not part of the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sysext.core.process import run
from sysext.systemd.manifest import ManifestEntry, format_manifest
from sysext.trust.signing import (
    export_public_key,
    generate_key,
    load_key,
    sign_detached,
    sign_many_with,
    sign_with,
    verify_detached,
)


def _timed(rounds: int, action: Callable[[], object]) -> float:
    action()  # warm-up
    start = time.perf_counter()
    for _ in range(rounds):
        action()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lines", type=int, default=200, help="manifest lines")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        key = tmp / "k.key"
        generate_key(key, "Bench <bench@example.test>")
        keyring = tmp / "pubring.gpg"
        keyring.write_bytes(export_public_key(key))
        manifest = format_manifest(
            ManifestEntry(f"ext-{i}.0-x86-64.raw", f"{i:064x}") for i in range(args.lines)
        )
        data = tmp / "SHA256SUMS"
        data.write_bytes(manifest)
        signature = sign_detached(key, manifest)
        sig = tmp / "SHA256SUMS.gpg"
        sig.write_bytes(signature)
        home = tmp / "gpghome"
        home.mkdir(mode=0o700)
        gpg = [
            "gpg", "--no-options", "--no-default-keyring", "--no-auto-key-locate",
            "--no-auto-check-trustdb", "--batch", "--trust-model=always",
            f"--homedir={home}", f"--keyring={keyring}", "--verify", str(sig), "-",
        ]  # fmt: skip
        results = {
            "gpg (systemd command line)": _timed(args.rounds, lambda: run(gpg, input=manifest)),
            "sqv": _timed(args.rounds, lambda: run(["sqv", "--keyring", keyring, sig, data])),
            "sysext verify_detached": _timed(
                args.rounds, lambda: verify_detached(keyring, manifest, signature)
            ),
        }
        tsk = load_key(key)
        week = dt.timedelta(days=7)
        batch = 20
        signing_results = {
            "pysequoia, no expiry": _timed(args.rounds, lambda: sign_with(tsk, manifest)),
            "gpg, expiring, own home": _timed(
                args.rounds, lambda: sign_with(tsk, manifest, lifetime=week)
            ),
            f"gpg, expiring, {batch} per home": _timed(
                max(1, args.rounds // batch),
                lambda: sign_many_with(tsk, [manifest] * batch, lifetime=week),
            )
            / batch,
        }
    reference = results["gpg (systemd command line)"]
    print(f"{args.lines}-line SHA256SUMS, {args.rounds} rounds each")
    for name, seconds in results.items():
        print(f"{name:<28} {seconds * 1000:8.2f} ms   ×{reference / seconds:6.1f} vs gpg")
    base = signing_results["pysequoia, no expiry"]
    print("signing one manifest:")
    for name, seconds in signing_results.items():
        print(f"{name:<28} {seconds * 1000:8.2f} ms   ×{seconds / base:6.1f} of pysequoia")


if __name__ == "__main__":
    main()
