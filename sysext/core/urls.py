"""URL layout of a registry as hosts see it (DESIGN.md §3), shared by client and server.

/extensions/NAME/…                    channel "stable"
/channels/CHANNEL/extensions/NAME/…   any channel (stable too)
/keyring.gpg, /keyring.asc            the registry's public key
"""

from __future__ import annotations

DEFAULT_CHANNEL = "stable"
KEYRING_BINARY = "keyring.gpg"
KEYRING_ARMORED = "keyring.asc"


def extension_url_path(name: str, channel: str = DEFAULT_CHANNEL) -> str:
    """URL path (no leading slash) of an extension's directory in `channel`."""
    if channel == DEFAULT_CHANNEL:
        return f"extensions/{name}"
    return f"channels/{channel}/extensions/{name}"


def extension_url(registry: str, name: str, channel: str = DEFAULT_CHANNEL) -> str:
    """Absolute URL of an extension's directory: what a transfer file's Path= holds."""
    return f"{registry.rstrip('/')}/{extension_url_path(name, channel)}"
