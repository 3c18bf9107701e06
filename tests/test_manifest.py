"""SHA256SUMS: the strict parser against spec §7.1 M1–M20, and writer→parser round trips."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysext.systemd.manifest import (
    ManifestEntry,
    ManifestError,
    best_before_date,
    best_before_for,
    best_before_markers,
    format_manifest,
    merge_into_manifest,
    parse_manifest,
    without_markers,
)
from sysext.systemd.patterns import match_many

H = "a" * 64
H2 = "0123456789ABCDEF" * 4
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
BOM = "\ufeff"


@pytest.mark.parametrize(
    ("case", "data", "expected"),
    [
        ("M1", f"{H}  foo-1.0-x86-64.raw\n", [ManifestEntry("foo-1.0-x86-64.raw", H)]),
        ("M2", f"{H} *foo-1.0-x86-64.raw\n", [ManifestEntry("foo-1.0-x86-64.raw", H, True)]),
        ("M3", f"{H2}  foo.raw\n", [ManifestEntry("foo.raw", H2.lower())]),
        ("M17", f"{H}   foo.raw\n", [ManifestEntry(" foo.raw", H)]),
        (
            "M18",
            f"{H}  a.raw\n{H2} *b.raw\n",
            [ManifestEntry("a.raw", H), ManifestEntry("b.raw", H2.lower(), True)],
        ),
        (
            "M20",
            f"{EMPTY_SHA}  BEST-BEFORE-2000-01-01\n{H}  a.raw\n",
            [ManifestEntry("BEST-BEFORE-2000-01-01", EMPTY_SHA), ManifestEntry("a.raw", H)],
        ),
        ("M14", "", []),
    ],
)
def test_accepted(case: str, data: str, expected: list[ManifestEntry]) -> None:
    assert parse_manifest(data.encode()) == expected


@pytest.mark.parametrize(
    ("case", "data", "line", "reason"),
    [
        ("M4", f"{H} foo.raw\n", 1, "found one space"),
        ("M5", f"{H}\tfoo.raw\n", 1, "expected a space"),
        ("M6", f"{H}  foo.raw", 1, "no final newline"),
        ("M7", f"{H}  foo.raw\r\n", 1, "control character"),
        ("M8", f"# comment\n{H}  foo.raw\n", 1, ""),
        ("M9", f"{H}  a.raw\n\n{H}  b.raw\n", 2, ""),
        ("M10", f"{H}  a.raw\n\n", 2, "corrupt"),
        ("M11", f"{H}  sub/foo.raw\n", 1, "'/'"),
        ("M12", f"{H}  ./foo.raw\n", 1, "'/'"),
        ("M13", f"\\{H}  foo\\nbar.raw\n", 1, "escaped"),
        ("M15", f"{BOM}{H}  foo.raw\n", 1, "not hexadecimal"),
        ("M16", f"{'a' * 63}  foo.raw\n", 1, "digest"),
        ("dot", f"{H}  ..\n", 1, "invalid file name"),
        ("nul", f"{H}  fo\0o.raw\n", 0, "NUL"),
        ("utf8", "", 0, "UTF-8"),
        ("bsd", f"SHA256 (foo.raw) = {H}\n", 1, ""),
    ],
)
def test_refused(case: str, data: str, line: int, reason: str) -> None:
    raw = data.encode() if case != "utf8" else f"{H}  f\xff.raw\n".encode("latin-1")
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw)
    assert info.value.line == line
    assert reason in info.value.reason
    assert str(info.value).startswith("SHA256SUMS ")
    if line:
        assert f"line {line}:" in str(info.value)


def test_m19_other_products_are_ignored_by_patterns() -> None:
    data = f"{H}  podman-5.0-x86-64.raw\n{H}  other-1.0-x86-64.raw\n{H}  README\n".encode()
    entries = parse_manifest(data)
    matched = [e for e in entries if match_many(["podman-@v-x86-64.raw"], e.filename)]
    assert [e.filename for e in matched] == ["podman-5.0-x86-64.raw"]


def test_whitespace_inside_digest_window_quirk() -> None:
    # unhexmem skips whitespace: 62 digits + 2 spaces is 31 bytes, not 32 → refused.
    with pytest.raises(ManifestError, match="64 hex"):
        parse_manifest(f"{'a' * 30}  {'a' * 32}  foo.raw\n".encode())


def test_writer_is_canonical() -> None:
    data = format_manifest(
        [ManifestEntry("b.raw", H2), ManifestEntry("a.raw", H, True), ManifestEntry("b.raw", H)]
    )
    assert data == f"{H}  a.raw\n{H}  b.raw\n".encode()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (ManifestEntry("sub/x.raw", H), "'/'"),
        (ManifestEntry("x y.raw", H), "spaces"),
        (ManifestEntry("\\x.raw", H), "'\\\\'"),
        (ManifestEntry("x.raw", "abc"), "not a SHA-256"),
        (ManifestEntry("x\r.raw", H), "control character"),
    ],
)
def test_writer_refuses_what_hosts_would(entry: ManifestEntry, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        format_manifest([entry])


def test_merge_into_manifest_writes_atomically_and_drops_missing(tmp_path: Path) -> None:
    (tmp_path / "a-1-x86-64.raw").write_bytes(b"a")
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_bytes(f"{H}  gone-1-x86-64.raw\n".encode())
    merged = merge_into_manifest(manifest, [ManifestEntry("a-1-x86-64.raw", H2.lower())])
    assert [e.filename for e in merged] == ["a-1-x86-64.raw"]
    assert parse_manifest(manifest.read_bytes()) == merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SHA256SUMS", "a-1-x86-64.raw"]


def test_large_manifest_parses_in_linear_time() -> None:
    lines = "".join(f"{H}  ext-{i}.0-x86-64.raw\n" for i in range(20000))
    assert len(parse_manifest(lines.encode())) == 20000


_NAME_CHARS = st.characters(
    min_codepoint=0x21,
    max_codepoint=0x2FFF,
    blacklist_characters="/\\\x7f",
    blacklist_categories=("Cs",),
)
_entries = st.lists(
    st.builds(
        ManifestEntry,
        filename=st.text(_NAME_CHARS, min_size=1, max_size=40).filter(
            lambda n: n not in (".", "..") and len(n.encode()) <= 255 and not n.isspace()
        ),
        sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
        binary=st.just(False),
    ),
    max_size=20,
)


@given(_entries)
def test_writer_output_always_passes_the_strict_parser(entries: list[ManifestEntry]) -> None:
    data = format_manifest(entries)
    parsed = parse_manifest(data)
    expected = {e.filename: e for e in entries}
    assert parsed == [expected[n] for n in sorted(expected)]
    assert format_manifest(parsed) == data  # canonical: a fixed point


@given(st.binary(max_size=200))
def test_parser_never_crashes_on_garbage(data: bytes) -> None:
    try:
        entries = parse_manifest(data)
    except ManifestError:
        return
    for entry in entries:
        assert len(entry.sha256) == 64


# --- BEST-BEFORE-YYYY-MM-DD (systemd 260+, parse_calendar_date()) ------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BEST-BEFORE-2026-12-20", dt.date(2026, 12, 20)),
        ("BEST-BEFORE-2026-1-5", dt.date(2026, 1, 5)),  # strptime takes 1–2 digits
        ("BEST-BEFORE- 2026-01-05", dt.date(2026, 1, 5)),  # and spaces before a number
        ("BEST-BEFORE-2026-02-30", None),  # not normalised: an ordinary name again
        ("BEST-BEFORE-1969-12-31", None),  # before the epoch: timegm() fails
        ("BEST-BEFORE-2026-01-05x", None),  # trailing text
        ("BEST-BEFORE-tomorrow", None),
        ("BEST-BEFORE-", None),
        ("best-before-2026-01-05", None),  # the prefix is case-sensitive
        ("hello-1.0-x86-64.raw", None),
    ],
)
def test_best_before_names(name: str, expected: dt.date | None) -> None:
    assert best_before_date(name) == expected


def test_best_before_deadline_is_that_days_midnight_utc() -> None:
    (marker,) = best_before_markers(
        parse_manifest(f"{EMPTY_SHA}  BEST-BEFORE-2026-12-20\n".encode())
    )
    deadline = dt.datetime(2026, 12, 20, tzinfo=dt.UTC)
    assert marker.deadline == deadline and marker.hash_warning is None
    # systemd refuses once `deadline < now`: the day itself is already refused.
    assert not marker.expired(deadline) and marker.expired(deadline + dt.timedelta(seconds=1))
    # The date written for a signature expiring at `t`: never later than `t`.
    expires = dt.datetime(2026, 12, 20, 23, 59, tzinfo=dt.UTC)
    assert best_before_for(expires) == dt.date(2026, 12, 20)
    other = best_before_markers(parse_manifest(f"{H}  BEST-BEFORE-2026-12-20\n".encode()))
    assert other[0].hash_warning is not None and "proceed" in other[0].hash_warning


def test_markers_are_lines_like_any_other_for_252_and_taken_out_for_260() -> None:
    data = f"{H}  foo-1.0-x86-64.raw\n{EMPTY_SHA}  BEST-BEFORE-2000-01-01\n".encode()
    entries = parse_manifest(data)  # 252–256 grammar: an ordinary, valid line
    assert [e.filename for e in entries] == ["foo-1.0-x86-64.raw", "BEST-BEFORE-2000-01-01"]
    assert [e.filename for e in without_markers(entries)] == ["foo-1.0-x86-64.raw"]
    invalid = parse_manifest(f"{EMPTY_SHA}  BEST-BEFORE-2000-02-30\n".encode())
    assert without_markers(invalid) == invalid  # 260+ match it against the patterns
