"""Reading upstream checksum files (sha256sum and BSD `SHA256 (name) = hex` formats)."""

from __future__ import annotations

import re

_GNU = re.compile(r"([0-9a-fA-F]{64}) [ *]?(\S.*)")
_BSD = re.compile(r"SHA256 \((.+)\) = ([0-9a-fA-F]{64})")
_BARE = re.compile(r"([0-9a-fA-F]{64})")


def find_sha256(text: str, file_name: str) -> str | None:
    """The hash listed for `file_name`, or None.

    Names are compared by their last path component, as upstreams write both `foo.tar.gz`
    and `./dist/foo.tar.gz`. A file holding exactly one bare hash (a `.sha256` sidecar) is
    taken to be about the file it was published for.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        gnu = _GNU.fullmatch(line)
        if gnu and gnu.group(2).strip().rsplit("/", 1)[-1] == file_name:
            return gnu.group(1).lower()
        bsd = _BSD.fullmatch(line)
        if bsd and bsd.group(1).rsplit("/", 1)[-1] == file_name:
            return bsd.group(2).lower()
    if len(lines) == 1 and _BARE.fullmatch(lines[0]):
        return lines[0].lower()
    return None
