"""erofs images through erofs-utils' `mkfs.erofs`.

mkfs.erofs reads a directory, so the writer lays out a private view of the entry list
(sysext.image.formats.view) and packs that with `--all-root`. A fixed `-U` UUID and `-T`
time make rebuilds byte-identical (DESIGN.md §4); `-x -1` leaves xattrs out, as the
squashfs path does. erofs-utils 1.5 only knows lz4 and lz4hc.
"""

from __future__ import annotations

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

# erofs-utils 1.5 fails with "Could not format the device: No such file or directory" on a
# 255-byte name although the format allows it; refuse such names before running it.
MAX_NAME_BYTES = 255
# Compressed physical clusters of 64 KiB instead of one 4 KiB block: lz4 then finds matches
# across 16 times more data. bench/build.py (ELF + stdlib tree, 231 MiB, quiet machine):
# lz4hc-9 with 4 KiB clusters 119.4 MiB in 5.1 s; with 64 KiB 103.7 MiB (0.87×) in 7.8 s;
# 256 KiB and 1 MiB clusters gain under 2% more. lz4hc-12 saves another 0.3% at twice the
# time, so the default level is mkfs.erofs's own, 9. Big clusters need Linux 5.13 (every
# host with systemd 252+ has a newer kernel). Tail packing (-Eztailpacking, 5.17+) would
# save ~5% more but stores small files' compressed tails inline, which erofs_read does not
# read (an extension-release file could become unreadable to validation), so it is off.
PCLUSTER_BYTES = 64 << 10
_LEVELS: dict[Compression, LevelRange] = {Compression.LZ4HC: LevelRange(0, 12, 9)}


class ErofsWriter:
    format = ImageFormat.EROFS

    def compressions(self) -> tuple[Compression, ...]:
        return (Compression.LZ4HC, Compression.LZ4)

    def levels(self, compression: Compression) -> LevelRange | None:
        return _LEVELS.get(compression)

    def write(self, request: WriteRequest) -> None:
        for entry in request.entries:
            name = entry.path.rpartition("/")[2]
            if len(name.encode()) >= MAX_NAME_BYTES:
                raise SysextError(
                    f"{entry.path}: a {len(name.encode())}-byte file name is more than "
                    f"mkfs.erofs 1.5 can store (at most {MAX_NAME_BYTES - 1})",
                    "shorten the name, or build a squashfs image (--format squashfs)",
                )
        view = request.scratch / "root"
        view.mkdir()
        try:
            lay_out(tuple(request.entries), view)
            comp = request.compression.value
            if request.level is not None:
                comp += f",{request.level}"
            if request.output.exists():
                request.output.unlink()
            run(
                ["mkfs.erofs", f"-z{comp}", f"-C{PCLUSTER_BYTES}", f"-T{request.mtime}",
                 f"-U{request.uuid}",
                 "-x-1", "--all-root", "--quiet", request.output, view],
                hint="check that the staged files are readable",
            )  # fmt: skip
        except SysextError:
            request.output.unlink(missing_ok=True)
            raise
        finally:
            remove_view(view)

    def tool_versions(self) -> dict[str, str]:
        return {"erofs-utils": tool_version("dump.erofs", "-V")}


register_writer(ErofsWriter())
