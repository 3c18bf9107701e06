"""Safe extraction of upstream archives into a scratch directory.

Upstream archives are untrusted input. Nothing here ever writes outside the destination:
members are written by this module itself (never by `tarfile.extract`), parents are created
as real directories and never followed through symlinks, and these members are refused with
an error naming the archive and the member:

* absolute paths and paths with `..` components;
* symlinks whose relative target climbs out of the archive root (absolute targets are kept:
  they are resolved on the host at run time, and extraction never follows links);
* hard links to anything but a regular file extracted earlier from the same archive;
* device nodes, FIFOs and sockets;
* setuid/setgid files, unless the member's path (after stripping) is listed as allowed.

Supported: tar (plain, gz, xz, bz2, zst), zip (and .whl), .deb (ar + data.tar.*), .rpm
(the cpio payload; see sysext.rpm), and a single plain file. Package scripts never run.
"""

from __future__ import annotations

import enum
import fnmatch
import io
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, cast

import zstandard

from sysext.core.errors import SysextError

CHUNK = 1 << 20


class ArchiveFormat(enum.Enum):
    TAR = "tar"
    TAR_GZ = "tar.gz"
    TAR_XZ = "tar.xz"
    TAR_BZ2 = "tar.bz2"
    TAR_ZST = "tar.zst"
    ZIP = "zip"
    DEB = "deb"
    RPM = "rpm"
    FILE = "file"
    # A tree a source kind laid out itself (apt: the closure's packages, sysext.build.debian).
    # Never named in recipes.
    DIRECTORY = "directory"

    @classmethod
    def from_filename(cls, name: str) -> ArchiveFormat:
        """Guess the format from a file name; anything unknown is a single plain file."""
        lower = name.lower()
        for suffixes, fmt in _SUFFIXES:
            if lower.endswith(suffixes):
                return fmt
        return cls.FILE


_SUFFIXES: tuple[tuple[tuple[str, ...], ArchiveFormat], ...] = (
    ((".tar.gz", ".tgz"), ArchiveFormat.TAR_GZ),
    ((".tar.xz", ".txz"), ArchiveFormat.TAR_XZ),
    ((".tar.bz2", ".tbz2", ".tbz"), ArchiveFormat.TAR_BZ2),
    ((".tar.zst", ".tzst", ".tar.zstd"), ArchiveFormat.TAR_ZST),
    ((".tar",), ArchiveFormat.TAR),
    ((".zip", ".whl"), ArchiveFormat.ZIP),
    ((".deb",), ArchiveFormat.DEB),
    ((".rpm",), ArchiveFormat.RPM),
)


class UnsafeArchiveError(SysextError):
    """An archive member would escape the destination or is a kind we refuse."""


@dataclass(frozen=True)
class ExtractOptions:
    strip_components: int = 0
    # Member paths (after stripping; fnmatch globs) that may keep setuid/setgid bits.
    allow_setuid: tuple[str, ...] = ()
    # For ArchiveFormat.FILE: the name the file gets inside the destination.
    file_name: str | None = None
    # Drop setuid/setgid bits that are not allowed instead of refusing the member: for
    # distribution packages, whose setgid helpers (utempter's group utmp) cannot keep
    # their group in an image owned by root, and run, less privileged, without the bit.
    drop_setid: bool = False


