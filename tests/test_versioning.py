"""systemd's version ordering and validity, against upstream's own assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sysext.systemd.versioning import sort_versions, strverscmp, version_is_valid

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "vectors"
VECTORS = Path(__file__).resolve().parent / "data" / "strverscmp.json"


def _vectors() -> dict[str, object]:
    path = VECTORS if VECTORS.exists() else SPEC / "strverscmp.json"
    data: dict[str, object] = json.loads(path.read_text())
    return data


def test_every_upstream_pair() -> None:
    pairs = _vectors()["pairs"]
    assert isinstance(pairs, list) and len(pairs) >= 110
    failures = [p for p in pairs if strverscmp(p["a"], p["b"]) != p["cmp"]]
    assert failures == []


def test_upstream_ordered_lists() -> None:
    lists = _vectors()["ordered_lists"]
    assert isinstance(lists, list)
    for ordered in lists:
        for i, a in enumerate(ordered):
            assert strverscmp(a, a) == 0
            for b in ordered[i + 1 :]:
                assert strverscmp(a, b) == -1, (a, b)
                assert strverscmp(b, a) == 1, (b, a)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.2.3", "1.2.10", -1),
        ("1.0", "1.0.0", -1),
        ("1.01", "1.1", 0),
        ("1.2.3-rc1", "1.2.3", 1),
        ("1.0~rc1", "1.0", -1),
        ("v1.2", "1.2", -1),
        ("compose-2.20.0", "24.0.5", -1),
        ("2024.01.05", "2024.1.5", 0),
        ("1_2", "1.2", 1),
        ("1.0+build5", "1.0.5", 1),
    ],
)
def test_worked_examples(a: str, b: str, expected: int) -> None:
    assert strverscmp(a, b) == expected


def test_sort_newest_first() -> None:
    assert sort_versions(["1.9", "1.10", "1.2.3-rc1", "1.2.3"], newest_first=True) == [
        "1.10",
        "1.9",
        "1.2.3-rc1",
        "1.2.3",
    ]


@pytest.mark.parametrize("v", ["1.2.3", "v1.29.2", "1.0+git5", "1.0,2", "a_b", "5.3.1-1"])
def test_valid_versions(v: str) -> None:
    assert version_is_valid(v)


@pytest.mark.parametrize("v", ["", ".", "..", "1.0~rc1", "1.0^p1", "1 2", "1:2", "a/b", "x@y"])
def test_invalid_versions(v: str) -> None:
    assert not version_is_valid(v)
