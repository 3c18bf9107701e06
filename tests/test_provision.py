"""Provisioning configs (`sysext butane`): real images and keys served over HTTP, every
Ignition config checked by the real ignition-validate, Butane and Ignition compared by an
independent reader, downloads checked against the generated hashes."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import itertools
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sysext.core.errors import SysextError
from sysext.core.process import require_tool, run
from sysext.provision import (
    DirectoryCatalog,
    ExtensionRef,
    HttpCatalog,
    ProvisionOptions,
    generate_config,
    merge_into_butane,
    render_butane,
    render_ignition,
    verify_config_sources,
)
from sysext.provision.model import (
    File,
    IgnitionVersion,
    InlineContents,
    KeyringMode,
    OnUpdate,
    ProvisionConfig,
    Unit,
    Variant,
)
from sysext.systemd.architecture import Architecture
from sysext.systemd.manifest import MANIFEST_NAME
from sysext.systemd.patterns import HostInfo, expand_match_patterns, match_pattern
from sysext.systemd.transfer import parse_transfer
from tests.provision_layout import PublicTree, build_public_tree, copy_tree
from tests.servers import StaticServer, run_cli, serve_http


@pytest.fixture(scope="module")
def built_tree(tmp_path_factory: pytest.TempPathFactory) -> PublicTree:
    return build_public_tree(tmp_path_factory.mktemp("published"))


@pytest.fixture
def served(built_tree: PublicTree, static_server: StaticServer) -> tuple[PublicTree, str]:
    """The public tree copied into the static server's root: (tree, registry URL)."""
    return copy_tree(built_tree, static_server.root), static_server.url


def ignition_validate(config_text: str, tmp_path: Path) -> str:
    """Run the real ignition-validate; return its output (warnings included)."""
    path = tmp_path / "config.ign"
    path.write_text(config_text)
    result = run([require_tool("ignition-validate"), path], check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    return output


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- an independent reader: both formats → the same comparable sets -------------------


def decode_data_url(url: str) -> bytes:
    assert url.startswith("data:"), url
    meta, _, payload = url[5:].partition(",")
    if meta.endswith(";base64"):
        return base64.b64decode(payload, validate=True)
    return urllib.parse.unquote_to_bytes(payload)


def _contents(entry: dict[str, Any]) -> tuple[str, ...]:
    contents = entry["contents"]
    if "inline" in contents:
        return ("bytes", sha256(contents["inline"].encode()))
    source = contents["source"]
    if source.startswith("data:"):
        return ("bytes", sha256(decode_data_url(source)))
    return ("remote", source, contents["verification"]["hash"])


def described(document: dict[str, Any]) -> dict[str, set[tuple[Any, ...]]]:
    """Files, links and units of a Butane or Ignition document, as plain sets."""
    storage = document.get("storage", {})
    units = document.get("systemd", {}).get("units", [])
    return {
        "files": {(f["path"], f["mode"], *_contents(f)) for f in storage.get("files", [])},
        "links": {(x["path"], x["target"], x.get("hard", False)) for x in storage.get("links", [])},
        "units": {
            (
                u["name"],
                u.get("enabled"),
                u.get("contents"),
                frozenset((d["name"], d["contents"]) for d in u.get("dropins", [])),
            )
            for u in units
        },
    }


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),
    binary=st.binary(max_size=64),
)
def test_any_inline_content_means_the_same_in_both_formats(text: str, binary: bytes) -> None:
    """Butane literal blocks and percent-encoded data: URLs must carry every byte exactly
    (trailing spaces, tabs, CRs, Unicode line separators, non-UTF-8 keyrings…)."""
    config = ProvisionConfig(
        Variant.FLATCAR,
        IgnitionVersion.V3_3_0,
        files=(
            File("/etc/a.conf", InlineContents(text.encode())),
            File("/etc/b.bin", InlineContents(binary)),
        ),
        units=(Unit("a.service", contents=text or "[Unit]\n"),),
    )
    butane = yaml.safe_load(render_butane(config))
    ignition = json.loads(render_ignition(config))
    assert described(butane) == described(ignition)
    assert decode_data_url(ignition["storage"]["files"][0]["contents"]["source"]) == text.encode()
    assert decode_data_url(ignition["storage"]["files"][1]["contents"]["source"]) == binary
    assert butane["systemd"]["units"][0]["contents"] == (text or "[Unit]\n")


OPTION_COMBINATIONS = [
    ProvisionOptions(
        variant,
        IgnitionVersion.V3_3_0,
        updates,
        on_update,
        keyring,
        # notify needs systemd 262 (systemd-sysupdate-notify-sysext.socket)
        systemd_version=262 if on_update is OnUpdate.NOTIFY else None,
    )
    for variant, updates, on_update, keyring in itertools.product(
        Variant, (True, False), OnUpdate, KeyringMode
    )
    if updates or (on_update is OnUpdate.RESTART and keyring is KeyringMode.COMBINE)
]


