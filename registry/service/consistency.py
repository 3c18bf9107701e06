"""Can the database be served? The checks run before every commit (and by repair.py).

The database is the source of truth and the public tree is derived from it (materialize.py).
That only holds if every committed state can be materialized, so each write builds the
directory contents it is about to publish and checks them here *before* committing: file
names a file system and systemd can hold, a manifest that parses back to exactly the
images listed. The same checks, run over a whole data directory, explain drift between
database and tree (an older version's rows, a restored backup, a full disk mid-write) and
`repair` fixes it without SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.db.models import Image
from registry.errors import RegistryError
from registry.service.names import claimed_by, parse_image_filename
from registry.settings import Settings
from registry.storage import materialize as mat
from sysext.systemd.extension_release import bound_name_problem
from sysext.systemd.manifest import ManifestError, filename_problem, parse_manifest

if TYPE_CHECKING:
    from registry.storage.backend import Storage

log = logging.getLogger("registry")


def content_problem(content: mat.DirectoryContent) -> str | None:
    """Why materializing `content` would fail or publish something hosts cannot use."""
    for filename, _ in (*content.images, *content.texts):
        problem = filename_problem(filename)
        if problem:
            return f"{filename[:60]}…: {problem}" if len(filename) > 60 else problem
    try:
        listed = parse_manifest(content.manifest)
    except ManifestError as exc:
        return f"SHA256SUMS would not parse: {exc.message}"
    served = {f for f, _ in content.images} | {f for f, _ in content.texts}
    for entry in listed:
        if entry.filename not in served:
            return f"SHA256SUMS would list {entry.filename}, which the directory lacks"
    return None


def checked_content(
    settings: Settings,
    name: str,
    channel: str,
    images: Iterable[Image],
    held: frozenset[str] = frozenset(),
) -> mat.DirectoryContent:
    """desired_content() for a write about to be committed; RegistryError 422 if unservable."""
    try:
        content = mat.desired_content(settings, name, channel, images, held)
    except ManifestError as exc:
        problem: str | None = exc.message
    else:
        problem = content_problem(content)
    if problem:
        raise RegistryError(
            422, f"{name} in {channel} could not be served after this change: {problem}"
        )
    return content


@dataclass(frozen=True)
class Problem:
    """One inconsistency; `fix` says what `sysext registry repair` does about it."""

    name: str
    channel: str | None
    message: str
    fix: str

    def line(self) -> str:
        where = f"{self.name} ({self.channel})" if self.channel else self.name
        return f"{where}: {self.message} — repair: {self.fix}"


def unservable_reason(storage: Storage, image: Image) -> str | None:
    """Why this committed row cannot be served at all (repair deletes such rows)."""
    problem = filename_problem(image.filename)
    if problem:
        return problem
    size = storage.stored_size(image.sha256)
    if size is None:
        return f"its stored file (sha256 {image.sha256}) is missing"
    if size != image.size:
        return f"its stored file has {size} bytes, the database says {image.size}"
    return None


def policy_reason(image: Image) -> str | None:
    """Rows that can be served but that today's upload rules would refuse (reported only)."""
    try:
        parse_image_filename(image.name, image.filename)
    except ValueError as exc:
        return str(exc)
    pinned = (image.release or {}).get("VERSION_ID")
    if pinned and image.os_version_id is None:
        # Accepted before issue 19 (finding 6): served with NAME-@v-%a.raw to every host,
        # though only hosts with this VERSION_ID merge it.
        return (
            f"{_short(image.filename)} pins VERSION_ID={pinned} but is served to every OS "
            f"with {image.name}-@v-%a.raw; yank it and publish it OS-bound"
        )
    if image.os_version_id:
        problem = bound_name_problem(image.release_version, image.os_version_id)
        if problem:
            return f"{_short(image.filename)}: {problem}"
    return None


def squatting_reason(image: Image, names: set[str]) -> str | None:
    """Which other extension's transfer pattern also matches this row's file, if any.

    Uploads refuse such files (service.py `_refuse_squatting`); rows from before that
    rule, or from a race the writer locks once let through, are reported here. Only the
    prefixes of the file name that end before a `-` can be such an extension's name.
    """
    filename = image.filename
    for at, char in enumerate(filename):
        other = filename[:at]
        if char == "-" and other != image.name and other in names and claimed_by(other, filename):
            return (
                f"{_short(filename)} would also match extension {other}'s transfer pattern "
                f"{other}-@v-%a.raw: hosts of {other} may take it for one of its versions"
            )
    return None


def _short(filename: str) -> str:
    return filename if len(filename) <= 60 else f"{filename[:56]}…raw"
