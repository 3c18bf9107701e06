"""NAME[@VERSION] → the exact image a host should download, read from the sysupdate layout.

Resolution uses only what systemd-sysupdate itself sees: the extension directory's
`SHA256SUMS` (parsed as strictly as sysupdate, spec §3.3) and the registry key at
`/keyring.gpg`. That keeps provisioning independent of the registry's database: the CLI
reads the layout over HTTP, the registry reads the very same files from its public tree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests

from sysext import __version__
from sysext.architecture import Architecture
from sysext.errors import SysextError
from sysext.manifest import MANIFEST_NAME, ManifestError, parse_manifest
from sysext.urls import DEFAULT_CHANNEL, KEYRING_BINARY, extension_url, extension_url_path
from sysext.versioning import sort_versions, version_problem

# Activation names end up in /etc/extensions/NAME.raw, unit names and sysupdate -C NAME;
# keep them to characters that are safe in all three (no '/', no '@', no '%', no spaces).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class NotPublishedError(SysextError):
    """The registry has no such extension, channel, architecture or version."""


class BrokenRegistryError(SysextError):
    """The registry serves something systemd-sysupdate would refuse."""


@dataclass(frozen=True)
class ExtensionRef:
    """What the user asked for: `podman` or `podman@5.3.1`."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ExtensionRef:
        name, sep, version = text.partition("@")
        if not _NAME.fullmatch(name):
            raise SysextError(
                f"invalid extension name {name!r}",
                "use NAME or NAME@VERSION, e.g. podman or podman@5.3.1",
            )
        if sep:
            problem = version_problem(version)
            if problem:
                raise SysextError(f"{text}: {problem}", "use NAME@VERSION, e.g. podman@5.3.1")
            return cls(name, version)
        return cls(name)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


@dataclass(frozen=True)
class ResolvedImage:
    """One image chosen for a host, with everything a config needs to fetch and check it."""

    name: str
    version: str
    arch: Architecture
    channel: str
    filename: str
    sha256: str
    url: str


def check_channel_name(channel: str) -> str:
    if not _CHANNEL.fullmatch(channel):
        raise SysextError(f"invalid channel name {channel!r}", "e.g. stable, beta, edge")
    return channel


class Catalog(Protocol):
    """Read access to a registry's public tree (over HTTP or from its directory)."""

    @property
    def base_url(self) -> str:
        """Public URL hosts use to reach the registry (no trailing slash)."""
        ...

    def read(self, path: str) -> bytes | None:
        """Bytes of the public file at URL path `path` (no leading slash); None if absent."""
        ...

    def extension_names(self, channel: str) -> list[str] | None:
        """Extensions published in `channel`; None when the registry cannot tell."""
        ...

    def channel_names(self) -> list[str] | None:
        """Channels of the registry; None when it cannot tell."""
        ...


def image_filename(name: str, version: str, arch: Architecture) -> str:
    return f"{name}-{version}-{arch.value}.raw"


def _split_image_name(name: str, filename: str) -> tuple[str, Architecture] | None:
    """(version, arch) when `filename` is NAME-@v-ARCH.raw with a version sysupdate accepts."""
    prefix = f"{name}-"
    if not filename.startswith(prefix) or not filename.endswith(".raw"):
        return None
    middle = filename[len(prefix) : -len(".raw")]
    for arch in Architecture:
        suffix = f"-{arch.value}"
        if middle.endswith(suffix):
            version = middle[: -len(suffix)]
            if version and version_problem(version) is None:
                return version, arch
    return None


def _listing(items: list[str] | None, what: str) -> str:
    if items is None:
        return f"the registry does not list its {what}"
    if not items:
        return f"there are no {what}"
    return f"{what}: " + ", ".join(items)