def extract(
    archive: Path,
    dest: Path,
    fmt: ArchiveFormat,
    options: ExtractOptions,
    *,
    label: str | None = None,
) -> None:
    """Extract `archive` into the (existing, empty) directory `dest`, refusing unsafe members.

    `label` names the archive in errors (default: its file name; cached blobs are named by
    their hash, so callers pass the upstream file name).
    """
    label = label or archive.name
    if fmt is ArchiveFormat.DIRECTORY:
        # Laid out by sysext's own code from verified, safely extracted packages: moved.
        for child in sorted(archive.iterdir()):
            os.rename(child, dest / child.name)
        return
    writer = _SafeWriter(dest, label, options)
    if fmt is ArchiveFormat.FILE:
        name = options.file_name or archive.name
        with open(archive, "rb") as src:
            writer.file(name, src, 0o644)
        return
    if fmt is ArchiveFormat.ZIP:
        _extract_zip(archive, writer)
        return
    if fmt is ArchiveFormat.DEB:
        with _deb_data_tar(archive, label) as (member_name, stream):
            writer.label = f"{label}:{member_name}"
            _extract_tar_stream(stream, tar_mode_for(member_name), writer)
        return
    if fmt is ArchiveFormat.RPM:
        with open(archive, "rb") as raw:
            _extract_rpm(raw, writer)
        return
    with open(archive, "rb") as raw:
        if fmt is ArchiveFormat.TAR_ZST:
            with zstandard.ZstdDecompressor().stream_reader(raw) as plain:
                _extract_tar_stream(plain, "r|", writer)
        else:
            _extract_tar_stream(raw, _TAR_MODES[fmt], writer)


TarMode = Literal["r|", "r|gz", "r|xz", "r|bz2"]

_TAR_MODES: dict[ArchiveFormat, TarMode] = {
    ArchiveFormat.TAR: "r|",
    ArchiveFormat.TAR_GZ: "r|gz",
    ArchiveFormat.TAR_XZ: "r|xz",
    ArchiveFormat.TAR_BZ2: "r|bz2",
}


def tar_mode_for(name: str) -> TarMode | None:
    """The tarfile stream mode for a data.tar.* name; None for zstd (tarfile lacks it)."""
    modes: tuple[tuple[str, TarMode], ...] = (
        (".gz", "r|gz"),
        (".xz", "r|xz"),
        (".bz2", "r|bz2"),
        (".tar", "r|"),
    )
    for suffix, mode in modes:
        if name.endswith(suffix):
            return mode
    return None


def _extract_tar_stream(stream: IO[bytes], mode: TarMode | None, writer: _SafeWriter) -> None:
    if mode is None:
        with zstandard.ZstdDecompressor().stream_reader(stream) as plain:
            _extract_tar_stream(plain, "r|", writer)
        return
    try:
        with tarfile.open(fileobj=stream, mode=mode) as tar:
            for member in tar:
                _extract_tar_member(tar, member, writer)
    except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError) as exc:
        if isinstance(exc, SysextError):
            raise
        raise SysextError(
            f"{writer.label}: not a readable archive ({exc})",
            "check the source's format (or declare `format = …` in the recipe)",
        ) from exc


def _extract_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, writer: _SafeWriter) -> None:
    if member.isdir():
        writer.directory(member.name, member.mode)
    elif member.isreg():
        src = tar.extractfile(member)
        assert src is not None
        writer.file(member.name, src, member.mode)
    elif member.issym():
        writer.symlink(member.name, member.linkname)
    elif member.islnk():
        writer.hardlink(member.name, member.linkname)
    else:
        kind = {
            tarfile.CHRTYPE: "character device",
            tarfile.BLKTYPE: "block device",
            tarfile.FIFOTYPE: "FIFO",
        }.get(member.type, f"unsupported member type {member.type!r}")
        raise UnsafeArchiveError(
            f"{writer.label}: member {member.name!r} is a {kind}; refusing it",
            "an extension image may hold only files, directories and symlinks",
        )


def _extract_zip(archive: Path, writer: _SafeWriter) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                kind = stat.S_IFMT(mode)
                if info.is_dir():
                    writer.directory(info.filename, (mode & 0o7777) or 0o755)
                elif kind == stat.S_IFLNK:
                    writer.symlink(info.filename, zf.read(info).decode("utf-8", "surrogateescape"))
                elif kind in (0, stat.S_IFREG):
                    with zf.open(info) as src:
                        writer.file(info.filename, src, (mode & 0o7777) or 0o644)
                else:
                    raise UnsafeArchiveError(
                        f"{writer.label}: member {info.filename!r} is not a regular file, "
                        "directory or symlink; refusing it"
                    )
    except (zipfile.BadZipFile, OSError) as exc:
        raise SysextError(f"{writer.label}: not a readable zip archive ({exc})") from exc


