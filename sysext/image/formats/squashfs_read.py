"""Bounded block decompressors for PySquashfsImage.

PySquashfsImage decompresses blocks without a size limit, and reads lz4 blocks as lz4
*frames* although squashfs stores raw lz4 *blocks*, so lz4 images fail to open. Every
squashfs block decompresses to at most the block size (metadata: 8 KiB), so these
replacements cap the output there: an upload crafted as a decompression bomb fails fast
instead of exhausting memory.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable

import lz4.block
import zstandard
from PySquashfsImage import compressor
from PySquashfsImage.const import Compression as _SquashfsCompression

MAX_BLOCK = 1 << 20  # the largest squashfs block size


class _Bounded:
    name = "bounded"

    def uncompress(self, src: bytes, size: int, outsize: int) -> bytes:
        raise NotImplementedError


class _Gzip(_Bounded):
    name = "gzip"

    def uncompress(self, src: bytes, size: int, outsize: int) -> bytes:
        limit = min(outsize, MAX_BLOCK)
        out = zlib.decompressobj().decompress(src, limit)
        return out


class _Xz(_Bounded):
    name = "xz"

    def uncompress(self, src: bytes, size: int, outsize: int) -> bytes:
        return lzma.LZMADecompressor().decompress(src, max_length=min(outsize, MAX_BLOCK))


class _Lz4(_Bounded):
    name = "lz4"

    def uncompress(self, src: bytes, size: int, outsize: int) -> bytes:
        out: bytes = lz4.block.decompress(src, uncompressed_size=min(outsize, MAX_BLOCK))
        return out


class _Zstd(_Bounded):
    name = "zstd"

    def __init__(self) -> None:
        self._dctx = zstandard.ZstdDecompressor()

    def uncompress(self, src: bytes, size: int, outsize: int) -> bytes:
        limit = min(outsize, MAX_BLOCK)
        declared = zstandard.frame_content_size(src)
        if declared > limit:
            raise ValueError(f"zstd block claims {declared} bytes, more than {limit}")
        out: bytes = self._dctx.decompress(src, max_output_size=limit)
        return out


def install() -> None:
    """Swap PySquashfsImage's decompressors for the bounded ones (idempotent)."""
    compressor.compressors.update(
        {
            _SquashfsCompression.ZLIB: _Gzip,
            _SquashfsCompression.XZ: _Xz,
            _SquashfsCompression.LZ4: _Lz4,
            _SquashfsCompression.ZSTD: _Zstd,
        }
    )


_BY_ID: dict[int, type[_Bounded]] = {1: _Gzip, 2: _Xz, 4: _Xz, 5: _Lz4, 6: _Zstd}


def decompressor(compression_id: int) -> Callable[[bytes, int], bytes]:
    """`f(data, max_out)` for a squashfs compression id (squashfs_fs.h), bounded as above."""
    kind = _BY_ID.get(compression_id)
    if kind is None:
        raise ValueError(f"unsupported squashfs compression id {compression_id}")
    instance = kind()

    def decompress(data: bytes, max_out: int) -> bytes:
        return instance.uncompress(data, len(data), max_out)

    return decompress
