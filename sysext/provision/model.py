"""The one internal model of a provisioning config.

Butane YAML and Ignition JSON are both rendered from a `ProvisionConfig`, so the two can
never disagree about which files, links and units a host gets. The model only holds what
this project generates: files (fetched with a hash, or inline bytes), symlinks, and systemd
units with drop-ins.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypeVar

from sysext.core.errors import SysextError

E = TypeVar("E", bound=enum.Enum)


class Variant(enum.Enum):
    """Butane variant, i.e. which distribution's conventions the config follows."""

    FLATCAR = "flatcar"
    FCOS = "fcos"


class IgnitionVersion(enum.Enum):
    V3_3_0 = "3.3.0"
    V3_4_0 = "3.4.0"
    V3_5_0 = "3.5.0"
    V3_6_0 = "3.6.0"

    def butane_version(self, variant: Variant) -> str:
        """The Butane spec version of `variant` that transpiles to this Ignition version."""
        return _BUTANE_VERSIONS[(variant, self)]


# Butane's stable specs and the Ignition spec each emits (Butane docs, "Config versions";
# release notes): fcos 1.6.0 → 3.5.0 and fcos 1.7.0 → 3.6.0 (Butane 0.27.0) are stable. Butane
# has no stable flatcar spec past 1.1.0 (flatcar 1.2.0 is still `-experimental` in coreos/butane
# docs/config-flatcar-v1_2-exp.md), so Flatcar + 3.5.0/3.6.0 is refused with that reason.
_BUTANE_VERSIONS: dict[tuple[Variant, IgnitionVersion], str] = {
    (Variant.FLATCAR, IgnitionVersion.V3_3_0): "1.0.0",
    (Variant.FLATCAR, IgnitionVersion.V3_4_0): "1.1.0",
    (Variant.FCOS, IgnitionVersion.V3_3_0): "1.4.0",
    (Variant.FCOS, IgnitionVersion.V3_4_0): "1.5.0",
    (Variant.FCOS, IgnitionVersion.V3_5_0): "1.6.0",
    (Variant.FCOS, IgnitionVersion.V3_6_0): "1.7.0",
}


def check_versions(variant: Variant, ignition: IgnitionVersion) -> None:
    """Refuse a variant/spec pair no stable Butane spec produces."""
    if (variant, ignition) not in _BUTANE_VERSIONS:
        known = ", ".join(sorted(i.value for (v, i) in _BUTANE_VERSIONS if v is variant))
        raise SysextError(
            f"Butane has no stable {variant.value} spec for Ignition {ignition.value}",
            f"use --ignition-version {known.split(', ')[-1]} for {variant.value} (stable: {known})",
        )


def butane_versions(variant: Variant) -> list[str]:
    return sorted(b for (v, _), b in _BUTANE_VERSIONS.items() if v is variant)


def ignition_version_of_butane(variant: str, version: str) -> IgnitionVersion | None:
    """Which Ignition spec a Butane `variant`/`version` pair produces, if we know it."""
    for (v, ign), butane in _BUTANE_VERSIONS.items():
        if v.value == variant and butane == version:
            return ign
    return None


class OnUpdate(enum.Enum):
    """What happens after systemd-sysupdate installed a newer image (before 262 it never
    activates it; 262 notifies `systemd-sysupdate-notify-sysext.socket` if enabled).

    RESTART is what Flatcar documents (`systemctl restart systemd-sysext`, flatcar.org
    "Systemd-sysext"; before Flatcar 4628 this also runs ensure-sysext.service, which reloads
    units) and what fedora-sysexts' known issues say for Fedora 41. REFRESH (`systemd-sysext
    refresh`) is what the sysext-bakery README offers besides a reboot. Only Flatcar's page
    advises against a manual refresh. NOTIFY (systemd 262+) leaves activation to systemd:
    sysupdate tells `systemd-sysupdate-notify-sysext.socket`, which runs systemd-sysext.
    After RESTART and REFRESH the update script restarts the units the image lists in
    EXTENSION_RESTART_UNITS= / EXTENSION_RELOAD_OR_RESTART_UNITS= itself on systemd < 262,
    where systemd-sysext ignores those keys.
    """

    RESTART = "restart"
    REFRESH = "refresh"
    REBOOT_MARKER = "reboot-marker"
    NOTIFY = "notify"


class KeyringMode(enum.Enum):
    """How the config makes systemd-sysupdate trust the registry key.

    COMBINE keeps the host's own (vendor) keys trusted for every systemd version: the key goes
    to /etc/sysext/keyring.gpg; on 252–261 a unit rebuilds /etc/systemd/import-pubring.gpg
    from the vendor keyring plus that file before every update and at boot; on 262 the update
    units pass it as $SYSTEMD_OPENPGP_KEYRING and /etc/systemd is left alone
    (keyring_combine.py). SKIP installs no key at all. The former REPLACE (the registry key
    alone as /etc/systemd/import-pubring.gpg) broke the OS's own sysupdate updates on
    252–261 and is refused.
    """

    COMBINE = "combine"
    SKIP = "skip"


REMOVED_KEYRING_MODES = {
    "replace": (
        "--keyring replace is gone: it made the registry key the only trusted key and broke "
        "the OS's own systemd-sysupdate updates",
        "use --keyring combine (the default): the vendor keys stay trusted",
    )
}


def parse_enum(cls: type[E], text: str, what: str) -> E:
    """`cls(text)` with a one-line error that lists the accepted values."""
    for member in cls:
        if member.value == text:
            return member
    if cls is KeyringMode and text in REMOVED_KEYRING_MODES:
        raise SysextError(*REMOVED_KEYRING_MODES[text])
    accepted = ", ".join(str(m.value) for m in cls)
    raise SysextError(f"unknown {what} {text!r}", f"use one of: {accepted}")


@dataclass(frozen=True)
class RemoteContents:
    """File contents Ignition downloads and checks against a SHA-256 digest."""

    url: str
    sha256: str


@dataclass(frozen=True)
class InlineContents:
    """File contents embedded in the config (a `data:` URL in Ignition)."""

    data: bytes

    @property
    def is_text(self) -> bool:
        try:
            self.data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True


@dataclass(frozen=True)
class File:
    path: str
    contents: RemoteContents | InlineContents
    mode: int = 0o644
    # Shown above the entry in Butane output (Ignition JSON has no comments).
    comment: str | None = None


@dataclass(frozen=True)
class Link:
    path: str
    target: str
    hard: bool = False
    # True replaces what the OS image already has at `path` (e.g. Flatcar's
    # /etc/extensions/docker-flatcar.raw); Ignition's default (false) would fail the boot.
    overwrite: bool = False


@dataclass(frozen=True)
class Dropin:
    name: str
    contents: str


@dataclass(frozen=True)
class Unit:
    """A systemd unit: new `contents`, and/or `enabled`, and/or drop-ins for an existing one."""

    name: str
    contents: str | None = None
    enabled: bool | None = None
    dropins: tuple[Dropin, ...] = ()


@dataclass(frozen=True)
class ProvisionConfig:
    variant: Variant
    ignition_version: IgnitionVersion
    files: tuple[File, ...] = ()
    links: tuple[Link, ...] = ()
    units: tuple[Unit, ...] = ()
    # Shown as YAML comments on top of the Butane output (JSON has no comments).
    notes: tuple[str, ...] = field(default=())

    @property
    def butane_version(self) -> str:
        return self.ignition_version.butane_version(self.variant)
