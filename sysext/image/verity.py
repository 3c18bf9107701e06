"""dm-verity hash trees, byte for byte what `veritysetup format` writes.

The layout is cryptsetup's (lib/verity/verity_hash.c, verity.c) for format 1, SHA-256,
4096-byte data and hash blocks, with a superblock:

* the hash device starts with a 512-byte superblock (`verity\\0\\0`, version 1, hash type 1,
  UUID, algorithm, block sizes, data block count, salt), zero-padded to one hash block;
* then the tree, top level first: level 0 holds H(salt ‖ data block) for every data block,
  128 digests per hash block, zero-padded; level n+1 hashes the blocks of level n the same
  way, until a level fits in one block;
* the root hash is H(salt ‖ top block) (H(salt ‖ data block) for a single data block).

systemd reads the superblock to set the device up (`crypt_load(CRYPT_VERITY)`), so the
superblock is not optional for a DDI. Everything is computed in one pass over the data with
hashlib: no device mapper, no root, no cryptsetup needed to build or to check an image.
"""

from __future__ import annotations

import hashlib
import struct
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 4096  # data and hash block size (systemd-repart's and mkosi's choice too)
DIGEST = 32  # SHA-256
ALGORITHM = "sha256"
SUPERBLOCK_SIZE = 512
SIGNATURE = b"verity\0\0"
_PER_BLOCK = BLOCK // DIGEST  # 128 digests per hash block (a power of two, as required)
# struct verity_sb (verity.c): signature, version, hash_type, uuid, algorithm[32],
# data_block_size, hash_block_size, data_blocks, salt_size, pad[6], salt[256], pad[168].
_SB = struct.Struct("<8sII16s32sIIQH6s256s168s")
assert _SB.size == SUPERBLOCK_SIZE
_READ_CHUNK = 256 * BLOCK  # 1 MiB reads


class VerityFormatError(ValueError):
    """A hash device that is not a verity superblock + tree of the kind written here."""


@dataclass(frozen=True)
class Superblock:
    uuid: uuidlib.UUID
    algorithm: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    salt: bytes

    def pack(self) -> bytes:
        return _SB.pack(
            SIGNATURE,
            1,
            1,
            self.uuid.bytes,
            self.algorithm.encode("ascii"),
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            len(self.salt),
            b"",
            self.salt,
            b"",
        )

    @classmethod
    def unpack(cls, data: bytes) -> Superblock:
        if len(data) < SUPERBLOCK_SIZE:
            raise VerityFormatError("hash partition is shorter than a verity superblock")
        (sig, version, hash_type, raw_uuid, algorithm, data_bs, hash_bs, blocks, salt_size,
         _pad, salt, _pad2) = _SB.unpack(data[:SUPERBLOCK_SIZE])  # fmt: skip
        if sig != SIGNATURE:
            raise VerityFormatError("no verity superblock at the start of the hash partition")
        if version != 1 or hash_type != 1:
            raise VerityFormatError(f"verity superblock version {version}/type {hash_type}")
        name = algorithm.rstrip(b"\0").decode("ascii", "replace")
        if salt_size > len(salt):
            raise VerityFormatError(f"verity salt size {salt_size} is out of range")
        return cls(uuidlib.UUID(bytes=raw_uuid), name, data_bs, hash_bs, blocks, salt[:salt_size])


@dataclass(frozen=True)
class HashTree:
    """A hash device (superblock + tree) and the root hash it was built for."""

    root_hash: bytes
    superblock: Superblock
    device: bytes  # what `veritysetup format DATA HASH` writes into HASH

    @property
    def root_hex(self) -> str:
        return self.root_hash.hex()


