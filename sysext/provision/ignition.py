"""Ignition JSON (spec 3.3.0, 3.4.0 or 3.5.0) from the provisioning model.

This is what Butane would produce from butane.py's output; the Butane transpiler is not a
dependency, so the project writes the JSON itself. Everything emitted here has the same
shape in specs 3.3.0 to 3.5.0 (the later specs only add fields this project does not use),
so only `ignition.version` differs.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from sysext.provision.butane import data_url_base64, link_entry, remote_source
from sysext.provision.model import File, InlineContents, ProvisionConfig, RemoteContents, Unit


def data_url_text(text: str) -> str:
    """RFC 2397 `data:` URL with percent-encoding, as Butane writes `inline` text."""
    return "data:," + urllib.parse.quote(text, safe="/:=,@")


def ignition_contents(file: File) -> dict[str, Any]:
    contents = file.contents
    if isinstance(contents, RemoteContents):
        return remote_source(contents)
    if isinstance(contents, InlineContents) and contents.is_text:
        return {"source": data_url_text(contents.data.decode("utf-8"))}
    return {"source": data_url_base64(contents.data)}


def ignition_unit(unit: Unit) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": unit.name}
    if unit.enabled is not None:
        entry["enabled"] = unit.enabled
    if unit.contents is not None:
        entry["contents"] = unit.contents
    if unit.dropins:
        entry["dropins"] = [{"name": d.name, "contents": d.contents} for d in unit.dropins]
    return entry


def ignition_document(config: ProvisionConfig) -> dict[str, Any]:
    document: dict[str, Any] = {"ignition": {"version": config.ignition_version.value}}
    storage: dict[str, Any] = {}
    if config.files:
        storage["files"] = [
            {"path": f.path, "mode": f.mode, "contents": ignition_contents(f)} for f in config.files
        ]
    if config.links:
        storage["links"] = [link_entry(link) for link in config.links]
    if storage:
        document["storage"] = storage
    if config.units:
        document["systemd"] = {"units": [ignition_unit(u) for u in config.units]}
    return document


def render_ignition(config: ProvisionConfig) -> str:
    return json.dumps(ignition_document(config), indent=2) + "\n"