def _extract_rpm(raw: IO[bytes], writer: _SafeWriter) -> None:
    """Write an RPM's payload. cpio stores a hard-linked file's data with the LAST of its
    names (the others have size 0), so earlier names wait for it and become hard links."""
    from sysext.build.rpm import payload_entries

    waiting: dict[int, list[str]] = {}
    for entry in payload_entries(raw, writer.label):
        kind = entry.kind
        if kind == stat.S_IFDIR:
            writer.directory(entry.name, entry.mode & 0o7777)
        elif kind == stat.S_IFLNK:
            writer.symlink(entry.name, entry.data.read(4096).decode("utf-8", "surrogateescape"))
        elif kind == stat.S_IFREG:
            if entry.nlink > 1 and entry.size == 0:
                waiting.setdefault(entry.inode, []).append(entry.name)
                continue
            writer.file(entry.name, entry.data, entry.mode & 0o7777)
            for name in waiting.pop(entry.inode, []):
                writer.hardlink(name, entry.name)
        else:
            raise UnsafeArchiveError(
                f"{writer.label}: member {entry.name!r} is a device, FIFO or socket; refusing it",
                "an extension image may hold only files, directories and symlinks",
            )
    for names in waiting.values():  # hard-linked empty files
        for name in names:
            writer.file(name, io.BytesIO(b""), 0o644)


# -- .deb: an `ar` archive holding debian-binary, control.tar.* and data.tar.* -------------

_AR_MAGIC = b"!<arch>\n"


@contextmanager
def _deb_data_tar(archive: Path, label: str) -> Iterator[tuple[str, IO[bytes]]]:
    """Yield (member name, stream) of the data.tar.* member of a .deb (ar(5) format)."""
    with deb_member(archive, label, "data.tar") as found:
        yield found


