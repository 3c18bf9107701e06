"""Provisioning hosts for signed verity extensions (issue 22): the registry's certificates
in /etc/verity.d/ and, with --require-signed, the image policy in the form the hosts'
systemd reads, every config checked by the real ignition-validate; and every combination
that would give hosts a weaker policy than asked is refused with one line."""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sysext.provision import DirectoryCatalog, ExtensionRef, HttpCatalog, generate_config
from sysext.provision.compose import ProvisionOptions
from sysext.provision.verity import POLICY_CONF, SIGNED_ONLY
from sysext.trust.x509 import fingerprint, load_certificates
from tests.conftest import StaticServer, run_cli
from tests.registry_server import RegistryServer, build_image, running_registry
from tests.test_provision import decode_data_url, ignition_validate
from tests.verity_images import make_key, make_tree, pack_ddi

Keys = dict[str, tuple[Path, Path]]
DROPIN_EXEC = f"ExecStart=systemd-sysext refresh --image-policy={SIGNED_ONLY}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    return {stem: make_key(directory, stem) for stem in ("builder", "next")}


def _put(server: RegistryServer, name: str, image: Path) -> None:
    response = requests.put(
        f"{server.url}/api/v1/extensions/{name}/images/{image.name}",
        data=image.read_bytes(),
        headers=server.headers(),
        timeout=60,
    )
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[RegistryServer]:
    """`hello` published as a signed DDI, `plain` as a squashfs; two trusted certificates
    (a rotation in progress)."""
    base = tmp_path_factory.mktemp("provision-verity")
    certs = f"{keys['builder'][1]},{keys['next'][1]}"
    with running_registry(base / "data", env={"SYSEXT_VERITY_CERTS": certs}) as reg:
        _put(reg, "hello", pack_ddi(make_tree(base), base / "out", *keys["builder"]))
        _put(reg, "plain", build_image(base, "plain", "1.0"))
        yield reg


def butane(registry: RegistryServer, *args: str) -> Any:
    result = run_cli("butane", *args, "--registry", registry.url, "--ignition")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def files_of(document: Any) -> dict[str, bytes]:
    return {
        f["path"]: decode_data_url(f["contents"]["source"])
        for f in document["storage"]["files"]
        if f["contents"]["source"].startswith("data:")
    }


def sysext_units(document: Any) -> list[Any]:
    return [u for u in document["systemd"]["units"] if u["name"] == "systemd-sysext.service"]


def cert_path(cert: Path) -> str:
    return f"/etc/verity.d/sysext-{fingerprint(load_certificates(cert)[0])[:16]}.crt"


def test_certificates_are_installed_whenever_the_registry_serves_them(
    registry: RegistryServer, keys: Keys, tmp_path: Path
) -> None:
    document = butane(registry, "hello", "plain")
    ignition_validate(json.dumps(document), tmp_path)
    files = files_of(document)
    for stem in ("builder", "next"):  # both certificates of the rotation, one file each
        assert files[cert_path(keys[stem][1])] == keys[stem][1].read_bytes()
    # No policy without --require-signed: the plain image still merges (the only drop-in
    # is the boot merge every config of an unknown systemd version carries).
    assert POLICY_CONF not in files
    assert [d["name"] for u in sysext_units(document) for d in u.get("dropins", [])] == [
        "50-sysext-boot-merge.conf"
    ]


@pytest.mark.parametrize("version", [255, 257, 258])
def test_require_signed_on_255_to_258_is_a_sysext_service_drop_in(
    registry: RegistryServer, keys: Keys, tmp_path: Path, version: int
) -> None:
    document = butane(registry, "hello", "--require-signed", "--systemd-version", str(version))
    ignition_validate(json.dumps(document), tmp_path)
    (unit,) = sysext_units(document)
    assert "enabled" not in unit and "contents" not in unit  # the stock unit, amended
    (dropin,) = unit["dropins"]
    lines = dropin["contents"].splitlines()
    assert lines[lines.index("[Service]") + 1 :] == [
        "ExecStart=",
        DROPIN_EXEC,
        "ExecReload=",
        DROPIN_EXEC.replace("ExecStart", "ExecReload"),
    ]
    assert POLICY_CONF not in files_of(document)
    assert cert_path(keys["builder"][1]) in files_of(document)


