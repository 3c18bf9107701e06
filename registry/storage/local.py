"""The default backend: the content-addressed store and the snapshot tree under DATA.

The work itself lives in registry/storage/blobs.py (blobs) and registry/storage/materialize.py
(snapshots swapped in by symlink); this adapts them to `Storage`.
"""

from __future__ import annotations

import os
from pathlib import Path

from registry.settings import Settings
from registry.storage import blobs as store
from registry.storage import materialize as mat
from registry.storage import rollout_tree
from registry.trust.keys import Signer
from registry.trust.verity import VERITY_CERTS_NAME, bundle, load_trusted
from sysext.core.atomic import atomic_write, remove_stale_temporaries


def _write_verity_certs(settings: Settings) -> None:
    """/verity.crt: the certificates the registry trusts (gone when it trusts none)."""
    target = settings.public_dir / VERITY_CERTS_NAME
    data = bundle(load_trusted(settings.verity_certs))
    if data is None:
        target.unlink(missing_ok=True)
    elif not target.exists() or target.read_bytes() != data:
        atomic_write(target, data)


class LocalStorage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def prepare(self, signer: Signer) -> None:
        s = self.settings
        for directory in (s.public_dir, s.snapshots_dir, s.store_dir):
            directory.mkdir(parents=True, exist_ok=True)
        signer.write_keyrings(s.public_dir)
        _write_verity_certs(s)
        remove_stale_temporaries(s.public_dir)

    def ingest(self, staged: Path, sha256: str) -> None:
        store.ingest(self.settings.store_dir, staged, sha256)

    def collect_garbage(self, referenced: set[str]) -> int:
        return store.collect_garbage(self.settings.store_dir, referenced)

    def materialize(self, signer: Signer, content: mat.DirectoryContent) -> None:
        mat.materialize(self.settings, signer, content)

    def materialize_rollouts(self, signer: Signer, content: rollout_tree.RolloutContent) -> None:
        rollout_tree.materialize_rollouts(self.settings, signer, content)

    def remove_unknown(self, known: set[tuple[str, str]]) -> None:
        mat.remove_unknown_links(self.settings, known)

    def read_public(self, url_path: str) -> bytes | None:
        path = self.settings.public_dir / url_path
        try:
            return path.read_bytes() if path.is_file() else None
        except OSError:
            return None

    def stored_size(self, sha256: str) -> int | None:
        try:
            return os.stat(store.blob_path(self.settings.store_dir, sha256)).st_size
        except OSError:
            return None

    def drift(self, content: mat.DirectoryContent, keyring: bytes) -> str | None:
        current = mat.current_snapshot(self.settings, content.name, content.channel)
        if current is None:
            return mat.NOT_PUBLISHED
        if not mat.snapshot_matches(current, content, keyring):
            return mat.DIFFERS
        return None

    def published(self) -> set[tuple[str, str]]:
        return mat.published_directories(self.settings)