@contextmanager
def deb_member(archive: Path, label: str, prefix: str) -> Iterator[tuple[str, IO[bytes]]]:
    """Yield (member name, stream) of the first member of a .deb (ar(5) format) whose name
    starts with `prefix` (`data.tar`, `control.tar`)."""
    with open(archive, "rb") as f:
        if f.read(8) != _AR_MAGIC:
            raise SysextError(f"{label}: not a Debian package (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            if header[58:60] != b"`\n":
                raise SysextError(f"{label}: corrupt ar member header")
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError as exc:
                raise SysextError(f"{label}: corrupt ar member size") from exc
            if name.startswith(prefix):
                yield name, cast(IO[bytes], io.BufferedReader(_Window(f, size), CHUNK))
                return
            f.seek(size + (size & 1), io.SEEK_CUR)  # ar pads members to even offsets
    raise SysextError(f"{label}: Debian package without a {prefix} member")


class _Window(io.RawIOBase):
    """A read-only view of the next `size` bytes of a file."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f = f
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        n = min(len(buffer), self._left)
        data = self._f.read(n)
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


# -- the writer: the only code that touches the destination ------------------------------


class _SafeWriter:
    def __init__(self, dest: Path, label: str, options: ExtractOptions) -> None:
        self.dest = dest
        self.label = label
        self.options = options
        self.symlinks: set[str] = set()
        self.files: set[str] = set()
        # Directories this writer made or checked: real directories, which stay so (a
        # member replacing one is refused in _clear), so their parents need no new lstat.
        self.directories: set[str] = set()

    def _relative(self, name: str) -> str | None:
        """Validated, stripped member path relative to dest; None when stripped away."""
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchiveError(
                f"{self.label}: member {name!r} has an absolute path; refusing it"
            )
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UnsafeArchiveError(f"{self.label}: member {name!r} contains '..'; refusing it")
        parts = parts[self.options.strip_components :]
        if not parts:
            return None
        rel = "/".join(parts)
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.symlinks:
                raise UnsafeArchiveError(
                    f"{self.label}: member {name!r} lies below the symlink "
                    f"{'/'.join(parts[:i])!r}; refusing it"
                )
        return rel

    def _parent(self, rel: str) -> Path:
        head = rel.rpartition("/")[0]
        if not head or head in self.directories:
            return self.dest / head if head else self.dest
        parent = self.dest
        walked = ""
        for part in head.split("/"):
            parent = parent / part
            walked = f"{walked}/{part}" if walked else part
            if walked in self.directories:
                continue
            if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
                raise UnsafeArchiveError(
                    f"{self.label}: {rel!r} would be written through a non-directory; refusing it"
                )
            if not parent.exists():
                parent.mkdir(mode=0o755)
            self.directories.add(walked)
        return parent

    def _clear(self, path: Path, rel: str) -> None:
        if path.is_symlink() or path.is_file():
            path.unlink()
            self.symlinks.discard(rel)
            self.files.discard(rel)
        elif path.exists():
            raise UnsafeArchiveError(
                f"{self.label}: member {rel!r} would replace a directory; refusing it"
            )

    def _check_mode(self, name: str, rel: str, mode: int) -> int:
        if mode & (stat.S_ISUID | stat.S_ISGID) and not any(
            fnmatch.fnmatchcase(rel, pattern) for pattern in self.options.allow_setuid
        ):
            if self.options.drop_setid:
                return mode & 0o777
            raise UnsafeArchiveError(
                f"{self.label}: member {name!r} is setuid/setgid; refusing it",
                f"if this is intended, list {rel!r} in the source's allow_setuid",
            )
        return mode & 0o7777

    def directory(self, name: str, mode: int) -> None:
        rel = self._relative(name)
        if rel is None:
            return
        path = self._parent(rel) / rel.rsplit("/", 1)[-1]
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise UnsafeArchiveError(
                f"{self.label}: directory member {name!r} collides with a non-directory"
            )
        path.mkdir(mode=0o755, exist_ok=True)
        # Directories stay writable for us; their final modes come from the install rules.
        os.chmod(path, (mode & 0o777) | 0o700)
        self.directories.add(rel)

    def file(self, name: str, src: IO[bytes], mode: int) -> None:
        rel = self._relative(name)
        if rel is None:
            return
        mode = self._check_mode(name, rel, mode)
        path = self._parent(rel) / rel.rsplit("/", 1)[-1]
        self._clear(path, rel)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        os.chmod(path, mode)
        self.files.add(rel)

    def symlink(self, name: str, target: str) -> None:
        rel = self._relative(name)
        if rel is None:
            return
        if not target:
            raise UnsafeArchiveError(f"{self.label}: symlink {name!r} has an empty target")
        # Relative targets are walked lexically from the link's own directory (after
        # stripping): climbing above the destination root is an escape.
        if not target.startswith("/") and _climb_depth(target) > rel.count("/"):
            raise UnsafeArchiveError(
                f"{self.label}: symlink {name!r} points outside the archive "
                f"({target!r}); refusing it"
            )
        path = self._parent(rel) / rel.rsplit("/", 1)[-1]
        self._clear(path, rel)
        os.symlink(target, path)
        self.symlinks.add(rel)

    def hardlink(self, name: str, linkname: str) -> None:
        rel = self._relative(name)
        if rel is None:
            return
        try:
            target_rel = self._relative(linkname)
        except UnsafeArchiveError as exc:
            raise UnsafeArchiveError(
                f"{self.label}: hard link {name!r} points outside the archive "
                f"({linkname!r}); refusing it"
            ) from exc
        if target_rel is None or target_rel not in self.files:
            raise UnsafeArchiveError(
                f"{self.label}: hard link {name!r} points to {linkname!r}, which is not a "
                "regular file extracted earlier from this archive; refusing it"
            )
        path = self._parent(rel) / rel.rsplit("/", 1)[-1]
        self._clear(path, rel)
        os.link(self.dest / target_rel, path, follow_symlinks=False)
        self.files.add(rel)


def _climb_depth(target: str) -> int:
    """How many levels above its starting directory a walk along `target` ever reaches."""
    depth = 0
    lowest = 0
    for part in target.split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        lowest = min(lowest, depth)
    return -lowest


def list_members(root: Path) -> Iterable[str]:
    """Relative POSIX paths of everything below `root` (files, links, dirs), sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        for entry in (*dirnames, *filenames):
            found.append((base / entry).as_posix())
    return sorted(found)