def test_default_butane_pins_newest_version_with_hash_link_transfer_and_keyring(
    served: tuple[PublicTree, str], tmp_path: Path
) -> None:
    tree, url = served
    out = tmp_path / "host.bu"
    result = run_cli("butane", "podman", "--registry", url, "--output", out)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    document = yaml.safe_load(text)
    assert (document["variant"], document["version"]) == ("flatcar", "1.0.0")
    files = {f["path"]: f for f in document["storage"]["files"]}

    image = tree.image("podman", "5.3.1", "x86-64")
    entry = files["/opt/extensions/podman/podman-5.3.1-x86-64.raw"]
    assert entry["contents"]["source"] == f"{url}/extensions/podman/{image.name}"
    assert entry["contents"]["verification"]["hash"] == f"sha256-{sha256(image.read_bytes())}"
    assert document["storage"]["links"] == [
        {
            "path": "/etc/extensions/podman.raw",
            "target": "/opt/extensions/podman/podman-5.3.1-x86-64.raw",
            "hard": False,
        }
    ]
    transfer = parse_transfer(files["/etc/sysupdate.podman.d/podman.conf"]["contents"]["inline"])
    assert transfer.get("Source", "Path") == f"{url}/extensions/podman"
    assert transfer.get("Transfer", "Verify") == "yes"
    # Both names: systemd 257+ read only the .transfer, 252-256 only the .conf.
    assert files["/etc/sysupdate.podman.d/podman.transfer"] == {
        **files["/etc/sysupdate.podman.d/podman.conf"],
        "path": "/etc/sysupdate.podman.d/podman.transfer",
    }
    # The registry key goes to its own file, never over the vendor keyring.
    assert "/etc/systemd/import-pubring.gpg" not in files
    keyring = files["/etc/sysext/keyring.gpg"]
    assert decode_data_url(keyring["contents"]["source"]) == tree.keyring
    # Why, right above the keyring entry, as a YAML comment.
    before = text[: text.index("- path: /etc/sysext/keyring.gpg")]
    assert "systemd never reads this file by itself" in before.rsplit("contents:", 1)[-1]
    assert files["/etc/sysext/keyring-combine"]["mode"] == 0o755
    units = {u["name"]: u for u in document["systemd"]["units"]}
    assert units["sysext-update-podman.timer"]["enabled"] is True
    service = units["sysext-update-podman.service"]["contents"]
    assert (
        "ExecStart=/bin/sh /etc/sysext/update-extension podman /etc/extensions/podman.raw restart"
        in service
    )
    script = files["/etc/sysext/update-extension"]
    assert script["mode"] == 0o755
    assert '"$sysupdate" --component="$name" update' in script["contents"]["inline"]
    assert "restart) systemctl restart systemd-sysext.service ;;" in script["contents"]["inline"]
    # Flatcar enables systemd-sysext.service itself: the config only adds the boot-merge
    # drop-in (the host's systemd version is unknown, and 262 would hang its boot without it).
    assert units["systemd-sysext.service"] == {
        "name": "systemd-sysext.service",
        "dropins": [
            {"name": "50-sysext-boot-merge.conf", "contents": units["systemd-sysext.service"]
             ["dropins"][0]["contents"]},
        ],
    }  # fmt: skip
    assert (
        "systemd-sysext refresh --no-reload"
        in units["systemd-sysext.service"]["dropins"][0]["contents"]
    )
    # The stock sysupdate units only get the combined keyring before they start.
    assert units["systemd-sysupdate.service"] == {
        "name": "systemd-sysupdate.service",
        "dropins": [
            {
                "name": "50-sysext-keyring.conf",
                "contents": units["systemd-sysupdate.service"]["dropins"][0]["contents"],
            }
        ],
    }
    assert "Wants=sysext-keyring.service\nAfter=sysext-keyring.service\n" in service
    assert "Environment=SYSTEMD_OPENPGP_KEYRING=/etc/sysext/keyring.gpg\n" in service
    assert units["sysext-keyring.service"]["enabled"] is True
    assert units["sysext-keyring.path"]["enabled"] is True


