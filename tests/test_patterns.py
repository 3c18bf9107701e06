"""MatchPattern= parsing, matching, formatting and specifiers against spec §2.3 and §7.2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysext.systemd.patterns import (
    Field,
    HostInfo,
    MatchResult,
    PatternError,
    SpecifierError,
    expand_match_patterns,
    expand_specifiers,
    format_pattern,
    match_many,
    match_pattern,
    parse_pattern,
    pattern_match,
)

VECTORS = Path(__file__).resolve().parent / "data" / "sysupdate-patterns.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]
HEX64 = "0123456789abcdef" * 4

FLATCAR = HostInfo(
    arch="x86-64",
    os_release={
        "ID": "flatcar",
        "VERSION_ID": "3815.2.0",
        "IMAGE_VERSION": "3815.2.0",
        "BUILD_ID": "2024-01-01",
        "IMAGE_ID": "flatcar-img",
        "VARIANT_ID": "stable",
    },
    hostname="node1.example.com",
    machine_id="0" * 32,
    boot_id="1" * 32,
    kernel_release="6.6.1",
)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['pattern']}|{c['filename']}" for c in CASES])
def test_upstream_vector(case: dict[str, Any]) -> None:
    """Every TEST-72-SYSUPDATE case, with its "partial" (RETRY) semantics."""
    result, found = pattern_match(case["pattern"], case["filename"])
    if case.get("partial"):
        assert result is MatchResult.RETRY
        assert match_pattern(case["pattern"], case["filename"]) is None
        return
    if not case["match"]:
        assert result is MatchResult.NO
        assert match_many(case.get("patterns") or [case["pattern"]], case["filename"]) is None
        return
    assert result is MatchResult.YES and found is not None
    assert found.version == case["version"]
    # The vector's names are whole images: strict matching agrees with 252–256 here.
    assert match_pattern(case["pattern"], case["filename"], strict=True) == found
    if "patterns" in case:
        first = match_many(case["patterns"], case["filename"])
        assert first is not None and first.pattern == case["pattern"]
        assert first.fields["tries_left"] == str(case["tries_left"])
        assert first.fields["tries_done"] == str(case["tries_done"])


def test_vector_file_is_complete() -> None:
    assert len(CASES) >= 50
    assert {c["basis"] for c in CASES} == {"asserted", "implied", "literal-mismatch"}
    assert any(c.get("partial") for c in CASES)


# §7.2 table: pattern, name, expected version (None: no match), extra fields
TABLE: list[tuple[str, str, str | None, dict[str, str]]] = [
    ("kubernetes-@v-x86-64.raw", "kubernetes-v1.29.2-x86-64.raw", "v1.29.2", {}),
    ("kubernetes-@v-x86-64.raw", "kubernetes-v1.29.2-arm64.raw", None, {}),
    ("kubernetes-@v-x86-64.raw", "kubernetes-v1.29.2-x86-64.raw.xz", "v1.29.2", {}),
    ("docker-@v-x86-64.raw", "docker-compose-2.20.0-x86-64.raw", "compose-2.20.0", {}),
    ("docker-@v-x86-64.raw", "docker-24.0.5-x86-64.raw", "24.0.5", {}),
    ("foo_@v.raw", "foo_1.2.3.raw", "1.2.3", {}),
    ("foo_@v.raw", "foo_1.2~rc1.raw", None, {}),
    ("foo_@v.raw", "foo_1.2^p1.raw", None, {}),
    ("foo_@v.raw", "foo_1.2+git5.raw", "1.2+git5", {}),
    ("foo_@v.raw", "foo_1.0,2.raw", "1.0,2", {}),
    ("foo_@v.raw", "foo_1.2 3.raw", None, {}),
    ("foo_@v.raw", "foo_.raw", None, {}),
    ("foo_@v.raw", "foo_1.raw.raw", "1", {}),
    ("foo_@v.raw", "FOO_1.2.raw", None, {}),
    ("foo@v.raw", "foobar-2.raw", "bar-2", {}),
    ("ext_@v_@a.raw", "ext_1.0_1.raw", "1.0", {"no_auto": "1"}),
    ("ext_@v_@a.raw", "ext_1.0_yes.raw", "1.0", {"no_auto": "yes"}),
    ("ext_@v_@a.raw", "ext_1_0_1.raw", None, {}),
    ("ext_@v.@h.raw", f"ext_1.0.{HEX64}.raw", None, {}),
    # The spec's table says NO here, but that contradicts its own verified note (trailing
    # text is not checked, exactly as for foo_1.raw.raw); the source wins (§0): YES "1".
    # Strict matching refuses it (test_trailing_text_is_ignored_but_strict_mode_refuses_it).
    ("ext-@v.tar", "ext-1.tar.2.tar", "1", {}),
    ("@v.raw", "1.0.raw", "1.0", {}),
    ("foo_@v/bar.raw", "foo_1/bar.raw", "1", {}),
]


@pytest.mark.parametrize(("pattern", "name", "version", "fields"), TABLE)
def test_spec_table(pattern: str, name: str, version: str | None, fields: dict[str, str]) -> None:
    found = match_pattern(pattern, name)
    if version is None:
        assert found is None
    else:
        assert found is not None
        assert found.version == version
        assert dict(found.fields) == fields


def test_retry_for_directory_prefix() -> None:
    assert pattern_match("foo_@v/bar.raw", "foo_1") == (MatchResult.RETRY, None)
    assert match_pattern("foo_@v/bar.raw", "foo_1") is None


def test_trailing_text_is_ignored_but_strict_mode_refuses_it() -> None:
    """252–256 ignore what follows the last literal (§7.2 note); strict mode does not."""
    for name in ("hello-1.0-x86-64.raw.json", "hello-1.0-x86-64.raw.sig"):
        loose = match_pattern("hello-@v-x86-64.raw", name)
        assert loose is not None and loose.version == "1.0"
        assert match_pattern("hello-@v-x86-64.raw", name, strict=True) is None
    assert match_pattern("foo_@v.raw", "foo_1.raw.raw", strict=True) is None
    assert match_pattern("ext-@v.tar", "ext-1.tar.2.tar", strict=True) is None


@pytest.mark.parametrize(
    "pattern", ["foo_@v@u.raw", "foo.raw", "foo_@v_@v.raw", "foo_@x.raw", "foo_@v.raw@", ""]
)
def test_einval_patterns_are_refused_at_parse_time(pattern: str) -> None:
    with pytest.raises(PatternError) as info:
        parse_pattern(pattern)
    assert repr(pattern) in info.value.message
    assert info.value.hint or "twice" in info.value.message


@pytest.mark.parametrize("pattern", ["foo_*_@v.raw", "foo_@v.r$w", "foo_@v?.raw", "a|@v"])
def test_bad_characters_are_accepted_but_every_match_fails(pattern: str) -> None:
    parsed = parse_pattern(pattern)  # EBADRQC is not "invalid" to pattern_valid()
    assert parsed.match_error is not None
    with pytest.raises(PatternError, match="failed to match pattern"):
        match_pattern(parsed, "foo_1.raw")


def test_bad_character_wins_over_later_structural_error() -> None:
    # pattern_split() returns at the first problem: the '*' comes before '@v@u'.
    assert parse_pattern("foo*_@v@u").match_error is not None


def test_slash_on_systemd_252() -> None:
    assert parse_pattern("foo_@v/bar.raw", allow_slash=False).match_error is not None
    assert parse_pattern("foo_@v/bar.raw").match_error is None


def test_literal_at_sign() -> None:
    pattern = parse_pattern("foo_@@_@v.raw")
    assert match_pattern(pattern, "foo_@_1.raw") is not None
    assert format_pattern(pattern, "2") == "foo_@_2.raw"


def test_marker_validators() -> None:
    uuid = "8f3a3b57-14aa-4dc6-9c3c-5d6d0e9a8f11"
    assert match_pattern("p_@v_@u.raw", f"p_1_{uuid}.raw") is not None
    assert match_pattern("p_@v_@u.raw", "p_1_nope.raw") is None
    assert match_pattern("p_@v_@m.raw", "p_1_0644.raw") is not None
    assert match_pattern("p_@v_@m.raw", "p_1_0777.raw") is None  # above 0775
    assert match_pattern("p_@v_@m.raw", "p_1_0648.raw") is None  # not octal
    assert match_pattern("p_@v_@f.raw", "p_1_0x1f.raw") is not None
    assert match_pattern("p_@v_@t.raw", "p_1_1700000000000000.raw") is not None
    assert match_pattern("p_@v_@s.raw", "p_1_-5.raw") is None
    assert match_pattern("p_@v_@g.raw", "p_1_OFF.raw") is not None
    assert match_pattern("p_@v_@r.raw", "p_1_maybe.raw") is None
    assert match_pattern("p_@v_@h.raw", f"p_1_{HEX64.upper()}.raw") is not None
    assert match_pattern("p_@v_@h.raw", f"p_1_{HEX64[:-1]}.raw") is None


def test_format_pattern() -> None:
    assert format_pattern("podman-@v-x86-64.raw", "5.3.1") == "podman-5.3.1-x86-64.raw"
    assert format_pattern("uki_@v+@l-@d.efi", "v1", tries_left=3, tries_done=0) == (
        "uki_v1+3-0.efi"
    )
    assert format_pattern("p_@v_@m_@r.raw", "1", mode=0o644, read_only=True) == "p_1_644_1.raw"
    with pytest.raises(PatternError, match="no value for '@t'"):
        format_pattern("p_@v_@t.raw", "1")
    with pytest.raises(PatternError, match="unknown pattern field"):
        format_pattern("p_@v.raw", "1", colour="red")


def test_fields_property() -> None:
    assert parse_pattern("uki_@v+@l-@d.efi").fields == (
        Field.VERSION,
        Field.TRIES_LEFT,
        Field.TRIES_DONE,
    )


@given(
    version=st.from_regex(r"[A-Za-z0-9.,_+][A-Za-z0-9.,_+]{0,20}", fullmatch=True),
    name=st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True),
)
def test_format_then_match_round_trip(version: str, name: str) -> None:
    """What pattern_format() writes, pattern_match() reads back (versions without '-')."""
    pattern = f"{name}-@v-x86-64.raw"
    if version in (".", ".."):
        return
    file_name = format_pattern(pattern, version)
    found = match_pattern(pattern, file_name, strict=True)
    assert found is not None and found.version == version


# --- specifiers (§2.3, §7.2) -------------------------------------------------------------


def test_specifier_expansion() -> None:
    assert expand_specifiers("kubernetes-@v-%a.raw", FLATCAR) == "kubernetes-@v-x86-64.raw"
    assert expand_specifiers("%o-%w-%A-%B-%M-%W", FLATCAR) == (
        "flatcar-3815.2.0-3815.2.0-2024-01-01-flatcar-img-stable"
    )
    assert expand_specifiers("%H %l %m %b %v %T %V", FLATCAR) == (
        f"node1.example.com node1 {'0' * 32} {'1' * 32} 6.6.1 /tmp /var/tmp"
    )
    assert expand_specifiers("100%%", FLATCAR) == "100%"
    assert expand_specifiers("trailing%", FLATCAR) == "trailing%"


def test_missing_os_release_fields_expand_to_empty() -> None:
    host = HostInfo(arch="arm64", os_release={"ID": "debian"})
    assert expand_specifiers("x-%w-%A-%a", host) == "x---arm64"


def test_unknown_specifier_and_url_escape() -> None:
    with pytest.raises(SpecifierError, match="'%Z'"):
        expand_specifiers("foo_@v_%Z.raw", FLATCAR)
    with pytest.raises(SpecifierError, match="'%2'") as info:
        expand_specifiers("https://h/a%20b", FLATCAR)
    assert info.value.hint and "%%20" in info.value.hint
    assert expand_specifiers("https://h/a%%20b", FLATCAR) == "https://h/a%20b"


def test_name_max() -> None:
    with pytest.raises(SpecifierError, match="255"):
        expand_specifiers("x" * 250 + "-@v-%a.raw", FLATCAR, max_length=255)


def test_unknown_specifier_drops_that_word_and_later_ones() -> None:
    line = "a-@v-%a.raw b_@v_%Z.raw c-@v.raw"
    result = expand_match_patterns(line, FLATCAR)
    assert result.patterns == ("a-@v-x86-64.raw",)
    assert result.dropped == ("b_@v_%Z.raw", "c-@v.raw")
    assert result.warning and "%Z" in result.warning
    assert expand_match_patterns("foo_@v_%Z.raw", FLATCAR).patterns == ()


def test_match_pattern_line_deduplicates_and_validates() -> None:
    assert expand_match_patterns("a-@v.raw a-@v.raw b-@v.raw", FLATCAR).patterns == (
        "a-@v.raw",
        "b-@v.raw",
    )
    with pytest.raises(PatternError):
        expand_match_patterns("a-@v.raw b.raw", FLATCAR)


def test_host_from_os_release_file(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_text('ID=flatcar\nVERSION_ID="3815.2.0"\n')
    host = HostInfo.from_os_release_file(path, arch="arm64")
    assert expand_specifiers("%o %w %a", host) == "flatcar 3815.2.0 arm64"
    with pytest.raises(Exception, match="x86_64"):
        HostInfo.from_os_release_file(path, arch="x86_64")


@given(
    pattern=st.sampled_from(
        ["podman-@v-x86-64.raw", "uki_@v+@l-@d.efi", "ext_@v_@a.raw", "@v.raw", "a_@v/b-@h.raw"]
    ),
    name=st.text(alphabet="podman-x86_4.rawuki+1l/ext0yes", max_size=30),
)
def test_matching_properties(pattern: str, name: str) -> None:
    """Never crashes; a strict match is a loose match; a match reformats to a prefix."""
    loose = match_pattern(pattern, name)
    strict = match_pattern(pattern, name, strict=True)
    if strict is not None:
        assert loose == strict
    if loose is not None:
        assert name.startswith(format_pattern(pattern, loose.version, **loose.fields))
