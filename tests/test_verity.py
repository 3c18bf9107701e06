"""Signed dm-verity DDIs without kernel support (issue 22): the hash tree against the real
`veritysetup`, the signature against `openssl smime -verify`, the partition table against
the real `systemd-dissect`, reproducibility, and every tampering `sysext validate --cert`
must refuse."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from sysext.core.errors import SysextError
from sysext.image.ddi import Role, VeritySignature, check_verity, write_ddi
from sysext.image.read import read_files, read_image
from sysext.image.verity import BLOCK, Superblock, build_tree
from sysext.systemd.architecture import Architecture
from sysext.trust.x509 import VeritySignatureError, load_certificates, verify_root_hash
from tests.conftest import StaticServer, run_cli
from tests.test_build import HOST, publish, recipe  # noqa: F401 (recipe: a fixture)
from tests.test_build import build as build_recipe
from tests.verity_images import (
    blob_of,
    edited_certificate,
    flip_data_byte,
    flip_hash_byte,
    flip_signature_byte,
    make_key,
    make_tree,
    pack_ddi,
    partition_bytes,
    rewrite_signature,
    table,
)
from tests.verity_images import copy as copy_image


def veritysetup(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["veritysetup", *map(str, args)], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("keys")
    return {stem: make_key(directory, stem) for stem in ("builder", "stranger")}


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, tuple[Path, Path]]
) -> tuple[Path, Path]:
    """(the signed DDI, the tree it was packed from)."""
    base = tmp_path_factory.mktemp("ddi")
    tree = make_tree(base)
    key, cert = keys["builder"]
    return pack_ddi(tree, base / "out", key, cert), tree


@pytest.mark.parametrize("blocks", [1, 2, 128, 129, 16385])
def test_hash_tree_is_byte_identical_to_veritysetup_format(tmp_path: Path, blocks: int) -> None:
    # 1 block: no tree, the root hashes the data; 128/129: one level full / two levels;
    # 16385: three levels with a partial top block.
    data = tmp_path / "data"
    data.write_bytes(os.urandom(blocks * BLOCK))
    salt = os.urandom(32)
    device_uuid = uuid.uuid4()
    hashes = tmp_path / "hashes"
    formatted = veritysetup(
        "format", data, hashes, "--salt", salt.hex(), "--uuid", str(device_uuid),
        "--hash", "sha256", "--data-block-size", "4096", "--hash-block-size", "4096",
    )  # fmt: skip
    assert formatted.returncode == 0, formatted.stderr
    with open(data, "rb") as f:
        tree = build_tree(f, blocks * BLOCK, salt, device_uuid)
    assert f"Root hash:      \t{tree.root_hex}" in formatted.stdout
    assert tree.device == hashes.read_bytes()


def test_ddi_partitions_are_what_veritysetup_makes_and_verifies(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    image, _ = built
    data = tmp_path / "data"
    data.write_bytes(partition_bytes(image, Role.ROOT))
    hashes = tmp_path / "hashes"
    hashes.write_bytes(partition_bytes(image, Role.ROOT_VERITY))
    root = check_verity(image).root_hash
    superblock = Superblock.unpack(hashes.read_bytes())
    again = tmp_path / "again"
    formatted = veritysetup(
        "format", data, again, "--salt", superblock.salt.hex(), "--uuid", str(superblock.uuid)
    )
    assert formatted.returncode == 0, formatted.stderr
    assert again.read_bytes() == hashes.read_bytes()
    verified = veritysetup("verify", data, hashes, root)
    assert verified.returncode == 0, verified.stderr
    # The real tool refuses what our check refuses: one changed data byte.
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    assert veritysetup("verify", data, hashes, root).returncode != 0


def test_signature_verifies_with_openssl_as_systemd_calls_it(
    built: tuple[Path, Path], keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    image, _ = built
    raw = partition_bytes(image, Role.ROOT_VERITY_SIG)
    assert len(raw) == 4096 and raw.rstrip(b"\0").endswith(b"}")
    document = json.loads(raw.split(b"\0", 1)[0])
    assert list(document) == ["rootHash", "certificateFingerprint", "signature"]
    root = check_verity(image).root_hash
    assert document["rootHash"] == root
    _, cert = keys["builder"]
    der = subprocess.run(
        ["openssl", "x509", "-in", cert, "-outform", "DER"], capture_output=True, check=True
    ).stdout
    assert document["certificateFingerprint"] == hashlib.sha256(der).hexdigest()
    (tmp_path / "sig").write_bytes(base64.b64decode(document["signature"]))
    (tmp_path / "roothash").write_text(root)

    def smime(certificate: Path) -> subprocess.CompletedProcess[str]:
        # PKCS7_NOINTERN|PKCS7_NOVERIFY, as systemd's validate_signature_userspace()
        return subprocess.run(
            ["openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "sig",
             "-content", tmp_path / "roothash", "-certfile", certificate, "-nointern",
             "-noverify"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert smime(cert).returncode == 0
    assert smime(keys["stranger"][1]).returncode != 0
    # No certificates and no signed attributes inside (systemd ignores embedded ones).
    printed = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-in", tmp_path / "sig", "-print", "-noout"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    squeezed = " ".join(printed.split())
    assert "cert: <ABSENT>" in squeezed and "auth_attr: <ABSENT>" in squeezed


@pytest.mark.root(reason="needs root: systemd-dissect attaches a loop device")
def test_systemd_dissect_finds_the_three_partitions_by_root_hash(built: tuple[Path, Path]) -> None:
    image, _ = built
    root = check_verity(image).root_hash

    def dissect(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemd-dissect", "--json=short", *args, str(image)],
            capture_output=True,
            text=True,
            check=False,
        )

    shown = dissect()
    assert shown.returncode == 0, shown.stderr
    mounts = {m["designator"]: m for m in json.loads(shown.stdout)["mounts"]}
    assert set(mounts) == {"root", "root-verity", "root-verity-sig"}
    assert mounts["root"]["fstype"] == "squashfs"
    assert mounts["root"]["verity"] == "signed"
    assert mounts["root"]["architecture"] == "x86-64"
    assert mounts["root-verity"]["fstype"] == "DM_verity_hash"
    assert mounts["root-verity-sig"]["fstype"] == "verity_hash_signature"
    # systemd derives the partition UUIDs from the root hash: the halves put together are it.
    halves = mounts["root"]["partition_uuid"] + mounts["root-verity"]["partition_uuid"]
    assert halves.replace("-", "") == root
    # Given the root hash, systemd-dissect looks the partitions up by it, and finds them.
    assert dissect(f"--root-hash={root}").returncode == 0
    other = dissect(f"--root-hash={'12' * 32}")
    assert other.returncode != 0
    assert "No root partition for specified root hash" in other.stderr


def test_rebuild_is_byte_identical_and_the_key_only_changes_the_signature(
    built: tuple[Path, Path], keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    image, tree = built
    again = pack_ddi(tree, tmp_path / "again", *keys["builder"])
    assert again.read_bytes() == image.read_bytes()
    other = pack_ddi(tree, tmp_path / "other", *keys["stranger"])
    assert check_verity(other).root_hash == check_verity(image).root_hash
    for role in (Role.ROOT, Role.ROOT_VERITY):
        assert partition_bytes(other, role) == partition_bytes(image, role)
    assert partition_bytes(other, Role.ROOT_VERITY_SIG) != partition_bytes(
        image, Role.ROOT_VERITY_SIG
    )


def test_readers_see_the_file_system_inside(built: tuple[Path, Path]) -> None:
    image, tree = built
    contents = read_image(image)
    assert contents.ddi is not None and contents.size == image.stat().st_size
    assert contents.find("usr/bin/hello") is not None
    assert contents.release_files["hello"]["ARCHITECTURE"] == "x86-64"
    assert read_files(image, ["usr/share/hello/blob"])["usr/share/hello/blob"] == blob_of(tree)


def test_erofs_inside_a_ddi(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    tree = make_tree(tmp_path)
    image = pack_ddi(tree, tmp_path / "out", *keys["builder"], extra=("--format", "erofs"))
    contents = read_image(image)
    assert contents.format.value == "erofs"
    assert contents.ddi is not None
    assert read_files(image, ["usr/share/hello/blob"])["usr/share/hello/blob"] == blob_of(tree)
    checked = run_cli("validate", image, "--cert", keys["builder"][1])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_inspect_shows_partitions_root_hash_and_signer(
    built: tuple[Path, Path], keys: dict[str, tuple[Path, Path]]
) -> None:
    image, _ = built
    shown = run_cli("inspect", image, "--json")
    assert shown.returncode == 0, shown.stderr
    ddi = json.loads(shown.stdout)["ddi"]
    assert [p["type"] for p in ddi["partitions"]] == [
        "root-x86-64",
        "root-x86-64-verity",
        "root-x86-64-verity-sig",
    ]
    assert ddi["root_hash"] == check_verity(image).root_hash
    fingerprint = load_certificates(keys["builder"][1])[0]
    from sysext.trust.x509 import fingerprint as fp

    assert ddi["signed"] and ddi["certificate_fingerprint"] == fp(fingerprint)
    text = run_cli("inspect", image).stdout
    assert f"root hash   {ddi['root_hash']}" in text
    assert f"signed by   {ddi['certificate_fingerprint']}" in text


def test_validate_with_the_right_certificate(
    built: tuple[Path, Path], keys: dict[str, tuple[Path, Path]]
) -> None:
    image, _ = built
    result = run_cli("validate", image, "--cert", keys["builder"][1])
    assert result.returncode == 0, result.stdout
    assert "verity: signature verified with certificate" in result.stdout
    as_json = json.loads(run_cli("validate", image, "--cert", keys["builder"][1], "--json").stdout)
    assert (
        as_json["ok"] and as_json["ddi"]["verified_by"] == as_json["ddi"]["certificate_fingerprint"]
    )
    # During a rotation hosts trust two certificates; either may have signed.
    both = run_cli("validate", image, "--cert", keys["stranger"][1], "--cert", keys["builder"][1])
    assert both.returncode == 0, both.stdout


def _tampered(image: Path, directory: Path, how: str, blob: bytes) -> Path:
    target = copy_image(image, directory / how)
    if how == "data-byte":
        flip_data_byte(target, blob)
    elif how == "hash-byte":
        flip_hash_byte(target)
    elif how == "signature":
        flip_signature_byte(target)
    elif how == "root-hash-claim":
        rewrite_signature(target, lambda d: d.update(rootHash="ab" * 32))
    elif how == "fingerprint-claim":
        rewrite_signature(target, lambda d: d.update(certificateFingerprint="cd" * 32))
    return target


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("data-byte", "the hash tree does not match the data"),
        ("hash-byte", "the hash tree does not match the data"),
        ("signature", "the root hash signature does not verify with certificate"),
        ("root-hash-claim", "the verity-sig partition signs root hash abab"),
        ("fingerprint-claim", "names certificate cdcdcdcdcdcdcdcd"),
    ],
)
def test_validate_refuses_every_tampering(
    built: tuple[Path, Path],
    keys: dict[str, tuple[Path, Path]],
    tmp_path: Path,
    how: str,
    says: str,
) -> None:
    image, tree = built
    target = _tampered(image, tmp_path, how, blob_of(tree))
    result = run_cli("validate", target, "--cert", keys["builder"][1])
    assert result.returncode == 1, result.stdout + result.stderr
    assert says in result.stdout
    assert "0 error(s)" not in result.stdout


def test_validate_refuses_a_wrong_or_edited_certificate(
    built: tuple[Path, Path], keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    image, _ = built
    wrong = run_cli("validate", image, "--cert", keys["stranger"][1])
    assert wrong.returncode == 1
    assert "the root hash is not signed by a trusted certificate" in wrong.stdout
    edited = edited_certificate(keys["builder"][1], tmp_path / "edited.crt")
    result = run_cli("validate", image, "--cert", edited)
    assert result.returncode == 1
    assert "does not verify with certificate" in result.stdout


def test_signature_check_in_process_names_the_signer(
    built: tuple[Path, Path], keys: dict[str, tuple[Path, Path]]
) -> None:
    image, _ = built
    checked = check_verity(image)
    assert checked.signature is not None
    trusted = load_certificates(keys["builder"][1])
    assert verify_root_hash(checked.signature.signature, checked.root_hash, trusted) == trusted[0]
    with pytest.raises(VeritySignatureError, match="does not verify"):
        verify_root_hash(checked.signature.signature, "00" * 32, trusted)
    with pytest.raises(VeritySignatureError, match="not PKCS#7"):
        verify_root_hash(b"\x30\x03\x02\x01\x01", checked.root_hash, trusted)


def test_unsigned_and_broken_disk_images_are_errors(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    image, _ = built
    fs = tmp_path / "fs.img"
    fs.write_bytes(partition_bytes(image, Role.ROOT))
    unsigned = tmp_path / "hello-1.0-x86-64.raw"
    write_ddi(fs, unsigned, Architecture.X86_64, None)
    assert table(unsigned).find(Role.ROOT_VERITY_SIG) is None
    result = run_cli("validate", unsigned)
    assert result.returncode == 1
    assert "no verity-sig partition" in result.stdout and "[verity-unsigned]" in result.stdout
    # A changed partition table fails its checksum: one line, exit 2, no traceback.
    broken = copy_image(image, tmp_path / "broken")
    with open(broken, "r+b") as f:
        f.seek(512 + 60)  # the disk GUID, inside the checksummed header
        f.write(b"\xff")
    result = run_cli("inspect", broken)
    assert result.returncode == 2
    assert "checksum is wrong" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(SysextError, match="no JSON object"):
        VeritySignature.from_partition(b"\0" * 4096)


def test_bad_options_are_one_line_errors(
    built: tuple[Path, Path], keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    _, tree = built
    key, cert = keys["builder"]
    out = tmp_path / "out"
    base = ("pack", tree, "--name", "hello", "--version", "1.0", "--output", out)
    cases = [
        ((*base, "--verity"), "--verity needs --signing-cert CERT and --signing-key KEY"),
        ((*base, "--signing-cert", cert), "--signing-cert/--signing-key sign verity images"),
        (
            (*base, "--verity", "--signing-cert", cert, "--signing-key", keys["stranger"][0]),
            "is not the private key of",
        ),
        ((*base, "--verity", "--signing-cert", key, "--signing-key", key), "no PEM certificate"),
        (
            (*base, "--verity", "--signing-cert", cert, "--signing-key", cert),
            "not a usable private key",
        ),
        (("key", "generate", "--x509", "--output", key), "already exists"),
        (("key", "generate", "--cert", tmp_path / "x.crt", "--output", tmp_path / "x"), "--x509"),
    ]
    for args, says in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not out.exists() or not any(out.iterdir())
    # An architecture-independent image has no partition type to go in.
    from sysext.build.pack import pack
    from sysext.systemd.extension_release import ExtensionRelease
    from sysext.trust.x509 import load_signer

    with pytest.raises(SysextError, match="a verity DDI needs an architecture"):
        pack(
            tree, ExtensionRelease("hello", "1.0", None), out, verity_signer=load_signer(cert, key)
        )
    plain = run_cli("pack", tree, "--name", "plain", "--version", "1.0", "--output", out)
    assert plain.returncode == 0, plain.stderr
    refused = run_cli("validate", out / next(p.name for p in out.glob("*.raw")), "--cert", cert)
    assert refused.returncode == 2
    assert "this image is a plain file system" in refused.stderr


def test_generated_key_is_private_and_the_certificate_self_signed(
    keys: dict[str, tuple[Path, Path]],
) -> None:
    key, cert = keys["builder"]
    assert key.stat().st_mode & 0o777 == 0o600
    text = subprocess.run(
        ["openssl", "x509", "-in", cert, "-noout", "-subject", "-issuer", "-ext", "keyUsage"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "subject=CN = builder" in text and "issuer=CN = builder" in text
    assert "Digital Signature" in text


@pytest.mark.usefixtures("recipe")
def test_build_verity_from_a_recipe(
    tmp_path: Path, static_server: StaticServer, keys: dict[str, tuple[Path, Path]]
) -> None:
    publish(static_server)
    out = tmp_path / "out"
    key, cert = keys["builder"]
    signed = ("--output", out, "--verity", "--signing-cert", cert, "--signing-key", key)
    result = build_recipe(tmp_path, static_server.url, *signed)
    assert result.returncode == 0, result.stderr
    image = out / f"hello-1.0-{HOST.systemd_name}.raw"
    checked = run_cli("validate", image, "--cert", cert)
    assert checked.returncode == 0, checked.stdout
    provenance = json.loads((out / f"hello-1.0-{HOST.systemd_name}.provenance.json").read_text())
    assert provenance["build"]["verity"] == {
        "root_hash": check_verity(image).root_hash,
        "signer": json.loads(run_cli("inspect", image, "--json").stdout)["ddi"][
            "certificate_fingerprint"
        ],
    }
    # Same inputs: not packed again. Another certificate is another input: packed again.
    again = build_recipe(tmp_path, static_server.url, *signed)
    assert "unchanged" in again.stderr + again.stdout
    other_key, other_cert = keys["stranger"]
    resigned = build_recipe(
        tmp_path, static_server.url, "--output", out, "--verity",
        "--signing-cert", other_cert, "--signing-key", other_key,
    )  # fmt: skip
    assert resigned.returncode == 0, resigned.stderr
    assert "unchanged" not in resigned.stderr + resigned.stdout
    assert run_cli("validate", image, "--cert", other_cert).returncode == 0
    assert run_cli("validate", image, "--cert", cert).returncode == 1
