"""The control member of a .deb: its fields and maintainer scripts (read, never run).

The data member is extracted by sysext.build.extract's safe writer, like any archive.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import zstandard

from sysext.build.debian.control import paragraphs
from sysext.build.extract import deb_member, tar_mode_for
from sysext.core.errors import SysextError

# Members of control.tar that matter here; md5sums and the like are not read.
CONTROL_FILES = frozenset(
    {"control", "preinst", "postinst", "prerm", "postrm", "config", "triggers", "conffiles"}
)
_MAX_MEMBER = 4 << 20


@dataclass(frozen=True)
class ControlMember:
    fields: Mapping[str, str]
    files: Mapping[str, bytes]  # preinst, postinst, … as found

    def text(self, name: str) -> str | None:
        data = self.files.get(name)
        return None if data is None else data.decode("utf-8", "replace")


def read_control(deb: Path, label: str) -> ControlMember:
    """The control fields and scripts of a .deb; an error naming it if it has none."""
    files: dict[str, bytes] = {}
    try:
        with deb_member(deb, label, "control.tar") as (name, stream):
            mode = tar_mode_for(name)
            if mode is None:
                with (
                    zstandard.ZstdDecompressor().stream_reader(stream) as plain,
                    tarfile.open(fileobj=plain, mode="r|") as tar,
                ):
                    _read_members(tar, files)
            else:
                with tarfile.open(fileobj=stream, mode=mode) as tar:
                    _read_members(tar, files)
    except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError) as exc:
        raise SysextError(f"{label}: unreadable control member ({exc})") from None
    if "control" not in files:
        raise SysextError(f"{label}: no control file in its control member")
    fields = next(paragraphs(files["control"].decode("utf-8", "replace")), {})
    return ControlMember(fields, files)


def _read_members(tar: tarfile.TarFile, files: dict[str, bytes]) -> None:
    for member in tar:
        name = member.name.removeprefix("./")
        if name in CONTROL_FILES and member.isreg() and member.size <= _MAX_MEMBER:
            stream = tar.extractfile(member)
            if stream is not None:
                files[name] = stream.read()
