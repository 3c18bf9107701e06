"""`kind = "apt"`: Debian packages with their dependencies, minus what the base has.

The base is the recipe's `[base]` (a named release: its default minimal install) or
`--base` (a root directory, whose dpkg database is read, or `ID:VERSION_ID`). Per build
and architecture the source works out a plan once (FetchContext.memo):

1. the archive's signed metadata (sysext.build.debian.archive: InRelease verified with the
   distribution's keys, Packages by the hash InRelease lists), or, for `--locked`, the
   lock file's entries and nothing else;
2. the closure (sysext.build.debian.resolve) of `packages` on that base;
3. the image's terms: its version (the first package's, see `image_version`), its OS
   binding (the base's ID and VERSION_ID) and X_SYSEXT_PACKAGES listing every package.

Fetching downloads each .deb by the sha256 its Packages entry (or the lock) lists, refuses
packages whose first-install maintainer scripts have effects (sysext.build.debian.scripts)
unless the recipe lists them in `skip_scripts`, and lays the packages out as one tree
(sysext.build.debian.layout). The source's identity (build key, provenance) is a digest of
the closure's package names, versions and hashes: the image is rebuilt exactly when a
package of the closure changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from sysext.build.debian.archive import (
    FAMILIES,
    SCHEME,
    ArchiveError,
    Distribution,
    PackageIndex,
    Release,
    archive_certificates,
    codename_for,
    fetch_listed,
    fetch_packages,
    fetch_release,
)
from sysext.build.debian.base import BaseError, BaseSystem, read_root
from sysext.build.debian.debfile import read_control
from sysext.build.debian.layout import place_packages
from sysext.build.debian.resolve import Closure, Wanted, minimal_install, resolve
from sysext.build.debian.scripts import FIRST_INSTALL, describe, package_effects
from sysext.build.debian.sources_list import archive_uri, machine_sources
from sysext.build.debian.version import image_version
from sysext.build.extract import ArchiveFormat
from sysext.build.lockfile import LockError
from sysext.build.sources.base import (
    FetchContext,
    Fetched,
    FetchedPart,
    ImageTerms,
    Resolved,
    register,
)
from sysext.core.download import Downloader
from sysext.core.errors import SysextError
from sysext.core.mirrors import MirrorMap
from sysext.core.steps import step
from sysext.recipe.model import LATEST

if TYPE_CHECKING:
    from sysext.recipe.model import Recipe, SourceSpec, Where

# Bump when the same closure is laid out into different bytes: it is part of the digest.
LAYOUT_REVISION = 1
PACKAGES_FIELD = "X_SYSEXT_PACKAGES"


class ScriptsError(SysextError):
    """A package's maintainer scripts do something the extension would lack."""


@dataclass(frozen=True)
class PlannedDeb:
    name: str
    version: str
    url: str  # logical archive URL, apt://debian/pool/…
    sha256: str
    size: int

    @property
    def pin(self) -> str:
        return f"{self.name}={self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def image_version_of(main: PlannedDeb, debs: tuple[PlannedDeb, ...]) -> str:
    """The image version: the first requested package's Debian version in sysupdate's
    characters (no epoch, `~` and `-` as `_`), and — when the closure holds more packages — `+c`
    and 8 hex digits naming exactly which versions of the others it holds, so that a
    dependency's update makes a new image version: `3.2.2_2+c4b1e0f3a`."""
    own = image_version(main.version)
    others = sorted(d.pin for d in debs if d.name != main.name)
    if not others:
        return own
    return f"{own}+c{hashlib.sha256(chr(10).join(others).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class AptPlan:
    distribution: Distribution
    base: BaseSystem
    debs: tuple[PlannedDeb, ...]  # the closure, sorted by name
    main: PlannedDeb
    integrity: str
    from_base: tuple[str, ...] = ()

    @property
    def version(self) -> str:
        return image_version_of(self.main, self.debs)

    @property
    def digest(self) -> str:
        document = {
            "layout": LAYOUT_REVISION,
            "packages": [[d.name, d.version, d.sha256] for d in self.debs],
        }
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def origin(self) -> str:
        return f"apt:{self.main.pin} ({len(self.debs)} packages on {self.base.label})"

    @property
    def file_name(self) -> str:
        return f"{self.main.name}_{image_version(self.main.version)}.closure"


# -- the base and its distribution -----------------------------------------------------------


