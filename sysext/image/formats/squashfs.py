"""squashfs images through squashfs-tools' `mksquashfs`, from a private view of the entry list.

The view (sysext.image.formats.view) holds exactly the entries with their modes; `-all-root`
makes every owner 0:0 without root or fakeroot, `-all-time` and `-mkfs-time` fix every
inode's and the superblock's time, and mksquashfs 4.5 packs
reproducibly by default, so rebuilds are byte-identical (DESIGN.md §4). `-no-xattrs`: an
extension carries no extended attributes; `-no-hardlinks`: hard-linked sources become
separate inodes sharing their data (duplicates are detected), as before; `-no-exports`: no
NFS export table.

Why mksquashfs and not squashfs-tools-ng's gensquashfs (the writer until issue 23):
gensquashfs 1.2 (Debian 12) writes no directory index — a basic directory inode — unless a
listing exceeds 64 KiB, so the kernel looks up a name in a big directory by decompressing
its listing from the start, and with only 8 metadata blocks cached that grows with the square
of the directory's size. A cold walk of the bench's stdlib tree, whose largest directory has
1,488 entries, took 4.6× the bakery's time in metadata alone; the same tree packed by
mksquashfs with the same gzip settings reads as fast as the bakery's, because it is the
bakery's tool. (squashfs-tools-ng 1.3 adds the index, but does not install on Debian 12.)
"""

from __future__ import annotations

import os

from sysext.core.errors import SysextError
from sysext.core.process import run, tool_version
from sysext.image.formats import (
    Compression,
    ImageFormat,
    LevelRange,
    WriteRequest,
    register_writer,
)
from sysext.image.formats.view import lay_out, remove_view

# Default compressor, level and block size, chosen with bench/build.py --read (issue 23;
# the full table and the frontier plot are in docs/catalogue.md): among the settings that
# reach, on the three bench trees, an image ≤ 0.85× the size of the bakery's `mksquashfs
# -all-root -noappend` (gzip, 128 KiB blocks) and cold reads of the whole tree and of its
# largest file ≤ 1.0× the bakery image's, the one with the least build time (target ≤ 1.5×).
# Figures, × the bakery's image: size, build time, whole-tree cold read, largest-file cold
# read; load average 0.2–4 on 2 cores, medians of 2 builds and 3 reads each:
#                      stdlib, 150 MiB,        ELF+stdlib, 231 MiB,    bin+stdlib, 205 MiB,
#                      14,496 files            4,137 files             14,497 files
#   zstd-16 (default)  0.82 1.03 0.62 0.51     0.83 1.28 0.45 0.39     0.82 1.05 0.65 0.37
#   zstd-15            0.85 0.72 0.61 0.41     0.86 0.80 0.42 0.35     0.85 0.72 0.52 0.32
#   xz                 0.74 1.57 2.60 3.35     0.71 2.21 2.94 3.21
#   gensquashfs z16    0.81 1.27 1.19 0.49     0.83 1.29 0.47 0.38     0.82 1.35 1.11 0.40
# (gensquashfs: the writer before issue 23, same settings, no directory index.)
# zstd decompresses 2–3× faster than gzip in the kernel at every level, so the level only
# buys size for build time: zstd-15 misses 0.85× on machine code, zstd-17 and zstd-19 pack
# 1–6% smaller at up to 3.2× the bakery's build time. Smaller blocks (512 KiB) pack larger
# and read no faster. The ELF tree's build time (1.28–1.45×) is the closest target; on a
# loaded machine it can pass 1.5×.
DEFAULT_ZSTD_LEVEL = 16
DEFAULT_BLOCK_SIZE = 1 << 20
_LEVELS: dict[Compression, LevelRange] = {
    Compression.ZSTD: LevelRange(1, 22, DEFAULT_ZSTD_LEVEL),
    Compression.GZIP: LevelRange(1, 9, 9),
}
# mksquashfs takes no level for xz (it uses liblzma's default preset, 6) nor for lz4.


def compressor_flags(compression: Compression, level: int | None) -> list[str]:
    if compression is Compression.LZ4HC:
        return ["-comp", "lz4", "-Xhc"]
    flags = ["-comp", compression.value]
    if level is not None:
        flags += ["-Xcompression-level", str(level)]
    return flags


class SquashfsWriter:
    format = ImageFormat.SQUASHFS

    def compressions(self) -> tuple[Compression, ...]:
        return (  # the first is the default
            Compression.ZSTD,
            Compression.XZ,
            Compression.GZIP,
            Compression.LZ4,
            Compression.LZ4HC,
        )

    def levels(self, compression: Compression) -> LevelRange | None:
        return _LEVELS.get(compression)

    def write(self, request: WriteRequest) -> None:
        view = request.scratch / "root"
        view.mkdir()
        jobs = str(request.jobs or os.cpu_count() or 1)
        block = str(request.block_size or DEFAULT_BLOCK_SIZE)
        # SOURCE_DATE_EPOCH only clamps newer times in mksquashfs 4.5 (older ones stay), so
        # the time flags set it, and the variable must go: the tool refuses both at once.
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        when = str(request.mtime)
        try:
            lay_out(tuple(request.entries), view)
            if request.output.exists():
                request.output.unlink()
            run(
                ["mksquashfs", view, request.output, "-noappend", "-quiet", "-no-progress",
                 "-all-root", "-no-xattrs", "-no-hardlinks", "-no-exports",
                 "-all-time", when, "-mkfs-time", when,
                 *compressor_flags(request.compression, request.level), "-b", block,
                 "-processors", jobs],
                env=env,
                hint="check that the staged files are readable",
            )  # fmt: skip
        except SysextError:
            request.output.unlink(missing_ok=True)
            raise
        finally:
            remove_view(view)

    def tool_versions(self) -> dict[str, str]:
        return {"mksquashfs": tool_version("mksquashfs", "-version")}


register_writer(SquashfsWriter())
