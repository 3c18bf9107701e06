"""`kind = "file"`: a file next to the recipe (or any local path); `sha256` optional."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sysext.build.extract import ArchiveFormat
from sysext.build.sources.base import FetchContext, Fetched, ImageTerms, Resolved, register
from sysext.core.download import sha256_of
from sysext.core.errors import SysextError

if TYPE_CHECKING:
    from sysext.recipe.model import SourceSpec, Where


class FileSource:
    name = "file"

    def check(self, spec: SourceSpec, where: Where) -> None:
        if spec.path is None:
            raise (where / "path").error('missing (a path relative to the recipe, e.g. "files/x")')

    def terms(self, spec: SourceSpec, ctx: FetchContext) -> ImageTerms | None:
        return None

    def resolve(self, spec: SourceSpec, ctx: FetchContext) -> Resolved:
        # Local: "fetching" is hashing the file, which is what resolving needs anyway.
        got = self.fetch(spec, ctx)
        return Resolved(got.origin, got.sha256, got.file_name)

    def fetch(self, spec: SourceSpec, ctx: FetchContext) -> Fetched:
        assert spec.path is not None
        relative = ctx.expand(spec, spec.path, "path")
        path = Path(relative)
        if not path.is_absolute():
            path = ctx.recipe.path.resolve().parent / path
        label = f"recipe {ctx.recipe.file_label}: sources[{spec.index}].path"
        if not path.is_file():
            raise SysextError(f"{label}: {relative}: no such file")
        got = sha256_of(path)
        pinned = ctx.pinned_sha256(spec)
        if pinned and pinned != got:
            raise SysextError(
                f"{label}: {relative}: sha256 mismatch (expected {pinned}, got {got})",
                "the file changed; update the recipe's sha256 if the change is intended",
            )
        file_name = ctx.expand(spec, spec.file_name, "file_name") if spec.file_name else path.name
        fmt = spec.format or ArchiveFormat.from_filename(file_name)
        return Fetched(path=path, format=fmt, origin=relative, sha256=got, file_name=file_name)

    def tools(self) -> dict[str, str]:
        return {}


register(FileSource())