def test_require_signed_on_259_and_later_is_sysext_conf(
    registry: RegistryServer, tmp_path: Path
) -> None:
    document = butane(registry, "hello", "--require-signed", "--systemd-version", "260")
    ignition_validate(json.dumps(document), tmp_path)
    conf = files_of(document)[POLICY_CONF].decode()
    assert "\n[Sysext]\n" in conf and f"\nImagePolicy={SIGNED_ONLY}\n" in conf
    assert sysext_units(document) == []


def test_fcos_gets_one_sysext_unit_enabled_and_amended(
    registry: RegistryServer, tmp_path: Path
) -> None:
    document = butane(
        registry, "hello", "--variant", "fcos", "--require-signed", "--systemd-version", "257"
    )
    ignition_validate(json.dumps(document), tmp_path)
    (unit,) = sysext_units(document)
    assert unit["enabled"] is True
    assert DROPIN_EXEC in unit["dropins"][0]["contents"]


def test_butane_text_carries_the_same_and_says_why(registry: RegistryServer) -> None:
    result = run_cli(
        "butane", "hello", "--require-signed", "--systemd-version", "257",
        "--registry", registry.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "# Only signed verity images merge" in result.stdout
    assert DROPIN_EXEC in result.stdout
    assert "# Verity certificate of the registry" in result.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("hello", "--require-signed"), "--require-signed writes a systemd-version-specific"),
        (
            ("hello", "--require-signed", "--systemd-version", "254"),
            "systemd 254 cannot be made to refuse unsigned extensions",
        ),
        (
            ("hello", "--require-signed", "--systemd-version", "252"),
            "systemd 252 cannot be made to refuse unsigned extensions",
        ),
        (
            ("hello", "--require-signed", "--systemd-version", "257", "--on-update", "refresh"),
            "--on-update refresh runs `systemd-sysext refresh` directly",
        ),
        (
            ("hello", "plain", "--require-signed", "--systemd-version", "257"),
            "plain 1.0 (plain-1.0-x86-64.raw) is not a signed verity image",
        ),
    ],
)
def test_what_would_be_weaker_than_asked_is_refused(
    registry: RegistryServer, args: tuple[str, ...], says: str
) -> None:
    result = run_cli("butane", *args, "--registry", registry.url)
    assert result.returncode == 2, result.stdout
    assert says in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_registry_without_certificates_cannot_require_signed(keys: Keys, tmp_path: Path) -> None:
    with running_registry(tmp_path / "data") as reg:
        _put(reg, "plain", build_image(tmp_path, "plain", "1.0"))
        result = run_cli(
            "butane", "plain", "--require-signed", "--systemd-version", "257",
            "--registry", reg.url,
        )  # fmt: skip
        assert result.returncode == 2
        assert "the registry serves no /verity.crt" in result.stderr
        plain = run_cli("butane", "plain", "--registry", reg.url, "--ignition")
        assert "/etc/verity.d" not in plain.stdout


def test_a_static_mirror_is_read_from_the_images_themselves(
    registry: RegistryServer, keys: Keys, static_server: StaticServer
) -> None:
    # A copy of the public tree without the registry's API: the signer comes from the
    # image's verity-sig partition, through HttpCatalog and DirectoryCatalog alike.
    shutil.copytree(registry.data / "public", static_server.root, dirs_exist_ok=True)
    options = ProvisionOptions(require_signed=True, systemd_version=257)
    refs = [ExtensionRef("hello")]
    for catalog in (
        HttpCatalog(static_server.url),
        DirectoryCatalog(static_server.root, static_server.url),
    ):
        config = generate_config(catalog, refs, options=options)
        assert any(f.path == cert_path(keys["builder"][1]) for f in config.files)
        assert any(u.name == "systemd-sysext.service" for u in config.units)
    with pytest.raises(Exception, match="not a signed verity image"):
        generate_config(
            DirectoryCatalog(static_server.root, static_server.url),
            [ExtensionRef("plain")],
            options=options,
        )


# The registry's provisioning API and its catalogue page (`require-signed=true`): the code
# path of `sysext butane --require-signed`, so the same text and the same refusals.
SIGNED_257 = {"require-signed": "true", "systemd-version": "257"}


def api(registry: RegistryServer, route: str, params: dict[str, Any]) -> requests.Response:
    return requests.get(f"{registry.url}/api/v1/{route}", params=params, timeout=60)


