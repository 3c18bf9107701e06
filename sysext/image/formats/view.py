"""A private directory view of an entry list, for image tools that read a directory.

mksquashfs and mkfs.erofs pack a directory tree; the entry list (sysext.image.staging) is
what the image must hold. The view has exactly those entries: directories created with
their modes, files hard-linked to their sources — or copied across file systems, or when
the entry's mode differs from the source's — and symlinks recreated. The sources' own
metadata is never changed; owners and times come from the tools' flags (all root, one
fixed time).
"""

from __future__ import annotations

import os
import shutil

from sysext.image.staging import EntryKind, StagedEntry


def lay_out(entries: tuple[StagedEntry, ...] | list[StagedEntry], root: os.PathLike[str]) -> None:
    """Materialize the entry list under `root` without touching the sources' metadata."""
    base = os.fspath(root)
    ordered = sorted(entries, key=lambda e: e.path)
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
            if (os.lstat(entry.source).st_mode & 0o7777) == entry.mode:
                try:
                    os.link(entry.source, dest)
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
