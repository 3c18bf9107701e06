"""NAME[@VERSION] → the exact image a host should download, read from the sysupdate layout.

Resolution uses only what systemd-sysupdate itself sees: the extension directory's
`SHA256SUMS` (parsed as strictly as sysupdate, spec §3.3) and the registry key at
`/keyring.gpg`. That keeps provisioning independent of the registry's database: the CLI
reads the layout over HTTP, the registry reads the very same files from its public tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests

from sysext import __version__
from sysext.core.errors import SysextError
from sysext.core.urls import DEFAULT_CHANNEL, KEYRING_BINARY, extension_url, extension_url_path
from sysext.image.ddi import read_signature
from sysext.image.read import read_files
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import (
    BOUND_NAME_HINT,
    bound_name_problem,
    bound_version_id_problem,
    release_file_path,
)
from sysext.systemd.manifest import MANIFEST_NAME, ManifestEntry, ManifestError, parse_manifest
from sysext.systemd.osrelease import parse_os_release
from sysext.systemd.patterns import HostInfo, expand_specifiers, match_pattern
from sysext.systemd.transfer import TransferError, TransferSpec, image_file_name, parse_transfer
from sysext.systemd.versioning import sort_versions, version_problem

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
    # The host VERSION_ID an OS-bound image is built for (NAME-VERSION-VERSIONID-ARCH.raw,
    # followed with MatchPattern=NAME-@v-%w-%a.raw); None for images any OS version takes.
    os_version_id: str | None = None


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

    def release_fields(self, image: ResolvedImage) -> Mapping[str, str]:
        """The extension-release fields inside `image` (e.g. X_SYSEXT_REPLACES)."""
        ...

    def verity_signer(self, image: ResolvedImage) -> str | None:
        """SHA-256 of the certificate that signed `image`'s verity root hash; None for a
        plain (or unsigned) image. The registry checked the signature at upload; hosts
        check it again at every merge, so a configuration only needs the claim."""
        ...


def image_filename(name: str, version: str, arch: Architecture) -> str:
    return image_file_name(name, version, arch.value)


def served_os_bound(catalog: Catalog, name: str, channel: str) -> bool:
    """Whether the registry serves `name` per host OS version in `channel`.

    The registry's own transfer file (NAME.conf beside SHA256SUMS, written from
    `TransferSpec`) is the one place that says so: its pattern holds `%w` exactly when
    the images are NAME-VERSION-VERSIONID-ARCH.raw. A tree without one (a hand-made
    static copy) is read as unbound, the layout `sysext sign` writes.
    """
    data = catalog.read(f"{extension_url_path(name, channel)}/{name}.conf")
    if data is None:
        return False
    try:
        config = parse_transfer(data.decode("utf-8", errors="replace"))
    except TransferError:
        raise BrokenRegistryError(
            f"{name} ({channel}): the registry's {name}.conf is not a valid transfer file",
            "republish the extension so the registry rewrites it",
        ) from None
    return any("%w" in pattern for pattern in config.match_patterns("Source"))


@dataclass(frozen=True)
class _Published:
    version: str
    arch: Architecture
    os_version_id: str | None
    sha256: str


def _published(name: str, entries: list[ManifestEntry], os_bound: bool) -> list[_Published]:
    """The manifest's images as a host's transfer sees them.

    Each candidate split of a file name is confirmed with the transfer's own pattern,
    expanded for a host of that architecture (and VERSION_ID) and matched the way
    systemd-sysupdate matches it, so the version we pin is the version sysupdate will
    compare later (for `NAME-1.0-3975.2.0-x86-64.raw` that is `1.0`, never `1.0-3975.2.0`).
    """
    pattern = TransferSpec(name=name, base_url="http://registry", os_bound=os_bound).match_pattern
    prefix = f"{name}-"
    found: list[_Published] = []
    for entry in entries:
        filename = entry.filename
        if not filename.startswith(prefix) or not filename.endswith(".raw"):
            continue
        for arch in Architecture:
            suffix = f"-{arch.value}.raw"
            if not filename.endswith(suffix):
                continue
            middle = filename[len(prefix) : -len(suffix)]
            version_id: str | None = None
            if os_bound:
                middle, _, version_id = middle.rpartition("-")
                if not version_id or version_problem(version_id) is not None:
                    continue
                # A name with '-' in its version reads as another binding to other hosts
                # (bound_name_problem): the registry never publishes one, and no config
                # installs a file whose name means two things.
                if bound_name_problem(middle, version_id) is not None:
                    continue
            if not middle or version_problem(middle) is not None:
                continue
            host = HostInfo(arch=arch.value, os_release={"VERSION_ID": version_id or ""})
            match = match_pattern(expand_specifiers(pattern, host), filename, strict=True)
            if match is not None and match.version == middle:
                found.append(_Published(middle, arch, version_id, entry.sha256))
    return found


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
    os_version: str | None = None,
) -> ResolvedImage:
    """Pick the image of `ref` for `arch` in `channel`: the requested version or the newest.

    `os_version` is the host's os-release VERSION_ID. It is required for an extension the
    registry serves per OS version (its transfer pattern holds `%w`) and then selects the
    image built for exactly that VERSION_ID; other extensions fit every OS version and
    ignore it.
    """
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
    os_bound = served_os_bound(catalog, ref.name, channel)
    published = _published(ref.name, entries, os_bound)
    for_arch = [p for p in published if p.arch is arch]
    if not for_arch:
        arches = sorted({p.arch.value for p in published})
        raise NotPublishedError(
            f"{ref.name} has no {arch.value} image in channel {channel!r}",
            _listing(arches, "architectures"),
        )
    if os_bound:
        os_versions = sort_versions(
            {p.os_version_id for p in for_arch if p.os_version_id}, newest_first=True
        )
        if os_version is None:
            raise SysextError(
                f"{ref.name} is built per OS version: give the host's VERSION_ID",
                f"--os-version V (API: os_version=V); {arch.value} images exist for "
                + _listing(os_versions, "OS versions"),
            )
        problem = version_problem(os_version)
        if problem:
            raise SysextError(f"OS version {os_version!r}: {problem}", "e.g. 3975.2.0 or 42")
        problem = bound_version_id_problem(os_version)
        if problem:
            raise SysextError(f"OS version {os_version}: {problem}", BOUND_NAME_HINT)
        for_arch = [p for p in for_arch if p.os_version_id == os_version]
        if not for_arch:
            raise NotPublishedError(
                f"{ref.name} has no {arch.value} image for OS version {os_version} "
                f"in channel {channel!r}",
                _listing(os_versions, "OS versions"),
            )
    versions = {p.version: p for p in for_arch}
    newest_first = sort_versions(versions, newest_first=True)
    if ref.version is None:
        version = newest_first[0]
    elif ref.version in versions:
        version = ref.version
    else:
        where = f" for OS version {os_version}" if os_bound else ""
        raise NotPublishedError(
            f"{ref.name} {ref.version} is not published for {arch.value}{where} "
            f"in channel {channel!r}",
            _listing(newest_first, "versions"),
        )
    chosen = versions[version]
    filename = image_file_name(ref.name, version, arch.value, os_version_id=chosen.os_version_id)
    base = extension_url(catalog.base_url, ref.name, channel)
    return ResolvedImage(
        ref.name,
        version,
        arch,
        channel,
        filename,
        chosen.sha256,
        f"{base}/{filename}",
        chosen.os_version_id,
    )


def image_verity_signer(path: Path) -> str | None:
    """The certificate fingerprint a DDI's verity-sig partition names (None: plain image)."""
    signature = read_signature(path)
    return signature.certificate_fingerprint if signature is not None else None