def test_update_unit_follows_on_update_and_fcos_enables_sysext(
    served: tuple[PublicTree, str],
) -> None:
    _, url = served
    result = run_cli(
        "butane", "podman", "--registry", url, "--variant", "fcos", "--on-update", "reboot-marker"
    )
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert (document["variant"], document["version"]) == ("fcos", "1.4.0")
    units = {u["name"]: u for u in document["systemd"]["units"]}
    # Enabled (FCOS ships it disabled), with the boot-merge drop-in: the host's systemd
    # version is unknown, and 262 would hang its boot without it.
    assert units["systemd-sysext.service"]["enabled"] is True
    dropins = units["systemd-sysext.service"]["dropins"]
    assert [d["name"] for d in dropins] == ["50-sysext-boot-merge.conf"]
    service = units["sysext-update-podman.service"]["contents"]
    assert service.endswith(
        "ExecStart=/bin/sh /etc/sysext/update-extension podman /var/lib/extensions/podman.raw"
        " reboot-marker /var/lib/extensions /var/lib/extensions.d\n"
    )
    # FCOS: updates cannot run as a service under SELinux yet, so the timer is off and the
    # header says why and how to update by hand.
    assert units["sysext-update-podman.timer"]["enabled"] is False
    assert "SELinux policy for systemd-importd" in result.stdout.split("variant:")[0]
    assert units["sysext-relabel.service"]["enabled"] is True


def test_transfer_recognizes_the_first_boot_image_and_moves_the_same_link(
    served: tuple[PublicTree, str],
) -> None:
    """sysupdate must see the Ignition-installed file as the installed version, else it
    would download it again; and it must update the link the config created."""
    _, url = served
    config = generate_config(HttpCatalog(url), [ExtensionRef("podman")], arch=Architecture.ARM64)
    files = {f.path: f for f in config.files}
    transfer = parse_transfer(files["/etc/sysupdate.podman.d/podman.conf"].contents.data.decode())
    (link,) = config.links
    image_dir, _, image_name = link.target.rpartition("/")
    assert transfer.get("Target", "Path") == image_dir
    assert transfer.get("Target", "CurrentSymlink") == link.path
    host = HostInfo(arch="arm64", os_release={"ID": "flatcar", "VERSION_ID": "4081.2.0"})
    (pattern,) = expand_match_patterns(transfer.get("Target", "MatchPattern") or "", host).patterns
    match = match_pattern(pattern, image_name, strict=True)
    assert match is not None and match.version == "5.3.1"


@pytest.mark.parametrize("options", OPTION_COMBINATIONS, ids=repr)
def test_every_option_combination_passes_ignition_validate_and_matches_butane(
    served: tuple[PublicTree, str], tmp_path: Path, options: ProvisionOptions
) -> None:
    _, url = served
    config = generate_config(
        HttpCatalog(url),
        [ExtensionRef("podman"), ExtensionRef("crio", "1.31.1")],
        options=options,
    )
    ignition_text = render_ignition(config)
    assert ignition_validate(ignition_text, tmp_path) == ""  # no warnings either
    ignition = json.loads(ignition_text)
    butane = yaml.safe_load(render_butane(config))
    assert described(butane) == described(ignition)
    paths = {f["path"] for f in ignition["storage"]["files"]}
    assert ("/etc/sysext/keyring.gpg" in paths) == (
        options.updates and options.keyring is KeyringMode.COMBINE
    )
    assert "/etc/systemd/import-pubring.gpg" not in paths
    assert ("/etc/sysupdate.crio.d/crio.transfer" in paths) == options.updates
    # 262 hosts get only the .transfer, the component metadata and the notify socket.
    new = options.systemd_version == 262
    assert ("/etc/sysupdate.crio.d/crio.conf" in paths) == (options.updates and not new)
    assert ("/etc/sysupdate.crio.component" in paths) == (options.updates and new)
    units = {u["name"]: u for u in ignition.get("systemd", {}).get("units", [])}
    # 262 hosts — and hosts of an unknown version, which may be 262 — merge at boot without
    # the restarts that would deadlock the boot (the booted proof:
    # tests/test_booted_update.py); with updates or without.
    sysext = units.get("systemd-sysext.service", {})
    boot_merge = new or options.systemd_version is None
    assert [d["name"] for d in sysext.get("dropins", [])] == (
        ["50-sysext-boot-merge.conf"] if boot_merge else []
    )
    if options.on_update is OnUpdate.NOTIFY:
        assert units["systemd-sysupdate-notify-sysext.socket"] == {
            "name": "systemd-sysupdate-notify-sysext.socket",
            "enabled": True,
        }


