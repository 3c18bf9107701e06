"""Shell commands that install a registry extension on a running host, by hand.

The same steps a first-boot config takes (compose.py), for a host that is already up:
create the directories systemd-sysupdate does not create itself (254 fails with "Failed to
resolve" without the target directory), fetch the transfer file and the registry key, let
sysupdate download and verify the newest image, then merge it. Paths come from the same
constants the configs use, so both install into the same places.
"""

from __future__ import annotations

from sysext.provision.compose import SYSUPDATE, transfer_path
from sysext.provision.model import Variant
from sysext.transfer import KEYRING_PATH, TransferSpec
from sysext.urls import DEFAULT_CHANNEL, KEYRING_BINARY


def host_commands(
    name: str,
    registry_url: str,
    *,
    channel: str = DEFAULT_CHANNEL,
    variant: Variant = Variant.FLATCAR,
    keyring: bool = True,
) -> str:
    """The commands, one per line, to run as root on the host."""
    spec = TransferSpec(name=name, base_url=registry_url.rstrip("/"), channel=channel)
    conf = transfer_path(name)
    directories = [conf.rpartition("/")[0], spec.target_path, spec.symlink_path.rpartition("/")[0]]
    lines = [
        f"mkdir -p {' '.join(directories)}",
        f"curl -fsSo {conf} {spec.source_url}/{name}.conf",
    ]
    if keyring:
        # systemd-sysupdate reads only this file once it exists (spec §3.4).
        lines.append(
            f"curl -fsSo {KEYRING_PATH} {spec.base_url}/{KEYRING_BINARY}"
            "   # replaces the vendor keyring"
        )
    lines.append(f"{SYSUPDATE} -C {name} update")
    if variant is Variant.FCOS:
        # Fedora CoreOS ships systemd-sysext.service disabled: without it nothing is merged
        # at the next boot.
        lines.append("systemctl enable systemd-sysext.service")
    lines.append("systemd-sysext refresh")
    return "\n".join(lines) + "\n"


def verify_commands(
    name: str,
    registry_url: str,
    *,
    channel: str = DEFAULT_CHANNEL,
    filename: str | None = None,
    fingerprint: str | None = None,
) -> str:
    """Commands that check, from any machine, what a registry serves for `name`.

    The key's fingerprint (compare it with one obtained another way), the signature of the
    manifest with gpg the way systemd-sysupdate runs it and with sqv, the image's hash, and
    `sysext check`, which reads the directory exactly as a host would.
    """
    base = registry_url.rstrip("/")
    directory = TransferSpec(name=name, base_url=base, channel=channel).source_url
    show = "gpg --show-keys keyring.gpg"
    lines = [
        f"curl -fsSO {base}/{KEYRING_BINARY}",
        f"{show}   # fingerprint {fingerprint}" if fingerprint else show,
        f"curl -fsS -O {directory}/SHA256SUMS -O {directory}/SHA256SUMS.gpg",
        "gpg --no-default-keyring --keyring ./keyring.gpg --verify SHA256SUMS.gpg SHA256SUMS",
        "sqv --keyring keyring.gpg SHA256SUMS.gpg SHA256SUMS",
    ]
    if filename:
        lines.append(f"curl -fsSO {directory}/{filename}")
        lines.append("sha256sum --check --ignore-missing SHA256SUMS")
    lines.append(f"sysext check {directory} --keyring keyring.gpg")
    return "\n".join(lines) + "\n"