def level_sizes(data_blocks: int) -> list[int]:
    """Hash blocks per level, level 0 (hashes of data) first; [] for a single data block."""
    sizes = []
    count = data_blocks
    while count > 1:
        count = -(-count // _PER_BLOCK)
        sizes.append(count)
    return sizes


def hash_device_size(data_blocks: int) -> int:
    """Bytes of the hash device for `data_blocks` data blocks (superblock block included)."""
    return BLOCK * (1 + sum(level_sizes(data_blocks)))


def _blocks(source: BinaryIO, size: int) -> Iterator[bytes]:
    """The `size` bytes of `source` from its current position, in 4096-byte blocks."""
    left = size
    while left > 0:
        chunk = source.read(min(_READ_CHUNK, left))
        if not chunk:
            raise VerityFormatError(f"data ended {left} bytes early")
        left -= len(chunk)
        for at in range(0, len(chunk), BLOCK):
            yield chunk[at : at + BLOCK]


def _hash_blocks(blocks: Iterable[bytes], salt: bytes) -> list[bytes]:
    """One level: the blocks of the level below as zero-padded hash blocks."""
    salted = hashlib.sha256(salt)
    out: list[bytes] = []
    current = bytearray()
    for block in blocks:
        h = salted.copy()
        h.update(block)
        current += h.digest()
        if len(current) == BLOCK:
            out.append(bytes(current))
            current.clear()
    if current:
        out.append(bytes(current.ljust(BLOCK, b"\0")))
    return out


def build_tree(source: BinaryIO, size: int, salt: bytes, uuid: uuidlib.UUID) -> HashTree:
    """The verity hash device for the `size` bytes at `source`'s position (a multiple of 4096)."""
    if size <= 0 or size % BLOCK:
        raise ValueError(f"verity data must be a positive multiple of {BLOCK} bytes, not {size}")
    if len(salt) > 256:
        raise ValueError("a verity salt holds at most 256 bytes")
    data_blocks = size // BLOCK
    levels: list[list[bytes]] = []
    if data_blocks == 1:
        root = hashlib.sha256(salt + next(_blocks(source, size))).digest()
    else:
        level = _hash_blocks(_blocks(source, size), salt)
        levels.append(level)
        while len(level) > 1:
            level = _hash_blocks(level, salt)
            levels.append(level)
        root = hashlib.sha256(salt + level[0]).digest()
    superblock = Superblock(uuid, ALGORITHM, BLOCK, BLOCK, data_blocks, salt)
    head = superblock.pack().ljust(BLOCK, b"\0")
    # cryptsetup stores the top level first (hash_levels() in verity_hash.c).
    device = head + b"".join(b"".join(level) for level in reversed(levels))
    return HashTree(root, superblock, device)


def check_tree(source: BinaryIO, size: int, device: bytes) -> HashTree:
    """Rebuild the tree of the data at `source` with the salt and UUID of `device`'s
    superblock; raise VerityFormatError unless `device` is exactly that tree."""
    superblock = Superblock.unpack(device)
    if (superblock.algorithm, superblock.data_block_size, superblock.hash_block_size) != (
        ALGORITHM,
        BLOCK,
        BLOCK,
    ):
        raise VerityFormatError(
            f"verity superblock says {superblock.algorithm} with "
            f"{superblock.data_block_size}/{superblock.hash_block_size}-byte blocks; only "
            f"{ALGORITHM} with {BLOCK}-byte blocks is supported"
        )
    if superblock.data_blocks * BLOCK != size:
        raise VerityFormatError(
            f"verity superblock covers {superblock.data_blocks} data blocks, the data "
            f"partition holds {size // BLOCK}"
        )
    tree = build_tree(source, size, superblock.salt, superblock.uuid)
    if len(device) < len(tree.device):
        raise VerityFormatError("the hash partition is too small for the data partition's tree")
    if device[: len(tree.device)] != tree.device:
        first = next(i for i, (a, b) in enumerate(zip(device, tree.device, strict=False)) if a != b)
        raise VerityFormatError(
            f"the hash tree does not match the data (first difference at hash byte {first})"
        )
    if any(device[len(tree.device) :]):
        raise VerityFormatError("the hash partition has data after the end of the tree")
    return tree
