"""Where images and the public tree live: local files (the default) or an S3 bucket.

`Storage` is everything the service needs from a backend; `make_storage(settings)` picks
one. Both keep the same order of writes (images before the manifest that lists them, the
signature next to it) and both are rebuilt from the database at start, which is the only
source of truth (service.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from registry.settings import Settings
from registry.storage.materialize import DirectoryContent
from registry.storage.rollout_tree import RolloutContent
from registry.trust.keys import Signer


class Storage(Protocol):
    def prepare(self, signer: Signer) -> None:
        """Create what is missing (directories or the bucket) and publish the keyring."""

    def ingest(self, staged: Path, sha256: str) -> None:
        """Move a validated upload into the blob store (it is gone from `staged` after)."""

    def collect_garbage(self, referenced: set[str]) -> int:
        """Delete blobs no image row references; runs only under the lock of everything."""

    def materialize(self, signer: Signer, content: DirectoryContent) -> None:
        """Make the public directories of (content.channel, content.name) serve `content`."""

    def materialize_rollouts(self, signer: Signer, content: RolloutContent) -> None:
        """Make the rollout tree of (content.channel, content.name) serve `content`."""

    def remove_unknown(self, known: set[tuple[str, str]]) -> None:
        """Unpublish (name, channel) directories the database does not know."""

    def read_public(self, url_path: str) -> bytes | None:
        """A small file of the public tree (transfer files for the web pages), or None."""

    # Read-only views for `sysext registry check|repair` (registry/service/consistency.py).

    def stored_size(self, sha256: str) -> int | None:
        """The size of the stored image `sha256`, or None when the store lacks it."""

    def drift(self, content: DirectoryContent, keyring: bytes) -> str | None:
        """Why the public directories of (content.channel, content.name) do not serve
        exactly `content` under a signature hosts holding `keyring` accept, or None."""

    def published(self) -> set[tuple[str, str]]:
        """(name, channel) of every extension directory the public tree has."""


def make_storage(settings: Settings) -> Storage:
    if settings.uses_s3:
        from registry.storage.s3 import S3Storage

        return S3Storage(settings)
    from registry.storage.local import LocalStorage

    return LocalStorage(settings)
