"""Where the materialized public tree keeps each file (DESIGN.md §3).

The relative paths are the URL paths (sysext.urls), so nginx, an object store or a CDN can
serve `DATA/public` unchanged.
"""

from __future__ import annotations

from pathlib import Path

from sysext.core.urls import (
    DEFAULT_CHANNEL,
    KEYRING_ARMORED,
    KEYRING_BINARY,
    extension_url_path,
)

__all__ = [
    "DEFAULT_CHANNEL",
    "KEYRING_ARMORED",
    "KEYRING_BINARY",
    "channel_alias_dir",
    "extension_dir",
]


def extension_dir(public: Path, name: str, channel: str = DEFAULT_CHANNEL) -> Path:
    """On-disk directory serving `extension_url_path(name, channel)`."""
    return public / extension_url_path(name, channel)


def channel_alias_dir(public: Path, name: str, channel: str) -> Path:
    """The `/channels/CHANNEL/extensions/NAME` directory, which exists for stable too."""
    return public / "channels" / channel / "extensions" / name
