"""Candidate selection and vacuum as systemd-sysupdate 252–256 do them (spec §4.3, §7.4)."""

from __future__ import annotations

import pytest

from sysext.core.errors import SysextError
from sysext.systemd.selection import select_candidate, select_update_set, vacuum_plan


@pytest.mark.parametrize(
    ("installed", "available", "min_version", "candidate"),
    [
        (["1.0"], ["1.0", "1.1"], None, "1.1"),
        (["1.1"], ["1.0", "1.1"], None, None),
        (["1.2"], ["1.0", "1.1"], None, None),  # no downgrade
        (["1.01"], ["1.1"], None, None),  # equal versions
        ([], ["2.0", "1.9"], None, "2.0"),
        ([], ["2.0", "1.9"], "3.0", None),  # newest is obsolete
        (["1.0"], ["1.0-rc1", "1.0"], None, "1.0-rc1"),  # -rc1 is newer
        (["v1.29.2"], ["v1.29.10", "v1.3.0"], None, "v1.29.10"),
        (["v1.29.2"], ["1.29.10"], None, "1.29.10"),  # numeric beats v
        (["24.0.5"], ["compose-2.20.0", "24.0.5"], None, None),
    ],
)
def test_spec_table(
    installed: list[str], available: list[str], min_version: str | None, candidate: str | None
) -> None:
    assert select_candidate(available, installed, min_version=min_version).candidate == candidate


def test_reasons_and_flags() -> None:
    up = select_candidate(["1.0", "1.1"], ["1.1"])
    assert up.up_to_date and "already installed" in up.reason
    assert up.available == ("1.1", "1.0") and up.newest_installed == "1.1"

    newer = select_candidate(["1.0", "1.1"], ["1.2"])
    assert newer.up_to_date and "never downgrades" in newer.reason

    obsolete = select_candidate(["2.0", "1.9"], min_version="3.0")
    assert obsolete.obsolete and not obsolete.up_to_date and "MinVersion=3.0" in obsolete.reason

    fresh = select_candidate(["2.0", "1.9"])
    assert fresh.candidate == "2.0" and "nothing is installed" in fresh.reason
    assert not select_candidate([]).up_to_date


def test_min_version_only_flags_older_versions() -> None:
    assert select_candidate(["2.0", "1.9"], min_version="2.0").candidate == "2.0"
    assert select_candidate(["2.0", "1.9"], min_version="1.95").candidate == "2.0"
    # Older server versions are never a fall-back when the newest is obsolete.
    assert select_candidate(["1.9"], ["1.0"], min_version="2.0").candidate is None


def test_two_transfers_incomplete_version_is_skipped() -> None:
    sel = select_update_set([["1.1", "1.0"], ["1.0"]], [[], []])
    assert sel.candidate == "1.0"
    assert sel.incomplete == ("1.1",)
    installed = select_update_set([["1.1", "1.0"], ["1.0"]], [["1.0"], ["1.0"]])
    assert installed.candidate is None and installed.up_to_date


def test_selection_lists_one_per_transfer() -> None:
    with pytest.raises(SysextError):
        select_update_set([["1"], ["1"]], [["1"]])


@pytest.mark.parametrize(
    ("kwargs", "deleted"),
    [
        ({"instances_max": 3}, ["1.0"]),
        ({"instances_max": 3, "protected": ["1.0"]}, ["1.1"]),
        ({"instances_max": 2}, ["1.0", "1.1"]),
        ({"instances_max": 2, "protected": ["1.0", "1.1", "1.2"]}, []),
        ({"instances_max": 2, "space": 0}, ["1.0"]),
        ({"instances_max": 4}, []),
        ({"instances_max": 2, "candidate": "1.0"}, ["1.1", "1.2"]),
    ],
)
def test_vacuum_rows(kwargs: dict[str, object], deleted: list[str]) -> None:
    assert vacuum_plan(["1.2", "1.0", "1.1"], **kwargs) == deleted  # type: ignore[arg-type]


def test_vacuum_rejects_nonsense() -> None:
    with pytest.raises(SysextError, match="InstancesMax=0"):
        vacuum_plan(["1"], instances_max=0)
