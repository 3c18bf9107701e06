"""A private directory view of an entry list, for image tools that read a directory.

mksquashfs and mkfs.erofs pack a directory tree; the entry list (sysext.image.staging) is
what the image must hold. The view has exactly those entries: directories created with
their modes, files hard-linked to their sources — or copied when the source is on another
file system, when the entry's mode differs from the source's, or when the source inode was
linked already — and symlinks recreated. So the view never holds two names of one inode,
and the image's bytes do not depend on where the sources live. The sources' modes, owners
and times are never changed (a link only adds to their link count while packing); owners
and times in the image come from the tools' flags (all root, one fixed time). The writers
make the view in their build's scratch directory, next to the output, and remove it.
"""

from __future__ import annotations

import os
import shutil

from sysext.core.errors import SysextError
from sysext.image.staging import EntryKind, StagedEntry


def lay_out(entries: tuple[StagedEntry, ...] | list[StagedEntry], root: os.PathLike[str]) -> None:
    """Materialize the entry list under `root` without touching the sources' metadata.

    A source that vanished or cannot be read since the tree was scanned, or a full disk,
    is a SysextError; the caller removes the half-made view (remove_view)."""
    try:
        _lay_out(entries, os.fspath(root))
    except OSError as exc:
        where = exc.filename if exc.filename is not None else root
        raise SysextError(
            f"cannot lay out the image's files: {where}: {exc.strerror or exc}",
            "check that the tree was not changed while packing and that the output "
            "directory's file system has room",
        ) from exc


def _lay_out(entries: tuple[StagedEntry, ...] | list[StagedEntry], base: str) -> None:
    ordered = sorted(entries, key=lambda e: e.path)
    linked: set[tuple[int, int]] = set()
    for entry in ordered:
        dest = os.path.join(base, entry.path)
        if entry.kind is EntryKind.DIR:
            os.makedirs(dest, exist_ok=True)
        elif entry.kind is EntryKind.SYMLINK:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            assert entry.target is not None
            os.symlink(entry.target, dest)
        else:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            assert entry.source is not None
            st = os.lstat(entry.source)
            # Each source inode is linked once at most: hard-linked sources must not become
            # one inode in the image on one file system and two on another (copies), since
            # mkfs.erofs keeps hard links (mksquashfs runs with -no-hardlinks anyway).
            if (st.st_mode & 0o7777) == entry.mode and (st.st_dev, st.st_ino) not in linked:
                try:
                    os.link(entry.source, dest)
                    linked.add((st.st_dev, st.st_ino))
                    continue
                except OSError:
                    pass  # other file system, or links not allowed: copy below
            shutil.copyfile(entry.source, dest)
            os.chmod(dest, entry.mode)
    # Directory modes last (a 0555 directory would refuse the entries created inside).
    for entry in reversed(ordered):
        if entry.kind is EntryKind.DIR:
            os.chmod(os.path.join(base, entry.path), entry.mode)
    os.chmod(base, 0o755)


def remove_view(path: os.PathLike[str]) -> None:
    # Read-only directories (mode 0555) must become writable before their entries go.
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755)
    shutil.rmtree(path, ignore_errors=True)
