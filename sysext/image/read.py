"""Read an extension image without mounting it: entries, owners, modes, release files.

squashfs is read with the streaming reader in `sysext.image.formats.squashfs_walk` (bounded
decompressors from `squashfs_read`), erofs with the small reader in
`sysext.image.formats.erofs_read`. Both run in-process on bytes only: nothing is extracted
or mounted, so this is safe on untrusted uploads (the registry validates with it). Both
first check the superblock and tables as Linux does when it mounts the image, so what reads
here mounts on a host (issue 19). Any corruption becomes one `SysextError` naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import stat
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

from sysext.core.errors import SysextError
from sysext.image.ddi import Ddi, is_ddi, read_ddi, window
from sysext.image.formats import ImageFormat, squashfs_read
from sysext.image.formats.erofs_read import ErofsFormatError, ErofsReader, is_erofs
from sysext.image.formats.squashfs_walk import SquashfsWalker
from sysext.systemd.extension_release import RELEASE_DIR
from sysext.systemd.osrelease import OsReleaseError, parse_os_release

SQUASHFS_MAGIC = b"hsqs"
MAX_RELEASE_BYTES = 64 * 1024
MAX_ENTRIES = 2_000_000
# squashfs superblock compression ids (squashfs_fs.h).
_SQUASHFS_COMPRESSORS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
_EROFS_COMPRESSORS = {0: "lz4", 1: "lzma"}  # bits of available_compr_algs
_HINT = (
    "build images with `sysext pack` or `sysext build`; only squashfs and erofs are "
    "supported, plain or inside a verity disk image (DDI)"
)


@dataclass(frozen=True, slots=True)
class ImageEntry:
    path: str  # relative, e.g. "usr/bin/podman"
    kind: str  # file, dir, symlink, fifo, socket, char-device, block-device
    mode: int  # permission bits (incl. setuid/setgid/sticky)
    uid: int
    gid: int
    size: int
    target: str | None = None
    # Extended attributes (full name, value): capabilities, SELinux labels, overlayfs
    # markers… The lint refuses the privileged namespaces (security.*, trusted.*).
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class ImageContents:
    format: ImageFormat
    compression: str
    size: int
    entries: tuple[ImageEntry, ...]
    release_files: Mapping[str, Mapping[str, str]]
    # Release files that exist but cannot be read or parsed: NAME → reason.
    release_errors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The partition table when the file system sits in a DDI (then `size` is the whole
    # file's); nothing about it is checked here (sysext.image.ddi.check_verity does that).
    ddi: Ddi | None = None

    def find(self, path: str) -> ImageEntry | None:
        path = path.strip("/")
        for entry in self.entries:
            if entry.path == path:
                return entry
        return None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "dir"),
        (stat.S_ISREG, "file"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "char-device"),
        (stat.S_ISBLK, "block-device"),
    ):
        if test(mode):
            return name
    return "unknown"


SUPERBLOCK_PROBE = 2048  # squashfs's magic is at byte 0, erofs's at byte 1024


def _fs_format(head: bytes) -> ImageFormat | None:
    if head[:4] == SQUASHFS_MAGIC:
        return ImageFormat.SQUASHFS
    if is_erofs(head):
        return ImageFormat.EROFS
    return None


@contextlib.contextmanager
def open_filesystem(path: Path) -> Iterator[tuple[BinaryIO, int, ImageFormat, Ddi | None]]:
    """The image's file system as (file, size, format, DDI table or None).

    A plain image is the file itself; in a DDI it is the root (or usr) partition, read
    through a window so the readers never see the partition table.
    """
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the caller is done
    except IsADirectoryError:
        raise SysextError(f"{path}: is a directory, not an image file", _HINT) from None
    except FileNotFoundError:
        raise SysextError(f"{path}: no such file", "check the path") from None
    except OSError as exc:
        raise SysextError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with f:
        size = path.stat().st_size
        head = f.read(SUPERBLOCK_PROBE)
        fmt = _fs_format(head)
        if fmt is not None:
            f.seek(0)
            yield f, size, fmt, None
            return
        if not is_ddi(head):
            raise SysextError(f"{path}: not a squashfs or erofs image", _HINT)
        try:
            ddi = read_ddi(f, size)
        except SysextError as exc:
            raise SysextError(f"{path}: {exc.message}", exc.hint) from None
        data = ddi.data
        fs = window(f, data)
        fmt = _fs_format(fs.read(SUPERBLOCK_PROBE))
        if fmt is None:
            raise SysextError(
                f"{path}: the disk image's {data.type_name} partition holds neither squashfs "
                "nor erofs",
                _HINT,
            )
        fs.seek(0)
        yield fs, data.size, fmt, ddi


def sniff_format(path: Path) -> ImageFormat:
    """squashfs or erofs, by magic number (inside a DDI: its file system's); anything else
    is a clear error."""
    with open_filesystem(path) as (_, _, fmt, _):
        return fmt


def read_image(path: Path) -> ImageContents:
    """List an image's entries and parse its extension-release files."""
    path = Path(path)
    with open_filesystem(path) as (f, size, fmt, ddi):
        reader = _read_squashfs if fmt is ImageFormat.SQUASHFS else _read_erofs
        try:
            contents = reader(f, size, path)
        except SysextError:
            raise
        except Exception as exc:  # corrupt input (ErofsFormatError, struct/zlib errors, a
            # RecursionError from a directory loop…) must never become a traceback
            raise SysextError(
                f"{path}: corrupt {fmt.value} image ({type(exc).__name__}: {exc})", _HINT
            ) from None
    if ddi is None:
        return contents
    return dataclasses.replace(contents, size=path.stat().st_size, ddi=ddi)


def read_file(path: Path, member: str) -> bytes:
    """The bytes of one regular file inside the image (e.g. a release file)."""
    return read_files(path, [member])[member.strip("/")]


def read_files(path: Path, members: Iterable[str], *, limit: int | None = None) -> dict[str, bytes]:
    """Several regular files of one image, opening and indexing it once.

    Keys are the members without a leading '/'. `limit` refuses files larger than that many
    bytes (for untrusted images).
    """
    path = Path(path)
    wanted = [m.strip("/") for m in members]
    member = ""
    try:
        found: dict[str, bytes] = {}
        with open_filesystem(path) as (f, size, fmt, _):
            if fmt is ImageFormat.SQUASHFS:
                walker = _squashfs_walker(f, size, path)
                for member in wanted:
                    node = walker.lookup(member)
                    if not stat.S_ISREG(node.kind):
                        raise FileNotFoundError(member)
                    _check_limit(member, node.size, limit)
                    found[member] = walker.read(node, limit or (1 << 31))
            else:
                reader = ErofsReader(f, size)
                for member in wanted:
                    inode = reader.lookup(member)
                    if not stat.S_ISREG(inode.mode):
                        raise FileNotFoundError(member)
                    _check_limit(member, inode.size, limit)
                    found[member] = reader.data(inode)
        return found
    except SysextError:
        raise
    except FileNotFoundError:
        raise SysextError(f"{path}: no file {member} in the image") from None
    except Exception as exc:
        raise SysextError(f"{path}: cannot read {member} ({type(exc).__name__}: {exc})") from None


def _check_limit(member: str, size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise SysextError(f"{member} is {size} bytes, more than the {limit} allowed here")


# --- squashfs ----------------------------------------------------------------------------


def _read_squashfs(f: BinaryIO, size: int, path: Path) -> ImageContents:
    entries: list[ImageEntry] = []
    files: dict[str, Callable[[], bytes]] = {}
    walker = _squashfs_walker(f, size, path)
    compression = _SQUASHFS_COMPRESSORS.get(
        walker.sb.compression, f"unknown ({walker.sb.compression})"
    )
    for rel, node in walker.walk():
        if len(entries) >= MAX_ENTRIES:
            raise SysextError(f"{path}: more than {MAX_ENTRIES} entries", _HINT)
        is_file = stat.S_ISREG(node.kind)
        entries.append(
            ImageEntry(
                path=rel,
                kind=_kind(node.kind),
                mode=node.mode & 0o7777,
                uid=node.uid,
                gid=node.gid,
                size=node.size if is_file else 0,
                target=_decode(node.target),
                xattrs=walker.xattrs(node),
            )
        )
        if _is_release_candidate(rel) and is_file:
            files[rel] = _bind_squashfs_data(walker, node)
    releases, errors = _parse_releases(files)
    return ImageContents(
        format=ImageFormat.SQUASHFS,
        compression=compression,
        size=size,
        entries=tuple(sorted(entries, key=lambda e: e.path)),
        release_files=releases,
        release_errors=errors,
    )


def _squashfs_walker(f: Any, size: int, path: Path) -> SquashfsWalker:
    f.seek(0)
    compression_id = struct.unpack("<H", f.read(22)[20:22] or b"\0\0")[0]
    try:
        decompress = squashfs_read.decompressor(compression_id)
    except ValueError:
        name = _SQUASHFS_COMPRESSORS.get(compression_id, f"id {compression_id}")
        raise SysextError(f"{path}: squashfs compression {name} is not supported", _HINT) from None
    return SquashfsWalker(f, size, decompress)


def _bind_squashfs_data(walker: SquashfsWalker, node: Any) -> Callable[[], bytes]:
    return lambda: walker.read(node, MAX_RELEASE_BYTES)


def _decode(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


# --- erofs -------------------------------------------------------------------------------


def _read_erofs(f: BinaryIO, size: int, path: Path) -> ImageContents:
    entries: list[ImageEntry] = []
    files: dict[str, Callable[[], bytes]] = {}
    reader = ErofsReader(f, size)
    algs = reader.superblock.compression_algorithms
    names = [n for bit, n in _EROFS_COMPRESSORS.items() if algs & (1 << bit)]
    compressed = False
    for rel, inode in reader.walk():
        target = None
        compressed = compressed or inode.compressed
        if stat.S_ISLNK(inode.mode):
            target = reader.data(inode, limit=4096).decode("utf-8", "surrogateescape")
        entries.append(
            ImageEntry(
                path=rel,
                kind=_kind(inode.mode),
                mode=stat.S_IMODE(inode.mode),
                uid=inode.uid,
                gid=inode.gid,
                size=inode.size if stat.S_ISREG(inode.mode) else 0,
                target=target,
                xattrs=reader.xattrs(inode),
            )
        )
        if _is_release_candidate(rel) and stat.S_ISREG(inode.mode):
            files[rel] = _bind_erofs_data(reader, inode)
    releases, errors = _parse_releases(files)
    return ImageContents(
        format=ImageFormat.EROFS,
        # Images without per-algorithm config (erofs-utils 1.5) can only use lz4 (lz4hc
        # writes the same on-disk format).
        compression="+".join(names) if names else ("lz4" if compressed else "none"),
        size=size,
        entries=tuple(sorted(entries, key=lambda e: e.path)),
        release_files=releases,
        release_errors=errors,
    )


def _bind_erofs_data(reader: ErofsReader, inode: object) -> Callable[[], bytes]:
    from sysext.image.formats.erofs_read import ErofsInode

    assert isinstance(inode, ErofsInode)
    return lambda: reader.data(inode, limit=MAX_RELEASE_BYTES)


# --- release files -----------------------------------------------------------------------


def _is_release_candidate(rel: str) -> bool:
    directory, _, name = rel.rpartition("/")
    return directory == RELEASE_DIR and name.startswith("extension-release.")


def _too_big() -> bytes:
    raise ValueError(f"larger than {MAX_RELEASE_BYTES} bytes")


def _parse_releases(
    files: Mapping[str, Callable[[], bytes]],
) -> tuple[Mapping[str, Mapping[str, str]], Mapping[str, str]]:
    releases: dict[str, Mapping[str, str]] = {}
    errors: dict[str, str] = {}
    for rel, load in sorted(files.items()):
        name = rel.rpartition("/")[2][len("extension-release.") :]
        try:
            text = load().decode("utf-8")
            releases[name] = MappingProxyType(parse_os_release(text, source=rel))
        except UnicodeDecodeError:
            errors[name] = "not UTF-8 text"
        except OsReleaseError as exc:
            errors[name] = exc.message
        except (ErofsFormatError, ValueError) as exc:
            errors[name] = f"unreadable: {exc}"
    return MappingProxyType(releases), MappingProxyType(errors)
