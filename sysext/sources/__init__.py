"""Source kinds of recipes: `url`, `file`, `pypi`, `deb` (each registers itself)."""

from __future__ import annotations

from sysext.sources import deb, file, pypi, url
from sysext.sources.base import (
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
