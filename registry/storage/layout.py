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


# How each file of the tree is served, the same by `sysext serve` and by the S3 bucket
# (object metadata): images never change under their name, everything else may.
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=30, must-revalidate"
CONTENT_TYPES = {
    ".raw": "application/octet-stream",
    ".gpg": "application/pgp-signature",
    ".asc": "application/pgp-keys",
    ".conf": "text/plain; charset=utf-8",
    ".transfer": "text/plain; charset=utf-8",
}


def content_type(name: str) -> str:
    if name == "SHA256SUMS":
        return "text/plain; charset=utf-8"
    if name.startswith("SHA256SUMS.") and name.endswith((".gpg", ".asc")):
        return "application/pgp-signature"  # SHA256SUMS.sha256.asc too (not a key)
    if name.startswith("keyring") and name.endswith(".gpg"):
        return "application/pgp-keys"
    if name.endswith(".crt"):
        return "application/x-pem-file"
    return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")


def cache_control(name: str) -> str:
    return IMMUTABLE if name.endswith(".raw") else SHORT
