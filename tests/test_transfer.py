"""Transfer files: what we emit parses back, means what we intend, and matches our images."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysext.client.checker import manifest_url, payload_url, signature_url
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease
from sysext.systemd.patterns import HostInfo, expand_specifiers, match_many, match_pattern
from sysext.systemd.transfer import (
    TransferError,
    TransferSpec,
    image_file_name,
    parse_transfer,
    render_transfer,
    transfer_problems,
)
from tests.servers import run_cli

HOST = HostInfo(arch="x86-64", os_release={"ID": "flatcar", "VERSION_ID": "3815.2.0"})
ARM = HostInfo(arch="arm64", os_release={"ID": "flatcar", "VERSION_ID": "3815.2.0"})


def _host_patterns(text: str, section: str, host: HostInfo = HOST) -> list[str]:
    config = parse_transfer(text)
    return [expand_specifiers(p, host) for p in config.match_patterns(section)]


def test_default_transfer_shape() -> None:
    text = render_transfer(TransferSpec("podman", "https://ext.example.com"))
    config = parse_transfer(text)
    assert config.sections == ("Transfer", "Source", "Target")
    assert config.as_dict() == {
        "Transfer": {"Verify": "yes"},
        "Source": {
            "Type": "url-file",
            "Path": "https://ext.example.com/extensions/podman",
            "MatchPattern": "podman-@v-%a.raw",
        },
        "Target": {
            "Type": "regular-file",
            "Path": "/opt/extensions/podman",
            "MatchPattern": "podman-@v-%a.raw",
            "CurrentSymlink": "/etc/extensions/podman.raw",
        },
    }
    assert transfer_problems(config) == []
    assert "/etc/sysupdate.podman.d/podman.conf" in text and "podman.transfer" in text
    # The comment says what each systemd version reads (src/import/pull-common.c) and never
    # tells anyone to put the registry key alone into /etc (it replaces the vendor keyring).
    assert "https://ext.example.com/keyring.gpg" in text
    assert "curl -o /etc/systemd/import-pubring.gpg" not in text
    assert "252-257: /etc/systemd/import-pubring.gpg if it exists, else the vendor" in text
    assert "262+: $SYSTEMD_OPENPGP_KEYRING alone if set" in text
    assert "REPLACES the vendor one" in text
    # Not on PATH on Flatcar or Fedora CoreOS: the full path.
    assert "#   /usr/lib/systemd/systemd-sysupdate -C podman update" in text
    assert (
        "#   SYSTEMD_OPENPGP_KEYRING=/etc/sysext/keyring.gpg /usr/lib/systemd/systemd-sysupdate"
        " -C podman update" in text
    )


def test_options_round_trip() -> None:
    spec = TransferSpec(
        "kubernetes",
        "http://127.0.0.1:8080/",
        channel="beta",
        minor="1.29",
        instances_max=2,
        verify=False,
    )
    text = render_transfer(spec, file_format="transfer")
    config = parse_transfer(text)
    assert config.get("Transfer", "Verify") == "no"
    assert (
        config.get("Source", "Path") == "http://127.0.0.1:8080/channels/beta/extensions/kubernetes"
    )
    assert config.match_patterns("Source") == ["kubernetes-1.29.@v-%a.raw"]
    assert config.get("Target", "InstancesMax") == "2"
    assert "kubernetes.transfer" in text and "257" in text
    assert "import-pubring" not in text
    assert transfer_problems(config) == []


@pytest.mark.parametrize(
    "spec",
    [
        TransferSpec("podman", "https://r.example"),
        TransferSpec("kubernetes", "https://r.example", minor="1.29"),
        TransferSpec("docker", "https://r.example", os_bound=True),
        TransferSpec("k3s", "https://r.example", minor="1.30", os_bound=True, channel="edge"),
    ],
)
def test_pattern_matches_our_image_names_and_no_other(spec: TransferSpec) -> None:
    text = render_transfer(spec)
    source = _host_patterns(text, "Source")
    target = _host_patterns(text, "Target")
    assert source == target
    os_id = "3815.2.0" if spec.os_bound else None
    version = f"{spec.minor}.7" if spec.minor else "5.3.1"
    ours = image_file_name(spec.name, version, "x86-64", os_version_id=os_id)
    found = match_many(source, ours, strict=True)
    assert found is not None
    assert found.version == ("7" if spec.minor else "5.3.1")  # `X.Y.@v` captures the patch
    # another architecture, another OS version, another minor, a sidecar: never
    assert match_many(source, ours.replace("x86-64", "arm64")) is None
    if spec.os_bound:
        assert match_many(source, ours.replace("3815.2.0", "3975.0.0"), strict=True) is None
    if spec.minor:
        other_minor = image_file_name(spec.name, "1.28.9", "x86-64", os_version_id=os_id)
        assert match_many(source, other_minor) is None
    assert match_many(source, ours + ".json", strict=True) is None
    # the arm64 host sees the arm64 build
    arm = _host_patterns(text, "Source", ARM)
    assert match_many(arm, ours.replace("x86-64", "arm64"), strict=True) is not None


def test_docker_compose_trap_on_a_shared_manifest() -> None:
    """Why every extension gets its own directory: on a shared SHA256SUMS, docker's own
    pattern accepts docker-compose images — even with strict (full-name) matching."""
    text = render_transfer(TransferSpec("docker", "https://r.example"))
    (pattern,) = _host_patterns(text, "Source")
    compose = image_file_name("docker-compose", "2.20.0", "x86-64")
    found = match_pattern(pattern, compose, strict=True)
    assert found is not None and found.version == "compose-2.20.0"
    # With per-extension directories the URL differs, so the manifest never lists it.
    docker = TransferSpec("docker", "https://r.example").source_url
    other = TransferSpec("docker-compose", "https://r.example").source_url
    assert manifest_url(docker) != manifest_url(other)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TransferSpec("bad name", "https://r.example"), "invalid extension name"),
        (TransferSpec("-x", "https://r.example"), "invalid extension name"),
        (TransferSpec("x", "ftp://r.example"), "invalid registry URL"),
        (TransferSpec("x", "HTTPS://r.example"), "invalid registry URL"),
        (TransferSpec("x", "https://r.example/?token=1"), "query"),
        (TransferSpec("x", "https://r.example", minor="1.29~rc"), "invalid --minor"),
        (TransferSpec("x", "https://r.example", minor="1.29."), "invalid --minor"),
        (TransferSpec("x", "https://r.example", instances_max=1), "InstancesMax=1"),
        (TransferSpec("x", "https://r.example", channel="a/b"), "invalid channel"),
        (TransferSpec("x", "https://r.example", target_dir="opt/x"), "absolute"),
    ],
)
def test_invalid_specs(spec: TransferSpec, message: str) -> None:
    with pytest.raises(TransferError, match=message):
        render_transfer(spec)


def test_percent_in_url_is_escaped() -> None:
    text = render_transfer(TransferSpec("x", "https://r.example/a%20b"))
    path = parse_transfer(text).get("Source", "Path")
    assert path == "https://r.example/a%%20b/extensions/x"
    assert expand_specifiers(path or "", HOST) == "https://r.example/a%20b/extensions/x"


def test_parse_transfer_list_semantics() -> None:
    config = parse_transfer(
        "[Source]\n"
        "MatchPattern=a-@v.raw b-@v.raw\n"
        "MatchPattern=b-@v.raw \\\n  c-@v.raw\n"
        "[Target]\n"
        "MatchPattern=x-@v.raw\n"
        "MatchPattern=\n"
        "MatchPattern=y-@v.raw\n"
        "; comment\n# comment\n"
    )
    assert config.match_patterns("Source") == ["a-@v.raw", "b-@v.raw", "c-@v.raw"]
    assert config.match_patterns("Target") == ["y-@v.raw"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Path=/x\n", "outside of a section"),
        ("[Source]\nnonsense\n", "missing '='"),
        ("[Source\n", "section header"),
        ("[Source]\nPath=a \\\n", "continuation"),
    ],
)
def test_parse_transfer_errors(text: str, message: str) -> None:
    with pytest.raises(TransferError, match=message):
        parse_transfer(text)


def test_transfer_problems_flags_what_systemd_refuses() -> None:
    config = parse_transfer(
        "[Transfer]\nVerify=maybe\n[Source]\nType=url\nPath=https://h/a%20b\n"
        "MatchPattern=foo.raw\n[Target]\nType=directory\nPath=relative\n"
    )
    problems = "\n".join(transfer_problems(config))
    for expected in ("url-file", "stray '%'", "no '@v'", "Type=directory", "absolute", "Verify"):
        assert expected in problems


# §7.7 URL construction
@pytest.mark.parametrize(
    ("path", "manifest", "signature", "payload"),
    [
        (
            "https://example.com/ext/kubernetes",
            "https://example.com/ext/kubernetes/SHA256SUMS",
            "https://example.com/ext/kubernetes/SHA256SUMS.gpg",
            "https://example.com/ext/kubernetes/k-1.0-x86-64.raw",
        ),
        (
            "https://example.com/ext/kubernetes/",
            "https://example.com/ext/kubernetes/SHA256SUMS",
            "https://example.com/ext/kubernetes/SHA256SUMS.gpg",
            "https://example.com/ext/kubernetes/k-1.0-x86-64.raw",
        ),
        (
            "https://example.com/ext//",
            "https://example.com/ext/SHA256SUMS",
            "https://example.com/ext/SHA256SUMS.gpg",
            "https://example.com/ext/k-1.0-x86-64.raw",
        ),
        (
            "https://example.com",
            "https://example.com/SHA256SUMS",
            "https://example.com/SHA256SUMS.gpg",
            "https://example.com/k-1.0-x86-64.raw",
        ),
        (
            "https://example.com/a?token=x",
            "https://example.com/a/SHA256SUMS",
            "https://example.com/a/SHA256SUMS.gpg",
            "https://example.com/a/k-1.0-x86-64.raw",
        ),
        (
            "https://example.com/a/#frag",
            "https://example.com/a/SHA256SUMS",
            "https://example.com/a/SHA256SUMS.gpg",
            "https://example.com/a/k-1.0-x86-64.raw",
        ),
        (
            "file:///srv/updates",
            "file:///srv/updates/SHA256SUMS",
            "file:///srv/updates/SHA256SUMS.gpg",
            "file:///srv/updates/k-1.0-x86-64.raw",
        ),
    ],
)
def test_url_construction(path: str, manifest: str, signature: str, payload: str) -> None:
    assert manifest_url(path) == manifest
    assert signature_url(path) == signature
    assert payload_url(path, "k-1.0-x86-64.raw") == payload


@given(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True).filter(lambda n: ".." not in n))
def test_any_valid_name_renders_a_file_that_parses(name: str) -> None:
    text = render_transfer(TransferSpec(name, "https://r.example"))
    config = parse_transfer(text)
    assert transfer_problems(config) == []
    (pattern,) = _host_patterns(text, "Target")
    assert match_pattern(pattern, image_file_name(name, "1.0", "x86-64"), strict=True) is not None


def test_cli_transfer() -> None:
    result = run_cli(
        "transfer", "kubernetes", "--registry", "https://r.example", "--minor", "1.29",
        "--instances", "2", "--any-os",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = parse_transfer(result.stdout)
    assert config.match_patterns("Source") == ["kubernetes-1.29.@v-%a.raw"]
    assert config.get("Target", "InstancesMax") == "2"
    assert "/etc/sysupdate.kubernetes.d/kubernetes.conf" in result.stdout

    bad = run_cli("transfer", "podman", "--registry", "ftp://r.example", "--any-os")
    assert bad.returncode == 2 and "invalid registry URL" in bad.stderr
    assert "hint:" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stdout == ""

    helped = run_cli("transfer", "--help")
    assert helped.returncode == 0
    assert "vendor keys" in helped.stdout and "Example" in helped.stdout

    # The host's systemd version picks the file name; a contradicting --format is refused.
    newer = run_cli(
        "transfer", "podman", "--registry", "https://r.example", "--any-os",
        "--systemd-version", "257",
    )  # fmt: skip
    assert newer.returncode == 0, newer.stderr
    assert "Install as /etc/sysupdate.podman.d/podman.transfer" in newer.stdout
    older = run_cli(
        "transfer", "podman", "--registry", "https://r.example", "--any-os",
        "--systemd-version", "255",
    )  # fmt: skip
    assert "Install as /etc/sysupdate.podman.d/podman.conf" in older.stdout
    wrong = run_cli(
        "transfer", "podman", "--registry", "https://r.example", "--any-os",
        "--systemd-version", "260", "--format", "conf",
    )  # fmt: skip
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.splitlines()[0] == "error: --format conf does not fit systemd 260"
    assert wrong.stderr.splitlines()[1].startswith("hint: systemd 257+ read .transfer")
    too_old = run_cli(
        "transfer", "podman", "--registry", "https://r.example", "--any-os",
        "--systemd-version", "251",
    )  # fmt: skip
    assert too_old.returncode == 2 and too_old.stdout == ""


@pytest.mark.parametrize(
    ("name", "version", "arch"),
    [
        ("podman", "5.3.1", "x86-64"),
        ("docker-compose", "2.20.0", "arm64"),
        ("k", "v1.29.2", "x86-64"),
    ],
)
def test_pattern_matches_the_builders_file_names(name: str, version: str, arch: str) -> None:
    """The name `sysext pack` gives an image is what the transfer's pattern expects."""
    release = ExtensionRelease(name=name, version=version, arch=Architecture.parse(arch))
    assert release.image_filename == image_file_name(name, version, arch)
    text = render_transfer(TransferSpec(name, "https://r.example"))
    host = HostInfo(arch=arch, os_release={})
    found = match_many(_host_patterns(text, "Source", host), release.image_filename, strict=True)
    assert found is not None and found.version == version
