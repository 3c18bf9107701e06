"""Provisioning: Butane and Ignition configs that install verified extensions at first boot.

resolve.py picks images from a registry's sysupdate layout, compose.py turns them into one
`ProvisionConfig` (model.py), butane.py and ignition.py render it, merge.py adds it to a
user's Butane file, verify.py checks a config's downloads against its hashes.
"""

from sysext.provision.butane import render_butane
from sysext.provision.compose import ProvisionOptions
from sysext.provision.generate import generate_config
from sysext.provision.ignition import render_ignition
from sysext.provision.merge import merge_into_butane
from sysext.provision.resolve import DirectoryCatalog, ExtensionRef, HttpCatalog
from sysext.provision.verify import SourceCheck, verify_config_sources

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
