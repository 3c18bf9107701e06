"""squashfs images through squashfs-tools-ng's `gensquashfs` and a generated pack file.

Listing every entry explicitly (owner 0:0, its mode, its source) gives root-owned images
without root or fakeroot, and byte-identical rebuilds: the tree's owners, timestamps and
directory order never reach the image (DESIGN.md §4). `SOURCE_DATE_EPOCH` in gensquashfs's
environment fixes every inode's and the superblock's time. No `glob` lines (fragile) and
no xattrs (the pack-file mode drops them anyway).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sysext.core.errors import SysextError
from sysext.core.process import run, tool_version
from sysext.image.formats import (
    Compression,
    ImageFormat,
    LevelRange,
    WriteRequest,
    register_writer,
)
from sysext.image.staging import EntryKind, StagedEntry

# Default compressor, level and block size, chosen with bench/build.py (issue 11): among the
# settings that reach both targets on both trees — image ≤ 0.85× the bakery's
# `mksquashfs -all-root -noappend` (gzip, 128 KiB blocks) at ≤ 1.0× its wall time — the one
# with the smallest total wall time. Medians of 2 alternating runs, 2 cores; sizes exact,
# times ±20% (see docs/catalogue.md for the full table and the cold-read column):
#   setting        stdlib 150 MiB, 14,496 files   ELF + stdlib 231 MiB, 4,135 files
#   xz-0, 512 KiB  0.83× size, 0.42× time         0.82× size, 0.41× time   <- default
#   xz-0, 1 MiB    0.81×, 0.63×                   0.80×, 0.55×
#   xz-1, 1 MiB    0.79×, 0.84×                   0.77×, 0.60×
#   zstd-12, 1 MiB 0.85×, 0.33×                   0.86× (missed), 0.22×
#   zstd-16, 1 MiB 0.81×, 1.2×  (missed)          0.83×, 1.5× (missed)
# No zstd level reaches 0.85× on ELF-heavy trees at gzip's speed: LZMA's coding beats
# zstd-12's by ~8% on machine code there, and zstd's strong (btopt) levels cost 1.2–3×
# the time. LZMA2 at level 0 (fast mode) already beats zstd-15. Its price is reading:
# a cold read of every file through the kernel takes ~3× the bakery image's time (zstd-12
# 0.9–2.3×, because 1 MiB blocks also cost small files), which a host pays once per boot
# for the pages its programs touch. `--compression zstd` keeps zstd-12 with 1 MiB blocks.
# The BCJ x86 filter (-X x86) saves 2% more on ELF but doubles the time. Packing order:
# gensquashfs 1.2 re-sorts the pack file's entries by name (any order gives the same
# bytes), so only a sort file can group similar files; grouping by content kind then path
# changed sizes by −0.1…+0.4% and gensquashfs matches sort-file lines in quadratic time
# (45 s for 12,000 files), so ORDER_BY_CONTENT is off.
DEFAULT_ZSTD_LEVEL = 12
DEFAULT_XZ_LEVEL = 0
DEFAULT_BLOCK_SIZE = 1 << 20
# LZMA2 gains less from 1 MiB blocks than it costs on time and reads (above).
_BLOCK_SIZES: dict[Compression, int] = {Compression.XZ: 512 << 10}
ORDER_BY_CONTENT = False  # sort_file(); bench/build.py --order measures it, see above
_LEVELS: dict[Compression, LevelRange] = {
    Compression.ZSTD: LevelRange(1, 22, DEFAULT_ZSTD_LEVEL),
    Compression.XZ: LevelRange(0, 9, DEFAULT_XZ_LEVEL),
    Compression.GZIP: LevelRange(1, 9, 9),
}


def default_block_size(compression: Compression) -> int:
    return _BLOCK_SIZES.get(compression, DEFAULT_BLOCK_SIZE)


def quote(text: str) -> str:
    """Quote an image path for the pack file: double quotes, with `"` and `\\` escaped.

    Only the entry's own path is parsed with quotes; a file's source and a symlink's target
    are the raw rest of the line (leading blanks skipped), so they are written unquoted and
    staging refuses targets that start with a blank.
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pack_file_line(entry: StagedEntry) -> str:
    where = quote("/" + entry.path)
    if entry.kind is EntryKind.DIR:
        return f"dir {where} {entry.mode:04o} 0 0"
    if entry.kind is EntryKind.SYMLINK:
        assert entry.target is not None
        return f"slink {where} 0777 0 0 {entry.target}"
    assert entry.source is not None
    return f"file {where} {entry.mode:04o} 0 0 {entry.source}"


