"""Source kinds of recipes: `url`, `file`, `pypi`, `deb`, `apt` (each registers itself)."""

from __future__ import annotations

from sysext.build.sources import apt, deb, file, pypi, url
from sysext.build.sources.base import (
    FetchContext,
    Fetched,
    SourceKind,
    register,
    source_kind,
    source_kind_names,
)

__all__ = [
    "FetchContext",
    "Fetched",
    "SourceKind",
    "apt",
    "deb",
    "file",
    "pypi",
    "register",
    "source_kind",
    "source_kind_names",
    "url",
]
