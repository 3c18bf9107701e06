"""`kind = "deb"`: a Debian package fetched with `apt-get download`.

apt verifies the package against the signed repository metadata and uses the host's own
sources and proxy settings, so no mirror host is written here. Only the package's
data.tar.* is used (see sysext.extract); maintainer scripts never run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sysext.build.extract import ArchiveFormat
from sysext.build.sources.base import FetchContext, Fetched, ImageTerms, Resolved, register
from sysext.core.download import sha256_of
from sysext.core.errors import SysextError, ToolError
from sysext.core.process import run, tool_version
from sysext.systemd.architecture import Architecture

if TYPE_CHECKING:
    from sysext.recipe.model import SourceSpec, Where


def native_debian_arch() -> str:
    return Architecture.from_uname().debian_name


class DebSource:
    name = "deb"

    def check(self, spec: SourceSpec, where: Where) -> None:
        if spec.package is None:
            raise (where / "package").error('missing (the Debian package name, e.g. "hello")')

    def terms(self, spec: SourceSpec, ctx: FetchContext) -> ImageTerms | None:
        return None

    def resolve(self, spec: SourceSpec, ctx: FetchContext) -> Resolved | None:
        # Which build apt picks is known only once it has downloaded it.
        return None

    def fetch(self, spec: SourceSpec, ctx: FetchContext) -> Fetched:
        assert spec.package is not None
        label = f"recipe {ctx.recipe.file_label}: sources[{spec.index}]"
        reference = spec.package
        if ctx.arch.debian_name != native_debian_arch():
            reference += f":{ctx.arch.debian_name}"
        if spec.package_version:
            reference += "=" + ctx.expand(spec, spec.package_version, "package_version")
        directory = Path(tempfile.mkdtemp(prefix="deb-", dir=ctx.work_dir))
        try:
            run(["apt-get", "download", "-q", reference], cwd=directory)
        except ToolError as exc:
            raise SysextError(
                f"{label}: apt-get download {reference} failed: {exc}",
                "run `apt-get update`; for another architecture add it with "
                "`dpkg --add-architecture`; check the package version with `apt-cache policy`",
            ) from exc
        debs = sorted(directory.glob("*.deb"))
        if len(debs) != 1:
            raise SysextError(f"{label}: apt-get download {reference} left {len(debs)} files")
        deb = debs[0]
        got = sha256_of(deb)
        pinned = ctx.pinned_sha256(spec)
        if pinned and pinned != got:
            raise SysextError(
                f"{label}: {deb.name}: sha256 mismatch (expected {pinned}, got {got})",
                "the repository serves a different build; update the recipe's pin",
            )
        return Fetched(
            path=deb,
            format=spec.format or ArchiveFormat.DEB,
            origin=f"deb:{reference} ({deb.name})",
            sha256=got,
            file_name=deb.name,
        )

    def tools(self) -> dict[str, str]:
        return {"apt-get": tool_version("apt-get")}


register(DebSource())
