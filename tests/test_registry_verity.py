"""The registry and signed verity DDIs (issue 22), against a real `sysext serve`.

Accepted: a DDI whose hash tree is its data's, whose partition UUIDs are its root hash's,
and whose signature verifies with a certificate the operator told the registry to trust;
shown as "verity-signed by FINGERPRINT" in the API and on the page, with the certificates
at /verity.crt. Refused with one line, writing nothing: every tampering, a stranger's
signature, an unsigned DDI, and any DDI at a registry that trusts no certificate.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sysext.image.ddi import Role, check_verity, write_ddi
from sysext.image.verity import BLOCK
from sysext.systemd.architecture import Architecture
from sysext.trust.x509 import fingerprint, load_certificates
from tests.conftest import run_cli
from tests.registry_server import RegistryServer, build_image, free_port, running_registry
from tests.verity_images import (
    blob_of,
    flip_data_byte,
    flip_hash_byte,
    flip_signature_byte,
    make_key,
    make_tree,
    pack_ddi,
    partition_bytes,
    rewrite_signature,
)
from tests.verity_images import copy as copy_image

Keys = dict[str, tuple[Path, Path]]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    return {stem: make_key(directory, stem) for stem in ("builder", "stranger", "next")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[RegistryServer]:
    data = tmp_path_factory.mktemp("reg") / "data"
    with running_registry(data, args=("--verity-cert", str(keys["builder"][1]))) as reg:
        yield reg


def fp(cert: Path) -> str:
    return fingerprint(load_certificates(cert)[0])


def put(server: RegistryServer, image: Path, name: str = "hello") -> requests.Response:
    return requests.put(
        f"{server.url}/api/v1/extensions/{name}/images/{image.name}",
        data=image.read_bytes(),
        headers=server.headers(),
        timeout=60,
    )


def public_state(server: RegistryServer) -> list[str]:
    data = server.data
    return sorted(
        str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and "tmp" not in p.parts
    )


def test_a_signed_ddi_is_accepted_and_shown_as_verity_signed(
    server: RegistryServer, keys: Keys, tmp_path: Path
) -> None:
    tree = make_tree(tmp_path, version="1.0")
    image = pack_ddi(tree, tmp_path / "out", *keys["builder"])
    response = put(server, image)
    assert response.status_code == 200, response.text
    signer = fp(keys["builder"][1])
    info = response.json()["image"]
    assert info["verity_signed_by"] == signer
    assert info["verity_root_hash"] == check_verity(image).root_hash
    assert info["verity"] == f"verity-signed by {signer}"
    assert info["format"] == "squashfs"
    listed = requests.get(f"{server.url}/api/v1/extensions/hello", timeout=10).json()
    assert [i["verity"] for i in listed["images"]] == [f"verity-signed by {signer}"]
    page = requests.get(f"{server.url}/catalog/hello", timeout=10).text
    assert f'verity-signed by <code class="fpr">{signer}</code>' in page
    # Hosts get the same bytes, listed in the signed manifest like any image.
    served = requests.get(f"{server.url}{info['url']}", timeout=30).content
    assert served == image.read_bytes()
    manifest = requests.get(f"{server.url}/extensions/hello/SHA256SUMS", timeout=10).text
    assert f"{hashlib.sha256(served).hexdigest()}  {image.name}" in manifest
    # The certificate hosts put in /etc/verity.d/, byte for byte what the operator gave.
    crt = requests.get(f"{server.url}/verity.crt", timeout=10)
    assert crt.status_code == 200
    assert crt.headers["content-type"].startswith("application/x-pem-file")
    assert crt.content == keys["builder"][1].read_bytes()


def test_plain_images_stay_accepted_without_verity_fields(
    server: RegistryServer, tmp_path: Path
) -> None:
    image = build_image(tmp_path, "plain", "1.0")
    response = put(server, image, "plain")
    assert response.status_code == 200, response.text
    info = response.json()["image"]
    assert info["verity"] is None and info["verity_signed_by"] is None
    page = requests.get(f"{server.url}/catalog/plain", timeout=10).text
    assert "a plain file system image" in page and "verity-signed by" not in page


def _unsigned(image: Path, directory: Path) -> Path:
    fs = directory / "fs.img"
    fs.write_bytes(partition_bytes(image, Role.ROOT))
    target = directory / "unsigned-ddi" / image.name
    target.parent.mkdir(parents=True)
    write_ddi(fs, target, Architecture.X86_64, None)
    return target


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("data-byte", "verity: the hash tree does not match the data"),
        ("hash-byte", "verity: the hash tree does not match the data"),
        ("signature", "verity signature refused: the root hash signature does not verify"),
        ("root-hash-claim", "the verity-sig partition signs root hash abab"),
        ("fingerprint-claim", "verity signature refused: the verity-sig partition names"),
        ("stranger", "verity signature refused: the root hash is not signed by a trusted"),
        ("unsigned", "no verity-sig partition"),
    ],
)
def test_every_tampering_is_refused_with_one_line_and_nothing_written(
    server: RegistryServer, keys: Keys, tmp_path: Path, how: str, says: str
) -> None:
    tree = make_tree(tmp_path, version="2.0")
    signer = keys["stranger"] if how == "stranger" else keys["builder"]
    good = pack_ddi(tree, tmp_path / "out", *signer, version="2.0")
    image = copy_image(good, tmp_path / how)
    if how == "data-byte":
        flip_data_byte(image, blob_of(tree, "hello"))
    elif how == "hash-byte":
        flip_hash_byte(image)
    elif how == "signature":
        flip_signature_byte(image)
    elif how == "root-hash-claim":
        rewrite_signature(image, lambda d: d.update(rootHash="ab" * 32))
    elif how == "fingerprint-claim":
        rewrite_signature(image, lambda d: d.update(certificateFingerprint=fp(keys["next"][1])))
    elif how == "unsigned":
        image = _unsigned(good, tmp_path)
    before = public_state(server)
    response = put(server, image)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert says in detail, detail
    assert detail.startswith("hello-2.0-x86-64.raw: ") and "\n" not in detail
    assert str(server.data) not in detail  # never the server's own paths
    assert public_state(server) == before
    assert "hello-2.0" not in requests.get(f"{server.url}/api/v1/extensions/hello", timeout=10).text


def test_a_registry_trusting_no_certificate_refuses_every_ddi(keys: Keys, tmp_path: Path) -> None:
    image = pack_ddi(make_tree(tmp_path), tmp_path / "out", *keys["builder"])
    with running_registry(tmp_path / "data") as reg:
        response = put(reg, image)
        assert response.status_code == 422
        assert "this registry trusts no verity certificate" in response.json()["detail"]
        assert requests.get(f"{reg.url}/verity.crt", timeout=10).status_code == 404


def test_two_certificates_during_a_rotation(keys: Keys, tmp_path: Path) -> None:
    # SYSEXT_VERITY_CERTS (comma-separated) as an operator sets it while rotating.
    certs = f"{keys['builder'][1]},{keys['next'][1]}"
    old = pack_ddi(make_tree(tmp_path, version="1.0"), tmp_path / "a", *keys["builder"])
    new = pack_ddi(make_tree(tmp_path, version="2.0"), tmp_path / "b", *keys["next"], version="2.0")
    with running_registry(tmp_path / "data", env={"SYSEXT_VERITY_CERTS": certs}) as reg:
        assert put(reg, old).json()["image"]["verity_signed_by"] == fp(keys["builder"][1])
        assert put(reg, new).json()["image"]["verity_signed_by"] == fp(keys["next"][1])
        bundle = requests.get(f"{reg.url}/verity.crt", timeout=10).content
        assert bundle == keys["builder"][1].read_bytes() + keys["next"][1].read_bytes()
        # openssl reads both certificates of the bundle.
        shown = subprocess.run(
            ["openssl", "crl2pkcs7", "-nocrl", "-certfile", "/dev/stdin"],
            input=bundle, capture_output=True, check=True,
        ).stdout  # fmt: skip
        printed = subprocess.run(
            ["openssl", "pkcs7", "-print_certs", "-noout"],
            input=shown, capture_output=True, check=True,
        ).stdout.decode()  # fmt: skip
        assert printed.count("subject=") == 2


def test_a_bad_certificate_file_stops_the_server_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate\n")
    port = str(free_port())
    result = run_cli("serve", "--data", tmp_path / "data", "--port", port, "--verity-cert", bad)
    assert result.returncode == 2
    assert "verity certificate:" in result.stderr and "no PEM certificate" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_tree_check_reads_the_whole_data_partition(keys: Keys, tmp_path: Path) -> None:
    # A change in the last data block, far from everything a lister reads, is found too.
    image = pack_ddi(make_tree(tmp_path), tmp_path / "out", *keys["builder"])
    part = check_verity(image).ddi.data
    with open(image, "r+b") as f:
        f.seek(part.offset + part.size - BLOCK // 2)
        f.write(b"\x01")
    result = run_cli("validate", image, "--cert", keys["builder"][1])
    assert result.returncode == 1 and "the hash tree does not match the data" in result.stdout
