"""Signed verity DDIs for tests, and the ways to tamper with one.

Shared by the builder tests (test_verity.py), the registry tests and the VM tests: each
tampered copy changes exactly one thing a host (or a registry) must notice.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sysext.image.ddi import Ddi, Role, read_ddi
from sysext.image.verity import BLOCK
from tests.conftest import run_cli

# Incompressible, so its bytes sit in the file system's data area as they are: a flipped
# byte there changes a file's contents without making the image unreadable to a lister.
BLOB_SIZE = 64 * 1024


def make_tree(base: Path, name: str = "hello", version: str = "1.0") -> Path:
    tree = base / f"tree-{name}-{version}"
    (tree / "usr/bin").mkdir(parents=True)
    script = tree / "usr/bin" / name
    script.write_text(f'#!/bin/sh\necho "{name} {version} from a verity image"\n')
    script.chmod(0o755)
    (tree / "usr/share" / name).mkdir(parents=True)
    (tree / "usr/share" / name / "blob").write_bytes(os.urandom(BLOB_SIZE))
    return tree


def blob_of(tree: Path, name: str = "hello") -> bytes:
    return (tree / "usr/share" / name / "blob").read_bytes()


def make_key(directory: Path, stem: str) -> tuple[Path, Path]:
    """`sysext key generate --x509`: (key, certificate)."""
    key, cert = directory / f"{stem}.key", directory / f"{stem}.crt"
    result = run_cli("key", "generate", "--x509", "--output", key, "--subject", stem)
    assert result.returncode == 0, result.stderr
    return key, cert


def pack_ddi(
    tree: Path,
    out: Path,
    key: Path,
    cert: Path,
    *,
    name: str = "hello",
    version: str = "1.0",
    extra: tuple[str, ...] = (),
) -> Path:
    result = run_cli(
        "pack", tree, "--name", name, "--version", version, "--arch", "x86-64",
        "--verity", "--signing-cert", cert, "--signing-key", key, "--output", out, *extra,
        env={"SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out / f"{name}-{version}-x86-64.raw"


def table(image: Path) -> Ddi:
    with open(image, "rb") as f:
        return read_ddi(f, image.stat().st_size)


def partition_bytes(image: Path, role: Role) -> bytes:
    ddi = table(image)
    part = ddi.find(role)
    assert part is not None
    with open(image, "rb") as f:
        f.seek(part.offset)
        return f.read(part.size)


def _flip(image: Path, offset: int) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def flip_data_byte(image: Path, blob: bytes) -> None:
    """One byte of a file's contents in the root partition, ten 4 KiB blocks away from the
    file system's superblock: the image stays listable and mountable, only that file's
    block changes."""
    data = partition_bytes(image, Role.ROOT)
    at = data.find(blob[40960:41024])
    assert at >= 10 * BLOCK, "the blob is stored compressed; its bytes are not in the image"
    part = table(image).find(Role.ROOT)
    assert part is not None
    _flip(image, part.offset + at + 10)


def flip_hash_byte(image: Path) -> None:
    """One byte of the hash tree (past the superblock block)."""
    part = table(image).find(Role.ROOT_VERITY)
    assert part is not None and part.size > BLOCK
    _flip(image, part.offset + BLOCK + 5)


def rewrite_signature(image: Path, change: Callable[[dict[str, str]], None]) -> None:
    """Edit the verity-sig JSON in place (same partition size, NUL padding kept)."""
    part = table(image).find(Role.ROOT_VERITY_SIG)
    assert part is not None
    raw = partition_bytes(image, Role.ROOT_VERITY_SIG)
    document = json.loads(raw.split(b"\0", 1)[0])
    change(document)
    text = json.dumps(document, separators=(",", ":")).encode()
    assert len(text) <= part.size
    with open(image, "r+b") as f:
        f.seek(part.offset)
        f.write(text.ljust(part.size, b"\0"))


def flip_signature_byte(image: Path) -> None:
    def change(document: dict[str, str]) -> None:
        der = bytearray(base64.b64decode(document["signature"]))
        der[-3] ^= 0x01  # inside the RSA signature value, the DER stays well-formed
        document["signature"] = base64.b64encode(bytes(der)).decode()

    rewrite_signature(image, change)


def edited_certificate(cert: Path, out: Path) -> Path:
    """The certificate with one byte of its public key changed (issuer and serial kept, so
    it still claims to be the signer)."""
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    der = bytearray(certificate.public_bytes(serialization.Encoding.DER))
    modulus = certificate.public_key().public_numbers().n.to_bytes(256, "big")  # type: ignore[union-attr]
    at = bytes(der).find(modulus[100:132])
    assert at > 0
    der[at + 5] ^= 0x01
    out.write_bytes(
        x509.load_der_x509_certificate(bytes(der)).public_bytes(serialization.Encoding.PEM)
    )
    return out


def copy(image: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / image.name
    shutil.copyfile(image, target)
    return target
