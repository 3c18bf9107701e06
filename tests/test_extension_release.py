"""ExtensionRelease fields and host_compatibility() against spec §1.3 / §7.5 / §7.6."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysext.core.errors import SysextError
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import (
    MANAGED_KEYS,
    ExtensionRelease,
    host_compatibility,
    name_problem,
    release_file_path,
)
from sysext.systemd.osrelease import parse_os_release

FLATCAR = {"ID": "flatcar", "VERSION_ID": "3815.2.0", "SYSEXT_LEVEL": "1.0"}


def _fields(spec: str) -> dict[str, str]:
    return {k: v.replace("+", " ") for k, _, v in (w.partition("=") for w in spec.split())}


# Spec §7.5: host ID=flatcar VERSION_ID=3815.2.0 SYSEXT_LEVEL=1.0, uname x86-64.
SPEC_7_5 = [
    ("ID=flatcar SYSEXT_LEVEL=1.0", "system", True),
    ("ID=flatcar SYSEXT_LEVEL=1", "system", False),
    ("ID=flatcar SYSEXT_LEVEL=2.0 VERSION_ID=3815.2.0", "system", False),
    ("ID=flatcar VERSION_ID=3815.2.0", "system", True),
    ("ID=flatcar VERSION_ID=3815.2.1", "system", False),
    ("ID=flatcar", "system", False),
    ("ID=_any", "system", True),
    ("ID=_any ARCHITECTURE=arm64", "system", False),
    ("ID=_any ARCHITECTURE=x86_64", "system", False),
    ("ID=_any ARCHITECTURE=_any", "system", True),
    ("ID=fedora SYSEXT_LEVEL=1.0", "system", False),
    ("SYSEXT_LEVEL=1.0", "system", False),
    ("ID=flatcar SYSEXT_LEVEL=1.0", "initrd", False),
    ("ID=flatcar SYSEXT_LEVEL=1.0 SYSEXT_SCOPE=initrd+system", "initrd", True),
    ("ID=_any SYSEXT_SCOPE=portable", "system", False),
]


@pytest.mark.parametrize(("spec", "scope", "expected"), SPEC_7_5)
def test_spec_7_5(spec: str, scope: str, expected: bool) -> None:
    merges, reason = host_compatibility(_fields(spec), FLATCAR, arch="x86-64", scope=scope)
    assert merges is expected, reason


@pytest.mark.parametrize(
    ("host", "image", "expected"),
    [
        ("ID=debian VERSION_ID=12", "ID=debian SYSEXT_LEVEL=1.0", False),
        ("ID=debian VERSION_ID=12", "ID=debian SYSEXT_LEVEL=1.0 VERSION_ID=12", True),
        ("ID=arch", "ID=arch", True),
        ("ID=flatcar SYSEXT_LEVEL=1.0", "ID=flatcar", True),
    ],
)
def test_spec_7_5_other_hosts(host: str, image: str, expected: bool) -> None:
    merges, reason = host_compatibility(_fields(image), _fields(host), arch=Architecture.X86_64)
    assert merges is expected, reason


@pytest.mark.parametrize(
    ("image", "step"),
    [
        ("", "step 1"),
        ("ID=_any SYSEXT_SCOPE=", "step 2 (scope)"),
        ("ID=_any ARCHITECTURE=arm64", "step 3 (architecture)"),
        ("ARCHITECTURE=arm64", "step 3 (architecture)"),  # architecture is checked before ID
        ("SYSEXT_ID=x", "step 4 (ID)"),
        ("ID=fedora", "step 6 (ID)"),
        ("ID=flatcar SYSEXT_LEVEL=1", "step 8 (level)"),
        ("ID=flatcar", "step 8 (version)"),
    ],
)
def test_reason_names_the_first_failing_step(image: str, step: str) -> None:
    merges, reason = host_compatibility(_fields(image), FLATCAR, arch="x86-64")
    assert not merges
    assert reason.startswith(step), reason


def test_default_scope_excludes_initrd_but_not_portable() -> None:
    assert not host_compatibility({"ID": "_any"}, FLATCAR, arch="x86-64", scope="initrd")[0]
    assert host_compatibility({"ID": "_any"}, FLATCAR, arch="x86-64", scope="portable")[0]


def test_x86_64_spelling_reason_explains() -> None:
    _, reason = host_compatibility({"ID": "_any", "ARCHITECTURE": "x86_64"}, FLATCAR, arch="x86-64")
    assert "not a systemd architecture name" in reason


def test_host_without_id_is_refused() -> None:
    merges, reason = host_compatibility({"ID": "_any"}, {"VERSION_ID": "1"}, arch="x86-64")
    assert not merges and "no ID=" in reason


# --- rendering ---------------------------------------------------------------------------


def test_render_round_trips_through_the_os_release_reader() -> None:
    release = ExtensionRelease(
        "podman",
        "5.3.1",
        Architecture.X86_64,
        os_id="flatcar",
        sysext_level="1.0",
        reload_manager=True,
        extra={"HOME_URL": "https://podman.io/ a b"},
    )
    fields = parse_os_release(release.render())
    assert fields == {
        "ID": "flatcar",
        "SYSEXT_LEVEL": "1.0",
        "ARCHITECTURE": "x86-64",
        "SYSEXT_ID": "podman",
        "SYSEXT_VERSION_ID": "5.3.1",
        "SYSEXT_SCOPE": "system portable",
        "EXTENSION_RELOAD_MANAGER": "1",
        "HOME_URL": "https://podman.io/ a b",
    }
    assert release.release_path == "usr/lib/extension-release.d/extension-release.podman"
    assert release.image_filename == "podman-5.3.1-x86-64.raw"
    # The release written into an image satisfies the Flatcar host it was made for.
    assert host_compatibility(fields, FLATCAR, arch="x86-64")[0]


def test_defaults_are_any_os_and_no_architecture_line_when_arch_is_none() -> None:
    release = ExtensionRelease("tools", "1", None)
    assert release.fields() == {
        "ID": "_any",
        "SYSEXT_ID": "tools",
        "SYSEXT_VERSION_ID": "1",
        "SYSEXT_SCOPE": "system portable",
    }
    assert release.image_filename == "tools-1.raw"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("flatcar:1.0", ("flatcar", "1.0")), ("fedora", ("fedora", None)), ("_any", ("_any", None))],
)
def test_parse_os_spec(spec: str, expected: tuple[str, str | None]) -> None:
    assert ExtensionRelease.parse_os_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", ":1.0", "flatcar:"])
def test_parse_os_spec_refuses(spec: str) -> None:
    with pytest.raises(SysextError, match="ID:SYSEXT_LEVEL"):
        ExtensionRelease.parse_os_spec(spec)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a/b"}, "contains '/'"),
        ({"name": ".#x"}, "invalid extension name"),
        ({"name": "x.raw"}, "ends in .raw"),
        ({"name": ""}, "empty"),
        ({"version": "1.0~rc1"}, "'~'"),
        ({"version": "1 0"}, "' '"),
        ({"version": ".."}, "not a valid version"),
        ({"os_id": "Flatcar"}, "os ID"),
        ({"os_id": "flatcar", "sysext_level": "1 0"}, "SYSEXT_LEVEL"),
        ({"sysext_level": "1.0"}, "ID=_any"),
        ({"scope": ()}, "SYSEXT_SCOPE"),
        ({"scope": ("host",)}, "SYSEXT_SCOPE"),
        ({"extra": {"ID": "x"}}, "set by sysext itself"),
        ({"extra": {"lower": "x"}}, "not valid"),
        ({"extra": {"X": "a\nb"}}, "newline"),
    ],
)
def test_invalid_release_fields_are_refused(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "hello", "version": "1.0", "arch": Architecture.X86_64}
    with pytest.raises(SysextError, match=message):
        ExtensionRelease(**{**base, **kwargs})  # type: ignore[arg-type]


def test_release_is_frozen_and_extra_is_read_only() -> None:
    extra = {"A": "1"}
    release = ExtensionRelease("hello", "1", None, extra=extra)
    extra["B"] = "2"
    assert dict(release.extra) == {"A": "1"}
    with pytest.raises(TypeError):
        release.extra["C"] = "3"  # type: ignore[index]


# Spec §7.6: the release file is named after the activation name, never the versioned file.
@pytest.mark.parametrize(
    ("activation", "release_name"),
    [
        ("/etc/extensions/kubernetes.raw", "kubernetes"),
        ("/var/lib/extensions/foo.raw", "foo"),
    ],
)
def test_spec_7_6_release_file_named_after_activation_name(
    activation: str, release_name: str
) -> None:
    stem = activation.rsplit("/", 1)[1].removesuffix(".raw")
    assert (
        release_file_path(stem) == f"usr/lib/extension-release.d/extension-release.{release_name}"
    )
    assert name_problem(stem) is None


@given(
    values=st.dictionaries(
        st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True).filter(
            lambda k: k not in MANAGED_KEYS
        ),
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
        max_size=5,
    ),
    version=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.,_+-]{0,20}", fullmatch=True),
)
def test_any_release_renders_to_what_the_reader_parses_back(
    values: dict[str, str], version: str
) -> None:
    release = ExtensionRelease("x", version, Architecture.ARM64, extra=values)
    assert parse_os_release(release.render()) == release.fields()