def _named(text: str) -> tuple[str, str] | None:
    os_id, colon, version_id = text.partition(":")
    if colon and os_id and version_id and "/" not in text:
        return os_id, version_id
    return None


def distribution_and_base(
    recipe: Recipe, base_arg: str | None
) -> tuple[Distribution, BaseSystem | None]:
    """The release to resolve against, and the base when a root directory gives it (None:
    a named release, whose minimal install comes from its own index)."""
    label = f"recipe {recipe.file_label}"
    spec = recipe.base
    root: BaseSystem | None = None
    named = _named(base_arg) if base_arg else None
    if base_arg and named is None:
        root = read_root(Path(base_arg))
        if root.version_id is None:
            raise BaseError(
                f"--base {base_arg}: its os-release has no VERSION_ID",
                "extensions for a Debian-family base are bound to its release; use a "
                "released base (testing and unstable have none)",
            )
        os_id, version_id = root.os_id, root.version_id
    elif named is not None:
        os_id, version_id = named
    elif spec is not None:
        os_id, version_id = spec.id, spec.version_id
    else:
        raise SysextError(
            f"{label}: an apt source needs a base",
            'add [base] id = "debian", version_id = "12" to the recipe, or pass '
            "--base DIR (a root directory) or --base debian:12",
        )
    if spec is not None and spec.id != os_id:
        raise BaseError(
            f"--base {base_arg}: is {os_id} {version_id}, but {label} is for {spec.id}",
            "build it against a base of the recipe's distribution",
        )
    same_release = spec is not None and spec.version_id == version_id
    codename = (
        (spec.suite if same_release and spec is not None else None)
        or (root.codename if root is not None else None)
        or codename_for(os_id, version_id)
    )
    if codename is None:
        raise BaseError(
            f"{label}: no suite known for {os_id} {version_id}",
            'name it in the recipe: [base] suite = "…" (the release\'s codename)',
        )
    distribution = Distribution(
        id=os_id,
        version_id=version_id,
        codename=codename,
        components=spec.components if spec is not None else ("main",),
        keyring=spec.keyring if spec is not None else None,
        signing_keys=spec.signing_keys if spec is not None else (),
    )
    return distribution, root


def archive_downloader(downloader: Downloader, distribution: Distribution) -> Downloader:
    """The downloader with mirror rules for the distribution's logical archive URLs: the
    user's (SYSEXT_MIRRORS, config) first, else this machine's apt sources."""
    defaults: dict[str, str] = {}
    family = FAMILIES.get(distribution.id)
    if family is not None:
        sources = machine_sources()
        codenames = frozenset(family.codenames.values()) | {distribution.codename}
        main = archive_uri(sources, codenames, security=False)
        if main:
            defaults[f"{SCHEME}{family.id}/"] = main
        security = archive_uri(sources, codenames, security=True)
        if security and family.security_archive:
            defaults[f"{SCHEME}{family.id}-security/"] = security
    mirrors = downloader.mirrors.merged_over(MirrorMap(defaults))
    for suite in distribution.suites:
        if mirrors.rewrite(suite.archive).startswith(SCHEME):
            raise ArchiveError(
                f"no mirror for {suite.archive}: this machine's apt sources list no "
                f"{distribution.id} archive for it",
                f"map it to one: SYSEXT_MIRRORS='{suite.archive}=http://MIRROR/PATH/' (or "
                "the [mirrors] table of the config file)",
            )
    return dataclasses.replace(downloader, mirrors=mirrors)


def archive_index(
    downloader: Downloader, distribution: Distribution, arch: str
) -> tuple[PackageIndex, list[Release]]:
    """Every suite's verified Packages for `arch`, merged into one index."""
    certs = archive_certificates(distribution)
    keyring = str(distribution.keyring_path())
    index = PackageIndex(arch)
    releases = []
    for suite in distribution.suites:
        with step(f"Verifying {suite.name}/InRelease"):
            release = fetch_release(downloader, suite, certs, keyring_label=keyring)
        releases.append(release)
        for component in distribution.components:
            index.add(fetch_packages(downloader, release, component, arch))
    return index, releases


def _planned(package_url: str, name: str, version: str, sha256: str, size: int) -> PlannedDeb:
    return PlannedDeb(name, version, package_url, sha256, size)


