"""Source kinds of recipes: `url`, `file`, `pypi`, `deb` (each registers itself)."""

from __future__ import annotations

from sysext.build.sources import deb, file, pypi, url
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
    "deb",
    "file",
    "pypi",
    "register",
    "source_kind",
    "source_kind_names",
    "url",
]
