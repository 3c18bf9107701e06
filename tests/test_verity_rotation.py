"""A verity certificate rotation in its phases (docs/verity.md), against a real `sysext
serve` on one data directory restarted between phases, `sysext validate --cert` with the
bundle the registry serves, and the configs `sysext butane` generates from it.

Overlap: the registry trusts the old and the new certificate; a DDI signed by either is
accepted, /verity.crt holds both, provisioning installs both into /etc/verity.d/ and
validate accepts both images with that bundle. Retired: the old one moves to
`--verity-retired-cert`; /verity.crt holds only the new one, an upload signed by the old
one is refused with one line saying it was retired (nothing written), validate refuses the
old image with the served bundle, and --require-signed refuses to provision it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sysext.trust.x509 import fingerprint, load_certificates
from tests.conftest import run_cli
from tests.registry_server import RegistryServer, free_port, running_registry
from tests.test_provision import decode_data_url, ignition_validate
from tests.verity_images import make_key, make_tree, pack_ddi

Keys = dict[str, tuple[Path, Path]]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    return {stem: make_key(directory, stem) for stem in ("old", "new")}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Path]:
    """1.0 signed by the old key, 2.0 by the new one, and a late 3.0 of each."""
    base = tmp_path_factory.mktemp("images")
    made = {}
    for label, version, key in (
        ("1.0-old", "1.0", "old"),
        ("2.0-new", "2.0", "new"),
        ("3.0-old", "3.0", "old"),
        ("3.0-new", "3.0", "new"),
    ):
        tree = make_tree(base / label, version=version)
        made[label] = pack_ddi(tree, base / label / "out", *keys[key], version=version)
    return made


def fp(cert: Path) -> str:
    return fingerprint(load_certificates(cert)[0])


def put(reg: RegistryServer, image: Path) -> requests.Response:
    return requests.put(
        f"{reg.url}/api/v1/extensions/hello/images/{image.name}",
        data=image.read_bytes(),
        headers=reg.headers(),
        timeout=60,
    )


def served_bundle(reg: RegistryServer, directory: Path) -> Path:
    response = requests.get(f"{reg.url}/verity.crt", timeout=10)
    assert response.status_code == 200
    path = directory / "verity.crt"
    path.write_bytes(response.content)
    return path


def verity_d(reg: RegistryServer, *args: str) -> dict[str, bytes]:
    """/etc/verity.d/ as the generated Ignition config writes it."""
    result = run_cli("butane", "hello", *args, "--registry", reg.url, "--ignition")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    return {
        f["path"]: decode_data_url(f["contents"]["source"])
        for f in document["storage"]["files"]
        if f["path"].startswith("/etc/verity.d/")
    }


def cert_file(cert: Path) -> str:
    return f"/etc/verity.d/sysext-{fp(cert)[:16]}.crt"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rotation") / "data"


# The uploads of the overlap, answered: the registry of the overlap with 1.0 (old key) and
# 2.0 (new key) published.
Uploads = dict[str, requests.Response]


@pytest.fixture(scope="module")
def overlap(
    data: Path, keys: Keys, images: dict[str, Path]
) -> Iterator[tuple[RegistryServer, Uploads]]:
    certs = f"{keys['old'][1]},{keys['new'][1]}"
    with running_registry(data, env={"SYSEXT_VERITY_CERTS": certs}) as reg:
        yield reg, {label: put(reg, images[label]) for label in ("1.0-old", "2.0-new")}


def test_during_the_overlap_both_certificates_are_trusted_served_and_installed(
    overlap: tuple[RegistryServer, Uploads], keys: Keys, images: dict[str, Path], tmp_path: Path
) -> None:
    reg, uploads = overlap
    for label, key in (("1.0-old", "old"), ("2.0-new", "new")):
        response = uploads[label]
        assert response.status_code == 200, response.text
        assert response.json()["image"]["verity_signed_by"] == fp(keys[key][1])
    bundle = served_bundle(reg, tmp_path)
    assert bundle.read_bytes() == keys["old"][1].read_bytes() + keys["new"][1].read_bytes()
    for label in ("1.0-old", "2.0-new"):
        checked = run_cli("validate", images[label], "--cert", bundle)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    installed = verity_d(reg)
    assert installed == {cert_file(keys[k][1]): keys[k][1].read_bytes() for k in ("old", "new")}
    # Both versions can be provisioned under the signed-only policy.
    for version in ("1.0", "2.0"):
        result = run_cli(
            "butane", f"hello@{version}", "--require-signed", "--systemd-version", "257",
            "--registry", reg.url, "--ignition",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        ignition_validate(result.stdout, tmp_path)


@pytest.fixture(scope="module")
def retired(
    overlap: tuple[RegistryServer, Uploads], data: Path, keys: Keys
) -> Iterator[RegistryServer]:
    # The last phase is a restart on the same data, with the old certificate retired.
    for response in overlap[1].values():
        assert response.status_code == 200, response.text
    overlap[0].stop()
    env = {"SYSEXT_VERITY_CERTS": str(keys["new"][1])}
    env["SYSEXT_VERITY_RETIRED_CERTS"] = str(keys["old"][1])
    with running_registry(data, env=env) as reg:
        yield reg


def test_after_retirement_the_old_certificate_is_refused_everywhere(
    retired: RegistryServer,
    keys: Keys,
    images: dict[str, Path],
    tmp_path: Path,
) -> None:
    bundle = served_bundle(retired, tmp_path)
    assert bundle.read_bytes() == keys["new"][1].read_bytes()
    # An upload signed by the retired certificate: one line saying so, nothing written.
    before = requests.get(f"{retired.url}/api/v1/extensions/hello", timeout=10).json()
    refused = put(retired, images["3.0-old"])
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail.startswith("hello-3.0-x86-64.raw: verity signature refused: signed by ")
    assert f"{fp(keys['old'][1])[:16]}…, which this registry retired" in detail, detail
    assert "\n" not in detail
    assert requests.get(f"{retired.url}/api/v1/extensions/hello", timeout=10).json() == before
    accepted = put(retired, images["3.0-new"])
    assert accepted.status_code == 200, accepted.text
    # A host trusting what the registry now serves refuses the old image.
    old = run_cli("validate", images["1.0-old"], "--cert", bundle)
    assert old.returncode == 1, old.stdout + old.stderr
    trusted_now = f"not signed by a trusted certificate (trusted: {fp(keys['new'][1])[:16]})"
    assert trusted_now in old.stdout, old.stdout
    new = run_cli("validate", images["2.0-new"], "--cert", bundle)
    assert new.returncode == 0, new.stdout + new.stderr
    # New hosts get only the new certificate, and the signed-only policy is not promised
    # for an image they would refuse.
    assert verity_d(retired) == {cert_file(keys["new"][1]): keys["new"][1].read_bytes()}
    result = run_cli(
        "butane", "hello@1.0", "--require-signed", "--systemd-version", "257",
        "--registry", retired.url,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert "which the registry no longer serves in /verity.crt" in result.stderr


def test_a_certificate_both_trusted_and_retired_stops_the_server(
    keys: Keys, tmp_path: Path
) -> None:
    result = run_cli(
        "serve", "--data", tmp_path / "data", "--port", str(free_port()),
        "--verity-cert", keys["old"][1], "--verity-cert", keys["new"][1],
        "--verity-retired-cert", keys["old"][1],
    )  # fmt: skip
    assert result.returncode == 2
    assert f"verity certificate {fp(keys['old'][1])[:16]}… is both trusted and retired" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and result.stderr.count("\n") <= 2
