"""Staged rollouts: host identity, rollout buckets and the URLs managed hosts poll (issue 21).

Shared by the client (provisioning, `sysext transfer --host-id`) and the registry.

**Host ID.** machine-id(5) is confidential and must never leave the host, so hosts send an
application-specific ID instead: `systemd-id128 machine-id --app-specific=APP_ID`, i.e.
HMAC-SHA256 keyed by the 16 raw machine-ID bytes over the 16 raw APP_ID bytes, first half,
with the UUID v4 bits set (sd_id128_get_machine_app_specific()). It is stable for the life
of the machine ID, differs per application, and cannot be turned back into the machine ID.

**Buckets.** A host's bucket is a fixed function of its ID (`host_bucket`): BUCKETS of them,
so a rollout moves in steps of 1 %. The registry materializes one signed directory per
bucket (`rollouts/CHANNEL/NAME/BB/`), so every web server, nginx and an object store can
serve rollouts as plain files. The host ID follows the bucket in the host's `Path=`
(`…/BB/HOSTID`): `sysext serve` (and the shipped nginx block) strip it, serve the bucket's
files and note which host fetched what (the fleet view); a host that reads a bucket straight
from an object store polls `…/BB` (`static=True`).

**Who gets a version.** Buckets are ranked per (extension, version) by a keyed hash
(`bucket_order`); at P % the first P buckets of that order are in. Raising P only adds
buckets, so a host never flips back and forth, and each version picks another first 1 %.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

from sysext.core.errors import SysextError

# The fixed application ID hosts derive their rollout identity with (never change it: every
# host's ID, and so its bucket, depends on it).
APP_ID = "5f1c3c2e9a8b4d71b6e0c4a2d7f39e15"
BUCKETS = 100
ROLLOUTS_DIR = "rollouts"
GROUPS_DIR = "groups"
_HOST_ID = re.compile(r"[0-9a-f]{32}")
_GROUP = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_MACHINE_ID = re.compile(r"[0-9a-fA-F]{32}")


def app_specific_id(machine_id: str, app_id: str = APP_ID) -> str:
    """What `systemd-id128 machine-id --app-specific=APP_ID` prints on a host whose
    /etc/machine-id is `machine_id` (32 hex digits, as systemd prints it)."""
    if not _MACHINE_ID.fullmatch(machine_id.strip()):
        raise SysextError(
            f"invalid machine ID {machine_id!r}", "32 hexadecimal digits, as in /etc/machine-id"
        )
    digest = hmac.new(
        bytes.fromhex(machine_id.strip()), bytes.fromhex(app_id), hashlib.sha256
    ).digest()
    raw = bytearray(digest[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40  # id128_make_v4_uuid(): version 4 …
    raw[8] = (raw[8] & 0x3F) | 0x80  # … and the RFC 4122 variant
    return raw.hex()


def host_id_problem(host_id: str) -> str | None:
    if not _HOST_ID.fullmatch(host_id):
        return (
            f"invalid host ID {host_id!r}: 32 lower-case hex digits, as printed by "
            f"`systemd-id128 machine-id --app-specific={APP_ID}`"
        )
    return None


def group_problem(group: str) -> str | None:
    if not _GROUP.fullmatch(group):
        return f"invalid group {group!r}: 1-32 of a-z, 0-9 and '-', starting with a letter or digit"
    return None


def check_host(host_id: str, group: str | None) -> None:
    """SysextError for a host ID or group no managed host can have."""
    for problem in (host_id_problem(host_id), group_problem(group) if group else None):
        if problem:
            raise SysextError(problem, "the provisioning script prints a valid one")


def host_bucket(host_id: str) -> int:
    """The bucket of a host: its ID's first 32 bits modulo BUCKETS (the first-boot
    script computes the same in sh: `$(( 0x${id%"${id#????????}"} % 100 ))`)."""
    return int(host_id[:8], 16) % BUCKETS


def bucket_name(bucket: int) -> str:
    return f"{bucket:02d}"


def rollout_dir(name: str, channel: str) -> str:
    """URL path (no leading slash) of an extension's rollout tree in `channel`."""
    return f"{ROLLOUTS_DIR}/{channel}/{name}"


def slot_path(name: str, channel: str, bucket: int, group: str | None = None) -> str:
    """URL path of the directory hosts in `bucket` (and `group`) read."""
    middle = f"/{GROUPS_DIR}/{group}" if group else ""
    return f"{rollout_dir(name, channel)}{middle}/{bucket_name(bucket)}"


def host_source_url(
    registry: str,
    name: str,
    channel: str,
    host_id: str,
    group: str | None = None,
    *,
    static: bool = False,
) -> str:
    """The `[Source] Path=` of a managed host (see the module doc)."""
    check_host(host_id, group)
    base = f"{registry.rstrip('/')}/{slot_path(name, channel, host_bucket(host_id), group)}"
    return base if static else f"{base}/{host_id}"


def bucket_order(key: bytes, name: str, version: str) -> list[int]:
    """The buckets in the order a rollout of `version` reaches them (keyed: nobody outside
    the registry can tell which bucket goes first)."""

    def rank(bucket: int) -> bytes:
        return hmac.new(key, f"{name}\0{version}\0{bucket}".encode(), hashlib.sha256).digest()

    return sorted(range(BUCKETS), key=rank)


def offered_buckets(key: bytes, name: str, version: str, percent: int) -> frozenset[int]:
    """The buckets a version at `percent` % is offered to: monotonic in `percent`."""
    count = max(0, min(BUCKETS, percent * BUCKETS // 100))
    return frozenset(bucket_order(key, name, version)[:count])


def host_in_rollout(key: bytes, name: str, version: str, percent: int, host_id: str) -> bool:
    return host_bucket(host_id) in offered_buckets(key, name, version, percent)


def new_uuid_hex() -> str:
    return uuid.uuid4().hex
