"""Provisioning: Butane and Ignition configs that install verified extensions at first boot.

resolve.py picks images from a registry's sysupdate layout, compose.py turns them into one
`ProvisionConfig` (model.py), butane.py and ignition.py render it, merge.py adds it to a
user's Butane file, verify.py checks a config's downloads against its hashes.

The names below are imported on first use (PEP 562): importing a submodule such as
`sysext.provision.model` (the CLI does, for its enums) then does not load yaml, requests
and cryptography through every other submodule.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sysext.provision.butane import render_butane
    from sysext.provision.compose import ProvisionOptions
    from sysext.provision.generate import generate_config
    from sysext.provision.ignition import render_ignition
    from sysext.provision.merge import merge_into_butane
    from sysext.provision.resolve import DirectoryCatalog, ExtensionRef, HttpCatalog
    from sysext.provision.verify import SourceCheck, verify_config_sources

# Public name -> the submodule that defines it.
_SOURCES = {
    "DirectoryCatalog": "resolve",
    "ExtensionRef": "resolve",
    "HttpCatalog": "resolve",
    "ProvisionOptions": "compose",
    "SourceCheck": "verify",
    "generate_config": "generate",
    "merge_into_butane": "merge",
    "render_butane": "butane",
    "render_ignition": "ignition",
    "verify_config_sources": "verify",
}

__all__ = [
    "DirectoryCatalog",
    "ExtensionRef",
    "HttpCatalog",
    "ProvisionOptions",
    "SourceCheck",
    "generate_config",
    "merge_into_butane",
    "render_butane",
    "render_ignition",
    "verify_config_sources",
]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{source}"), name)
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})
