"""Where the materialized public tree keeps each file (DESIGN.md §3).

The same relative paths are the URL paths, so nginx, an object store or a CDN can serve
`DATA/public` unchanged:

    public/extensions/NAME/…                 channel "stable"
    public/channels/CHANNEL/extensions/NAME/… every channel, stable included
    public/keyring.gpg, public/keyring.asc   the registry's public key(s)
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CHANNEL = "stable"
KEYRING_BINARY = "keyring.gpg"
KEYRING_ARMORED = "keyring.asc"


def extension_url_path(name: str, channel: str = DEFAULT_CHANNEL) -> str:
    """URL path (no leading slash) of an extension's directory in `channel`."""
    if channel == DEFAULT_CHANNEL:
        return f"extensions/{name}"
    return f"channels/{channel}/extensions/{name}"


def extension_dir(public: Path, name: str, channel: str = DEFAULT_CHANNEL) -> Path:
    """On-disk directory serving `extension_url_path(name, channel)`."""
    return public / extension_url_path(name, channel)


def channel_alias_dir(public: Path, name: str, channel: str) -> Path:
    """The `/channels/CHANNEL/extensions/NAME` directory, which exists for stable too."""
    return public / "channels" / channel / "extensions" / name
