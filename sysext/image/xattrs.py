"""Extended attributes in images: which ones grant privileges, and what a capability grants.

Both image writers drop xattrs, so anything found here came from another builder. Two
namespaces change what the kernel does with a file and can be set only by root:
`security.*` (file capabilities — `security.capability` gives a program privileges on
exec exactly like a setuid bit —, SELinux/SMACK/IMA labels) and `trusted.*` (overlayfs
reads `trusted.overlay.opaque`, `.redirect`, `.metacopy` in lower layers, and
systemd-sysext merges images as overlayfs lower layers: an opaque directory hides the
host's). `user.*` and POSIX ACLs grant nothing beyond what the mode bits already allow in
a read-only, root-owned tree.
"""

from __future__ import annotations

import struct

PRIVILEGED_PREFIXES = ("security.", "trusted.")
CAPABILITY = "security.capability"

# linux/capability.h, by bit number.
CAPABILITY_NAMES = (
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid",
    "cap_kill", "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable",
    "cap_net_bind_service", "cap_net_broadcast", "cap_net_admin", "cap_net_raw",
    "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot",
    "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice",
    "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
    "cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override",
    "cap_mac_admin", "cap_syslog", "cap_wake_alarm", "cap_block_suspend", "cap_audit_read",
    "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
)  # fmt: skip


def is_privileged(name: str) -> bool:
    return name.startswith(PRIVILEGED_PREFIXES)


def describe_capability(value: bytes) -> str:
    """`security.capability` in setcap's notation (e.g. `cap_setgid,cap_setuid=ep`), from
    struct vfs_cap_data: magic and revision (effective flag in bit 0), then permitted and
    inheritable sets, 32 bits each, one pair per revision-1 word (two for 2 and 3)."""
    if len(value) < 4:
        return "malformed"
    (magic,) = struct.unpack_from("<I", value)
    words = {0x01000000: 1, 0x02000000: 2, 0x03000000: 2}.get(magic & 0xFF000000)
    if words is None or len(value) < 4 + 8 * words:
        return "malformed"
    permitted = inheritable = 0
    for index in range(words):
        low_p, low_i = struct.unpack_from("<II", value, 4 + 8 * index)
        permitted |= low_p << (32 * index)
        inheritable |= low_i << (32 * index)
    effective = "e" if magic & 1 else ""

    def names(bits: int) -> str:
        found = [CAPABILITY_NAMES[b] if b < len(CAPABILITY_NAMES) else f"cap_{b}"
                 for b in range(64) if bits >> b & 1]  # fmt: skip
        return ",".join(found)

    parts = []
    if permitted & inheritable == permitted and permitted:
        parts.append(f"{names(permitted)}={effective}ip")
    else:
        if permitted:
            parts.append(f"{names(permitted)}={effective}p")
        if inheritable:
            parts.append(f"{names(inheritable)}=i")
    return " ".join(parts) or "no capabilities"