def pack_file(entries: list[StagedEntry] | tuple[StagedEntry, ...]) -> str:
    # Entries come in scan order (depth first, names sorted: parents before children, never
    # readdir order), so the listing and thus the image are the same for the same tree.
    return "".join([pack_file_line(e) + "\n" for e in entries])


# Paths a sort file can name: gensquashfs 1.2 mangles quoted names in sort files (it keeps
# the closing quote), so only names that need no quoting are listed; the rest keep the
# default priority 0 and are packed first, in tree order.
_SORTABLE = re.compile(r"[A-Za-z0-9_+@%=,:~.-][A-Za-z0-9_+@%=,:~./-]*")


def content_group(entry: StagedEntry) -> str:
    """What kind of bytes a file likely holds, from its name: shared objects (`x.so`,
    `x.so.1.2`), else the extension, else executable or data."""
    name = entry.path.rpartition("/")[2]
    if name.endswith(".so") or ".so." in name:
        return ".so"
    stem, dot, extension = name.rpartition(".")
    if dot and stem and len(extension) <= 8:
        return "." + extension.lower()
    return "~exec" if entry.mode & 0o111 else "~data"


def sort_file(entries: list[StagedEntry] | tuple[StagedEntry, ...]) -> str:
    """gensquashfs sort file packing files grouped by content kind, then by path.

    Files smaller than a block share compressed fragment blocks in packing order, so
    putting like with like (ELF next to ELF, Python next to Python) lets the compressor
    find more matches within a block. Deterministic, so images stay reproducible.
    """
    files = [e for e in entries if e.kind is EntryKind.FILE and _SORTABLE.fullmatch(e.path)]
    files.sort(key=lambda e: (content_group(e), e.path))
    return "".join(f"{rank} {e.path}\n" for rank, e in enumerate(files, start=1))


class SquashfsWriter:
    format = ImageFormat.SQUASHFS

    def compressions(self) -> tuple[Compression, ...]:
        return (  # the first is the default
            Compression.XZ,
            Compression.ZSTD,
            Compression.GZIP,
            Compression.LZ4,
            Compression.LZ4HC,
        )

    def levels(self, compression: Compression) -> LevelRange | None:
        return _LEVELS.get(compression)

    def write(self, request: WriteRequest) -> None:
        listing = request.scratch / "pack-file"
        listing.write_text(pack_file(tuple(request.entries)), encoding="utf-8")
        ordering: list[str | Path] = []
        if ORDER_BY_CONTENT:
            order = request.scratch / "sort-file"
            order.write_text(sort_file(tuple(request.entries)), encoding="utf-8")
            ordering = ["--sort-file", order]
        comp = request.compression
        if comp is Compression.LZ4HC:
            argv = ["-c", "lz4", "-X", "hc"]
        else:
            argv = ["-c", comp.value]
            if request.level is not None:
                argv += ["-X", f"level={request.level}"]
        jobs = str(request.jobs or os.cpu_count() or 1)
        block = str(request.block_size or default_block_size(comp))
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(request.mtime)}
        if request.output.exists():
            request.output.unlink()  # gensquashfs refuses to overwrite without --force
        try:
            run(
                ["gensquashfs", "--pack-file", listing, *ordering, *argv, "-j", jobs, "-b", block,
                 "--quiet",
                 "--defaults", f"mtime={request.mtime}", request.output],
                env=env,
                cwd=request.scratch,
                hint="check that the staged files are readable",
            )  # fmt: skip
        except SysextError:
            request.output.unlink(missing_ok=True)
            raise

    def tool_versions(self) -> dict[str, str]:
        return {"gensquashfs": tool_version("gensquashfs")}


register_writer(SquashfsWriter())
