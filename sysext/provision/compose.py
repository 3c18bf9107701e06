"""What a host needs to run verified extensions, as a `ProvisionConfig`.

Per extension: the image under /opt/extensions/NAME/ fetched with its SHA-256, the
activation link /etc/extensions/NAME.raw, and (unless updates are off) the sysupdate
transfer file (NAME.transfer and NAME.conf, or the one the host's systemd reads) plus a
dedicated update service and timer. Once: the registry's key as /etc/sysext/keyring.gpg with
the unit that keeps the vendor keys trusted (keyring_combine.py), and on Fedora CoreOS
`systemd-sysext.service` enabled.

Why a dedicated `sysext-update-NAME.service` instead of a drop-in for the stock
`systemd-sysupdate.service`: the stock unit runs `systemd-sysupdate update` over
/etc/sysupdate.d/, which fails with "No transfer definitions found" when only per-component
directories exist (spec §2.1: zero transfers is an error); a failing ExecStart also skips
every ExecStartPost. Today's workaround is a no-op transfer in /etc/sysupdate.d/. A unit per
component fails or succeeds on its own and needs no workaround.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sysext.core.errors import SysextError
from sysext.provision.keyring_combine import (
    UPDATE_SERVICE_ENVIRONMENT,
    UPDATE_UNIT_LINES,
    keyring_combine_files,
    keyring_combine_units,
)
from sysext.provision.keyring_update import keyring_update_files, keyring_update_units
from sysext.provision.model import (
    Dropin,
    File,
    IgnitionVersion,
    InlineContents,
    KeyringMode,
    Link,
    OnUpdate,
    ProvisionConfig,
    RemoteContents,
    Unit,
    Variant,
    check_versions,
)
from sysext.provision.resolve import ResolvedImage
from sysext.provision.rollout_identity import IDENTITY_UNIT, rollout_files
from sysext.provision.verity import (
    CONF_SYSTEMD,
    SYSEXT_UNIT,
    certificate_files,
    check_require_signed,
    policy_conf,
    policy_dropin,
    policy_note,
)
from sysext.systemd.transfer import (
    ACTIVATION_DIR,
    EXTENSIONS_DIR,
    SYSUPDATE,
    TransferSpec,
    render_transfer,
    transfer_file_names,
)

UPDATE_SCRIPT = "/etc/sysext/update-extension"
# systemd 262: `*.component` metadata files, systemd-sysupdate-notify-sysext.socket and
# EXTENSION_RESTART_UNITS= (NEWS 262; man sysupdate.components, systemd-sysext).
SYSTEMD_262 = 262
NOTIFY_SOCKET = "systemd-sysupdate-notify-sysext.socket"
# What each distribution documents for a new or changed image (Flatcar: "Supplying your
# sysext image from Ignition" in its systemd-sysext docs; fedora-sysexts: known issues).
ACTIVATION_DOCS = {
    Variant.FLATCAR: "https://www.flatcar.org/docs/latest/provisioning/sysext/",
    Variant.FCOS: "https://fedora-sysexts.github.io/known-issues.html",
}
# Flatcar's own extensions: built-in ones are switched off by a /dev/null link; optional
# ones (flatcar-NAME, enabled through /etc/flatcar/enabled-sysext.conf) by a `-NAME` line.
FLATCAR_OPTIONAL_PREFIX = "flatcar-"
FLATCAR_ENABLED_SYSEXT = "/etc/flatcar/enabled-sysext.conf"
_OS_EXTENSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SELINUX_RELABEL_UNIT = "sysext-relabel.service"


@dataclass(frozen=True)
class ProvisionOptions:
    variant: Variant = Variant.FLATCAR
    ignition_version: IgnitionVersion = IgnitionVersion.V3_3_0
    updates: bool = True
    on_update: OnUpdate = OnUpdate.RESTART
    keyring: KeyringMode = KeyringMode.COMBINE
    # Whether the update timer is enabled; None: the variant's default (Flatcar yes;
    # Fedora CoreOS no, see FCOS_NO_TIMER).
    timer: bool | None = None
    # The hosts' systemd major version, when known (--systemd-version): picks the transfer
    # file name and offers the 262 features. None: files every version 252+ reads.
    systemd_version: int | None = None
    # Staged rollouts (issue 21): each host derives its rollout identity at boot and
    # polls its bucket's directory (rollout_identity.py); `group` puts it in a group.
    rollout: bool = False
    group: str | None = None
    # Only signed verity DDIs merge (provision/verity.py); needs systemd_version.
    require_signed: bool = False

    @property
    def timer_enabled(self) -> bool:
        if self.timer is not None:
            return self.timer
        return self.variant is not Variant.FCOS


FCOS_NO_TIMER = (
    "Fedora CoreOS: the update timers are NOT enabled. The SELinux policy for "
    "systemd-importd, which systemd-sysupdate uses, is incomplete, so updates cannot run as "
    "a background service yet (fedora-sysexts known issues; selinux-policy PR 2604, issue "
    "2622). Update by hand as root: systemctl start sysext-update-NAME.service (it runs "
    "systemd-sysupdate with the right keyring and activates), or generate with --timer once "
    "the policy allows it."
)

# Fedora CoreOS rebases itself to each new Fedora release (its VERSION_ID changes), and an
# image bound to VERSION_ID then no longer merges (spec §1.3) until the host installs the
# image for its new VERSION_ID: only a running update timer does that.
FCOS_OS_BOUND_NOTE = (
    "Fedora CoreOS rebases to each new Fedora release by itself: the OS-bound images above "
    "stop merging at that moment and merge again once sysext-update-NAME.timer has installed "
    "the image for the new VERSION_ID (publish it before the rebase; sysext check --component "
    "NAME warns when none exists)."
)


@dataclass(frozen=True)
class HostLayout:
    """Where one variant keeps an extension's images and its activation link."""

    images_dir: str
    link: str
    relabel: tuple[str, ...] = ()


