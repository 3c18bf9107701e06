"""Which version systemd-sysupdate 252–256 would install, and what it would delete (§4.3).

Pure functions over version strings. Versions that compare equal under strverscmp
(`1.01` and `1.1`) are the *same* version to sysupdate: an installed `1.01` blocks `1.1`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sysext.core.errors import SysextError
from sysext.systemd.versioning import sort_versions, strverscmp

DEFAULT_INSTANCES_MAX = 3  # DEFAULT_FILE_INSTANCES_MAX for regular-file targets


@dataclass(frozen=True)
class Selection:
    candidate: str | None
    reason: str
    newest_available: str | None
    newest_installed: str | None
    # The newest available version is older than MinVersion (so nothing is a candidate).
    obsolete: bool
    available: tuple[str, ...] = ()  # complete update sets on the server, newest first
    installed: tuple[str, ...] = ()  # complete update sets on the host, newest first
    incomplete: tuple[str, ...] = ()  # versions skipped because a transfer lacks them

    @property
    def up_to_date(self) -> bool:
        """Nothing to do, and the host already runs the newest usable version."""
        return self.candidate is None and self.newest_installed is not None and not self.obsolete


def _complete_sets(per_transfer: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    """context_discover_update_sets_by_flag(): versions of transfer #0 that every other
    transfer also has (compared with == 0), newest first; plus the incomplete ones."""
    if not per_transfer:
        return [], []
    complete: list[str] = []
    incomplete: list[str] = []
    # dict.fromkeys: drop duplicates but keep input order, so ties sort deterministically.
    for version in sort_versions(dict.fromkeys(per_transfer[0]), newest_first=True):
        if any(strverscmp(version, c) == 0 for c in complete):
            continue
        if all(any(strverscmp(version, o) == 0 for o in other) for other in per_transfer[1:]):
            complete.append(version)
        else:
            incomplete.append(version)
    return complete, incomplete


def select_update_set(
    available: Sequence[Iterable[str]],
    installed: Sequence[Iterable[str]] = (),
    *,
    min_version: str | None = None,
) -> Selection:
    """Candidate selection for a component of several transfers (one list per transfer)."""
    avail_lists = [list(a) for a in available]
    inst_lists = [list(i) for i in installed] or [[] for _ in avail_lists]
    if len(inst_lists) != len(avail_lists):
        raise SysextError("selection: need one installed list per transfer")
    complete_avail, incomplete = _complete_sets(avail_lists)
    complete_inst, _ = _complete_sets(inst_lists)
    newest_avail = complete_avail[0] if complete_avail else None
    newest_inst = complete_inst[0] if complete_inst else None
    obsolete = bool(
        newest_avail is not None and min_version and strverscmp(min_version, newest_avail) > 0
    )

    def result(candidate: str | None, reason: str) -> Selection:
        return Selection(
            candidate,
            reason,
            newest_available=newest_avail,
            newest_installed=newest_inst,
            obsolete=obsolete,
            available=tuple(complete_avail),
            installed=tuple(complete_inst),
            incomplete=tuple(incomplete),
        )

    if newest_avail is None:
        reason = (
            "no complete version is available"
            if incomplete
            else "no version is available on the server"
        )
        return result(None, reason)
    # Only the newest available set can become NEWEST in the AVAILABLE pass; older server
    # versions are never a fall-back (so an obsolete newest means no candidate at all).
    if any(strverscmp(newest_avail, i) == 0 for i in complete_inst):
        reason = f"{newest_avail} is already installed"
        return result(None, reason)
    if obsolete:
        reason = f"newest available {newest_avail} is older than MinVersion={min_version}"
        return result(None, reason)
    if newest_inst is not None and strverscmp(newest_inst, newest_avail) >= 0:
        reason = (
            f"installed {newest_inst} is newer than the newest available {newest_avail}"
            " (sysupdate never downgrades)"
        )
        return result(None, reason)
    if newest_inst is None:
        reason = f"{newest_avail} is the newest available version; nothing is installed"
    else:
        reason = f"{newest_avail} is newer than installed {newest_inst}"
    return result(newest_avail, reason)


def select_candidate(
    available: Iterable[str],
    installed: Iterable[str] = (),
    *,
    min_version: str | None = None,
) -> Selection:
    """What `systemd-sysupdate update` would install for a single transfer."""
    return select_update_set([list(available)], [list(installed)], min_version=min_version)


def vacuum_plan(
    installed: Iterable[str],
    *,
    instances_max: int = DEFAULT_INSTANCES_MAX,
    protected: Iterable[str] = (),
    candidate: str | None = None,
    space: int = 1,
) -> list[str]:
    """Versions transfer_vacuum() deletes, oldest first.

    `space=1` is the vacuum that precedes an install (room for the candidate), `space=0`
    the `vacuum` verb. Protected versions (ProtectVersion=, and the version about to be
    installed) are skipped by exact string; if only protected ones are left it stops and
    the install proceeds anyway, exceeding InstancesMax.
    """
    if instances_max < 1:
        raise SysextError(f"InstancesMax={instances_max} must be at least 1")
    keep = set(protected)
    if candidate is not None:
        keep.add(candidate)
    remaining = sort_versions(installed)  # oldest first
    limit = max(instances_max - space, 0)
    deleted: list[str] = []
    while len(remaining) > limit:
        victim = next((v for v in remaining if v not in keep), None)
        if victim is None:
            break
        remaining.remove(victim)
        deleted.append(victim)
    return deleted