def test_cli_ignition_output_validates_for_several_extensions_and_arches(
    served: tuple[PublicTree, str], tmp_path: Path
) -> None:
    _, url = served
    for args in (
        ("podman", "crio"),
        ("podman@5.2.0", "--no-updates"),
        ("podman", "--arch", "arm64", "--keyring", "skip"),
        ("podman", "--channel", "beta", "--variant", "fcos"),
    ):
        result = run_cli("butane", *args, "--registry", url, "--ignition")
        assert result.returncode == 0, result.stderr
        assert ignition_validate(result.stdout, tmp_path) == ""
    beta = json.loads(result.stdout)
    assert beta["storage"]["files"][0]["contents"]["source"] == (
        f"{url}/channels/beta/extensions/podman/podman-5.4.0-rc1-x86-64.raw"
    )


# Ignition spec 3.4.0, the part of its JSON schema this project emits (config/v3_4 schema:
# keys and JSON types). The same keys and types hold in 3.5.0 and 3.6.0 (coreos/ignition
# config/v3_7_experimental/schema/ignition.json at commit ad61f8d, the commit that
# stabilized 3.6.0 and copied its schema: node path/overwrite/user/group, file
# mode/contents/append, link target/hard, resource source/compression/httpHeaders/
# verification, unit name/enabled/mask/contents/dropins). Debian's ignition-validate 2.14
# (bookworm, and still 2.14 in trixie and forky) rejects 3.4.0+ as an unknown version, so
# 3.4.0-3.6.0 output is checked against this instead.
_RESOURCE = {"source": str, "compression": str, "httpHeaders": list, "verification": dict}
_NODE = {"path": str, "overwrite": bool, "user": dict, "group": dict}
SCHEMA_3_4_0: dict[str, dict[str, type]] = {
    "$": {
        "ignition": dict,
        "storage": dict,
        "systemd": dict,
        "passwd": dict,
        "kernelArguments": dict,
    },
    "$.ignition": {
        "version": str,
        "config": dict,
        "timeouts": dict,
        "security": dict,
        "proxy": dict,
    },
    "$.storage": {
        "disks": list,
        "raid": list,
        "luks": list,
        "filesystems": list,
        "files": list,
        "directories": list,
        "links": list,
    },
    "$.storage.files[]": {**_NODE, "mode": int, "contents": dict, "append": list},
    "$.storage.files[].contents": _RESOURCE,
    "$.storage.files[].contents.verification": {"hash": str},
    "$.storage.links[]": {**_NODE, "target": str, "hard": bool},
    "$.systemd": {"units": list},
    "$.systemd.units[]": {
        "name": str,
        "enabled": bool,
        "mask": bool,
        "contents": str,
        "dropins": list,
    },
    "$.systemd.units[].dropins[]": {"name": str, "contents": str},
}
REQUIRED_3_4_0 = {
    "$": {"ignition"},
    "$.ignition": {"version"},
    "$.storage.files[]": {"path"},
    "$.storage.links[]": {"path"},
    "$.systemd.units[]": {"name"},
    "$.systemd.units[].dropins[]": {"name"},
}


def schema_problems(value: Any, where: str = "$") -> list[str]:
    allowed = SCHEMA_3_4_0.get(where)
    if allowed is None:
        return [f"{where}: not covered by the 3.4.0 subset"]
    problems = [
        f"{where}: missing {k}" for k in sorted(REQUIRED_3_4_0.get(where, set()) - set(value))
    ]
    for key, item in value.items():
        if key not in allowed:
            problems.append(f"{where}.{key}: not in the 3.4.0 schema")
        elif not isinstance(item, allowed[key]) or (allowed[key] is int and item is True):
            problems.append(f"{where}.{key}: expected {allowed[key].__name__}")
        elif isinstance(item, dict) and f"{where}.{key}" in SCHEMA_3_4_0:
            problems += schema_problems(item, f"{where}.{key}")
        elif isinstance(item, list) and f"{where}.{key}[]" in SCHEMA_3_4_0:
            for element in item:
                problems += schema_problems(element, f"{where}.{key}[]")
    return problems


def test_schema_subset_catches_mistakes() -> None:
    good = {"ignition": {"version": "3.4.0"}, "systemd": {"units": [{"name": "a.service"}]}}
    assert schema_problems(good) == []
    assert schema_problems({"ignition": {}, "systemd": {"units": [{"enabled": "yes"}]}}) == [
        "$.ignition: missing version",
        "$.systemd.units[]: missing name",
        "$.systemd.units[].enabled: expected bool",
    ]
    assert schema_problems({"ignition": {"version": "3.4.0", "verison": 1}}) == [
        "$.ignition.verison: not in the 3.4.0 schema"
    ]