def host_layout(name: str, variant: Variant) -> HostLayout:
    if variant is Variant.FCOS:
        # fedora-sysexts' layout: versioned images in /var/lib/extensions.d, the active one
        # linked as /var/lib/extensions/NAME.raw. One directory per extension, because a
        # shared one lets `foo-@v-%a.raw` match foo-bar's images (@v takes "bar-1.0").
        return HostLayout(
            images_dir=f"/var/lib/extensions.d/{name}",
            link=f"/var/lib/extensions/{name}.raw",
            relabel=("/var/lib/extensions", "/var/lib/extensions.d"),
        )
    return HostLayout(images_dir=f"{EXTENSIONS_DIR}/{name}", link=f"{ACTIVATION_DIR}/{name}.raw")


def transfer_spec(image: ResolvedImage, registry_url: str, variant: Variant) -> TransferSpec:
    """The transfer that keeps `image` current; its paths are where the config puts it, so
    sysupdate recognizes the first-boot image as the installed version (pattern match in
    the target directory) and moves the same link (CurrentSymlink) on update."""
    layout = host_layout(image.name, variant)
    return TransferSpec(
        name=image.name,
        base_url=registry_url,
        channel=image.channel,
        os_bound=image.os_version_id is not None,
        target_dir=layout.images_dir,
        current_symlink=layout.link,
    )


def image_path(spec: TransferSpec, image: ResolvedImage) -> str:
    return f"{spec.target_path}/{image.filename}"


def transfer_dir(name: str) -> str:
    # Per-component directory, used by `systemd-sysupdate --component=NAME` (spec §2.1).
    return f"/etc/sysupdate.{name}.d"


def transfer_paths(name: str, systemd_version: int | None = None) -> tuple[str, ...]:
    """Where the transfer goes: NAME.transfer and NAME.conf with the same text unless the
    host's systemd version is known (see transfer.transfer_file_names)."""
    return tuple(
        f"{transfer_dir(name)}/{file}" for file in transfer_file_names(name, systemd_version)
    )


def component_path(name: str) -> str:
    # sysupdate.components(5): /etc/sysupdate.COMPONENT.component (systemd 262).
    return f"/etc/sysupdate.{name}.component"


