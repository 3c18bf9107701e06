"""A streaming squashfs 4.0 reader: the kernel's mount checks, a directory walk, small reads.

PySquashfsImage builds the whole tree in memory when it opens an image: a 2.3 MB image with
500k symlinks took 518 MB and 21 s before the first entry (issue 13, finding 5). Uploads
are untrusted, so this reader walks the on-disk tables instead, one metadata block at a
time (a small LRU of decompressed 8 KiB blocks), yielding entries as it goes; its memory
is bounded by the directory queue, not by the entry count.

Before anything else it checks what Linux checks when it mounts the image (issue 19,
finding 4: one changed superblock field used to give a signed image the kernel refuses):
`squashfs_fill_super` (fs/squashfs/super.c) — magic, version 4.0, a compressor the kernel
has, `bytes_used` within the device, `block_size == 1 << block_log` within 4 KiB–1 MiB,
the root inode's offset, the compressor options (decompressor.c, xz_wrapper.c,
lz4_wrapper.c) — then the table readers in the kernel's order, each one bounding the next
table's end: `squashfs_read_xattr_id_table` (xattr_id.c), `squashfs_read_id_index_table`
(id.c), `squashfs_read_inode_lookup_table` (export.c), `squashfs_read_fragment_index_table`
(fragment.c), and finally the directory and inode table order. Where an image can pass the
mount and still fail when a file is opened, the walk checks what `squashfs_read_inode`
(inode.c) checks for every inode: a non-zero inode number, owner ids and fragment and
xattr indexes within their tables, symlink sizes.

Layout facts (squashfs_fs.h): metadata blocks are a u16 header (size, bit 15 = stored)
and at most 8 KiB; an inode reference is (block offset << 16 | offset in block); directory
listings are headers (count-1, inode block, first inode number) each followed by entries
(offset, inode delta, type, name size-1, name); xattrs are (type, name size, name) and
(value size, value) records in a metadata stream, found through the xattr id table.
"""

from __future__ import annotations

import itertools
import stat
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

