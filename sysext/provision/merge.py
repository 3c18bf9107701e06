"""`--merge-into FILE.bu`: add generated entries to a user's Butane file.

Entries already present with identical content are kept once, so merging twice changes
nothing. The same path (or unit, or drop-in) with different content is a conflict and
nothing is written: silently picking one side could drop a user's file or our hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sysext.core.errors import SysextError
from sysext.provision.butane import (
    add_file_comments,
    butane_document,
    dump_butane,
    notes_header,
)
from sysext.provision.model import (
    ProvisionConfig,
    Variant,
    butane_versions,
    ignition_version_of_butane,
)

_NODE_KINDS = ("files", "links", "directories")


def _plain(value: Any) -> Any:
    """Our document with YAML helper types reduced to plain values, as safe_load reads them."""
    return yaml.safe_load(dump_butane(value))


def _check_header(user: dict[str, Any], config: ProvisionConfig, source: str) -> None:
    variant, version = user.get("variant"), str(user.get("version", ""))
    if variant != config.variant.value:
        raise SysextError(
            f"{source} is Butane variant {variant!r}, the generated entries are "
            f"{config.variant.value!r}",
            f"rerun with --variant {variant}"
            if variant in ("flatcar", "fcos")
            else "only flatcar and fcos Butane files are supported",
        )
    ignition = ignition_version_of_butane(str(variant), version)
    if ignition is None:
        known = butane_versions(Variant(variant))
        raise SysextError(
            f"{source}: Butane {variant} version {version!r} is not one sysext knows",
            f"supported {variant} versions: {', '.join(known)}",
        )
    if ignition is not config.ignition_version:
        raise SysextError(
            f"{source} is {variant} {version} (Ignition {ignition.value}), the generated "
            f"entries are {variant} {config.butane_version} (Ignition "
            f"{config.ignition_version.value})",
            f"rerun with --ignition-version {ignition.value}",
        )


def _index(items: list[Any], key: str, source: str, section: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or key not in item:
            raise SysextError(f"{source}: an entry of {section} has no {key!r}")
        found[str(item[key])] = item
    return found


def _merge_unit(mine: dict[str, Any], theirs: dict[str, Any], source: str) -> None:
    name = mine["name"]
    for key in ("contents", "enabled", "mask"):
        if key in mine and key in theirs and mine[key] != theirs[key]:
            raise SysextError(
                f"{source} already configures unit {name} with a different {key!r}",
                "remove that unit from the file or drop the conflicting option",
            )
        if key in mine:
            theirs.setdefault(key, mine[key])
    if mine.get("dropins"):
        existing = _index(theirs.setdefault("dropins", []), "name", source, f"{name} dropins")
        for dropin in mine["dropins"]:
            other = existing.get(dropin["name"])
            if other is None:
                theirs["dropins"].append(dropin)
            elif other != dropin:
                raise SysextError(
                    f"{source} already has drop-in {dropin['name']} of {name} with other contents"
                )


def merge_into_butane(user_text: str, config: ProvisionConfig, *, source: str) -> str:
    """The user's Butane document with `config`'s entries added, as YAML text."""
    try:
        user = yaml.safe_load(user_text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise SysextError(f"{source}: not valid YAML: {first}") from None
    if not isinstance(user, dict):
        raise SysextError(f"{source}: not a Butane document (expected variant:, version:, …)")
    _check_header(user, config, source)
    ours = _plain(butane_document(config))

    storage = user.setdefault("storage", {}) or {}
    user["storage"] = storage
    taken: dict[str, tuple[str, Any]] = {}
    for kind in _NODE_KINDS:
        for path, item in _index(storage.get(kind) or [], "path", source, kind).items():
            taken[path] = (kind, item)
    for kind in ("files", "links"):
        for item in ours.get("storage", {}).get(kind, []):
            existing = taken.get(item["path"])
            if existing is None:
                storage.setdefault(kind, []).append(item)
            elif existing != (kind, item):
                raise SysextError(
                    f"{source} already defines {item['path']} ({existing[0][:-1]}) "
                    "with different content",
                    "remove it from the file, or generate with options that match it",
                )

    if "systemd" in ours:
        systemd = user.setdefault("systemd", {}) or {}
        user["systemd"] = systemd
        units = systemd.setdefault("units", []) or []
        systemd["units"] = units
        existing_units = _index(units, "name", source, "systemd.units")
        for unit in ours["systemd"]["units"]:
            if unit["name"] in existing_units:
                _merge_unit(unit, existing_units[unit["name"]], source)
            else:
                units.append(unit)
    return notes_header(config) + add_file_comments(dump_butane(user), config)


def read_butane_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SysextError(
            f"cannot read {path}: {exc.strerror}", "--merge-into takes an existing .bu file"
        ) from None