def component_file(name: str, registry_url: str) -> str:
    # Documentation= is specifier-expanded: a literal '%' must be '%%'.
    url = f"{registry_url.rstrip('/')}/extensions/{name}".replace("%", "%%")
    return (
        "# Generated by sysext butane: what `systemd-sysupdate components` and updatectl show\n"
        "# for this extension (systemd 262, sysupdate.components(5)).\n"
        "[Component]\n"
        f"Description=System extension {name} (sysext registry)\n"
        f"Documentation={url}\n"
    )


def update_unit_name(name: str, suffix: str) -> str:
    return f"sysext-update-{name}.{suffix}"


UPDATE_SCRIPT_TEXT = """\
#!/bin/sh
# Generated by sysext butane: update one system extension with systemd-sysupdate and
# activate a new image the way the distribution documents.
#
#   update-extension NAME LINK ACTIVATION [RELABEL_PATH...]
#
# ACTIVATION: restart (systemctl restart systemd-sysext.service), refresh
# (systemd-sysext refresh), reboot-marker (touch /run/reboot-required) or notify (systemd
# 262+: sysupdate itself tells systemd-sysupdate-notify-sysext.socket, nothing to do here).
# After restart/refresh on systemd < 262, which ignores them, the units the image lists in
# EXTENSION_RESTART_UNITS= / EXTENSION_RELOAD_OR_RESTART_UNITS= are restarted here.
# Exit status, also the unit's:
#   0   a newer image was installed and activated, or nothing newer is published
#       (the journal says which);
#   64  wrong arguments;
#   65  the new image is installed but activating it failed;
#   any other: systemd-sysupdate's own status. The download, the signature or keyring
#       check, or the registry failed; its reason is in the journal right above.
# `check-new` is not used to skip: it exits 1 for "nothing newer" and for every error.
set -u
if [ $# -lt 3 ]; then
    echo "usage: $0 NAME LINK ACTIVATION [RELABEL_PATH...]" >&2
    exit 64
fi
name=$1
link=$2
activation=$3
shift 3
case $activation in
    restart|refresh|reboot-marker|notify) ;;
    *) echo "$name: unknown activation '$activation'" >&2; exit 64 ;;
esac
sysupdate=${SYSEXT_SYSUPDATE:-/usr/lib/systemd/systemd-sysupdate}
before=$(readlink "$link" 2>/dev/null || true)
"$sysupdate" --component="$name" update
status=$?
if [ "$status" -ne 0 ]; then
    echo "$name: update FAILED: systemd-sysupdate exited with status $status" \\
        "(reason above; sysext check --component $name explains it)" >&2
    exit "$status"
fi
after=$(readlink "$link" 2>/dev/null || true)
if [ "$before" = "$after" ]; then
    echo "$name: up to date (${after##*/}), nothing newer is published"
    exit 0
fi
if [ $# -gt 0 ] && [ -e /sys/fs/selinux/enforce ] && command -v restorecon >/dev/null; then
    # Files sysupdate wrote get their SELinux labels from the policy, as fedora-sysexts does.
    restorecon -RF "$@" || echo "$name: restorecon $* failed" >&2
fi
was=${before##*/}
echo "$name: installed ${after##*/} (was ${was:-nothing}), activating: $activation"
case $activation in
    restart) systemctl restart systemd-sysext.service ;;
    refresh) systemd-sysext refresh ;;
    reboot-marker) touch /run/reboot-required ;;
    notify) true ;;
esac
status=$?
if [ "$status" -ne 0 ]; then
    echo "$name: ${after##*/} is installed but activating it FAILED ($activation: $status)" >&2
    exit 65
fi
case $activation in restart|refresh) ;; *) exit 0 ;; esac
version=$("$sysupdate" --version 2>/dev/null | awk 'NR == 1 { print $2 }')
version=${version%%[!0-9]*}
# systemd-sysext 262+ restarts these units itself (src/sysext/sysext.c, restart_units()).
[ -n "$version" ] && [ "$version" -lt 262 ] || exit 0
release=${SYSEXT_USR:-/usr}/lib/extension-release.d/extension-release.$name
[ -r "$release" ] || exit 0
field() { sed -n "s/^$1=//p" "$release" | tail -n 1 | tr -d "\\"'"; }
restart=$(field EXTENSION_RESTART_UNITS)
reload=$(field EXTENSION_RELOAD_OR_RESTART_UNITS)
[ -n "$restart$reload" ] || exit 0
# The unit files may be new or changed (systemd 254 ignores EXTENSION_RELOAD_MANAGER=).
systemctl daemon-reload
for unit in $restart; do
    echo "$name: restarting $unit (EXTENSION_RESTART_UNITS)"
    systemctl restart "$unit" || echo "$name: restarting $unit FAILED" >&2
done
for unit in $reload; do
    case " $restart " in *" $unit "*) continue ;; esac
    echo "$name: reloading or restarting $unit (EXTENSION_RELOAD_OR_RESTART_UNITS)"
    systemctl reload-or-restart "$unit" || echo "$name: reloading $unit FAILED" >&2
done
exit 0
"""


