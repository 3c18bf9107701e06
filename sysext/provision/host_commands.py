"""Shell commands that install a registry extension on a running host, by hand.

The same steps a first-boot config takes (compose.py), for a host that is already up, in the
same places (compose.host_layout: Flatcar /opt/extensions + /etc/extensions, Fedora CoreOS
/var/lib/extensions.d + /var/lib/extensions): create the directories systemd-sysupdate does
not create itself (254 fails with "Failed to resolve" without the target directory), put the
transfer file (NAME.transfer and NAME.conf: 257+ read the first, 252–256 the second) and the
registry key in place, keep the vendor keys trusted (keyring_combine.py: the same script and
units the configs install), let sysupdate download and verify the newest image, then activate
it the way the distributions document (a restart of systemd-sysext.service; on Fedora CoreOS
after enabling it and relabelling for SELinux).
"""

from __future__ import annotations

from sysext.core.urls import DEFAULT_CHANNEL, KEYRING_BINARY
from sysext.provision.compose import host_layout, transfer_dir
from sysext.provision.keyring_combine import (
    DROPIN_NAME,
    PATH_UNIT,
    PATH_UNIT_TEXT,
    SCRIPT,
    SCRIPT_PATH,
    SERVICE,
    SERVICE_UNIT,
    STOCK_DROPIN,
    STOCK_UNITS,
)
from sysext.provision.model import Variant
from sysext.systemd.transfer import (
    REGISTRY_KEYRING_PATH,
    SYSUPDATE,
    TransferSpec,
    render_transfer,
    transfer_file_names,
)

ACTIVATE = "systemctl restart systemd-sysext.service"
UNIT_DIR = "/etc/systemd/system"


def _heredoc(path: str, text: str) -> str:
    return f"cat > {path} <<'EOF'\n{text.rstrip()}\nEOF"


def keyring_commands(registry_url: str) -> list[str]:
    """Install the registry key without replacing the vendor keyring (keyring_combine.py)."""
    base = registry_url.rstrip("/")
    lines = [
        f"curl -fsSo {REGISTRY_KEYRING_PATH} {base}/{KEYRING_BINARY}",
        _heredoc(SCRIPT_PATH, SCRIPT),
        f"chmod 0755 {SCRIPT_PATH}",
        _heredoc(f"{UNIT_DIR}/{SERVICE}", SERVICE_UNIT),
        _heredoc(f"{UNIT_DIR}/{PATH_UNIT}", PATH_UNIT_TEXT),
    ]
    for unit in STOCK_UNITS:
        lines.append(f"mkdir -p {UNIT_DIR}/{unit}.d")
        lines.append(_heredoc(f"{UNIT_DIR}/{unit}.d/{DROPIN_NAME}", STOCK_DROPIN))
    lines += [
        f"systemctl enable {SERVICE} {PATH_UNIT}",
        # 252-261: vendor keys + registry key in /etc/systemd/import-pubring.gpg; 262: nothing.
        SCRIPT_PATH,
    ]
    return lines


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
    directories = [transfer_dir(name), spec.target_path, spec.symlink_path.rpartition("/")[0]]
    if keyring:
        directories.append(REGISTRY_KEYRING_PATH.rpartition("/")[0])
    lines = [f"mkdir -p {' '.join(directories)}"]
    served = TransferSpec(name=name, base_url=base, channel=channel, os_bound=os_bound)
    for file_name in transfer_file_names(name, None):
        path = f"{transfer_dir(name)}/{file_name}"
        if render_transfer(spec) == render_transfer(served):
            # The registry serves exactly this file beside the images.
            lines.append(f"curl -fsSo {path} {spec.source_url}/{file_name}")
        else:
            # Another layout than the served file's: write the transfer for this host's.
            lines.append(_heredoc(path, render_transfer(spec)))
    if keyring:
        lines += keyring_commands(base)
        # systemd-pull 262+ verifies with this keyring alone; older versions ignore it.
        lines.append(
            f"SYSTEMD_OPENPGP_KEYRING={REGISTRY_KEYRING_PATH} {SYSUPDATE} -C {name} update"
        )
    else:
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