def plan_closure(
    recipe: Recipe,
    spec: SourceSpec,
    downloader: Downloader,
    *,
    arch: str,
    requested: str,
    base_arg: str | None,
) -> AptPlan:
    """Resolve the source's packages against the archive (see the module docstring)."""
    distribution, root = distribution_and_base(recipe, base_arg)
    if root is not None and root.arch is not None and root.arch != arch:
        raise BaseError(
            f"--base {base_arg}: is a {root.arch} system, not {arch}",
            "build for the base's architecture (--arch)",
        )
    index, releases = archive_index(
        archive_downloader(downloader, distribution), distribution, arch
    )
    base = root
    if base is None:
        with step(f"Working out the minimal install of {distribution.label}"):
            base = minimal_install(
                index,
                f"{distribution.id} {distribution.version_id} (minimal install)",
                distribution.id,
                distribution.version_id,
                distribution.codename,
            )
    wanted = [
        Wanted(name, requested if i == 0 and requested != LATEST else None)
        for i, name in enumerate(spec.packages)
    ]
    closure: Closure = resolve(wanted, index, base)
    debs = tuple(_planned(p.url, p.name, p.version, p.sha256, p.size) for p in closure.packages)
    signers = sorted({r.signer for r in releases})
    return AptPlan(
        distribution=distribution,
        base=base,
        debs=debs,
        main=next(d for d in debs if d.name == spec.packages[0]),
        integrity="apt-archive:" + ",".join(signers),
        from_base=closure.from_base,
    )


def locked_plan(recipe: Recipe, spec: SourceSpec, ctx: FetchContext) -> AptPlan:
    """The closure a lock file recorded, without looking at the archive."""
    assert ctx.lock is not None
    lock = ctx.lock
    arch = ctx.arch.systemd_name
    versions = sorted(
        {e.version for e in lock.entries if e.arch == arch and e.source.startswith(spec.id + "/")}
    )
    version = ctx.version
    if version == LATEST:
        if len(versions) != 1:
            raise LockError(
                f"{lock.path.name}: "
                + (
                    f"holds {len(versions)} versions of {recipe.name} for {arch} "
                    f"({', '.join(versions)})"
                    if versions
                    else f"no entry for {recipe.name} {arch} source {spec.id!r}"
                ),
                f"pick one with --version, or record one: sysext lock {recipe.name} --arch {arch}",
            )
        version = versions[0]
    elif version not in versions:
        main_source = f"{spec.id}/{spec.packages[0]}"
        matches = [
            e.version
            for e in lock.entries
            if e.arch == arch
            and e.source == main_source
            and version in (e.package.partition("=")[2], image_version(e.package.partition("=")[2]))
        ]
        if len(set(matches)) != 1:
            raise LockError(
                f"{lock.path.name}: no entry for {recipe.name} {version} {arch} source "
                f"{spec.id!r}; --locked builds use only locked files",
                f"record it: sysext lock {recipe.name} --version {version} --arch {arch}",
            )
        version = matches[0]
    debs = []
    for entry in lock.parts(version, arch, spec.id):
        name, _, package_version = entry.package.partition("=")
        if not package_version:
            raise LockError(f"{lock.path.name}: entry {entry.source} names no package version")
        debs.append(_planned(entry.url, name, package_version, entry.sha256, entry.size))
    debs.sort(key=lambda d: d.name)
    distribution, root = distribution_and_base(recipe, ctx.base)
    base = root or BaseSystem(
        f"{distribution.id} {distribution.version_id} (as locked)",
        distribution.id,
        distribution.version_id,
        distribution.codename,
        None,
        {},
    )
    main = next((d for d in debs if d.name == spec.packages[0]), None)
    if main is None:
        raise LockError(f"{lock.path.name}: no entry for {spec.packages[0]} in {version} {arch}")
    plan = AptPlan(distribution, base, tuple(debs), main, "lock")
    if plan.version != version:
        raise LockError(
            f"{lock.path.name}: the entries of {recipe.name} {version} {arch} make version "
            f"{plan.version}; the lock was edited",
            f"re-record it: sysext lock {recipe.name} --arch {arch}",
        )
    return plan


# -- the kind --------------------------------------------------------------------------------


