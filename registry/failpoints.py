"""Crash points for the crash-safety tests: `SYSEXT_FAILPOINT=NAME` makes the server
SIGKILL itself when it reaches `failpoint(NAME)`, the same as a power cut or an OOM kill
at exactly that step. Unset (always, in production), a failpoint is one dict lookup.

Names: after-store (blob in the store, nothing committed), after-commit (committed, not
materialized), before-swap (new snapshot complete or, in S3, the images and transfer files
written, symlinks not swapped or manifests not written), between-swaps (channel directory
done, the /extensions alias not yet), between-signature-and-manifest (S3: the new
SHA256SUMS.gpg written next to the old SHA256SUMS).
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("SYSEXT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
