"""Provisioning against a real `sysext serve`: images published over HTTP, configs from
the registry's /api/v1/…/butane and /ignition endpoints and from the CLI, every download
checked against the config's hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from sysext.provision import verify_config_sources
from tests.registry_server import RegistryServer, build_image, running_registry
from tests.servers import run_cli
from tests.test_provision import decode_data_url, described, ignition_validate

PUBLISH = (
    ("podman", "5.2.0", "x86-64", "stable"),
    ("podman", "5.3.1", "x86-64", "stable"),
    ("podman", "5.3.1", "arm64", "stable"),
    ("crio", "1.31.1", "x86-64", "stable"),
    ("podman", "5.4.0-rc1", "x86-64", "beta"),
)


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, registry_database: str
) -> Iterator[RegistryServer]:
    # Requesting `registry_database` (conftest.py) makes one server per database engine.
    work = tmp_path_factory.mktemp("provision-registry")
    with running_registry(work / "data") as server:
        for name, version, arch, channel in PUBLISH:
            image = build_image(work, name, version, arch)
            response = requests.put(
                f"{server.url}/api/v1/extensions/{name}/images/{image.name}",
                params={"channel": channel},
                data=image.read_bytes(),
                headers=server.headers(),
                timeout=60,
            )
            assert response.status_code in (200, 201), response.text
        yield server


def get(registry: RegistryServer, path: str, **params: object) -> requests.Response:
    return requests.get(f"{registry.url}{path}", params=params, timeout=60)  # type: ignore[arg-type]


def test_butane_endpoint_pins_what_the_registry_serves(registry: RegistryServer) -> None:
    response = get(registry, "/api/v1/extensions/podman/butane")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/yaml")
    assert "systemd never reads this file by itself" in " ".join(response.text.split())
    document = yaml.safe_load(response.text)
    assert (document["variant"], document["version"]) == ("flatcar", "1.0.0")
    files = {f["path"]: f["contents"] for f in document["storage"]["files"]}
    image = files["/opt/extensions/podman/podman-5.3.1-x86-64.raw"]
    body = requests.get(image["source"], timeout=60).content
    assert image["verification"]["hash"] == f"sha256-{hashlib.sha256(body).hexdigest()}"
    assert image["source"] == f"{registry.url}/extensions/podman/podman-5.3.1-x86-64.raw"
    keyring = files["/etc/sysext/keyring.gpg"]["source"]
    assert decode_data_url(keyring) == registry.keyring()
    assert "/etc/systemd/import-pubring.gpg" not in files


def test_ignition_endpoint_validates_verifies_and_equals_the_cli(
    registry: RegistryServer, tmp_path: Path
) -> None:
    response = get(registry, "/api/v1/extensions/podman/ignition", variant="fcos")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert ignition_validate(response.text, tmp_path) == ""
    document = response.json()
    checks = verify_config_sources(document)
    assert [c.path for c in checks if c.verified] == [
        "/var/lib/extensions.d/podman/podman-5.3.1-x86-64.raw"
    ]
    # The CLI resolves over HTTP, the endpoint from the public tree: same config.
    cli = run_cli("butane", "podman", "--registry", registry.url, "--variant", "fcos", "--ignition")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == document


def test_multi_extension_endpoint_with_options(registry: RegistryServer, tmp_path: Path) -> None:
    params = {
        "ext": ["podman@5.2.0", "crio"],
        "on-update": "reboot-marker",
        "keyring": "skip",
    }
    ignition = get(registry, "/api/v1/provision/ignition", **params)
    assert ignition.status_code == 200, ignition.text
    assert ignition_validate(ignition.text, tmp_path) == ""
    butane = get(registry, "/api/v1/provision/butane", **params)
    assert described(yaml.safe_load(butane.text)) == described(ignition.json())
    paths = {f["path"] for f in ignition.json()["storage"]["files"]}
    assert paths == {
        "/opt/extensions/podman/podman-5.2.0-x86-64.raw",
        "/opt/extensions/crio/crio-1.31.1-x86-64.raw",
        "/etc/sysupdate.podman.d/podman.conf",
        "/etc/sysupdate.podman.d/podman.transfer",
        "/etc/sysupdate.crio.d/crio.conf",
        "/etc/sysupdate.crio.d/crio.transfer",
        "/etc/sysext/update-extension",
    }
    # A known systemd version: the one file name it reads, and on 262 the component file.
    for version, expected in (("255", {"crio.conf"}), ("262", {"crio.transfer"})):
        chosen = get(
            registry, "/api/v1/provision/ignition", ext="crio", **{"systemd-version": version}
        )
        assert chosen.status_code == 200, chosen.text
        names = {f["path"] for f in chosen.json()["storage"]["files"]}
        assert {n.rpartition("/")[2] for n in names if "sysupdate.crio.d" in n} == expected
        assert ("/etc/sysupdate.crio.component" in names) == (version == "262")
    replaced = get(registry, "/api/v1/provision/ignition", ext="crio", keyring="replace")
    assert replaced.status_code == 400 and "--keyring replace is gone" in replaced.text
    newer = get(
        registry,
        "/api/v1/provision/ignition",
        ext="podman",
        channel="beta",
        **{"ignition-version": "3.4.0", "updates": "false"},
    )
    document = newer.json()
    assert document["ignition"]["version"] == "3.4.0"
    assert [f["path"] for f in document["storage"]["files"]] == [
        "/opt/extensions/podman/podman-5.4.0-rc1-x86-64.raw"
    ]
    # No update units; only the boot-merge drop-in (an unknown systemd may be 262, whose
    # first boot would hang on the image's EXTENSION_RESTART_UNITS= without it).
    units = document["systemd"]["units"]
    assert [(u["name"], [d["name"] for d in u["dropins"]]) for u in units] == [
        ("systemd-sysext.service", ["50-sysext-boot-merge.conf"])
    ]
    verify_config_sources(document)


@pytest.mark.parametrize(
    "path,params,status,detail",
    [
        (
            "/api/v1/extensions/docker/butane",
            {},
            404,
            "no extension 'docker' in channel 'stable' (extensions: crio, podman)",
        ),
        (
            "/api/v1/extensions/podman/ignition",
            {"channel": "nightly"},
            404,
            "unknown channel 'nightly' (channels: alpha, beta, stable)",
        ),
        (
            "/api/v1/extensions/podman/ignition",
            {"version": "9"},
            404,
            "podman 9 is not published for x86-64 in channel 'stable' (versions: 5.3.1, 5.2.0)",
        ),
        (
            "/api/v1/extensions/crio/butane",
            {"arch": "arm64"},
            404,
            "crio has no arm64 image in channel 'stable' (architectures: x86-64)",
        ),
        (
            "/api/v1/extensions/crio/butane",
            {"channel": "beta"},
            404,
            "no extension 'crio' in channel 'beta' (extensions: podman)",
        ),
        (
            "/api/v1/provision/butane",
            {"ext": "podman", "variant": "coreos"},
            400,
            "unknown variant 'coreos' (use one of: flatcar, fcos)",
        ),
        (
            "/api/v1/provision/ignition",
            {"ext": "podman", "arch": "amd64"},
            400,
            "architecture 'amd64' is not systemd's name for it",
        ),
    ],
)
def test_endpoint_errors_list_what_exists(
    registry: RegistryServer, path: str, params: dict[str, str], status: int, detail: str
) -> None:
    response = get(registry, path, **params)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(detail)


def test_cli_lists_the_registrys_extensions_and_channels(registry: RegistryServer) -> None:
    result = run_cli("butane", "docker", "--registry", registry.url)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: no extension 'docker' in channel 'stable'",
        "hint: extensions: crio, podman",
    ]
    result = run_cli("butane", "podman", "--registry", registry.url, "--channel", "nightly")
    assert result.stderr.splitlines() == [
        "error: unknown channel 'nightly'",
        "hint: channels: alpha, beta, stable",
    ]
