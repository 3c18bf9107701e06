"""Provenance records: how an image was made (inputs, tools, settings), as JSON.

The file is named `NAME-VERSION-ARCH.provenance.json`, never `….raw.json`: systemd 252–256
do not check the end of a name against a pattern, so `NAME-@v-%a.raw` would match a file
that merely *starts* with the image name (spec §7.2). The record carries no wall-clock
time, so a rebuild of the same inputs writes the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from sysext import __version__
from sysext.core.atomic import atomic_write

SUFFIX = ".provenance.json"


def provenance_filename(image_stem: str) -> str:
    """`podman-5.3.1-x86-64` → `podman-5.3.1-x86-64.provenance.json`."""
    return image_stem + SUFFIX


def provenance_record(
    *,
    image: Mapping[str, object],
    release: Mapping[str, str],
    tools: Mapping[str, str],
    build: Mapping[str, object],
    inputs: Mapping[str, object] | None = None,
    key: str | None = None,
) -> dict[str, object]:
    record: dict[str, object] = {
        "schema": 1,
        "builder": {"name": "sysext", "version": __version__},
        "image": dict(image),
        "extension_release": dict(release),
        "build": dict(build),
        "tools": dict(tools),
    }
    if key:
        # sysext.build_key: a build with the same key finds this image and skips packing.
        record["key"] = key
    if inputs:
        # recipe name/file, sources with their sha256… whatever the caller knows.
        record["inputs"] = dict(inputs)
    return record


def write_provenance(path: Path, record: Mapping[str, object]) -> None:
    data = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, data.encode("utf-8"))


def read_provenance(path: Path) -> dict[str, object]:
    loaded = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: not a JSON object")
    return loaded
