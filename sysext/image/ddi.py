"""Discoverable Disk Images: a squashfs/erofs file system, its dm-verity hash tree and the
signed root hash, as three GPT partitions systemd finds by type.

Layout written here (UAPI.2, the Discoverable Partitions Specification; type UUIDs from
systemd's src/systemd/sd-gpt.h):

    LBA 0          protective MBR
    LBA 1..33      GPT header and 128 entries
    4 KiB aligned  root-ARCH             the file system (usr/ and opt/), read-only flag
                   root-ARCH-verity      verity superblock + hash tree (sysext.image.verity)
                   root-ARCH-verity-sig {"rootHash", "certificateFingerprint", "signature"}
                                         JSON, NUL-padded to 4096 bytes
    end            backup entries and header

Partition UUIDs are the first and last 128 bits of the root hash (systemd-repart's
convention; systemd-dissect looks the partitions up that way when it is given a root hash),
the disk and signature partition UUIDs and the verity salt derive from the content, so the
same tree and key give the same bytes. The signature itself is made by the caller
(sysext.trust.x509): this module never touches keys.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import shutil
import struct
import uuid as uuidlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from sysext.core.errors import SysextError
from sysext.image import verity
from sysext.systemd.architecture import Architecture

SECTOR = 512
ALIGN = 4096
ENTRIES = 128
ENTRY_SIZE = 128
ENTRY_SECTORS = ENTRIES * ENTRY_SIZE // SECTOR  # 32
HEADER_SIZE = 92
SIGNATURE_PARTITION_SIZE = 4096
MAX_SIGNATURE_BYTES = 4 << 20  # systemd refuses larger verity-sig partitions
GPT_SIGNATURE = b"EFI PART"
GPT_REVISION = 0x00010000
FLAG_READ_ONLY = 1 << 60  # SD_GPT_FLAG_READ_ONLY
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")
_SALT_CONTEXT = b"sysext verity salt\0"
_UUID_CONTEXT = b"sysext verity uuid\0"
_DISK_CONTEXT = b"sysext ddi disk\0"
_SIG_CONTEXT = b"sysext ddi verity-sig\0"
_HINT = "build it again with `sysext pack --verity` or `sysext build --verity`"


class Role(enum.Enum):
    """What a partition is to systemd-dissect (its designator, architecture aside)."""

    ROOT = "root"
    ROOT_VERITY = "root-verity"
    ROOT_VERITY_SIG = "root-verity-sig"
    USR = "usr"
    USR_VERITY = "usr-verity"
    USR_VERITY_SIG = "usr-verity-sig"


def _u(text: str) -> uuidlib.UUID:
    return uuidlib.UUID(text)


# (root, root-verity, root-verity-sig, usr, usr-verity, usr-verity-sig) per architecture,
# from sd-gpt.h. Reading accepts root and usr DDIs (systemd-repart and mkosi make both);
# writing makes root ones: usr-type DDIs merge without verity before systemd 255.
_TYPES: dict[Architecture, tuple[str, str, str, str, str, str]] = {
    Architecture.X86_64: (
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
        "41092b05-9fc8-4523-994f-2def0408b176", "8484680c-9521-48c6-9c11-b0720656f69e",
        "77ff5f63-e7b6-4633-acf4-1565b864c0e6", "e7bb33fb-06cf-4e81-8273-e543b413e2e2",
    ),
    Architecture.ARM64: (
        "b921b045-1df0-41c3-af44-4c6f280d3fae", "df3300ce-d69f-4c92-978c-9bfb0f38d820",
        "6db69de6-29f4-4758-a7a5-962190f00ce3", "b0e01050-ee5f-4390-949a-9101b17104e9",
        "6e11a4e7-fbca-4ded-b9e9-e1a512bb664e", "c23ce4ff-44bd-4b00-b2d4-b41b3419e02a",
    ),
    Architecture.X86: (
        "44479540-f297-41b2-9af7-d131d5f0458a", "d13c5d3b-b5d1-422a-b29f-9454fdc89d76",
        "5996fc05-109c-48de-808b-23fa0830b676", "75250d76-8cc6-458e-bd66-bd47cc81a812",
        "8f461b0d-14ee-4e81-9aa9-049b6fb97abd", "974a71c0-de41-43c3-be5d-5c5ccd1ad2c0",
    ),
    Architecture.ARM: (
        "69dad710-2ce4-4e3c-b16c-21a1d49abed3", "7386cdf2-203c-47a9-a498-f2ecce45a2d6",
        "42b0455f-eb11-491d-98d3-56145ba9d037", "7d0359a3-02b3-4f0a-865c-654403e70625",
        "c215d751-7bcd-4649-be90-6627490a4c05", "d7ff812f-37d1-4902-a810-d76ba57b975a",
    ),
    Architecture.PPC64_LE: (
        "c31c45e6-3f39-412e-80fb-4809c4980599", "906bd944-4589-4aae-a4e4-dd983917446a",
        "d4a236e7-e873-4c07-bf1d-bf6cf7f1c3c6", "15bb03af-77e7-4d4a-b12b-c0d084f7491c",
        "ee2b9983-21e8-4153-86d9-b6901a54d1ce", "c8bfbd1e-268e-4521-8bba-bf314c399557",
    ),
    Architecture.S390X: (
        "5eead9a9-fe09-4a1e-a1d7-520d00531306", "b325bfbe-c7be-4ab8-8357-139e652d2f6b",
        "c80187a5-73a3-491a-901a-017c3fa953e9", "8a4f5770-50aa-4ed3-874a-99b710db6fea",
        "31741cc4-1a2a-4111-a581-e00b447d2d06", "3f324816-667b-46ae-86ee-9b0c0c6c11b4",
    ),
    Architecture.RISCV64: (
        "72ec70a6-cf74-40e6-bd49-4bda08e8f224", "b6ed5582-440b-4209-b8da-5ff7c419ea3d",
        "efe0f087-ea8d-4469-821a-4c2a96a8386a", "beaec34b-8442-439b-a40b-984381ed097d",
        "8f1056be-9b05-47c4-81d6-be53128e5b54", "d2f9000a-7a18-453f-b5cd-4d32f77a7b32",
    ),
    Architecture.LOONGARCH64: (
        "77055800-792c-4f94-b39a-98c91b762bb6", "f3393b22-e9af-4613-a948-9d3bfbd0c535",
        "5afb67eb-ecc8-4f85-ae8e-ac1e7c50e7d0", "e611c702-575c-4cbe-9a46-434fa0bf7e3f",
        "f46b2c26-59ae-48f0-9106-c50ed47f673d", "b024f315-d330-444c-8461-44bbde524e99",
    ),
}  # fmt: skip
_ROLES = tuple(Role)
TYPE_ROLES: dict[uuidlib.UUID, tuple[Role, Architecture]] = {
    _u(text): (role, arch)
    for arch, texts in _TYPES.items()
    for role, text in zip(_ROLES, texts, strict=True)
}


def partition_type(role: Role, arch: Architecture) -> uuidlib.UUID:
    return _u(_TYPES[arch][_ROLES.index(role)])


def partition_name(role: Role, arch: Architecture) -> str:
    """systemd's name for a type, e.g. root-x86-64-verity (gpt.c's table)."""
    base, _, rest = role.value.partition("-")
    return f"{base}-{arch.systemd_name}" + (f"-{rest}" if rest else "")


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based, as the kernel names it (loop0p1)
    type_uuid: uuidlib.UUID
    uuid: uuidlib.UUID
    offset: int  # bytes
    size: int  # bytes
    flags: int
    label: str

    @property
    def role(self) -> Role | None:
        found = TYPE_ROLES.get(self.type_uuid)
        return found[0] if found else None

    @property
    def arch(self) -> Architecture | None:
        found = TYPE_ROLES.get(self.type_uuid)
        return found[1] if found else None

    @property
    def type_name(self) -> str:
        found = TYPE_ROLES.get(self.type_uuid)
        return partition_name(*found) if found else str(self.type_uuid)


@dataclass(frozen=True)
class VeritySignature:
    """The verity-sig partition's JSON."""

    root_hash: str  # lowercase hex
    signature: bytes  # DER PKCS#7
    certificate_fingerprint: str | None = None

    def to_partition(self) -> bytes:
        document: dict[str, str] = {"rootHash": self.root_hash}
        if self.certificate_fingerprint is not None:
            document["certificateFingerprint"] = self.certificate_fingerprint
        document["signature"] = base64.b64encode(self.signature).decode("ascii")
        # Compact, key order as systemd-repart writes it; systemd parses up to the first NUL.
        text = json.dumps(document, separators=(",", ":")).encode("ascii")
        size = max(SIGNATURE_PARTITION_SIZE, -(-len(text) // ALIGN) * ALIGN)
        return text.ljust(size, b"\0")

    @classmethod
    def from_partition(cls, data: bytes) -> VeritySignature:
        text = data.split(b"\0", 1)[0]
        try:
            document = json.loads(text)
        except ValueError:
            raise SysextError("the verity-sig partition holds no JSON object", _HINT) from None
        if not isinstance(document, dict):
            raise SysextError("the verity-sig partition holds no JSON object", _HINT)
        root = document.get("rootHash")
        signature = document.get("signature")
        fingerprint = document.get("certificateFingerprint")
        if not isinstance(root, str) or not _is_hex(root) or len(root) < 64:
            raise SysextError("the verity-sig partition has no hex rootHash", _HINT)
        if not isinstance(signature, str):
            raise SysextError("the verity-sig partition has no base64 signature", _HINT)
        try:
            raw = base64.b64decode(signature, validate=True)
        except binascii.Error:
            raise SysextError("the verity-sig partition's signature is not base64", _HINT) from None
        if fingerprint is not None and not (
            isinstance(fingerprint, str) and _is_hex(fingerprint) and len(fingerprint) == 64
        ):
            raise SysextError("the verity-sig partition's certificateFingerprint is not SHA-256")
        return cls(root.lower(), raw, fingerprint.lower() if fingerprint else None)


class RootHashSigner(Protocol):
    """What signs a root hash (sysext.trust.x509.Signer): this module never sees keys."""

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the signing certificate's DER, hex."""
        ...

    def sign(self, root_hex: str) -> bytes:
        """A detached PKCS#7 signature (DER) over the hex root hash."""
        ...


def _is_hex(text: str) -> bool:
    return len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text)


@dataclass(frozen=True)
class Ddi:
    """A DDI's partition table and what its verity-sig partition claims (nothing checked)."""

    size: int
    disk_uuid: uuidlib.UUID
    partitions: tuple[Partition, ...]

    def find(self, *roles: Role) -> Partition | None:
        for partition in self.partitions:
            if partition.role in roles:
                return partition
        return None

    @property
    def data(self) -> Partition:
        found = self.find(Role.ROOT, Role.USR)
        if found is None:
            raise SysextError("the disk image has no root or usr partition", _HINT)
        return found

    @property
    def arch(self) -> Architecture | None:
        return self.data.arch


def _derived_uuid(context: bytes, seed: bytes) -> uuidlib.UUID:
    """A random-looking (version 4) UUID fixed by `seed`: same content, same bytes."""
    raw = bytearray(hashlib.sha256(context + seed).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return uuidlib.UUID(bytes=bytes(raw))


def _align(value: int, to: int = ALIGN) -> int:
    return -(-value // to) * to


# --- writing ---------------------------------------------------------------------------


def _file_digest(source: BinaryIO, size: int) -> bytes:
    h = hashlib.sha256()
    left = size
    while left:
        chunk = source.read(min(1 << 20, left))
        if not chunk:
            raise SysextError("the file system image ended early")
        h.update(chunk)
        left -= len(chunk)
    return h.digest()


def build_tree_for(fs_image: Path) -> verity.HashTree:
    """The hash tree of a file system image padded to whole 4 KiB blocks (salt and superblock
    UUID derived from its content)."""
    size = fs_image.stat().st_size
    padded = _align(size)
    with open(fs_image, "rb") as f:
        digest = _file_digest(f, size)
        h = hashlib.sha256(digest + (padded - size).to_bytes(4, "little"))
        seed = h.digest()
        f.seek(0)
        source = _Padded(f, size, padded)
        return verity.build_tree(
            source,  # type: ignore[arg-type]
            padded,
            hashlib.sha256(_SALT_CONTEXT + seed).digest(),
            _derived_uuid(_UUID_CONTEXT, seed),
        )


class _Padded:
    """`size` bytes of a file followed by zeros up to `padded` (read() only)."""

    def __init__(self, f: BinaryIO, size: int, padded: int) -> None:
        self._f, self._size, self._padded, self._pos = f, size, padded, 0

    def read(self, n: int) -> bytes:
        n = min(n, self._padded - self._pos)
        take = max(0, min(n, self._size - self._pos))
        data = self._f.read(take) if take else b""
        data += b"\0" * (n - len(data))
        self._pos += n
        return data


def write_ddi(
    fs_image: Path, output: Path, arch: Architecture, signer: RootHashSigner | None
) -> tuple[Ddi, str]:
    """Wrap `fs_image` (squashfs or erofs) into a verity DDI at `output`; return the table
    and the root hash (hex).

    `signer` signs the root hash into the verity-sig partition; None leaves that partition
    out (an unsigned verity image: tests only, hosts with a signed-only policy refuse it).
    """
    if arch not in _TYPES:
        raise SysextError(f"no DDI partition types for {arch.systemd_name}")
    tree = build_tree_for(fs_image)
    data_size = tree.superblock.data_blocks * verity.BLOCK
    signature = (
        VeritySignature(
            tree.root_hex, signer.sign(tree.root_hex), signer.fingerprint
        ).to_partition()
        if signer is not None
        else None
    )
    root = tree.root_hash
    layout: list[tuple[Role, uuidlib.UUID, int, int]] = []  # role, uuid, offset, size
    offset = _align((2 + ENTRY_SECTORS) * SECTOR)
    layout.append((Role.ROOT, uuidlib.UUID(bytes=root[:16]), offset, data_size))
    offset += data_size
    layout.append((Role.ROOT_VERITY, uuidlib.UUID(bytes=root[-16:]), offset, len(tree.device)))
    offset += len(tree.device)
    if signature is not None:
        layout.append(
            (Role.ROOT_VERITY_SIG, _derived_uuid(_SIG_CONTEXT, root), offset, len(signature))
        )
        offset += len(signature)
    total = _align(offset + (1 + ENTRY_SECTORS) * SECTOR)
    partitions = tuple(
        Partition(
            number=i + 1,
            type_uuid=partition_type(role, arch),
            uuid=part_uuid,
            offset=start,
            size=size,
            flags=FLAG_READ_ONLY if role is not Role.ROOT_VERITY_SIG else 0,
            label=partition_name(role, arch),
        )
        for i, (role, part_uuid, start, size) in enumerate(layout)
    )
    ddi = Ddi(total, _derived_uuid(_DISK_CONTEXT, root), partitions)
    with open(output, "wb") as out, open(fs_image, "rb") as fs:
        out.truncate(total)
        out.write(_protective_mbr(total))
        primary, backup = _gpt_headers(ddi)
        entries = _entries(ddi)
        out.seek(SECTOR)
        out.write(primary)
        out.write(entries)
        out.seek(partitions[0].offset)
        shutil.copyfileobj(fs, out, 1 << 20)  # the tail up to data_size is the sparse zeros
        out.seek(partitions[1].offset)
        out.write(tree.device)
        if signature is not None:
            out.seek(partitions[2].offset)
            out.write(signature)
        last_lba = total // SECTOR - 1
        out.seek((last_lba - ENTRY_SECTORS) * SECTOR)
        out.write(entries)
        out.write(backup)
    return ddi, tree.root_hex


def _protective_mbr(total: int) -> bytes:
    sectors = min(total // SECTOR - 1, 0xFFFFFFFF)
    entry = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, sectors)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


def _entries(ddi: Ddi) -> bytes:
    table = bytearray(ENTRIES * ENTRY_SIZE)
    for p in ddi.partitions:
        name = p.label.encode("utf-16-le")[:72]
        first = p.offset // SECTOR
        last = (p.offset + p.size) // SECTOR - 1
        at = (p.number - 1) * ENTRY_SIZE
        table[at : at + _ENTRY.size] = _ENTRY.pack(
            p.type_uuid.bytes_le, p.uuid.bytes_le, first, last, p.flags, name
        )
    return bytes(table)


def _gpt_headers(ddi: Ddi) -> tuple[bytes, bytes]:
    entries_crc = zlib.crc32(_entries(ddi))
    last_lba = ddi.size // SECTOR - 1
    first_usable = 2 + ENTRY_SECTORS
    last_usable = last_lba - ENTRY_SECTORS - 1

    def header(my_lba: int, alternate: int, entries_lba: int) -> bytes:
        fields = [GPT_SIGNATURE, GPT_REVISION, HEADER_SIZE, 0, 0, my_lba, alternate,
                  first_usable, last_usable, ddi.disk_uuid.bytes_le, entries_lba, ENTRIES,
                  ENTRY_SIZE, entries_crc]  # fmt: skip
        crc = zlib.crc32(_HEADER.pack(*fields))
        fields[3] = crc
        return _HEADER.pack(*fields).ljust(SECTOR, b"\0")

    primary = header(1, last_lba, 2)
    backup = header(last_lba, 1, last_lba - ENTRY_SECTORS)
    return primary, backup


# --- reading ---------------------------------------------------------------------------


def is_ddi(head: bytes) -> bool:
    """Whether the first 1024 bytes of a file start a GPT disk (512-byte sectors)."""
    return len(head) >= 2 * SECTOR and head[SECTOR : SECTOR + 8] == GPT_SIGNATURE


def read_ddi(f: BinaryIO, size: int) -> Ddi:
    """The partition table of a DDI; SysextError for anything but a sound GPT."""
    f.seek(SECTOR)
    raw = f.read(SECTOR)
    if len(raw) < HEADER_SIZE or raw[:8] != GPT_SIGNATURE:
        raise SysextError("not a GPT disk image (512-byte sectors)", _HINT)
    fields = list(_HEADER.unpack(raw[: _HEADER.size]))
    (_, revision, header_size, crc, _, my_lba, _alt, first_usable, last_usable, disk,
     entries_lba, count, entry_size, entries_crc) = fields  # fmt: skip
    fields[3] = 0
    if revision != GPT_REVISION or header_size != HEADER_SIZE or my_lba != 1:
        raise SysextError("the GPT header is not a revision 1.0, 92-byte header at LBA 1", _HINT)
    if zlib.crc32(_HEADER.pack(*fields)) != crc:
        raise SysextError("the GPT header's checksum is wrong (the table was changed)", _HINT)
    if entry_size != ENTRY_SIZE or not 1 <= count <= ENTRIES:
        raise SysextError(f"GPT with {count} entries of {entry_size} bytes is not supported")
    f.seek(entries_lba * SECTOR)
    table = f.read(count * entry_size)
    if len(table) != count * entry_size or zlib.crc32(table) != entries_crc:
        raise SysextError("the GPT partition entries' checksum is wrong", _HINT)
    partitions = []
    for i in range(count):
        type_le, uuid_le, first, last, flags, name = _ENTRY.unpack(
            table[i * entry_size : i * entry_size + _ENTRY.size]
        )
        if type_le == bytes(16):
            continue
        if not first_usable <= first <= last <= last_usable or (last + 1) * SECTOR > size:
            raise SysextError(f"GPT partition {i + 1} lies outside the disk image", _HINT)
        partitions.append(
            Partition(
                number=i + 1,
                type_uuid=uuidlib.UUID(bytes_le=type_le),
                uuid=uuidlib.UUID(bytes_le=uuid_le),
                offset=first * SECTOR,
                size=(last - first + 1) * SECTOR,
                flags=flags,
                label=name.decode("utf-16-le", "replace").rstrip("\0"),
            )
        )
    return Ddi(size, uuidlib.UUID(bytes_le=disk), tuple(partitions))


def read_partition(f: BinaryIO, partition: Partition, limit: int) -> bytes:
    if partition.size > limit:
        raise SysextError(
            f"the {partition.type_name} partition is {partition.size} bytes, more than "
            f"the {limit} allowed"
        )
    f.seek(partition.offset)
    return f.read(partition.size)


@dataclass(frozen=True)
class VerityCheck:
    """A DDI whose hash tree matches its data and whose partition UUIDs match the root hash;
    `signature` is what the verity-sig partition claims (None: no such partition)."""

    ddi: Ddi
    root_hash: str
    signature: VeritySignature | None


class _Window:
    """Bytes [offset, offset + size) of a file, as a file of its own (read/seek/tell)."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self._f, self._offset, self._size, self._pos = f, offset, size, 0

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        n = left if n < 0 else min(n, left)
        if n <= 0:
            return b""
        self._f.seek(self._offset + self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data


def window(f: BinaryIO, partition: Partition) -> BinaryIO:
    """The partition's bytes as a file object (the readers only read and seek)."""
    return _Window(f, partition.offset, partition.size)  # type: ignore[return-value]


def check_verity(path: Path) -> VerityCheck:
    """Recompute the hash tree from the data partition and check everything but the
    signature's cryptography: tree bytes, root hash ↔ partition UUIDs, the verity-sig
    partition's rootHash. SysextError names the first problem."""
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        ddi = read_ddi(f, size)
        data = ddi.data
        hashes = ddi.find(Role.ROOT_VERITY, Role.USR_VERITY)
        if hashes is None:
            raise SysextError("the disk image has no verity partition: nothing protects it", _HINT)
        device = read_partition(f, hashes, data.size // 64 + (1 << 20))
        try:
            tree = verity.check_tree(window(f, data), data.size, device)
        except verity.VerityFormatError as exc:
            raise SysextError(f"verity: {exc}", _HINT) from None
        root = tree.root_hash
        if data.uuid.bytes != root[:16] or hashes.uuid.bytes != root[-16:]:
            raise SysextError(
                f"the partition UUIDs ({data.uuid}, {hashes.uuid}) are not the first and "
                f"last 128 bits of the root hash {tree.root_hex}",
                _HINT,
            )
        sig_partition = ddi.find(Role.ROOT_VERITY_SIG, Role.USR_VERITY_SIG)
        signature = None
        if sig_partition is not None:
            signature = VeritySignature.from_partition(
                read_partition(f, sig_partition, MAX_SIGNATURE_BYTES)
            )
            if signature.root_hash != tree.root_hex:
                raise SysextError(
                    f"the verity-sig partition signs root hash {signature.root_hash}, the "
                    f"hash tree's is {tree.root_hex}",
                    _HINT,
                )
    return VerityCheck(ddi, tree.root_hex, signature)


def read_signature(path: Path) -> VeritySignature | None:
    """What a DDI's verity-sig partition claims, without checking anything (cheap: the
    partition table and 4 KiB); None for a plain file system image or an unsigned DDI."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2 * SECTOR)
        if not is_ddi(head):
            return None
        ddi = read_ddi(f, path.stat().st_size)
        part = ddi.find(Role.ROOT_VERITY_SIG, Role.USR_VERITY_SIG)
        if part is None:
            return None
        return VeritySignature.from_partition(read_partition(f, part, MAX_SIGNATURE_BYTES))