class AptSource:
    name = "apt"

    def check(self, spec: SourceSpec, where: Where) -> None:
        if not spec.packages:
            raise (where / "packages").error('missing (Debian package names, e.g. ["htop"])')

    def plan(self, spec: SourceSpec, ctx: FetchContext) -> AptPlan:
        key = ("apt", spec.id)
        found = ctx.memo.get(key)
        if isinstance(found, AptPlan):
            return found
        if ctx.lock is not None:
            plan = locked_plan(ctx.recipe, spec, ctx)
        else:
            with step(f"Resolving {', '.join(spec.packages)} for {ctx.arch.systemd_name}"):
                plan = plan_closure(
                    ctx.recipe,
                    spec,
                    ctx.downloader,
                    arch=ctx.arch.debian_name,
                    requested=ctx.version,
                    base_arg=ctx.base,
                )
        ctx.memo[key] = plan
        return plan

    def terms(self, spec: SourceSpec, ctx: FetchContext) -> ImageTerms:
        plan = self.plan(spec, ctx)
        return ImageTerms(
            version=plan.version,
            upstream_version=plan.main.version,
            os_id=plan.distribution.id,
            os_version_id=plan.distribution.version_id,
            fields={PACKAGES_FIELD: " ".join(d.pin for d in plan.debs)},
        )

    def resolve(self, spec: SourceSpec, ctx: FetchContext) -> Resolved:
        plan = self.plan(spec, ctx)
        return Resolved(plan.origin, plan.digest, plan.file_name)

    def fetch(self, spec: SourceSpec, ctx: FetchContext) -> Fetched:
        plan = self.plan(spec, ctx)
        downloader = archive_downloader(ctx.downloader, plan.distribution)
        debs: list[tuple[PlannedDeb, Path]] = []
        for deb in plan.debs:
            lister = "the lock" if ctx.lock is not None else "the Packages index"
            path = fetch_listed(downloader, deb.url, deb.sha256, label=deb.file_name, lister=lister)
            debs.append((deb, path))
        for deb, path in debs:
            control = read_control(path, deb.file_name)
            if (control.fields.get("Package"), control.fields.get("Version")) != (
                deb.name,
                deb.version,
            ):
                raise ArchiveError(f"{deb.file_name}: its control file is not {deb.label}")
            scripts = {n: t for n in FIRST_INSTALL if (t := control.text(n)) is not None}
            effects = package_effects(scripts)
            if effects and deb.name not in spec.skip_scripts:
                raise ScriptsError(
                    f"{deb.label}: {describe(effects)}; sysext never runs maintainer scripts",
                    f'if {deb.name} works without that, add "{deb.name}" to the source\'s '
                    "skip_scripts (and ship what it needs, as recipes/tcpdump.toml does); see "
                    "recipes/README.md",
                )
        tree = ctx.work_dir / f"apt-{spec.id}"
        with step(f"Laying out {len(debs)} packages"):
            place_packages(
                [(deb.label, path) for deb, path in debs],
                tree,
                plan.base,
                name=ctx.recipe.name,
                work=ctx.work_dir / "apt-scratch",
                allow_setuid=spec.allow_setuid,
            )
        return Fetched(
            path=tree,
            format=ArchiveFormat.DIRECTORY,
            origin=plan.origin,
            sha256=plan.digest,
            file_name=plan.file_name,
            integrity=plan.integrity,
            parts=tuple(FetchedPart(d.name, d.url, d.sha256, d.size, d.pin) for d in plan.debs),
        )

    def tools(self) -> dict[str, str]:
        return {"python-requests": requests.__version__, "pysequoia": _pysequoia_version()}


def _pysequoia_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pysequoia")
    except PackageNotFoundError:
        return "unknown"


def archive_versions(
    recipe: Recipe, downloader: Downloader, *, arch: str, base_arg: str | None
) -> list[tuple[str, list[tuple[str, str]]]]:
    """For each package of the recipe's apt source: (version, suite) pairs, newest first."""
    spec = recipe.package_source
    assert spec is not None
    distribution, _ = distribution_and_base(recipe, base_arg)
    index, _releases = archive_index(
        archive_downloader(downloader, distribution), distribution, arch
    )
    found = []
    for name in spec.packages:
        pairs = []
        for package in index.versions(name):
            suite = package.suite.name if package.suite is not None else "?"
            if (package.version, suite) not in pairs:
                pairs.append((package.version, suite))
        found.append((name, pairs))
    return found


register(AptSource())

__all__ = ["AptPlan", "AptSource", "PlannedDeb", "archive_versions", "image_version_of"]
