"""From NAME[@VERSION]… to a `ProvisionConfig`: resolve each image, fetch the key, compose."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sysext.core.errors import SysextError
from sysext.core.urls import DEFAULT_CHANNEL
from sysext.provision.compose import ProvisionOptions, compose_config
from sysext.provision.model import KeyringMode, ProvisionConfig, Variant
from sysext.provision.resolve import (
    Catalog,
    ExtensionRef,
    fetch_keyring,
    replaced_extensions,
    resolve,
)
from sysext.provision.verity import (
    VERITY_CERTS_PATH,
    check_require_signed,
    check_signed,
    served_certificates,
)
from sysext.systemd.architecture import Architecture


def generate_config(
    catalog: Catalog,
    refs: Sequence[ExtensionRef],
    *,
    arch: Architecture = Architecture.X86_64,
    channel: str = DEFAULT_CHANNEL,
    options: ProvisionOptions = ProvisionOptions(),
    os_version: str | None = None,
) -> ProvisionConfig:
    """The config installing `refs` from `catalog` on one kind of host.

    `arch`, `channel` and `os_version` (the host's os-release VERSION_ID, required for
    extensions the registry serves per OS version) choose the images; `options` shape
    the rest. The CLI (`sysext butane`), the registry's provisioning routes and its web
    pages all call this, so the three always produce the same text for the same choices.
    """
    if not refs:
        raise SysextError("no extension given", "e.g. sysext butane podman --registry URL")
    # Before any resolution: each costs a manifest read and parse, so a list repeating one
    # name 5,000 times once cost seconds per request (issue 19, finding 14).
    counts = Counter(ref.name for ref in refs)
    duplicates = sorted(n for n, count in counts.items() if count > 1)
    if duplicates:
        raise SysextError(
            f"extension {duplicates[0]!r} requested more than once",
            "a host activates one version per extension (one /etc/extensions/NAME.raw)",
        )
    check_require_signed(options.require_signed, options.systemd_version, options.on_update)
    images = [
        resolve(catalog, ref, arch=arch, channel=channel, os_version=os_version) for ref in refs
    ]
    # The key only matters to systemd-sysupdate, so a config without updates leaves the
    # host's keyring alone.
    wants_key = options.updates and options.keyring is KeyringMode.COMBINE
    keyring = fetch_keyring(catalog) if wants_key else None
    # Only Flatcar ships extensions of its own that ours can collide with.
    replaces = (
        {image.name: replaced_extensions(catalog.release_fields(image)) for image in images}
        if options.variant is Variant.FLATCAR
        else None
    )
    # The registry's verity certificates go to /etc/verity.d/ whenever it serves some, so
    # signed images get verity on these hosts; --require-signed insists on them.
    verity_certs = served_certificates(catalog.read(VERITY_CERTS_PATH))
    if options.require_signed:
        check_signed(
            {f"{i.name} {i.version} ({i.filename})": catalog.verity_signer(i) for i in images},
            verity_certs,
        )
    return compose_config(
        images,
        registry_url=catalog.base_url,
        keyring=keyring,
        options=options,
        replaces=replaces,
        verity_certs=verity_certs,
    )
