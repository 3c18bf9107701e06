"""Shell commands that install a registry extension on a running host, by hand.

The same steps a first-boot config takes (compose.py), for a host that is already up, in the
same places (compose.host_layout: Flatcar /opt/extensions + /etc/extensions, Fedora CoreOS
/var/lib/extensions.d + /var/lib/extensions): create the directories systemd-sysupdate does
not create itself (254 fails with "Failed to resolve" without the target directory), put the
transfer file and the registry key in place, let sysupdate download and verify the newest
image, then activate it the way the distributions document (a restart of
systemd-sysext.service; on Fedora CoreOS after enabling it and relabelling for SELinux).
"""

from __future__ import annotations

from sysext.core.urls import DEFAULT_CHANNEL, KEYRING_BINARY
from sysext.provision.compose import SYSUPDATE, host_layout, transfer_path
from sysext.provision.model import Variant
from sysext.systemd.transfer import KEYRING_PATH, TransferSpec, render_transfer

ACTIVATE = "systemctl restart systemd-sysext.service"


def host_commands(
    name: str,
    registry_url: str,
    *,
    channel: str = DEFAULT_CHANNEL,
    variant: Variant = Variant.FLATCAR,
    os_bound: bool = False,
    keyring: bool = True,
) -> str:
    """The commands, one per line, to run as root on the host.

    `os_bound`: the registry serves NAME per OS version (its transfer pattern holds `%w`).
    """
    base = registry_url.rstrip("/")
    layout = host_layout(name, variant)
    spec = TransferSpec(
        name=name,
        base_url=base,
        channel=channel,
        os_bound=os_bound,
        target_dir=layout.images_dir,
        current_symlink=layout.link,
    )
    conf = transfer_path(name)
    directories = [conf.rpartition("/")[0], spec.target_path, spec.symlink_path.rpartition("/")[0]]
    lines = [f"mkdir -p {' '.join(directories)}"]
    served = TransferSpec(name=name, base_url=base, channel=channel, os_bound=os_bound)
    if render_transfer(spec) == render_transfer(served):
        # The registry serves exactly this file beside the images.
        lines.append(f"curl -fsSo {conf} {spec.source_url}/{name}.conf")
    else:
        # Another layout than the served file's: write the transfer for this host's.
        lines.append(f"cat > {conf} <<'EOF'\n{render_transfer(spec).rstrip()}\nEOF")
    if keyring:
        # systemd-sysupdate 252-257 read only this file once it exists (spec §3.4).
        lines.append(
            f"curl -fsSo {KEYRING_PATH} {base}/{KEYRING_BINARY}   # replaces the vendor keyring"
        )
    lines.append(f"{SYSUPDATE} -C {name} update")
    if layout.relabel:
        # Files sysupdate wrote get their SELinux labels, as fedora-sysexts' steps do.
        lines.append(
            f"command -v restorecon >/dev/null && restorecon -RF {' '.join(layout.relabel)}"
        )
    if variant is Variant.FCOS:
        # Fedora CoreOS ships systemd-sysext.service disabled: nothing would merge at boot.
        lines.append("systemctl enable systemd-sysext.service")
    lines.append(ACTIVATE)
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