def update_service(
    name: str,
    on_update: OnUpdate,
    variant: Variant,
    *,
    keyring: KeyringMode = KeyringMode.COMBINE,
    after: str | None = None,
) -> str:
    """`after`: a unit that writes the transfer file first (rollout identity)."""
    layout = host_layout(name, variant)
    ordering = f"Wants={after}\nAfter={after}\n" if after else ""
    argv = " ".join((UPDATE_SCRIPT, name, layout.link, on_update.value, *layout.relabel))
    keyring_unit = [f"{line}\n" for line in UPDATE_UNIT_LINES]
    keyring_service = [
        "# systemd-pull 262+ verifies with this keyring alone; older ones ignore the variable\n"
        "# and read the combined /etc/systemd/import-pubring.gpg (sysext-keyring.service).\n",
        f"{UPDATE_SERVICE_ENVIRONMENT}\n",
    ]
    combine = keyring is KeyringMode.COMBINE
    return "".join(
        [
            f"# Generated by sysext butane: update the {name} system extension.\n"
            "# systemd-sysupdate downloads, verifies and links a newer image;\n"
            f"# {UPDATE_SCRIPT} activates it ({on_update.value}) only\n"
            "# when the link moved. Exit 0: updated, or nothing newer (a clean skip). Any\n"
            "# other status is a failed unit: download, signature, keyring or registry trouble,\n"
            "# with systemd-sysupdate's reason in the journal.\n"
            "[Unit]\n"
            f"Description=Update the {name} system extension\n"
            f"Documentation=man:systemd-sysupdate(8) {ACTIVATION_DOCS[variant]}\n"
            "Wants=network-online.target\n"
            "After=network-online.target\n",
            ordering,
            *(keyring_unit if combine else []),
            f"ConditionPathIsDirectory={transfer_dir(name)}\n"
            "# Not every image ships sysupdate (optional in systemd builds): skip, not fail.\n"
            f"ConditionPathExists={SYSUPDATE}\n"
            "\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"SyslogIdentifier=sysext-update-{name}\n",
            *(keyring_service if combine else []),
            f"ExecStart=/bin/sh {argv}\n",
        ]
    )