def image_release_fields(path: Path, name: str) -> dict[str, str]:
    """extension-release.NAME of the image at `path`, parsed (a 64 KiB limit: untrusted)."""
    member = release_file_path(name).lstrip("/")
    data = read_files(path, [member], limit=64 * 1024)[member]
    return parse_os_release(data.decode("utf-8", errors="replace"), source=member)


def replaced_extensions(fields: Mapping[str, str]) -> tuple[str, ...]:
    """X_SYSEXT_REPLACES: the OS-shipped extensions an image replaces (space-separated)."""
    return tuple(fields.get("X_SYSEXT_REPLACES", "").split())


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
        # A registry's S3 bucket allows anonymous GetObject but not ListBucket, so a missing
        # key answers 403, not 404: hosts provisioned from the bucket's URL (`sysext butane
        # --registry BUCKET`) need the files a tree may lack (NAME.conf, /verity.crt when the
        # registry trusts no certificate) read as absent there too.
        if response.status_code in (403, 404):
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

    def _api_image(self, image: ResolvedImage) -> dict[str, object]:
        """The registry's GET /api/v1/extensions/NAME entry for `image`, {} without one."""
        payload = self._api_json(f"api/v1/extensions/{image.name}")
        images = payload.get("images") if isinstance(payload, dict) else None
        for item in images if isinstance(images, list) else []:
            if isinstance(item, dict) and item.get("filename") == image.filename:
                return item
        return {}

    def release_fields(self, image: ResolvedImage) -> Mapping[str, str]:
        # The registry's GET /api/v1/extensions/NAME lists each image's extension-release
        # fields (`release`, read at publish time); a plain static mirror has no API, and an
        # image published before the registry stored them has none, so then the image is
        # downloaded, checked against its SHA-256 and read here instead.
        release = self._api_image(image).get("release")
        if isinstance(release, dict):
            return {str(k): str(v) for k, v in release.items()}
        with self._downloaded(image) as path:
            return image_release_fields(path, image.name)

    def verity_signer(self, image: ResolvedImage) -> str | None:
        # The API says who signed (checked at upload); a registry predating DDIs has no
        # such field, and a static mirror no API: then the image itself is read.
        item = self._api_image(image)
        if "verity_signed_by" in item:
            signer = item["verity_signed_by"]
            return signer if isinstance(signer, str) else None
        with self._downloaded(image) as path:
            return image_verity_signer(path)

    @contextlib.contextmanager
    def _downloaded(self, image: ResolvedImage) -> Iterator[Path]:
        """The image in a temporary file, checked against its SHA256SUMS entry."""
        with tempfile.NamedTemporaryFile(prefix="sysext-image-", suffix=".raw") as tmp:
            digest = hashlib.sha256()
            try:
                with self._session.get(image.url, stream=True, timeout=self._timeout) as got:
                    if got.status_code != 200:
                        raise SysextError(
                            f"GET {image.url}: HTTP {got.status_code}",
                            "check --registry and the registry's logs",
                        )
                    for block in got.iter_content(1 << 20):
                        digest.update(block)
                        tmp.write(block)
            except requests.RequestException as exc:
                raise SysextError(
                    f"cannot download {image.url}: {type(exc).__name__}",
                    "check --registry and that the registry is running",
                ) from None
            tmp.flush()
            if digest.hexdigest() != image.sha256:
                raise BrokenRegistryError(
                    f"{image.url} does not match its SHA256SUMS entry",
                    "the registry's file changed; republish the extension",
                )
            yield Path(tmp.name)


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

    def public_path(self, url_path: str) -> Path:
        """Where URL path `url_path` (no leading slash) lives on disk."""
        return self._public / url_path

    def release_fields(self, image: ResolvedImage) -> Mapping[str, str]:
        path = self.public_path(extension_url_path(image.name, image.channel)) / image.filename
        return image_release_fields(path, image.name)

    def verity_signer(self, image: ResolvedImage) -> str | None:
        path = self.public_path(extension_url_path(image.name, image.channel)) / image.filename
        return image_verity_signer(path)

    def channel_names(self) -> list[str] | None:
        found = {DEFAULT_CHANNEL, *(self._channels or ())}
        channels_dir = self._public / "channels"
        if channels_dir.is_dir():
            found.update(p.name for p in channels_dir.iterdir() if p.is_dir())
        return sorted(found)
