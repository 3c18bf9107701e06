"""A small, defensive reader of erofs metadata (directory tree, modes, owners, links).

No Python package reads erofs, and the erofs-utils tools either print layouts meant for
humans (dump.erofs) or extract to disk (fsck.erofs), which is no way to look at an
untrusted upload. The on-disk format is simple where we need it (linux
`fs/erofs/erofs_fs.h`): a superblock at byte 1024, 32- or 64-byte inodes addressed by
`nid`, and directories stored uncompressed as blocks of 12-byte dirents followed by names.
Regular-file data is read only when stored uncompressed (erofs-utils keeps small files such
as an extension-release file uncompressed, since compression cannot save a block there).
Every offset is bounds-checked and cycles/depth are limited: corrupt input raises
`ErofsFormatError`, never loops or reads outside the file.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

EROFS_MAGIC = 0xE0F5E1E2
SUPERBLOCK_OFFSET = 1024
_FLAT_PLAIN, _COMPRESSED_FULL, _FLAT_INLINE, _COMPRESSED_COMPACT, _CHUNK_BASED = range(5)
_INCOMPAT_COMPR_CFGS = 0x2
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


def is_erofs(head: bytes) -> bool:
    """True when `head` (the file's first 1028+ bytes) carries the erofs magic."""
    if len(head) < SUPERBLOCK_OFFSET + 4:
        return False
    return bool(struct.unpack_from("<I", head, SUPERBLOCK_OFFSET)[0] == EROFS_MAGIC)


class ErofsReader:
    def __init__(self, f: BinaryIO, file_size: int) -> None:
        self._f = f
        self._size = file_size
        raw = self._read(SUPERBLOCK_OFFSET, 128)
        magic, _csum, _compat, blkszbits, _ext, root_nid = struct.unpack_from("<IIIBBH", raw, 0)
        if magic != EROFS_MAGIC:
            raise ErofsFormatError("no erofs superblock")
        if not 9 <= blkszbits <= 16:
            raise ErofsFormatError(f"implausible block size 2^{blkszbits}")
        (_inos, build_time, _nsec, blocks, meta_blkaddr, _xattr) = struct.unpack_from(
            "<QQIIII", raw, 16
        )
        uuid = raw[48:64]
        (incompat, algs) = struct.unpack_from("<IH", raw, 80)
        if not incompat & _INCOMPAT_COMPR_CFGS:
            algs = 0  # the field is lz4_max_distance then, not an algorithm bitmap
        self.superblock = ErofsSuperblock(
            block_size=1 << blkszbits,
            root_nid=root_nid,
            meta_blkaddr=meta_blkaddr,
            blocks=blocks,
            build_time=build_time,
            uuid=uuid,
            compression_algorithms=algs,
        )

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
        return ErofsInode(
            nid=nid,
            mode=mode,
            uid=uid,
            gid=gid,
            size=size,
            layout=layout,
            raw_blkaddr=i_u,
            data_offset=base + inode_size + xattr_size,
        )

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