@pytest.mark.parametrize(
    "variant,spec,butane_version",
    [
        ("flatcar", "3.4.0", "1.1.0"),
        ("fcos", "3.4.0", "1.5.0"),
        ("fcos", "3.5.0", "1.6.0"),
        ("fcos", "3.6.0", "1.7.0"),
    ],
)
def test_newer_ignition_specs_on_request(
    served: tuple[PublicTree, str], tmp_path: Path, variant: str, spec: str, butane_version: str
) -> None:
    """Debian's ignition-validate (2.14, also in forky) knows 3.3.0 as its newest stable
    spec, so 3.4.0-3.6.0 output is checked against the keys and types of Ignition's schema
    (SCHEMA_3_4_0, unchanged for these keys up to 3.6.0) and, as 3.3.0, by the real one."""
    _, url = served
    common = ("butane", "podman", "crio", "--registry", url, "--variant", variant)
    result = run_cli(*common, "--ignition", "--ignition-version", spec)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ignition"]["version"] == spec
    assert schema_problems(document) == []
    # Everything else is spec 3.3.0 content too: the real validator accepts it as such.
    document["ignition"]["version"] = "3.3.0"
    assert ignition_validate(json.dumps(document), tmp_path) == ""
    butane = run_cli(*common, "--ignition-version", spec)
    assert yaml.safe_load(butane.stdout)["version"] == butane_version
    assert described(yaml.safe_load(butane.stdout)) == described(document)


def test_generated_sources_download_and_match_their_hashes(
    served: tuple[PublicTree, str], tmp_path: Path
) -> None:
    _, url = served
    result = run_cli("butane", "podman", "crio", "--registry", url, "--ignition")
    document = json.loads(result.stdout)
    remote = 0
    for entry in document["storage"]["files"]:  # our own download, independent of sysext
        source = entry["contents"]["source"]
        if source.startswith("http"):
            remote += 1
            body = requests.get(source, timeout=30).content
            assert f"sha256-{sha256(body)}" == entry["contents"]["verification"]["hash"]
    assert remote == 2
    checks = verify_config_sources(document)
    assert [c.path for c in checks if c.verified] == [
        "/opt/extensions/podman/podman-5.3.1-x86-64.raw",
        "/opt/extensions/crio/crio-1.31.1-x86-64.raw",
    ]


def test_a_wrong_hash_is_caught(served: tuple[PublicTree, str], tmp_path: Path) -> None:
    tree, url = served
    result = run_cli("butane", "podman", "--registry", url, "--ignition")
    document = json.loads(result.stdout)
    right = document["storage"]["files"][0]["contents"]["verification"]["hash"]
    wrong = "sha256-" + "0" * 64
    document["storage"]["files"][0]["contents"]["verification"]["hash"] = wrong
    bad = tmp_path / "bad.ign"
    bad.write_text(json.dumps(document))
    with pytest.raises(SysextError, match="the config expects 0000"):
        verify_config_sources(document)
    check = run_cli("verify-config", bad)
    assert check.returncode == 2
    assert check.stderr.startswith(
        f"error: /opt/extensions/podman/podman-5.3.1-x86-64.raw: {url}/extensions/podman/"
        f"podman-5.3.1-x86-64.raw has sha256 {right[7:]}, the config expects {'0' * 64}"
    )
    assert "Traceback" not in check.stderr
    # The served file changing after generation is the same mismatch, seen from the host.
    document["storage"]["files"][0]["contents"]["verification"]["hash"] = right
    tree.image("podman", "5.3.1", "x86-64").write_bytes(b"tampered image bytes")
    with pytest.raises(SysextError, match="has sha256 "):
        verify_config_sources(document)
    # A remote source without any hash would be installed unverified: refused too.
    del document["storage"]["files"][0]["contents"]["verification"]
    with pytest.raises(SysextError, match=r"without verification\.hash"):
        verify_config_sources(document)


def test_cli_check_option_verifies_before_printing(served: tuple[PublicTree, str]) -> None:
    _, url = served
    result = run_cli("butane", "podman", "--registry", url, "--check")
    assert result.returncode == 0, result.stderr
    assert "ok /opt/extensions/podman/podman-5.3.1-x86-64.raw sha256" in result.stderr


# --- errors: one line, what exists, nothing written ------------------------------------


