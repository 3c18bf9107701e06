"""From NAME[@VERSION]… to a `ProvisionConfig`: resolve each image, fetch the key, compose."""

from __future__ import annotations

from collections.abc import Sequence

from sysext.architecture import Architecture
from sysext.errors import SysextError
from sysext.provision.compose import ProvisionOptions, compose_config
from sysext.provision.model import KeyringMode, ProvisionConfig
from sysext.provision.resolve import Catalog, ExtensionRef, fetch_keyring, resolve
from sysext.urls import DEFAULT_CHANNEL


def generate_config(
    catalog: Catalog,
    refs: Sequence[ExtensionRef],
    *,
    arch: Architecture = Architecture.X86_64,
    channel: str = DEFAULT_CHANNEL,
    options: ProvisionOptions = ProvisionOptions(),
) -> ProvisionConfig:
    if not refs:
        raise SysextError("no extension given", "e.g. sysext butane podman --registry URL")
    images = [resolve(catalog, ref, arch=arch, channel=channel) for ref in refs]
    # The key only matters to systemd-sysupdate, so a config without updates leaves the
    # host's keyring alone.
    wants_key = options.updates and options.keyring is KeyringMode.REPLACE
    keyring = fetch_keyring(catalog) if wants_key else None
    return compose_config(images, registry_url=catalog.base_url, keyring=keyring, options=options)
