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

from sysext.errors import SysextError
from sysext.formats import (
    Compression,
    ImageFormat,
    LevelRange,
    WriteRequest,
    register_writer,
)
from sysext.process import run, tool_version
from sysext.staging import EntryKind, StagedEntry

# Default level and block size, chosen by size and total wall time with bench/build.py
# (issue 11; 2 cores shared with other jobs, load average ~5; medians of 2 alternating
# runs; reference: the bakery's `mksquashfs -all-root -noappend`, gzip, 128 KiB blocks):
#   stdlib, 150 MiB, 14,496 files: bakery 48.2 MiB 47.6 s; zstd-12/1M 40.8 MiB (0.85×)
#     6.9 s (0.15×); zstd-15/1M 40.7 MiB (0.84×) 27.3 s (0.57×); mksquashfs zstd-15/1M
#     40.8 MiB 23.7 s; mkfs.erofs -zlz4hc 87.6 MiB (1.82×) 4.6 s.
#   ELF+stdlib, 231 MiB, 4,135 files: bakery 72.9 MiB 27.1 s; zstd-12/1M 62.8 MiB (0.86×)
#     9.3 s (0.34×); zstd-15/1M 62.7 MiB (0.86×) 26.9 s (0.99×); mksquashfs zstd-15/1M
#     62.6 MiB 25.5 s; mkfs.erofs -zlz4hc 119.4 MiB (1.64×) 5.5 s.
#   Under heavier load (~13): zstd-16 0.81×/0.83× at 1.2×/2.5× the bakery's time,
#   zstd-17 0.80×/0.81× at 1.1×/3.1×.
# zstd-12 is within 0.2% of zstd-15's size at a third to a quarter of its time, so it is
# the default. No level reaches 0.85× on the ELF-heavy tree at the bakery's speed: that
# takes zstd-16 (btopt), 2–3× slower than gzip there. 1 MiB blocks (squashfs's maximum)
# save ~10% against 128 KiB at the same level; the kernel reads them fine.
# Python's own share (scan, pack file, hashing, manifest): 0.3–0.6 s per 10,000 files.
# Packing order: gensquashfs 1.2 re-sorts the pack file's entries by name (any order gives
# the same bytes), so only a sort file can group similar files; grouping by content kind
# then path changed sizes by −0.1…+0.4% and gensquashfs matches sort-file lines in
# quadratic time (45 s for 12,000 files), so ORDER_BY_CONTENT is off.
DEFAULT_ZSTD_LEVEL = 12
DEFAULT_BLOCK_SIZE = 1 << 20
ORDER_BY_CONTENT = False  # sort_file(); bench/build.py --order measures it, see above
_LEVELS: dict[Compression, LevelRange] = {
    Compression.ZSTD: LevelRange(1, 22, DEFAULT_ZSTD_LEVEL),
    Compression.XZ: LevelRange(0, 9, 6),
    Compression.GZIP: LevelRange(1, 9, 9),
}


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
        return (
            Compression.ZSTD,
            Compression.XZ,
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
        block = str(request.block_size or DEFAULT_BLOCK_SIZE)
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