@pytest.mark.parametrize(
    "args,message,hint",
    [
        (["nope"], "no extension 'nope' in channel 'stable'", "the registry does not list"),
        (
            ["podman@9.9"],
            "podman 9.9 is not published for x86-64 in channel 'stable'",
            "versions: 5.3.1, 5.2.0",
        ),
        (
            ["crio", "--arch", "arm64"],
            "crio has no arm64 image in channel 'stable'",
            "architectures: x86-64",
        ),
        (
            ["crio", "--arch", "amd64"],
            "architecture 'amd64' is not systemd's name for it",
            "use 'x86-64'",
        ),
        (["podman", "--variant", "coreos"], "unknown variant 'coreos'", "flatcar, fcos"),
        (
            ["podman", "--ignition-version", "3.7.0"],
            "unknown Ignition version '3.7.0'",
            "3.3.0, 3.4.0, 3.5.0, 3.6.0",
        ),
        (
            ["podman", "--ignition-version", "3.6.0"],
            "Butane has no stable flatcar spec for Ignition 3.6.0",
            "use --ignition-version 3.4.0 for flatcar",
        ),
        (
            ["podman", "--keyring", "replace"],
            "--keyring replace is gone: it made the registry key the only trusted key",
            "use --keyring combine (the default)",
        ),
        (
            ["podman", "--on-update", "notify"],
            "--on-update notify needs systemd 262",
            "--systemd-version 262",
        ),
        (
            ["podman", "--ignition-version", "3.5.0"],
            "Butane has no stable flatcar spec for Ignition 3.5.0",
            "use --ignition-version 3.4.0 for flatcar",
        ),
        (
            ["podman", "--on-update", "reboot"],
            "unknown --on-update action 'reboot'",
            "refresh, reboot-marker",
        ),
        (["podman", "--keyring", "merge"], "unknown --keyring mode 'merge'", "combine, skip"),
        (["po/dman"], "invalid extension name 'po/dman'", "NAME@VERSION"),
        (["podman@1~rc"], "podman@1~rc: ", "NAME@VERSION"),
        (
            ["podman", "podman@5.2.0"],
            "extension 'podman' requested more than once",
            "one /etc/extensions/NAME.raw",
        ),
        (
            ["podman", "crio", "--version", "1"],
            "--version applies to exactly one NAME",
            "NAME@VERSION",
        ),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(
    served: tuple[PublicTree, str], tmp_path: Path, args: list[str], message: str, hint: str
) -> None:
    _, url = served
    out = tmp_path / "out" / "host.bu"
    out.parent.mkdir()
    result = run_cli("butane", *args, "--registry", url, "--output", out)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: {message}"), result.stderr
    assert lines[1].startswith("hint: ") and hint in lines[1], result.stderr
    assert len(lines) == 2 and result.stdout == ""
    assert list(out.parent.iterdir()) == []


def test_unreachable_registry_and_broken_manifest(
    served: tuple[PublicTree, str], tmp_path: Path
) -> None:
    tree, url = served
    result = run_cli("butane", "podman", "--registry", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach the registry at http://127.0.0.1:9")
    result = run_cli("butane", "podman", "--registry", "ftp://example")
    assert result.stderr.startswith("error: registry URL 'ftp://example' is not http")
    manifest = tree.root / "extensions" / "podman" / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes() + b"# comment\n")
    result = run_cli("butane", "podman", "--registry", url)
    assert result.returncode == 2
    assert result.stderr.startswith("error: podman (stable): the registry's SHA256SUMS line")


def test_directory_catalog_lists_what_exists(built_tree: PublicTree) -> None:
    """The registry resolves from its public tree and can say what it has."""
    catalog = DirectoryCatalog(built_tree.root, "https://ext.example.com/", ("stable", "beta"))
    with pytest.raises(SysextError) as missing:
        generate_config(catalog, [ExtensionRef("docker")])
    assert missing.value.message == "no extension 'docker' in channel 'stable'"
    assert missing.value.hint == "extensions: crio, podman"
    with pytest.raises(SysextError) as channel:
        generate_config(catalog, [ExtensionRef("podman")], channel="nightly")
    assert channel.value.message == "unknown channel 'nightly'"
    assert channel.value.hint == "channels: beta, stable"
    with pytest.raises(SysextError) as beta:
        generate_config(catalog, [ExtensionRef("crio")], channel="beta")
    assert beta.value.hint == "extensions: podman"
    config = generate_config(catalog, [ExtensionRef("podman")], channel="beta")
    remote = config.files[0].contents
    assert remote.url == (  # type: ignore[union-attr]
        "https://ext.example.com/channels/beta/extensions/podman/podman-5.4.0-rc1-x86-64.raw"
    )


# --- --merge-into -----------------------------------------------------------------------

USER_BUTANE = """\
# my fleet
variant: flatcar
version: 1.0.0
passwd:
  users:
    - name: core
      ssh_authorized_keys:
        - ssh-ed25519 AAAAC3Nza… admin@example.com
storage:
  files:
    - path: /etc/hostname
      mode: 0644
      contents:
        inline: node-1
systemd:
  units:
    - name: systemd-sysext.service
      enabled: true
"""


def test_merge_into_adds_entries_keeps_the_users_and_is_idempotent(
    served: tuple[PublicTree, str], tmp_path: Path
) -> None:
    _, url = served
    user = tmp_path / "host.bu"
    user.write_text(USER_BUTANE)
    result = run_cli("butane", "podman", "--registry", url, "--merge-into", user)
    assert result.returncode == 0, result.stderr
    assert user.read_text() == USER_BUTANE  # printed, not edited in place
    merged = yaml.safe_load(result.stdout)
    original = yaml.safe_load(USER_BUTANE)
    assert merged["passwd"] == original["passwd"]
    generated = yaml.safe_load(run_cli("butane", "podman", "--registry", url).stdout)
    want, got = described(generated), described(merged)
    assert want["files"] < got["files"] and want["links"] <= got["links"]
    # The user's systemd-sysext.service (enabled) and ours (the boot-merge drop-in) become
    # one unit carrying both; every other generated unit is taken as it is.
    sysext = "systemd-sysext.service"
    assert {u for u in want["units"] if u[0] != sysext} <= got["units"]
    ours = next(u for u in want["units"] if u[0] == sysext)
    assert (sysext, True, None, ours[3]) in got["units"]
    assert ("/etc/hostname", 0o644, "bytes", sha256(b"node-1")) in got["files"]
    # Merging into the merged file changes nothing.
    again_file = tmp_path / "merged.bu"
    again_file.write_text(result.stdout)
    again = run_cli("butane", "podman", "--registry", url, "--merge-into", again_file)
    assert yaml.safe_load(again.stdout) == merged


def test_merge_into_refuses_conflicts_and_mismatched_headers(
    served: tuple[PublicTree, str], tmp_path: Path
) -> None:
    _, url = served
    config = generate_config(HttpCatalog(url), [ExtensionRef("podman")])
    conflicting = USER_BUTANE.replace("/etc/hostname", "/etc/extensions/podman.raw")
    with pytest.raises(SysextError) as conflict:
        merge_into_butane(conflicting, config, source="host.bu")
    assert conflict.value.message == (
        "host.bu already defines /etc/extensions/podman.raw (file) with different content"
    )
    user = tmp_path / "host.bu"
    out = tmp_path / "out.bu"
    for text, message, hint in (
        (
            USER_BUTANE.replace("flatcar", "fcos").replace("1.0.0", "1.4.0"),
            "is Butane variant 'fcos', the generated entries are 'flatcar'",
            "--variant fcos",
        ),
        (
            USER_BUTANE.replace("1.0.0", "1.1.0"),
            "is flatcar 1.1.0 (Ignition 3.4.0), the generated entries are flatcar 1.0.0",
            "--ignition-version 3.4.0",
        ),
        (
            USER_BUTANE.replace("1.0.0", "0.9.0"),
            "Butane flatcar version '0.9.0' is not one sysext knows",
            "1.0.0, 1.1.0",
        ),
        (
            USER_BUTANE.replace(
                "mode: 0644\n      contents:\n        inline: node-1",
                "mode: 0600\n      contents:\n        inline: x",
            ).replace("/etc/hostname", "/etc/sysupdate.podman.d/podman.conf"),
            "already defines /etc/sysupdate.podman.d/podman.conf (file) with different",
            "remove it",
        ),
        (
            "variant: flatcar\nversion: 1.0.0\nsystemd:\n  units:\n"
            "    - name: sysext-update-podman.timer\n      enabled: false\n",
            "already configures unit sysext-update-podman.timer with a different 'enabled'",
            "remove that unit",
        ),
        ("- just a list\n", "not a Butane document", None),
    ):
        user.write_text(text)
        result = run_cli("butane", "podman", "--registry", url, "--merge-into", user, "-o", out)
        assert result.returncode == 2, result
        assert message in result.stderr.splitlines()[0], result.stderr
        if hint:
            assert hint in result.stderr.splitlines()[1]
        assert not out.exists()
        assert user.read_text() == text
    missing = run_cli("butane", "podman", "--registry", url, "--merge-into", tmp_path / "no.bu")
    assert missing.stderr.startswith("error: cannot read ")
    combined = run_cli("butane", "podman", "--registry", url, "--merge-into", user, "--ignition")
    assert combined.stderr.startswith("error: --merge-into writes Butane")


def test_help_explains_with_an_example() -> None:
    for command in ("butane", "verify-config"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "Example" in result.stdout
    assert "vendor keys stay trusted" in " ".join(run_cli("butane", "--help").stdout.split())


def test_verify_config_reports_unreadable_input(tmp_path: Path) -> None:
    bad = tmp_path / "x.ign"
    bad.write_text("{not json")
    result = run_cli("verify-config", bad)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {bad}: not valid JSON or YAML")
    result = run_cli("verify-config", tmp_path / "missing.ign")
    assert result.stderr.startswith("error: cannot read ")


# --- the installed result really merges --------------------------------------------------


def apply_ignition(document: dict[str, Any], root: Path) -> None:
    """Do what Ignition's files stage does with this config, under `root`.

    Links are written as copies of their target: systemd 252's `systemd-sysext --root`
    does not discover symlinked images (DESIGN.md §4), while on a host the symlink works
    because the release file is named after the link (spec §1.2).
    """
    for entry in document["storage"]["files"]:
        source = entry["contents"]["source"]
        data = (
            decode_data_url(source)
            if source.startswith("data:")
            else requests.get(source, timeout=60).content
        )
        expected = entry["contents"].get("verification", {}).get("hash")
        assert expected in (None, f"sha256-{sha256(data)}")
        target = root / entry["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(entry["mode"])
    for link in document["storage"].get("links", []):
        target = root / link["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((root / link["target"].lstrip("/")).read_bytes())


@pytest.mark.root
def test_installed_extension_merges_and_runs(
    served: tuple[PublicTree, str], tmp_path: Path
) -> None:
    tree, url = served
    result = run_cli("butane", "podman", "crio", "--registry", url, "--ignition")
    root = tmp_path / "host"
    apply_ignition(json.loads(result.stdout), root)
    (root / "etc" / "os-release").write_text("ID=flatcar\nVERSION_ID=4081.2.0\n")
    assert (root / "etc/sysext/keyring.gpg").read_bytes() == tree.keyring
    script = (
        "mount -t tmpfs tmpfs /run && mount --make-rshared / && "
        f"systemd-sysext --root={root} merge >&2 && "
        f"{root}/usr/bin/podman && {root}/usr/bin/crio"
    )
    merged = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    assert merged.stdout.decode().splitlines() == ["podman 5.3.1", "crio 1.31.1"]


@pytest.mark.parametrize(
    ("on_update", "variant"),
    [*((o, Variant.FLATCAR) for o in OnUpdate), (OnUpdate.RESTART, Variant.FCOS)],
)
def test_update_units_pass_systemd_analyze_verify(
    served: tuple[PublicTree, str], tmp_path: Path, on_update: OnUpdate, variant: Variant
) -> None:
    _, url = served
    config = generate_config(
        HttpCatalog(url),
        [ExtensionRef("podman")],
        options=ProvisionOptions(
            on_update=on_update,
            variant=variant,
            systemd_version=262 if on_update is OnUpdate.NOTIFY else None,
        ),
    )
    paths = []
    for unit in config.units:
        if unit.contents is None:  # a unit the OS ships: enabled, or a drop-in for it
            assert unit.enabled is True or unit.dropins, unit
            continue
        path = tmp_path / unit.name
        path.write_text(unit.contents)
        paths.append(path)
    result = run([require_tool("systemd-analyze"), "verify", "--man=no", *paths], check=False)
    output = (result.stdout + result.stderr).decode().splitlines()
    # Debian does not package systemd-sysupdate (DESIGN.md §4): that complaint is expected,
    # anything else (unknown keys, bad sections, bad timer specs) is a real mistake.
    # Nor are the scripts the config itself installs (the keyring updater), nor restorecon
    # (policycoreutils), which only SELinux hosts such as Fedora CoreOS have.
    expected = ["/usr/lib/systemd/systemd-sysupdate", *(f.path for f in config.files)]
    if not Path("/usr/sbin/restorecon").exists():
        expected.append("/usr/sbin/restorecon")
    missing = tuple(f"Command {path} is not executable" for path in expected)
    assert [line for line in output if not any(m in line for m in missing)] == []


class _BucketHandler(http.server.SimpleHTTPRequestHandler):
    """A bucket whose policy allows anonymous GetObject only: a missing key is a 403."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        super().send_error(403 if code == 404 else code, message, explain)


def test_butane_reads_a_bucket_that_answers_403_for_a_missing_file(
    built_tree: PublicTree, tmp_path: Path
) -> None:
    """Hosts of a registry on S3 poll its bucket, so their config is generated from the
    bucket's URL; an optional file the registry does not publish there (verity.crt when it
    trusts no certificate) answers 403 and counts as absent."""
    tree = copy_tree(built_tree, tmp_path / "bucket")
    assert not (tree.root / "verity.crt").exists()
    handler = functools.partial(_BucketHandler, directory=str(tree.root))
    with serve_http(handler) as url:
        assert requests.get(f"{url}/verity.crt", timeout=10).status_code == 403
        result = run_cli("butane", "podman", "--registry", url, "--ignition")
    assert result.returncode == 0, result.stderr
    assert ignition_validate(result.stdout, tmp_path) == ""
