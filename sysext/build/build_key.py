"""The build key: one digest of everything that decides an image's bytes.

An image is a pure function of its recipe file, its resolved sources (by sha256), the
extension-release fields, the image options, SOURCE_DATE_EPOCH, the packing tool's version
and this builder's packing layout. The key is recorded in the image's provenance file; a
later build whose key is the same finds that image in the output directory and skips every
step but resolving the sources (sysext.build.pipeline). Pure: no I/O here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sysext import __version__

# Bump when the builder packs the same inputs into different bytes (entry order, writer
# flags…), so that images made by an older layout are rebuilt rather than kept.
# 3: squashfs defaults to xz-0/512 KiB; erofs uses 64 KiB clusters. 4: squashfs packed by
# mksquashfs (directory indexes), zstd-16 with 1 MiB blocks (issue 23).
PACK_LAYOUT = 4


@dataclass(frozen=True, order=True)
class SourceIdentity:
    """A source as the key sees it: which recipe source, and exactly which bytes."""

    id: str
    kind: str
    sha256: str
    file_name: str


@dataclass(frozen=True)
class KeyInputs:
    recipe_sha256: str
    release: Mapping[str, str]  # extension-release fields (name, version, arch, OS binding…)
    sources: Sequence[SourceIdentity]
    options: Mapping[str, object]  # format, compression, level, block size
    tools: Mapping[str, str]  # packing tool versions
    source_date_epoch: int

    def document(self) -> dict[str, object]:
        return {
            "builder": {"version": __version__, "pack_layout": PACK_LAYOUT},
            "recipe_sha256": self.recipe_sha256,
            "release": dict(sorted(self.release.items())),
            "sources": [
                {"id": s.id, "kind": s.kind, "sha256": s.sha256, "file": s.file_name}
                for s in self.sources
            ],
            "options": dict(sorted(self.options.items())),
            "tools": dict(sorted(self.tools.items())),
            "source_date_epoch": self.source_date_epoch,
        }


def build_key(inputs: KeyInputs) -> str:
    """`sha256:HEX` of the canonical JSON of the inputs (sorted keys, no blanks)."""
    text = json.dumps(inputs.document(), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
