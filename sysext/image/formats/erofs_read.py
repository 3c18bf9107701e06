"""A small, defensive reader of erofs metadata (directory tree, modes, owners, links, xattrs).

No Python package reads erofs, and the erofs-utils tools either print layouts meant for
humans (dump.erofs) or extract to disk (fsck.erofs), which is no way to look at an
untrusted upload. The on-disk format is simple where we need it (linux
`fs/erofs/erofs_fs.h`): a superblock at byte 1024, 32- or 64-byte inodes addressed by
`nid`, and directories stored uncompressed as blocks of 12-byte dirents followed by names.
Regular-file data is read only when stored uncompressed (erofs-utils keeps small files such
as an extension-release file uncompressed, since compression cannot save a block there).
Every offset is bounds-checked and cycles/depth are limited: corrupt input raises
`ErofsFormatError`, never loops or reads outside the file.

The superblock is checked as the kernel's `erofs_read_superblock` (fs/erofs/super.c) does
(issue 19, finding 5: unverified checksums let 193 unmountable mutants through): magic,
block size (512 B to one 4 KiB page), no directory block bits, the crc32c when
SB_CHKSUM is set, no incompatible feature the kernel — or this reader, which must see
everything an image holds — does not know, the superblock extension slots, the volume
name, the compression configurations (`z_erofs_parse_cfgs`), no extra devices. Compressed
inodes are checked against the superblock the way zmap.c checks them when a file is read:
algorithms the superblock enables, big physical clusters only with that feature, lz4's
zero padding.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

EROFS_MAGIC = 0xE0F5E1E2
SUPERBLOCK_OFFSET = 1024
_FLAT_PLAIN, _COMPRESSED_FULL, _FLAT_INLINE, _COMPRESSED_COMPACT, _CHUNK_BASED = range(5)
# Feature bits (erofs_fs.h). Compatible features are safe to ignore by definition, except
# the ones that move where xattrs live (metabox, plain/ishare prefixes): this reader must
# see every xattr (capabilities are refused), so it accepts only what it reads.
COMPAT_SB_CHKSUM = 0x1
_COMPAT_KNOWN = COMPAT_SB_CHKSUM | 0x2 | 0x4  # + MTIME, XATTR_FILTER (a lookup hint)
_INCOMPAT_ZERO_PADDING = 0x1
_INCOMPAT_COMPR_CFGS = 0x2  # also BIG_PCLUSTER: one bit
_INCOMPAT_DEVICE_TABLE = 0x8  # also COMPR_HEAD2; extra devices only when extra_devices > 0
_INCOMPAT_ZTAILPACKING = 0x10
_INCOMPAT_FRAGMENTS = 0x20  # also DEDUPE
# + CHUNKED_FILE (0x4). Not: XATTR_PREFIXES (0x40: long xattr names this reader cannot
# resolve), 48BIT (0x80) and METABOX (0x100, inodes stored compressed), which Linux only
# has since 6.15/6.17 anyway.
_INCOMPAT_KNOWN = 0x3F
_ALGORITHMS = {0: "lz4", 1: "lzma", 2: "deflate", 3: "zstd"}  # Z_EROFS_COMPRESSION_*
# Per-algorithm configuration records (z_erofs_*_cfgs) and what the kernel demands of them.
_CFG_SIZE = {0: 14, 1: 14, 2: 6, 3: 6}
_PCLUSTER_MAX = 1 << 20  # Z_EROFS_PCLUSTER_MAX_SIZE
_LZMA_MAX_DICT = 8 << 20  # Z_EROFS_LZMA_MAX_DICT_SIZE
_ADVISE_BIG_PCLUSTER = 0x2 | 0x4  # Z_EROFS_ADVISE_BIG_PCLUSTER_1/2
_ADVISE_INLINE_PCLUSTER = 0x8
_ADVISE_FRAGMENT_PCLUSTER = 0x20
PAGE_SIZE = 4096  # the smallest page size of the hosts' kernels; larger blocks do not mount
# e_name_index → prefix (erofs_fs.h EROFS_XATTR_INDEX_*); the ACL names have no suffix.
XATTR_PREFIXES = {
    1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default", 4: "trusted.",
    5: "lustre.", 6: "security.",
}  # fmt: skip
MAX_DEPTH = 128
MAX_ENTRIES = 2_000_000


class ErofsFormatError(Exception):
    pass


@dataclass(frozen=True)
class ErofsInode:
    nid: int
    mode: int
    uid: int
    gid: int
    size: int
    layout: int
    raw_blkaddr: int
    data_offset: int  # byte offset of the inline tail (FLAT_INLINE), after inode + xattrs
    xattr_offset: int = 0  # where the inline xattr area starts (right after the inode)
    xattr_size: int = 0  # its size in bytes; 0 when the inode has no xattrs

    @property
    def compressed(self) -> bool:
        return self.layout in (_COMPRESSED_FULL, _COMPRESSED_COMPACT)


@dataclass(frozen=True)
class ErofsSuperblock:
    block_size: int
    root_nid: int
    meta_blkaddr: int
    blocks: int
    build_time: int
    uuid: bytes
    compression_algorithms: int  # bitmap (bit 0 lz4, bit 1 lzma); 0 when not recorded
    feature_incompat: int = 0
    xattr_blkaddr: int = 0


def is_erofs(head: bytes) -> bool:
    """True when `head` (the file's first 1028+ bytes) carries the erofs magic."""
    if len(head) < SUPERBLOCK_OFFSET + 4:
        return False
    return bool(struct.unpack_from("<I", head, SUPERBLOCK_OFFSET)[0] == EROFS_MAGIC)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def superblock_checksum(block: bytes) -> int:
    """The kernel's `crc32c(~0, sb, len)`: Castagnoli, seeded with ~0, not inverted at the
    end, over the superblock's block from byte 1024 with the checksum field zeroed."""
    crc = 0xFFFFFFFF
    for byte in block[:4] + b"\0\0\0\0" + block[8:]:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


class ErofsReader:
    def __init__(self, f: BinaryIO, file_size: int) -> None:
        self._f = f
        self._size = file_size
        raw = self._read(SUPERBLOCK_OFFSET, 128)
        (magic, checksum, compat, blkszbits, extslots, root_nid) = struct.unpack_from(
            "<IIIBBH", raw, 0
        )
        if magic != EROFS_MAGIC:
            raise ErofsFormatError("no erofs superblock")
        if not 9 <= blkszbits <= 12:
            raise ErofsFormatError(f"block size 2^{blkszbits} (Linux mounts 512 B to 4 KiB)")
        block_size = 1 << blkszbits
        (_inos, build_time, _nsec, blocks, meta_blkaddr, xattr_blkaddr) = struct.unpack_from(
            "<QQIIII", raw, 16
        )
        uuid, volume_name = raw[48:64], raw[64:80]
        (incompat, u1, extra_devices, _devt_slotoff, dirblkbits, prefix_count) = struct.unpack_from(
            "<IHHHBB", raw, 80
        )
        (packed_nid,) = struct.unpack_from("<Q", raw, 96)
        if dirblkbits:
            raise ErofsFormatError(f"dirblkbits {dirblkbits} (Linux supports only 0)")
        if compat & COMPAT_SB_CHKSUM:
            length = (
                block_size - SUPERBLOCK_OFFSET if block_size > SUPERBLOCK_OFFSET else block_size
            )
            expected = superblock_checksum(self._read(SUPERBLOCK_OFFSET, length))
            if checksum != expected:
                raise ErofsFormatError(
                    f"superblock checksum {checksum:#010x}, its contents give {expected:#010x}"
                )
        if compat & ~_COMPAT_KNOWN or incompat & ~_INCOMPAT_KNOWN:
            raise ErofsFormatError(
                f"features compat {compat:#x} / incompat {incompat:#x} this reader does not "
                "know (the kernel may refuse them, or store xattrs where they are not read)"
            )
        sb_size = 128 + extslots * 16
        if sb_size > PAGE_SIZE - SUPERBLOCK_OFFSET:
            raise ErofsFormatError(f"{extslots} superblock extension slots: more than a block")
        if b"\0" not in volume_name:  # kernels before 6.12 refuse an unterminated name
            raise ErofsFormatError("volume name without a NUL terminator")
        if incompat & _INCOMPAT_DEVICE_TABLE and extra_devices:
            raise ErofsFormatError(f"{extra_devices} extra devices: an image must be one file")
        if prefix_count:  # read by the kernel whatever the feature bits say
            raise ErofsFormatError("long xattr name prefixes are not supported")
        # Our bound, stricter than the kernel's: mkfs.erofs sizes the file to exactly
        # `blocks` blocks (some tools pad to 4 KiB). The kernel ignores the count, but a
        # changed block size then shows: the image mounts and its compressed files do not
        # read (their cluster maps are in blocks).
        if not blocks * block_size <= file_size < blocks * block_size + 4096:
            raise ErofsFormatError(
                f"the superblock claims {blocks} blocks of {block_size} bytes, the file has "
                f"{file_size} bytes"
            )
        if packed_nid and not incompat & _INCOMPAT_FRAGMENTS:
            raise ErofsFormatError("a packed inode without the fragments feature")
        algorithms = self._compression(incompat, u1, SUPERBLOCK_OFFSET + sb_size, block_size)
        self.superblock = ErofsSuperblock(
            block_size=block_size,
            root_nid=root_nid,
            meta_blkaddr=meta_blkaddr,
            blocks=blocks,
            build_time=build_time,
            uuid=uuid,
            compression_algorithms=algorithms if incompat & _INCOMPAT_COMPR_CFGS else 0,
            feature_incompat=incompat,
            xattr_blkaddr=xattr_blkaddr,
        )
        self._algorithms = algorithms
        if packed_nid:  # the kernel reads it when it mounts
            self.inode(packed_nid)

    def _compression(self, incompat: int, u1: int, offset: int, block_size: int) -> int:
        """`z_erofs_parse_cfgs`: the enabled algorithms (a bitmap) after checking each
        one's configuration record; without COMPR_CFGS only lz4, configured by `u1`."""
        if not incompat & _INCOMPAT_COMPR_CFGS:
            return 1  # u1 is lz4_max_distance, any value mounts
        unknown = u1 & ~((1 << len(_ALGORITHMS)) - 1)
        if unknown:
            raise ErofsFormatError(f"unknown compression algorithms {unknown:#x}")
        for algorithm in range(len(_ALGORITHMS)):
            if not u1 & (1 << algorithm):
                continue
            offset = -(-offset // 4) * 4  # erofs_read_metadata aligns each record to 4
            (length,) = struct.unpack("<H", self._read(offset, 2))
            config = self._read(offset + 2, length or 65536)
            offset += 2 + (length or 65536)
            name = _ALGORITHMS[algorithm]
            if len(config) < _CFG_SIZE[algorithm]:
                raise ErofsFormatError(f"{name} configuration of {len(config)} bytes")
            if algorithm == 0:
                (_distance, pclusterblks) = struct.unpack_from("<HH", config)
                if pclusterblks * block_size > _PCLUSTER_MAX:
                    raise ErofsFormatError(f"lz4 physical clusters of {pclusterblks} blocks")
            elif algorithm == 1:
                (dictionary, form) = struct.unpack_from("<IH", config)
                if form or dictionary > _LZMA_MAX_DICT:
                    raise ErofsFormatError(f"lzma format {form}, dictionary {dictionary}")
            elif algorithm == 2 and config[0] > 15:
                raise ErofsFormatError(f"deflate window of 2^{config[0]}")
            elif algorithm == 3 and config[0]:
                raise ErofsFormatError(f"zstd format {config[0]}")
        return u1

    def _read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise ErofsFormatError(f"reference outside the image (offset {offset}, {length} bytes)")
        self._f.seek(offset)
        data = self._f.read(length)
        if len(data) != length:
            raise ErofsFormatError("short read")
        return data

    def inode(self, nid: int) -> ErofsInode:
        sb = self.superblock
        base = sb.meta_blkaddr * sb.block_size + nid * 32
        head = self._read(base, 32)
        i_format, xattr_icount, mode = struct.unpack_from("<HHH", head, 0)
        extended = i_format & 1
        layout = (i_format >> 1) & 0x7
        if extended:
            full = self._read(base, 64)
            size, i_u, _ino, uid, gid = struct.unpack_from("<QIIII", full, 8)
            inode_size = 64
        else:
            (_nlink, size, _res, i_u, _ino, uid, gid) = struct.unpack_from("<HIIIIHH", head, 6)
            inode_size = 32
        if layout > _CHUNK_BASED:
            raise ErofsFormatError(f"inode {nid}: unknown data layout {layout}")
        xattr_size = 0 if xattr_icount == 0 else 12 + (xattr_icount - 1) * 4
        inode = ErofsInode(
            nid=nid,
            mode=mode,
            uid=uid,
            gid=gid,
            size=size,
            layout=layout,
            raw_blkaddr=i_u,
            data_offset=base + inode_size + xattr_size,
            xattr_offset=base + inode_size,
            xattr_size=xattr_size,
        )
        if inode.compressed:
            self._check_compressed(inode)
        return inode

    def _check_compressed(self, inode: ErofsInode) -> None:
        """What zmap.c checks against the superblock when a compressed file is first read
        (`z_erofs_fill_inode_lazy`, `z_erofs_map_blocks_iter`): its map header names an
        enabled algorithm and uses big, inline or fragment clusters only with the
        superblock features for them; and lz4 data needs the zero-padding feature (without
        it the kernel decodes the padding as lz4)."""
        incompat = self.superblock.feature_incompat
        where = -(-inode.data_offset // 8) * 8  # Z_EROFS_MAP_HEADER: 8-aligned after xattrs
        _reserved, advise, algorithms, _clusterbits = struct.unpack("<IHBB", self._read(where, 8))
        head = algorithms & 0xF
        needs = (
            (not self._algorithms & (1 << head), f"algorithm {head}, which is not enabled"),
            (advise & _ADVISE_BIG_PCLUSTER and not incompat & _INCOMPAT_COMPR_CFGS,
             "big physical clusters without the big_pcluster feature"),
            (advise & _ADVISE_INLINE_PCLUSTER and not incompat & _INCOMPAT_ZTAILPACKING,
             "an inline tail without the ztailpacking feature"),
            (advise & _ADVISE_FRAGMENT_PCLUSTER and not incompat & _INCOMPAT_FRAGMENTS,
             "a fragment without the fragments feature"),
            (not incompat & _INCOMPAT_ZERO_PADDING, "compressed data without zero padding"),
        )  # fmt: skip
        for failed, why in needs:
            if failed:
                raise ErofsFormatError(f"inode {inode.nid}: {why}")

    def xattrs(self, inode: ErofsInode) -> tuple[tuple[str, bytes], ...]:
        """(full name, value) of the inode's extended attributes (xattr.c): a 12-byte header
        with the count of shared xattrs, their 4-byte ids (each an entry at
        xattr_blkaddr * block size + id * 4), then inline entries, 4-byte aligned, filling
        the area exactly."""
        if not inode.xattr_size:
            return ()
        area = self._read(inode.xattr_offset, inode.xattr_size)
        if len(area) == 12:  # erofs_init_inode_xattrs: "not supported yet", EOPNOTSUPP
            raise ErofsFormatError(f"inode {inode.nid}: an xattr area of only its header")
        shared = area[4]
        position = 12 + 4 * shared
        if position > len(area):
            raise ErofsFormatError(f"inode {inode.nid}: {shared} shared xattrs overrun the area")
        found: list[tuple[str, bytes]] = []
        base = self.superblock.xattr_blkaddr * self.superblock.block_size
        for (ident,) in struct.iter_unpack("<I", area[12:position]):
            found.append(self._xattr_entry(inode, self._read, base + ident * 4)[0])

        def inline(at: int, length: int) -> bytes:
            return self._slice(area, at, length)

        while position < len(area):
            entry, size = self._xattr_entry(inode, inline, position)
            position += -(-size // 4) * 4  # entries are 4-byte aligned
            if position > len(area):
                raise ErofsFormatError(f"inode {inode.nid}: an xattr overruns its area")
            found.append(entry)
        return tuple(found)

    @staticmethod
    def _slice(data: bytes, at: int, length: int) -> bytes:
        if at + length > len(data):
            raise ErofsFormatError("an xattr overruns its area")
        return data[at : at + length]

    def _xattr_entry(
        self, inode: ErofsInode, read: Callable[[int, int], bytes], at: int
    ) -> tuple[tuple[str, bytes], int]:
        """((name, value), unaligned size) of the erofs_xattr_entry at `at`."""
        name_length, index, value_size = struct.unpack("<BBH", read(at, 4))
        prefix = XATTR_PREFIXES.get(index)
        if prefix is None:
            raise ErofsFormatError(f"inode {inode.nid}: xattr name index {index}")
        suffix = read(at + 4, name_length)
        value = read(at + 4 + name_length, value_size)
        name = prefix + suffix.decode("utf-8", "surrogateescape")
        return (name, value), 4 + name_length + value_size

    def data(self, inode: ErofsInode, limit: int | None = None) -> bytes:
        """The bytes of an uncompressed inode (directory, symlink, small file)."""
        if inode.compressed or inode.layout == _CHUNK_BASED:
            raise ErofsFormatError(
                f"inode {inode.nid}: compressed/chunked data is not readable here"
            )
        size = inode.size
        if limit is not None and size > limit:
            raise ErofsFormatError(f"inode {inode.nid}: {size} bytes is more than {limit}")
        bs = self.superblock.block_size
        if inode.layout == _FLAT_PLAIN:
            return self._read(inode.raw_blkaddr * bs, size) if size else b""
        # FLAT_INLINE: all blocks but the last are at raw_blkaddr; the last one follows the
        # inode (and its xattrs) in the metadata area.
        blocks = -(-size // bs)
        full = max(blocks - 1, 0) * bs
        head = self._read(inode.raw_blkaddr * bs, full) if full else b""
        return head + self._read(inode.data_offset, size - full)

    def listdir(self, inode: ErofsInode) -> list[tuple[str, int]]:
        data = self.data(inode, limit=64 << 20)
        bs = self.superblock.block_size
        found: list[tuple[str, int]] = []
        for start in range(0, len(data), bs):
            block = data[start : start + bs]
            if len(block) < 12:
                raise ErofsFormatError(f"directory inode {inode.nid}: truncated block")
            first_nameoff = struct.unpack_from("<H", block, 8)[0]
            count = first_nameoff // 12
            if count == 0 or first_nameoff % 12 or first_nameoff > len(block):
                raise ErofsFormatError(f"directory inode {inode.nid}: corrupt dirents")
            dirents = [struct.unpack_from("<QHBB", block, i * 12) for i in range(count)]
            for i, (nid, nameoff, _ftype, _res) in enumerate(dirents):
                end = dirents[i + 1][1] if i + 1 < count else len(block)
                if not first_nameoff <= nameoff < end <= len(block):
                    raise ErofsFormatError(f"directory inode {inode.nid}: corrupt name offsets")
                raw = block[nameoff:end]
                if i + 1 == count:
                    raw = raw.split(b"\0", 1)[0]
                try:
                    name = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ErofsFormatError(
                        f"directory inode {inode.nid}: name is not UTF-8"
                    ) from None
                if not name or "/" in name or "\0" in name:
                    raise ErofsFormatError(f"directory inode {inode.nid}: invalid name {name!r}")
                if name in (".", ".."):
                    continue
                found.append((name, nid))
        return found

    def walk(self) -> Iterator[tuple[str, ErofsInode]]:
        """Yield (relative path, inode) for every entry below the root, depth first, sorted."""
        root = self.inode(self.superblock.root_nid)
        if not stat.S_ISDIR(root.mode):
            raise ErofsFormatError("the root inode is not a directory")
        seen_dirs = {root.nid}
        count = 0
        stack: list[tuple[str, ErofsInode, int]] = [("", root, 0)]
        while stack:
            prefix, directory, depth = stack.pop()
            if depth >= MAX_DEPTH:
                raise ErofsFormatError(f"directories nested deeper than {MAX_DEPTH}")
            children = sorted(self.listdir(directory), reverse=True)
            pending: list[tuple[str, ErofsInode, int]] = []
            for name, nid in reversed(children):
                count += 1
                if count > MAX_ENTRIES:
                    raise ErofsFormatError(f"more than {MAX_ENTRIES} entries")
                child = self.inode(nid)
                path = f"{prefix}{name}"
                yield path, child
                if stat.S_ISDIR(child.mode):
                    if nid in seen_dirs:
                        raise ErofsFormatError(f"directory loop at {path}")
                    seen_dirs.add(nid)
                    pending.append((path + "/", child, depth + 1))
            stack.extend(reversed(pending))

    def lookup(self, path: str) -> ErofsInode:
        node = self.inode(self.superblock.root_nid)
        for part in [p for p in path.split("/") if p]:
            if not stat.S_ISDIR(node.mode):
                raise FileNotFoundError(path)
            for name, nid in self.listdir(node):
                if name == part:
                    node = self.inode(nid)
                    break
            else:
                raise FileNotFoundError(path)
        return node