METADATA_SIZE = 8192
SUPERBLOCK = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")
MAGIC = 0x73717368
NO_TABLE = 0xFFFFFFFFFFFFFFFF
NO_FRAGMENT = 0xFFFFFFFF
NO_XATTR = 0xFFFFFFFF
# Compression ids the kernel implements (decompressor.c); lzma (2) never was.
KERNEL_COMPRESSORS = {1: "gzip", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
_XZ, _LZ4 = 4, 5
# Superblock flags (squashfs_fs.h). The kernel reads only COMP_OPT; CHECK (bit 2) meant
# "check data" in squashfs 1-3 and no 4.0 writer sets it, nor any bit above NOID (11).
FLAG_CHECK = 1 << 2
FLAG_COMP_OPT = 1 << 10
_KNOWN_FLAGS = (1 << 12) - 1
PAGE_SIZE = 4096  # the smallest page size of the hosts' kernels (x86-64, arm64 4K pages)
# Loop devices are sized in whole sectors and the kernel reads whole device blocks (1 KiB,
# up to 4 KiB on 4K-sector devices), so the image must end on a 4 KiB boundary to be read
# to its end on every host; mksquashfs and gensquashfs both pad to 4 KiB.
DEVICE_BLOCK = 4096
# An index table entry may be at most one metadata block (plus its header) past the previous.
_INDEX_GAP = METADATA_SIZE + 2
XATTR_PREFIXES = {0: "user.", 1: "trusted.", 2: "security."}  # squashfs_fs.h SQUASHFS_XATTR_*
_XATTR_OOL = 0x100  # the value is stored elsewhere; this one is its 8-byte reference
MAX_XATTRS = 4096  # per inode; more is refused rather than read
MAX_XATTR_VALUE = 65536  # XATTR_SIZE_MAX
MAX_DEPTH = 256


class SquashfsFormatError(ValueError):
    """The image is not a well-formed squashfs 4.0 file system."""


@dataclass(frozen=True)
class Superblock:
    inode_count: int
    block_size: int
    fragment_count: int
    compression: int
    flags: int
    id_count: int
    root_inode: int
    bytes_used: int
    id_table: int
    xattr_id_table: int
    inode_table: int
    directory_table: int
    fragment_table: int
    lookup_table: int


@dataclass(frozen=True, slots=True)
class Inode:
    kind: int  # stat S_IF* bits
    mode: int  # permission bits
    uid: int
    gid: int
    size: int
    target: bytes | None = None
    # directories: where the listing is; files: where the data is
    start: int = 0
    offset: int = 0
    fragment: int = NO_FRAGMENT
    blocks: tuple[int, ...] = ()
    xattr: int = NO_XATTR  # index into the xattr id table


def _blocks(count: int, entry_size: int) -> int:
    """Metadata blocks holding `count` entries of `entry_size` bytes (the *_BLOCKS macros)."""
    return (count * entry_size + METADATA_SIZE - 1) // METADATA_SIZE


def read_superblock(head: bytes, file_size: int) -> Superblock:
    """Parse the superblock and check its fields as `squashfs_fill_super` does, in order.

    The tables it points to are checked by `SquashfsWalker` (they need reads)."""
    if len(head) < SUPERBLOCK.size:
        raise SquashfsFormatError("truncated superblock")
    (magic, inodes, _mtime, block_size, fragments, compression, block_log, flags, ids,
     major, minor, root, bytes_used, id_table, xattr_id_table, inode_table, directory_table,
     fragment_table, lookup_table) = SUPERBLOCK.unpack_from(head)  # fmt: skip
    if magic != MAGIC:
        raise SquashfsFormatError("bad magic")
    if (major, minor) != (4, 0):
        raise SquashfsFormatError(f"squashfs {major}.{minor} (only 4.0 is supported)")
    if compression not in KERNEL_COMPRESSORS:
        raise SquashfsFormatError(f"compression id {compression}, which Linux does not implement")
    padded = -(-bytes_used // DEVICE_BLOCK) * DEVICE_BLOCK
    if padded > file_size:
        raise SquashfsFormatError(
            f"the superblock claims {bytes_used} bytes, the file has {file_size}"
            + (" (not padded to 4 KiB)" if bytes_used <= file_size else "")
        )
    if not 12 <= block_log <= 20 or block_size != 1 << block_log:
        raise SquashfsFormatError(
            f"block_size {block_size} does not match block_log {block_log} (4 KiB–1 MiB)"
        )
    if root & 0xFFFF > METADATA_SIZE:
        raise SquashfsFormatError("root inode offset beyond its metadata block")
    if flags & FLAG_CHECK or flags & ~_KNOWN_FLAGS:
        raise SquashfsFormatError(f"superblock flags {flags:#06x} that no squashfs 4.0 writer sets")
    if ids == 0 or inodes == 0:
        raise SquashfsFormatError("no inodes or no ids")
    if not SUPERBLOCK.size <= inode_table < directory_table <= bytes_used:
        raise SquashfsFormatError("inode and directory tables out of order or out of range")
    if (root >> 16) >= directory_table - inode_table:
        raise SquashfsFormatError("root inode outside the inode table")
    return Superblock(
        inodes, block_size, fragments, compression, flags, ids, root, bytes_used, id_table,
        xattr_id_table, inode_table, directory_table, fragment_table, lookup_table,
    )  # fmt: skip


class SquashfsWalker:
    """Read entries and small files of a squashfs image from an open binary file."""

    def __init__(self, f: BinaryIO, file_size: int, decompress: Callable[[bytes, int], bytes]):
        self.f = f
        f.seek(0)
        self.sb = read_superblock(f.read(SUPERBLOCK.size), file_size)
        self._decompress = decompress
        self._cache: OrderedDict[int, tuple[bytes, int]] = OrderedDict()
        self._check_compressor_options()
        self._xattr_start = 0
        self._xattr_ids = 0
        self._xattr_index: tuple[int, ...] = ()
        self._lookup_index: tuple[int, ...] = ()
        self._fragment_index: tuple[int, ...] = ()
        self._id_index: tuple[int, ...] = ()
        self._check_tables()
        self._ids = self._read_ids()

    # -- raw reads -------------------------------------------------------------------

    def _pread(self, position: int, size: int) -> bytes:
        if position < 0 or position + size > self.sb.bytes_used:
            raise SquashfsFormatError(f"read of {size} bytes at {position} outside the image")
        self.f.seek(position)
        data = self.f.read(size)
        if len(data) != size:
            raise SquashfsFormatError("truncated image")
        return data

    def _block(self, position: int, limit: int) -> tuple[bytes, int]:
        """A metadata block as `squashfs_read_data` reads it: a u16 header, at most `limit`
        bytes on disk and decompressed; (data, position of the next block)."""
        (header,) = struct.unpack("<H", self._pread(position, 2))
        size = header & 0x7FFF
        if not 0 < size <= limit:
            raise SquashfsFormatError(f"metadata block of {size} bytes at {position}")
        raw = self._pread(position + 2, size)
        data = raw if header & 0x8000 else self._decompress(raw, limit)
        if not data or len(data) > limit:
            raise SquashfsFormatError(
                f"metadata block at {position} decompresses to nothing or more than {limit} bytes"
            )
        return data, position + 2 + size

    def _metadata_block(self, position: int) -> tuple[bytes, int]:
        """(decompressed bytes, position of the next block) of the block at `position`."""
        cached = self._cache.get(position)
        if cached is not None:
            self._cache.move_to_end(position)
            return cached
        result = self._block(position, METADATA_SIZE)
        self._cache[position] = result
        if len(self._cache) > 64:
            self._cache.popitem(last=False)
        return result

    def _metadata(self, table: int, block: int, offset: int, size: int) -> tuple[bytes, int, int]:
        """`size` bytes of a metadata stream starting at (block, offset) relative to
        `table`; returns them and the (block, offset) right after (`squashfs_read_metadata`:
        an offset at or past the end of its block is an error, and a read that ends a block
        continues at the next one)."""
        out = bytearray()
        position = table + block
        if size == 0:
            return b"", block, offset
        while True:
            data, following = self._metadata_block(position)
            if offset >= len(data):
                raise SquashfsFormatError("metadata offset outside its block")
            take = data[offset : offset + size - len(out)]
            out += take
            offset += len(take)
            if offset == len(data):
                position, offset = following, 0
            if len(out) == size:
                return bytes(out), position - table, offset

    # -- the kernel's mount-time checks -----------------------------------------------

    def _check_compressor_options(self) -> None:
        """`get_comp_opts` and the decompressors' option parsers: with COMP_OPT the options
        are a metadata block of at most one page right after the superblock."""
        sb = self.sb
        if not sb.flags & FLAG_COMP_OPT:
            if sb.compression == _LZ4:
                raise SquashfsFormatError("lz4 image without its compressor options")
            return
        options, _ = self._block(SUPERBLOCK.size, PAGE_SIZE)
        if sb.compression == _XZ:
            if len(options) < 8:
                raise SquashfsFormatError("xz compressor options are truncated")
            (dictionary,) = struct.unpack_from("<I", options)
            low = dictionary & -dictionary  # 2^n, the lowest bit set
            # The kernel's rule (2^n or 2^n + 2^(n+1)); at most one block, as both squashfs
            # tools write it, since the kernel preallocates the dictionary for every mount.
            if dictionary not in (low, 3 * low) or not 0 < dictionary <= sb.block_size:
                raise SquashfsFormatError(f"xz dictionary size {dictionary} is invalid")
        elif sb.compression == _LZ4 and (
            len(options) < 8 or struct.unpack_from("<I", options)[0] != 1
        ):
            raise SquashfsFormatError("lz4 compressor options are not the legacy format")

    def _index(self, start: int, count: int, entry_size: int) -> tuple[int, ...]:
        """Read an index table of `count` entries' metadata block pointers at `start`."""
        blocks = _blocks(count, entry_size)
        raw = self._pread(start, blocks * 8)
        return struct.unpack(f"<{blocks}Q", raw)

    @staticmethod
    def _check_index(index: tuple[int, ...], start: int, what: str) -> None:
        """The id, lookup and xattr id tables' rule: block pointers ascend, at most one
        metadata block apart, and the last block ends right before the index itself."""
        for first, second in itertools.pairwise(index):
            if not first < second <= first + _INDEX_GAP:
                raise SquashfsFormatError(f"{what} table index out of order")
        if not index[-1] < start <= index[-1] + _INDEX_GAP:
            raise SquashfsFormatError(f"{what} table index does not end at its table")

    def _check_tables(self) -> None:
        """The tables `squashfs_fill_super` reads, in its order: each table's start bounds
        where the one before it may end (`next_table`)."""
        sb = self.sb
        next_table = sb.bytes_used
        if sb.xattr_id_table != NO_TABLE:
            if not sb.directory_table < sb.xattr_id_table <= sb.bytes_used - 16:
                raise SquashfsFormatError("xattr id table out of range")
            start, ids, _ = struct.unpack("<QII", self._pread(sb.xattr_id_table, 16))
            if ids == 0:
                raise SquashfsFormatError("xattr id table without ids")
            if _blocks(ids, 16) * 8 != sb.bytes_used - (sb.xattr_id_table + 16):
                raise SquashfsFormatError("xattr id table does not end at bytes_used")
            self._xattr_index = self._index(sb.xattr_id_table + 16, ids, 16)
            self._check_index(self._xattr_index, sb.xattr_id_table, "xattr id")
            if not sb.directory_table < start < self._xattr_index[0]:
                raise SquashfsFormatError("xattr table out of range")
            self._xattr_start, self._xattr_ids = start, ids
            next_table = start
        if _blocks(sb.id_count, 4) * 8 != next_table - sb.id_table:
            raise SquashfsFormatError("id table out of range")
        self._id_index = self._index(sb.id_table, sb.id_count, 4)
        self._check_index(self._id_index, sb.id_table, "id")
        next_table = self._id_index[0]
        if sb.lookup_table != NO_TABLE:
            if _blocks(sb.inode_count, 8) * 8 != next_table - sb.lookup_table:
                raise SquashfsFormatError("export (inode lookup) table out of range")
            self._lookup_index = self._index(sb.lookup_table, sb.inode_count, 8)
            self._check_index(self._lookup_index, sb.lookup_table, "export")
            next_table = self._lookup_index[0]
        if sb.fragment_count:
            length = _blocks(sb.fragment_count, 16) * 8
            if not sb.fragment_table <= next_table or length > next_table - sb.fragment_table:
                raise SquashfsFormatError(
                    f"fragment table out of range for {sb.fragment_count} fragments"
                )
            self._fragment_index = self._index(sb.fragment_table, sb.fragment_count, 16)
            if self._fragment_index[0] >= sb.fragment_table:
                raise SquashfsFormatError("fragment table index out of order")
            next_table = self._fragment_index[0]
        if sb.directory_table > next_table:
            raise SquashfsFormatError("directory table overlaps the tables behind it")
        # Our own bound (the kernel's index checks are relative): every table's metadata
        # lies behind the directory table, as every squashfs writer lays it out.
        if min(self._id_index + self._lookup_index + self._fragment_index) < sb.directory_table:
            raise SquashfsFormatError("a table's metadata lies before the directory table")

    def _read_ids(self) -> tuple[int, ...]:
        count = self.sb.id_count
        ids: list[int] = []
        for pointer in self._id_index:
            data, _ = self._metadata_block(pointer)
            ids.extend(struct.unpack(f"<{len(data) // 4}I", data[: len(data) // 4 * 4]))
        if len(ids) < count:
            raise SquashfsFormatError("id table shorter than id_count")
        return tuple(ids[:count])

    # -- inodes ----------------------------------------------------------------------

    def inode(self, ref: int) -> Inode:
        block, offset = ref >> 16, ref & 0xFFFF
        table = self.sb.inode_table

        def take(n: int) -> bytes:
            nonlocal block, offset
            data, block, offset = self._metadata(table, block, offset, n)
            return data

        kind, mode, uid_i, gid_i, _mtime, number = struct.unpack("<HHHHII", take(16))
        if number == 0:
            raise SquashfsFormatError("inode number 0")
        if uid_i >= len(self._ids) or gid_i >= len(self._ids):
            raise SquashfsFormatError("owner index outside the id table")
        uid, gid = self._ids[uid_i], self._ids[gid_i]
        if kind == 1:  # basic directory
            start, _links, size, dir_offset, _parent = struct.unpack("<IIHHI", take(16))
            return Inode(stat.S_IFDIR, mode, uid, gid, size, start=start, offset=dir_offset)
        if kind == 8:  # extended directory
            _links, size, start, _parent, _count, dir_offset, xattr = struct.unpack(
                "<IIIIHHI", take(24)
            )
            return Inode(stat.S_IFDIR, mode, uid, gid, size, start=start, offset=dir_offset,
                         xattr=self._xattr_id(xattr))  # fmt: skip
        if kind in (2, 9):  # file
            xattr = NO_XATTR
            if kind == 2:
                start, fragment, frag_offset, size = struct.unpack("<IIII", take(16))
            else:
                start, size, _sparse, _links, fragment, frag_offset, xattr = struct.unpack(
                    "<QQQIIII", take(40)
                )
            if fragment != NO_FRAGMENT:
                self._fragment_entry(fragment)  # the kernel looks it up when it reads the inode
            full, rest = divmod(size, self.sb.block_size)
            count = full + (1 if rest and fragment == NO_FRAGMENT else 0)
            if count > (self.sb.bytes_used // 2) + 1:
                raise SquashfsFormatError("file claims more blocks than the image holds")
            # Block sizes are only needed to read the file; keep them lazily small.
            blocks = struct.unpack(f"<{count}I", take(4 * count)) if count <= 4096 else ()
            return Inode(
                stat.S_IFREG, mode, uid, gid, size, start=start, offset=frag_offset,
                fragment=fragment, blocks=blocks, xattr=self._xattr_id(xattr),
            )  # fmt: skip
        if kind in (3, 10):  # symlink
            _links, length = struct.unpack("<II", take(8))
            if length > PAGE_SIZE:  # inode.c refuses symlinks longer than a page
                raise SquashfsFormatError("symlink target longer than 4096 bytes")
            target = take(length)
            xattr = struct.unpack("<I", take(4))[0] if kind == 10 else NO_XATTR
            return Inode(stat.S_IFLNK, mode, uid, gid, 0, target=target,
                         xattr=self._xattr_id(xattr))  # fmt: skip
        basic = {4: stat.S_IFBLK, 5: stat.S_IFCHR, 6: stat.S_IFIFO, 7: stat.S_IFSOCK}
        if kind in basic:  # nlink, and rdev for devices
            take(8 if kind in (4, 5) else 4)
            return Inode(basic[kind], mode, uid, gid, 0)
        if kind - 7 in basic:  # the extended forms: nlink, [rdev,] xattr index
            tail = take(12 if kind in (11, 12) else 8)
            (xattr,) = struct.unpack_from("<I", tail, len(tail) - 4)
            return Inode(basic[kind - 7], mode, uid, gid, 0, xattr=self._xattr_id(xattr))
        raise SquashfsFormatError(f"unknown inode type {kind}")

    def _xattr_id(self, index: int) -> int:
        """An inode's xattr index as the kernel uses it: ignored without an xattr table,
        else it must name an entry of the table (`squashfs_xattr_lookup`)."""
        if index == NO_XATTR or not self._xattr_index:
            return NO_XATTR
        if index >= self._xattr_ids:
            raise SquashfsFormatError(f"xattr index {index} outside the xattr id table")
        return index

    def xattrs(self, inode: Inode) -> tuple[tuple[str, bytes], ...]:
        """(full name, value) of the inode's extended attributes (squashfs_listxattr and
        squashfs_xattr_get: each record is type, name size, name, value size, value; an
        out-of-line value is an 8-byte reference to where the value is)."""
        if inode.xattr == NO_XATTR:
            return ()
        block, within = divmod(inode.xattr * 16, METADATA_SIZE)
        raw, _, _ = self._metadata(0, self._xattr_index[block], within, 16)
        ref, count, _size = struct.unpack("<QII", raw)
        if count > MAX_XATTRS:
            raise SquashfsFormatError(f"{count} xattrs on one inode")
        table = self._xattr_start
        position, offset = ref >> 16, ref & 0xFFFF
        found: list[tuple[str, bytes]] = []
        for _ in range(count):
            head, position, offset = self._metadata(table, position, offset, 4)
            kind, name_size = struct.unpack("<HH", head)
            prefix = XATTR_PREFIXES.get(kind & ~_XATTR_OOL)
            if prefix is None:
                raise SquashfsFormatError(f"unknown xattr type {kind:#x}")
            name, position, offset = self._metadata(table, position, offset, name_size)
            head, position, offset = self._metadata(table, position, offset, 4)
            (value_size,) = struct.unpack("<I", head)
            if kind & _XATTR_OOL:
                if value_size != 8:
                    raise SquashfsFormatError("out-of-line xattr reference of the wrong size")
                pointer, position, offset = self._metadata(table, position, offset, 8)
                (where,) = struct.unpack("<Q", pointer)
                head, at, at_offset = self._metadata(table, where >> 16, where & 0xFFFF, 4)
                (value_size,) = struct.unpack("<I", head)
            else:
                at, at_offset = position, offset
            if value_size > MAX_XATTR_VALUE:
                raise SquashfsFormatError(f"xattr value of {value_size} bytes")
            value, at, at_offset = self._metadata(table, at, at_offset, value_size)
            if not kind & _XATTR_OOL:
                position, offset = at, at_offset
            found.append((prefix + name.decode("utf-8", "surrogateescape"), value))
        return tuple(found)

    # -- directories -----------------------------------------------------------------

    def listing(self, directory: Inode) -> Iterator[tuple[str, int]]:
        """(name, inode reference) of each entry of `directory`, streamed."""
        remaining = directory.size - 3  # the size counts "." and ".." (3 bytes)
        if remaining <= 0:
            return
        block, offset = directory.start, directory.offset
        table = self.sb.directory_table

        def take(n: int) -> bytes:
            nonlocal block, offset, remaining
            if n > remaining:
                raise SquashfsFormatError("directory listing overruns its size")
            remaining -= n
            data, block, offset = self._metadata(table, block, offset, n)
            return data

        while remaining > 0:
            count, inode_block, _number = struct.unpack("<III", take(12))
            if count >= 256:
                raise SquashfsFormatError("directory header with more than 256 entries")
            for _ in range(count + 1):
                entry_offset, _delta, _kind, name_size = struct.unpack("<HhHH", take(8))
                raw = take(name_size + 1)
                name = raw.decode("utf-8", "surrogateescape")
                if name in (".", "..") or "/" in name or "\0" in name:
                    raise SquashfsFormatError(f"invalid name {name!r} in a directory")
                yield name, (inode_block << 16) | entry_offset

    def walk(self) -> Iterator[tuple[str, Inode]]:
        """(relative path, inode) of every entry below the root, parents first."""
        root = self.inode(self.sb.root_inode)
        if root.kind != stat.S_IFDIR:
            raise SquashfsFormatError("the root inode is not a directory")
        pending: list[tuple[str, Inode, int]] = [("", root, 0)]
        seen = {self.sb.root_inode}
        while pending:
            prefix, directory, depth = pending.pop()
            if depth > MAX_DEPTH:
                raise SquashfsFormatError(f"directories nested deeper than {MAX_DEPTH}")
            for name, ref in self.listing(directory):
                inode = self.inode(ref)
                path = f"{prefix}{name}"
                yield path, inode
                if inode.kind == stat.S_IFDIR:
                    if ref in seen:
                        raise SquashfsFormatError(f"directory loop at {path}")
                    seen.add(ref)
                    pending.append((path + "/", inode, depth + 1))

    # -- file data -------------------------------------------------------------------

    def lookup(self, path: str) -> Inode:
        inode = self.inode(self.sb.root_inode)
        for part in [p for p in path.strip("/").split("/") if p]:
            if inode.kind != stat.S_IFDIR:
                raise FileNotFoundError(path)
            for name, ref in self.listing(inode):
                if name == part:
                    inode = self.inode(ref)
                    break
            else:
                raise FileNotFoundError(path)
        return inode

    def read(self, inode: Inode, limit: int) -> bytes:
        if inode.kind != stat.S_IFREG:
            raise SquashfsFormatError("not a regular file")
        if inode.size > limit:
            raise SquashfsFormatError(f"larger than {limit} bytes")
        out = bytearray()
        position = inode.start
        for word in inode.blocks:
            size = word & ~(1 << 24)
            if word >> 25 or size > self.sb.block_size:
                raise SquashfsFormatError("data block size out of range")
            want = min(self.sb.block_size, inode.size - len(out))
            if size == 0:  # a sparse block
                out += bytes(want)
                continue
            raw = self._pread(position, size)
            position += size
            out += raw if word & (1 << 24) else self._decompress(raw, self.sb.block_size)
        if inode.fragment != NO_FRAGMENT:
            out += self._fragment(inode.fragment)[
                inode.offset : inode.offset + inode.size - len(out)
            ]
        if len(out) != inode.size:
            raise SquashfsFormatError("file data shorter than its size")
        return bytes(out)

    def _fragment_entry(self, index: int) -> tuple[int, int]:
        """(start, size word) of a fragment block, as `squashfs_frag_lookup` finds it."""
        if index >= self.sb.fragment_count:
            raise SquashfsFormatError("fragment index out of range")
        block, within = divmod(index * 16, METADATA_SIZE)
        raw, _, _ = self._metadata(0, self._fragment_index[block], within, 16)
        start, word, _unused = struct.unpack("<QII", raw)
        if word >> 25 or (word & ~(1 << 24)) > self.sb.block_size:
            raise SquashfsFormatError("fragment block size out of range")
        return start, word

    def _fragment(self, index: int) -> bytes:
        start, word = self._fragment_entry(index)
        size = word & ~(1 << 24)
        raw = self._pread(start, size)
        return raw if word & (1 << 24) else self._decompress(raw, self.sb.block_size)
