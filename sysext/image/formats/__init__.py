"""Image formats (squashfs, erofs) as small plug-ins behind one protocol.

Each format module implements `ImageWriter` and registers itself with `register_writer`;
`writer_for(ImageFormat.EROFS)` finds it, so adding a format never touches the packing
pipeline in `sysext.build.pack`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sysext.core.errors import SysextError

if TYPE_CHECKING:
    from sysext.image.staging import StagedEntry


class ImageFormat(enum.Enum):
    SQUASHFS = "squashfs"
    EROFS = "erofs"

    @classmethod
    def parse(cls, text: str) -> ImageFormat:
        for fmt in cls:
            if fmt.value == text.lower():
                return fmt
        raise SysextError(
            f"unknown image format {text!r}", f"use one of: {', '.join(f.value for f in cls)}"
        )


class Compression(enum.Enum):
    ZSTD = "zstd"
    XZ = "xz"
    GZIP = "gzip"
    LZ4 = "lz4"
    LZ4HC = "lz4hc"

    @classmethod
    def parse(cls, text: str) -> Compression:
        for comp in cls:
            if comp.value == text.lower():
                return comp
        raise SysextError(
            f"unknown compression {text!r}", f"use one of: {', '.join(c.value for c in cls)}"
        )


@dataclass(frozen=True)
class LevelRange:
    """Valid compression levels of one compressor in one tool, and the default we pick."""

    low: int
    high: int
    default: int


@dataclass(frozen=True)
class WriteRequest:
    """Everything a writer needs; the entry list is complete (release file included)."""

    entries: Sequence[StagedEntry]
    output: Path  # the temporary file to write (renamed into place by the caller)
    compression: Compression
    level: int | None  # already checked against `levels()`; None: the tool has no levels
    mtime: int  # every inode and the superblock get this time (reproducible builds)
    uuid: str  # file-system UUID where the format has one (erofs)
    scratch: Path  # an empty private directory the writer may use
    block_size: int | None = None  # squashfs block size in bytes; None: the writer's default
    jobs: int | None = None  # compressor threads; None: one per core


class ImageWriter(Protocol):
    format: ImageFormat

    def compressions(self) -> tuple[Compression, ...]:
        """Supported compressors, the default first."""
        ...

    def levels(self, compression: Compression) -> LevelRange | None:
        """Level range of a compressor, or None when it takes no level."""
        ...

    def write(self, request: WriteRequest) -> None: ...

    def tool_versions(self) -> dict[str, str]: ...


_WRITERS: dict[ImageFormat, ImageWriter] = {}


def register_writer(writer: ImageWriter) -> None:
    _WRITERS[writer.format] = writer


def writer_for(fmt: ImageFormat) -> ImageWriter:
    # Importing the modules registers them; done lazily to keep `import sysext` cheap.
    from sysext.image.formats import erofs, squashfs  # noqa: F401

    return _WRITERS[fmt]


def resolve_compression(
    writer: ImageWriter, compression: Compression | None, level: int | None
) -> tuple[Compression, int | None]:
    """Check a compressor/level pair against what the format's tool supports."""
    supported = writer.compressions()
    chosen = compression or supported[0]
    if chosen not in supported:
        names = ", ".join(c.value for c in supported)
        raise SysextError(
            f"{writer.format.value} images cannot use {chosen.value} compression",
            f"{writer.format.value} supports: {names}",
        )
    levels = writer.levels(chosen)
    if levels is None:
        if level is not None:
            raise SysextError(
                f"{chosen.value} compression takes no level (got {level})",
                "drop --level, or pick a compressor with levels (squashfs: zstd, gzip; erofs: "
                "lz4hc)",
            )
        return chosen, None
    if level is None:
        return chosen, levels.default
    if not levels.low <= level <= levels.high:
        raise SysextError(
            f"{chosen.value} level {level} is out of range for {writer.format.value}",
            f"use a level from {levels.low} to {levels.high}",
        )
    return chosen, level
