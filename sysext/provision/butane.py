"""Butane YAML from the provisioning model.

The structure is the Butane form of what ignition.py writes (`inline` text instead of a
percent-encoded `data:` URL, modes in octal); the keyring stays a base64 `data:` URL
because Butane's `inline` only holds text. Comments carry what JSON cannot say.
"""

from __future__ import annotations

import base64
import textwrap
from typing import Any

import yaml

from sysext.provision.model import (
    File,
    InlineContents,
    Link,
    ProvisionConfig,
    RemoteContents,
    Unit,
)


class _Octal(int):
    """A file mode, written `0644` as Butane docs and users write it."""


class _Block(str):
    """Multi-line text written as a YAML literal block (`|`)."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent list items under their key, as Butane examples do.
        super().increase_indent(flow, False)


def _octal(dumper: yaml.SafeDumper, value: _Octal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:int", f"0{int(value):o}")


def _block(dumper: yaml.SafeDumper, value: _Block) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


_Dumper.add_representer(_Octal, _octal)
_Dumper.add_representer(_Block, _block)


def data_url_base64(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode("ascii")


def remote_source(contents: RemoteContents) -> dict[str, Any]:
    """A fetched file with its hash: Butane and Ignition spell it the same way."""
    return {"source": contents.url, "verification": {"hash": f"sha256-{contents.sha256}"}}


def butane_contents(file: File) -> dict[str, Any]:
    contents = file.contents
    if isinstance(contents, RemoteContents):
        return remote_source(contents)
    if isinstance(contents, InlineContents) and contents.is_text:
        return {"inline": _Block(contents.data.decode("utf-8"))}
    return {"source": data_url_base64(contents.data)}


def butane_file(file: File) -> dict[str, Any]:
    return {"path": file.path, "mode": _Octal(file.mode), "contents": butane_contents(file)}


def link_entry(link: Link) -> dict[str, Any]:
    """A link as Butane and Ignition both spell it (`overwrite` only when set)."""
    entry: dict[str, Any] = {"path": link.path, "target": link.target, "hard": link.hard}
    if link.overwrite:
        entry["overwrite"] = True
    return entry


def butane_unit(unit: Unit) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": unit.name}
    if unit.enabled is not None:
        entry["enabled"] = unit.enabled
    if unit.contents is not None:
        entry["contents"] = _Block(unit.contents)
    if unit.dropins:
        entry["dropins"] = [{"name": d.name, "contents": _Block(d.contents)} for d in unit.dropins]
    return entry


def butane_document(config: ProvisionConfig) -> dict[str, Any]:
    """The config as the plain data of a Butane document (for writing or merging)."""
    document: dict[str, Any] = {"variant": config.variant.value, "version": config.butane_version}
    storage: dict[str, Any] = {}
    if config.files:
        storage["files"] = [butane_file(f) for f in config.files]
    if config.links:
        storage["links"] = [link_entry(link) for link in config.links]
    if storage:
        document["storage"] = storage
    if config.units:
        document["systemd"] = {"units": [butane_unit(u) for u in config.units]}
    return document


def _readable(value: Any, key: str | None = None) -> Any:
    """Plain YAML data with modes in octal and multi-line text as literal blocks."""
    if isinstance(value, dict):
        return {k: _readable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_readable(v) for v in value]
    if key == "mode" and isinstance(value, int) and not isinstance(value, bool):
        return _Octal(value)
    if isinstance(value, str) and "\n" in value and not isinstance(value, _Block):
        return _Block(value)
    return value


def dump_butane(document: dict[str, Any]) -> str:
    return yaml.dump(
        _readable(document),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=1000,
    )


def comment_lines(text: str, indent: str = "") -> str:
    return "".join(f"{indent}# {line}\n" for line in textwrap.wrap(text, 88 - len(indent)))


def notes_header(config: ProvisionConfig) -> str:
    return "".join(f"# {note}\n" for note in config.notes)


def add_file_comments(body: str, config: ProvisionConfig) -> str:
    """Put each file's comment right above its `- path:` line."""
    for file in config.files:
        if file.comment:
            marker = f"- path: {file.path}\n"
            at = body.find(marker)
            if at >= 0:
                line_start = body.rfind("\n", 0, at) + 1
                indent = body[line_start:at]
                body = body[:line_start] + comment_lines(file.comment, indent) + body[line_start:]
    return body


def render_butane(config: ProvisionConfig) -> str:
    body = dump_butane(butane_document(config))
    return notes_header(config) + add_file_comments(body, config)