def update_timer(name: str) -> str:
    return (
        f"# Generated by sysext butane: look for {name} updates a while after boot, then\n"
        "# every 6 hours, spread out so a fleet does not hit the registry at once.\n"
        "# OnCalendar= rather than OnUnitActiveSec=: the latter stops re-arming once a start\n"
        "# is skipped by a failed Condition (e.g. no sysupdate on the image).\n"
        "[Unit]\n"
        f"Description=Look for updates of the {name} system extension\n"
        "\n"
        "[Timer]\n"
        "OnBootSec=15min\n"
        "OnCalendar=*-*-* 00/6:00:00\n"
        "RandomizedDelaySec=1h\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def relabel_unit(paths: Sequence[str]) -> str:
    return (
        "# Generated by sysext butane: give the extension images the SELinux labels the\n"
        "# policy expects before systemd-sysext merges them (as fedora-sysexts does with\n"
        "# restorecon after installing). Skipped on hosts without SELinux.\n"
        "[Unit]\n"
        "Description=Relabel system extension images for SELinux\n"
        "DefaultDependencies=no\n"
        "After=local-fs.target\n"
        "Before=systemd-sysext.service\n"
        "ConditionSecurity=selinux\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart=/usr/sbin/restorecon -RF {' '.join(paths)}\n"
        "\n"
        "[Install]\n"
        "WantedBy=systemd-sysext.service\n"
    )


def os_extension_masks(
    images: Sequence[ResolvedImage], replaces: Mapping[str, Sequence[str]]
) -> tuple[list[Link], list[str], list[str]]:
    """Flatcar's own extensions each image replaces, switched off as Flatcar documents:
    (links to /dev/null, `-NAME` lines for enabled-sysext.conf, notes)."""
    links: list[Link] = []
    disabled: list[str] = []
    notes: list[str] = []
    for image in images:
        for os_name in replaces.get(image.name, ()):
            if not _OS_EXTENSION.fullmatch(os_name):
                raise SysextError(
                    f"{image.name}: X_SYSEXT_REPLACES names {os_name!r}, not an extension name",
                    "fix the recipe's `replaces` and rebuild the image",
                )
            if os_name.startswith(FLATCAR_OPTIONAL_PREFIX):
                short = os_name[len(FLATCAR_OPTIONAL_PREFIX) :]
                if short not in disabled:
                    disabled.append(short)
                    notes.append(
                        f"{image.name} replaces Flatcar's {os_name}: -{short} in "
                        f"{FLATCAR_ENABLED_SYSEXT}"
                    )
            elif all(link.path != f"{ACTIVATION_DIR}/{os_name}.raw" for link in links):
                links.append(Link(f"{ACTIVATION_DIR}/{os_name}.raw", "/dev/null", overwrite=True))
                notes.append(f"{image.name} replaces Flatcar's {os_name}: masked with /dev/null")
    return links, disabled, notes


def _described(image: ResolvedImage) -> str:
    bound = f", for VERSION_ID={image.os_version_id} hosts" if image.os_version_id else ""
    return f"{image.arch.value}, channel {image.channel}{bound}"


def compose_config(
    images: Sequence[ResolvedImage],
    *,
    registry_url: str,
    keyring: bytes | None,
    options: ProvisionOptions,
    replaces: Mapping[str, Sequence[str]] | None = None,
    verity_certs: Sequence[tuple[str, bytes]] = (),
) -> ProvisionConfig:
    """The config installing `images`; `keyring` is the registry's binary public key;
    `replaces` maps an image's name to the OS-shipped extensions it replaces (its
    X_SYSEXT_REPLACES), which the Flatcar variant switches off; `verity_certs`:
    (fingerprint, PEM) of the registry's verity certificates, for /etc/verity.d/."""
    check_versions(options.variant, options.ignition_version)
    check_require_signed(options.require_signed, options.systemd_version, options.on_update)
    names = [image.name for image in images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SysextError(
            f"extension {duplicates[0]!r} requested more than once",
            "a host activates one version per extension (one /etc/extensions/NAME.raw)",
        )
    files: list[File] = []
    links: list[Link] = []
    units: list[Unit] = []
    notes = [
        "Generated by `sysext butane`; versions and hashes were resolved at generation time:",
        *(f"  {i.name} {i.version} ({_described(i)})" for i in images),
    ]
    specs = [transfer_spec(image, registry_url, options.variant) for image in images]
    if options.rollout or options.group:
        specs = [dataclasses.replace(spec, group=options.group) for spec in specs]
    for spec, image in zip(specs, images, strict=True):
        files.append(File(image_path(spec, image), RemoteContents(image.url, image.sha256)))
        # The activation name (link name) is what systemd-sysext matches the release file
        # against (spec §1.2), whatever versioned file the link points to.
        links.append(Link(spec.symlink_path, image_path(spec, image)))
    if options.variant is Variant.FLATCAR and replaces:
        masks, disabled, mask_notes = os_extension_masks(images, replaces)
        links += masks
        notes += mask_notes
        if disabled:
            text = "".join(f"-{name}\n" for name in disabled)
            files.append(File(FLATCAR_ENABLED_SYSEXT, InlineContents(text.encode())))
    bound = [image.name for image in images if image.os_version_id is not None]
    following = options.updates and options.timer_enabled
    if options.variant is Variant.FCOS and bound and not following:
        raise SysextError(
            f"{bound[0]} is built for one Fedora VERSION_ID, but Fedora CoreOS rebases to each "
            "new Fedora release by itself and this config has no running update timer: the "
            "extension would silently stop merging after the rebase",
            "build it --os _any (static binaries) or generate with --timer (the update unit then "
            "installs the image for the new VERSION_ID; it needs an SELinux policy that lets "
            "systemd-sysupdate run as a service)",
        )
    version = options.systemd_version
    if options.on_update is OnUpdate.NOTIFY and (version is None or version < SYSTEMD_262):
        raise SysextError(
            "--on-update notify needs systemd 262 (systemd-sysupdate-notify-sysext.socket)",
            "give --systemd-version 262 if the hosts run it, else use restart",
        )
    if options.updates:
        files.append(File(UPDATE_SCRIPT, InlineContents(UPDATE_SCRIPT_TEXT.encode()), 0o755))
        managed = options.rollout or options.group is not None
        if managed:
            rollout_files_, rollout_units = rollout_files(specs)
            files += rollout_files_
            units += rollout_units
            notes.append(
                "Staged rollouts: each host derives its rollout ID from its machine ID at boot "
                f"({IDENTITY_UNIT}) and polls its bucket's directory"
                + (f" in group {options.group}" if options.group else "")
                + "; `sysext transfer NAME --registry URL --host-id ID` shows its file."
            )
        for spec, image in zip(specs, images, strict=True):
            if not managed:
                text = render_transfer(spec)
                for path in transfer_paths(image.name, version):
                    files.append(File(path, InlineContents(text.encode())))
            if version is not None and version >= SYSTEMD_262:
                component = component_file(image.name, registry_url)
                files.append(File(component_path(image.name), InlineContents(component.encode())))
            units.append(
                Unit(
                    update_unit_name(image.name, "service"),
                    contents=update_service(
                        image.name,
                        options.on_update,
                        options.variant,
                        keyring=options.keyring,
                        after=IDENTITY_UNIT if managed else None,
                    ),
                )
            )
            units.append(
                Unit(
                    update_unit_name(image.name, "timer"),
                    contents=update_timer(image.name),
                    enabled=options.timer_enabled,
                )
            )
        if options.on_update is OnUpdate.NOTIFY:
            # sysupdate 262 notifies it after installing; it runs systemd-sysext, which
            # honours EXTENSION_RESTART_UNITS= (units/systemd-sysupdate-notify-sysext.socket).
            units.append(Unit(NOTIFY_SOCKET, enabled=True))
        if not options.timer_enabled:
            notes.append(
                FCOS_NO_TIMER
                if options.variant is Variant.FCOS and options.timer is None
                else "The update timers are not enabled (--no-timer): "
                "systemctl start sysext-update-NAME.service updates by hand."
            )
        elif options.variant is Variant.FCOS and bound:
            notes.append(FCOS_OS_BOUND_NOTE)
        if options.keyring is KeyringMode.COMBINE:
            if keyring is None:
                raise ValueError("keyring bytes are required with KeyringMode.COMBINE")
            files += keyring_combine_files(keyring)
            units += keyring_combine_units()
            # The registry keyring then follows the registry's key rotations (issue 14).
            files += keyring_update_files()
            units += keyring_update_units(registry_url)
    files += certificate_files(verity_certs)
    sysext_dropins: tuple[Dropin, ...] = ()
    if options.require_signed and options.systemd_version is not None:
        if options.systemd_version >= CONF_SYSTEMD:
            files.append(policy_conf())
        else:
            sysext_dropins = (policy_dropin(),)
        notes.append(policy_note(options.systemd_version))
    if options.variant is Variant.FCOS:
        # Fedora CoreOS ships systemd-sysext.service disabled; Flatcar enables it.
        units.append(Unit(SYSEXT_UNIT, enabled=True, dropins=sysext_dropins))
    elif sysext_dropins:
        units.append(Unit(SYSEXT_UNIT, dropins=sysext_dropins))
    if options.variant is Variant.FCOS:
        relabel = host_layout(images[0].name, Variant.FCOS).relabel if images else ()
        if relabel:
            units.append(Unit(SELINUX_RELABEL_UNIT, contents=relabel_unit(relabel), enabled=True))
    return ProvisionConfig(
        variant=options.variant,
        ignition_version=options.ignition_version,
        files=tuple(files),
        links=tuple(links),
        units=tuple(units),
        notes=tuple(notes),
    )