def resolve(
    catalog: Catalog,
    ref: ExtensionRef,
    *,
    arch: Architecture = Architecture.X86_64,
    channel: str = DEFAULT_CHANNEL,
) -> ResolvedImage:
    """Pick the image of `ref` for `arch` in `channel`: the requested version or the newest."""
    check_channel_name(channel)
    manifest_path = f"{extension_url_path(ref.name, channel)}/{MANIFEST_NAME}"
    data = catalog.read(manifest_path)
    if data is None:
        channels = catalog.channel_names()
        if channels is not None and channel not in channels:
            raise NotPublishedError(
                f"unknown channel {channel!r}", _listing(sorted(channels), "channels")
            )
        names = catalog.extension_names(channel)
        raise NotPublishedError(
            f"no extension {ref.name!r} in channel {channel!r}",
            _listing(None if names is None else sorted(names), "extensions"),
        )
    try:
        entries = parse_manifest(data)
    except ManifestError as exc:
        raise BrokenRegistryError(
            f"{ref.name} ({channel}): the registry's {exc.message}",
            "systemd-sysupdate would refuse this manifest too; republish the extension",
        ) from None
    by_arch: dict[Architecture, dict[str, str]] = {}
    for entry in entries:
        split = _split_image_name(ref.name, entry.filename)
        if split is not None:
            version, image_arch = split
            by_arch.setdefault(image_arch, {})[version] = entry.sha256
    if arch not in by_arch:
        arches = sorted(a.value for a in by_arch)
        raise NotPublishedError(
            f"{ref.name} has no {arch.value} image in channel {channel!r}",
            _listing(arches, "architectures"),
        )
    versions = by_arch[arch]
    newest_first = sort_versions(versions, newest_first=True)
    if ref.version is None:
        version = newest_first[0]
    elif ref.version in versions:
        version = ref.version
    else:
        raise NotPublishedError(
            f"{ref.name} {ref.version} is not published for {arch.value} in channel {channel!r}",
            _listing(newest_first, "versions"),
        )
    filename = image_filename(ref.name, version, arch)
    base = extension_url(catalog.base_url, ref.name, channel)
    return ResolvedImage(
        ref.name, version, arch, channel, filename, versions[version], f"{base}/{filename}"
    )


def fetch_keyring(catalog: Catalog) -> bytes:
    data = catalog.read(KEYRING_BINARY)
    if not data:
        raise SysextError(
            f"the registry serves no /{KEYRING_BINARY}",
            "use --keyring skip if hosts get the signing key another way",
        )
    return data


class HttpCatalog:
    """A registry (or any static copy of its public tree) reached over HTTP."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        if not re.match(r"https?://[^/]", base_url):
            raise SysextError(
                f"registry URL {base_url!r} is not http:// or https://",
                "e.g. --registry https://extensions.example.com",
            )
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"sysext/{__version__}"

    @property
    def base_url(self) -> str:
        return self._base

    def _get(self, path: str) -> requests.Response:
        url = f"{self._base}/{path}"
        try:
            return self._session.get(url, timeout=self._timeout)
        except requests.RequestException as exc:
            raise SysextError(
                f"cannot reach the registry at {self._base}: {type(exc).__name__}",
                "check --registry and that the registry is running",
            ) from None

    def read(self, path: str) -> bytes | None:
        response = self._get(path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise SysextError(
                f"GET {self._base}/{path}: HTTP {response.status_code}",
                "check --registry and the registry's logs",
            )
        return response.content

    def _api_json(self, path: str) -> object:
        # Best effort: a plain static mirror of the public tree has no JSON API.
        response = self._get(path)
        if response.status_code != 200:
            return None
        try:
            return json.loads(response.content)
        except ValueError:
            return None

    def extension_names(self, channel: str) -> list[str] | None:
        # The registry's GET /api/v1/extensions: [{"name": …, "channels": […]}, …]
        payload = self._api_json("api/v1/extensions")
        if not isinstance(payload, list):
            return None
        names: list[str] = []
        for item in payload:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return None
            channels = item.get("channels")
            if not isinstance(channels, list) or channel in channels:
                names.append(item["name"])
        return names

    def channel_names(self) -> list[str] | None:
        # The registry's GET /api/v1/status: {"channels": […], …}
        payload = self._api_json("api/v1/status")
        if isinstance(payload, dict) and isinstance(payload.get("channels"), list):
            return [str(c) for c in payload["channels"]]
        return None


class DirectoryCatalog:
    """A registry's materialized public tree on disk (what the registry itself serves)."""

    def __init__(
        self, public_dir: Path, base_url: str, channels: tuple[str, ...] | None = None
    ) -> None:
        self._public = public_dir
        self._base = base_url.rstrip("/")
        self._channels = channels

    @property
    def base_url(self) -> str:
        return self._base

    def read(self, path: str) -> bytes | None:
        target = self._public / path
        try:
            return target.read_bytes() if target.is_file() else None
        except OSError:
            return None

    def extension_names(self, channel: str) -> list[str] | None:
        # Only directories holding a manifest count: that is what a host could install.
        parent = (self._public / extension_url_path("x", channel)).parent
        if not parent.is_dir():
            return []
        return sorted(
            p.name
            for p in parent.iterdir()
            if _NAME.fullmatch(p.name) and (p / MANIFEST_NAME).is_file()
        )

    def channel_names(self) -> list[str] | None:
        found = {DEFAULT_CHANNEL, *(self._channels or ())}
        channels_dir = self._public / "channels"
        if channels_dir.is_dir():
            found.update(p.name for p in channels_dir.iterdir() if p.is_dir())
        return sorted(found)