@pytest.mark.parametrize("fmt", ["ignition", "butane"])
def test_the_api_requires_signed_as_the_cli_does(
    registry: RegistryServer, tmp_path: Path, fmt: str
) -> None:
    response = api(registry, f"extensions/hello/{fmt}", SIGNED_257)
    assert response.status_code == 200, response.text
    options = ("--require-signed", "--systemd-version", "257")
    cli = run_cli(
        "butane", "hello", *options, "--registry", registry.url,
        *(("--ignition",) if fmt == "ignition" else ()),
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert response.text == cli.stdout
    if fmt == "ignition":
        ignition_validate(response.text, tmp_path)
        (unit,) = sysext_units(response.json())
        assert DROPIN_EXEC in unit["dropins"][0]["contents"]
    # The multi-extension route takes it too.
    several = api(registry, f"provision/{fmt}", {"ext": "hello", **SIGNED_257})
    assert several.status_code == 200 and DROPIN_EXEC in several.text


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"require-signed": "true"}, "--require-signed writes a systemd-version-specific"),
        (
            {"require-signed": "true", "systemd-version": "254"},
            "systemd 254 cannot be made to refuse unsigned extensions",
        ),
        (
            {**SIGNED_257, "on-update": "refresh"},
            "--on-update refresh runs `systemd-sysext refresh` directly",
        ),
        ({**SIGNED_257, "ext": ["hello", "plain"]}, "plain 1.0 (plain-1.0-x86-64.raw) is not"),
    ],
)
def test_the_api_refuses_what_would_be_weaker_than_asked(
    registry: RegistryServer, params: dict[str, Any], says: str
) -> None:
    query = {"ext": "hello", **params}
    response = api(registry, "provision/ignition", query)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert says in detail and "\n" not in detail, detail


def test_the_api_of_a_registry_without_certificates_refuses_require_signed(
    tmp_path: Path,
) -> None:
    with running_registry(tmp_path / "data") as reg:
        _put(reg, "plain", build_image(tmp_path, "plain", "1.0"))
        response = api(reg, "extensions/plain/ignition", SIGNED_257)
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert detail.startswith("--require-signed: the registry serves no /verity.crt"), detail
        assert "\n" not in detail and "--verity-cert" in detail


def test_the_catalogue_page_offers_signed_only_for_a_signed_image(
    registry: RegistryServer, tmp_path: Path
) -> None:
    page = requests.get(
        f"{registry.url}/catalog/hello",
        params={"require_signed": "true", "systemd_version": "257"},
        timeout=60,
    )
    assert page.status_code == 200
    assert 'name="require_signed" value="true" checked' in page.text
    cli = f"sysext butane hello --registry {registry.url} --channel stable --arch x86-64 "
    cli += "--variant flatcar --systemd-version 257 --require-signed"
    assert cli in page.text, page.text
    assert DROPIN_EXEC in page.text
    # Its download links are the API's, with the same choices: the same config.
    (link,) = set(re.findall(r'href="(/api/v1/extensions/hello/ignition\?[^"]+)"', page.text))
    served = requests.get(f"{registry.url}{html.unescape(link)}", timeout=60)
    assert served.status_code == 200 and DROPIN_EXEC in served.text
    ignition_validate(served.text, tmp_path)
    # A plain image has no such choice; a signed one without it installs no policy.
    plain = requests.get(f"{registry.url}/catalog/plain", timeout=60).text
    assert 'name="require_signed"' not in plain
    default = requests.get(f"{registry.url}/catalog/hello", timeout=60).text
    assert 'name="require_signed" value="true">' in default and DROPIN_EXEC not in default


def test_the_catalogue_page_says_why_it_cannot_require_signed(registry: RegistryServer) -> None:
    page = requests.get(
        f"{registry.url}/catalog/hello",
        params={"require_signed": "true", "systemd_version": "254"},
        timeout=60,
    )
    assert page.status_code == 200
    assert "systemd 254 cannot be made to refuse unsigned extensions" in page.text
    assert DROPIN_EXEC not in page.text
    # Not a number: said, and ignored (so --require-signed lacks its version).
    typo = requests.get(
        f"{registry.url}/catalog/hello",
        params={"require_signed": "true", "systemd_version": "25x"},
        timeout=60,
    )
    assert typo.status_code == 200
    assert "systemd version &#39;25x&#39; is not a number" in typo.text, typo.text
    assert "--require-signed writes a systemd-version-specific policy" in typo.text
