"""strverscmp is a total order consistent with equality (hypothesis), plus §7.3 pairs."""

from __future__ import annotations

import functools
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysext.systemd.versioning import sort_versions, strverscmp, version_is_valid, version_key

# Versions as sysupdate allows them, plus '~' and '^' which the comparison knows.
_versions = st.text(alphabet="0123456789.-_+,~^abcXYZ", max_size=12)
_valid = st.from_regex(r"[A-Za-z0-9.,_+-]{1,16}", fullmatch=True)


@given(_versions, _versions)
def test_antisymmetric(a: str, b: str) -> None:
    assert strverscmp(a, b) == -strverscmp(b, a)
    assert strverscmp(a, b) in (-1, 0, 1)


@given(_versions)
def test_reflexive(a: str) -> None:
    assert strverscmp(a, a) == 0


@settings(max_examples=300)
@given(_versions, _versions, _versions)
def test_transitive(a: str, b: str, c: str) -> None:
    ab, bc, ac = strverscmp(a, b), strverscmp(b, c), strverscmp(a, c)
    if ab <= 0 and bc <= 0:
        assert ac <= 0
    if ab == 0 and bc == 0:
        assert ac == 0
    if ab < 0 and bc <= 0:
        assert ac < 0


@given(st.lists(_versions, max_size=12))
def test_sort_is_consistent_and_stable(versions: list[str]) -> None:
    ordered = sort_versions(versions)
    for x, y in itertools.pairwise(ordered):
        assert strverscmp(x, y) <= 0
    # Stable: versions that compare equal keep their input order. The reference is a sort
    # by strverscmp itself with the input position as tie-breaker (index() would be wrong
    # here: different strings can compare equal, e.g. "," and "").
    by_position = sorted(
        enumerate(versions),
        key=functools.cmp_to_key(lambda a, b: strverscmp(a[1], b[1]) or a[0] - b[0]),
    )
    assert ordered == [v for _, v in by_position]
    assert sorted(ordered, key=version_key) == ordered


@given(_valid)
def test_equal_versions_share_a_key(a: str) -> None:
    # Zero-padding a number does not change a version (007 == 7, §7.3).
    padded = re.sub(r"(?<![0-9])([0-9])", r"0\1", a)
    assert strverscmp(a, padded) == 0
    assert version_key(a) == version_key(padded)


@given(_valid)
def test_generated_versions_are_valid_unless_dots(a: str) -> None:
    assert version_is_valid(a) == (a not in (".", ".."))


# §7.3: left, right, expected
PAIRS = [
    ("1.2.3", "1.2.10", -1), ("1.10", "1.9", 1), ("1.0", "1.0.0", -1), ("1.0", "1", 1),
    ("1.0", "1.00", 0), ("1.01", "1.1", 0), ("007", "7", 0), ("2024.01.05", "2024.1.5", 0),
    ("1.0~rc1", "1.0", -1), ("1.0~rc1", "1.0~rc2", -1), ("1.0~rc1", "0.9", 1),
    ("1.0-1", "1.0", 1), ("1.0-1", "1.0.1", -1), ("1.0^p1", "1.0-1", 1),
    ("1.0^p1", "1.0.1", -1), ("1.0a", "1.0.a", 1), ("1.0a", "1.0.1", 1),
    ("1.0.a", "1.0.1", -1), ("1.0b", "1.0a", 1), ("1.0alpha", "1.0", 1), ("abc", "abcd", -1),
    ("1a", "1", 1), ("1_2", "1.2", 1), ("1_2", "12", -1), ("1+2", "1.2", 1), ("1,2", "1.2", 1),
    ("1,2", "12", -1), ("1.0+build5", "1.0.5", 1), ("1.0+build5", "1.0", 1),
    ("v1.2", "1.2", -1), ("v1.2", "v1.10", -1), ("3815.2.0", "3815.2.1", -1),
    ("3975.0.0", "3815.2.5", 1), ("1.27.8", "1.27.10", -1), ("v1.27.8", "v1.28.0", -1),
    ("compose-2.20.0", "24.0.5", -1), ("1.2.3-rc1", "1.2.3", 1), ("1.2.3.rc1", "1.2.3", 1),
    ("0.9", "0.10", -1), ("", "0", -1), ("a", "0", -1), ("2023-10-01", "2023-9-30", 1),
    ("1.0-alpha", "1.0-beta", -1), ("1.0-beta", "1.0-1", -1),
    ("123.45-67.88", "123.45-67.89", -1), ("123-99.99", "123.45-67.89", -1),
    ("123_aa2-67.89", "123aa+2-67.89", 0), ("123..0", "123.0", -1),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b", "expected"), PAIRS)
def test_spec_pairs(a: str, b: str, expected: int) -> None:
    assert strverscmp(a, b) == expected
    assert strverscmp(b, a) == -expected


def test_upstream_chain() -> None:
    chain = [
        "~1",
        "",
        "ab",
        "abb",
        "abc",
        "0001",
        "002",
        "12",
        "122",
        "122.9",
        "123~rc1",
        "123",
        "123-a",
        "123-a.1",
        "123-a1",
        "123-a1.1",
        "123-3",
        "123-3.1",
        "123^patch1",
        "123^1",
        "123.a-1",
        "123.1-1",
        "123a-1",
        "124",
    ]
    assert sorted(reversed(chain), key=functools.cmp_to_key(strverscmp)) == chain
