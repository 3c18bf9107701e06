"""The dependency closure of the requested packages, minus what the base has.

Rules (apt's, for one architecture, with `--no-install-recommends`):

- `Depends:` and `Pre-Depends:` are followed; `Recommends:` and `Suggests:` are not.
- A clause (`a (>= 1) | b`) is satisfied when the base or the closure already has one of
  its alternatives at a fitting version, real or through `Provides:` (versioned provides
  count for versioned relations). Otherwise its first alternative that the archive can
  satisfy is added: the newest version of a real package (in the suite and its -updates
  and -security pockets) that meets the relation and whose own relations to base packages
  the base meets (`perl (= V)` needs `perl-base (= V)`: with an older perl-base in the
  base, an older perl is taken), else the only provider of a virtual package.
- A package the base has is never replaced: a relation the base's version does not meet
  is an error (a newer base is needed), as is a package that `Conflicts:`/`Breaks:` a base
  package or is broken by one, and a package that declares `Replaces:` on a base package
  (it would overwrite the base's files, Debian policy §7.6).
- Architecture qualifiers (`perl:any`) are satisfied by the one architecture built for.

Pure: the index and the base come in, the closure or one error line goes out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sysext.build.debian.archive import Package, PackageIndex
from sysext.build.debian.base import MINIMAL_PRIORITIES, BaseSystem
from sysext.build.debian.control import Clause, Relation
from sysext.build.debian.version import satisfies
from sysext.core.errors import SysextError


class ResolveError(SysextError):
    """The requested packages cannot be installed on this base."""


@dataclass(frozen=True)
class Wanted:
    name: str
    version: str | None = None  # exact, in Debian spelling or as an image version


@dataclass(frozen=True)
class Closure:
    requested: tuple[str, ...]
    packages: tuple[Package, ...]  # sorted by name: everything the extension ships
    from_base: tuple[str, ...]  # base packages the closure relies on, sorted

    @property
    def main(self) -> Package:
        return next(p for p in self.packages if p.name == self.requested[0])

    def find(self, name: str) -> Package | None:
        return next((p for p in self.packages if p.name == name), None)


def _clause_text(clause: Clause) -> str:
    return " | ".join(str(r) for r in clause)


class _Resolver:
    def __init__(self, index: PackageIndex, base: BaseSystem, *, lenient: bool) -> None:
        self.index = index
        self.base = base
        self.lenient = lenient  # several providers of a virtual package: take the first
        self.chosen: dict[str, Package] = {}
        self.needed_by: dict[str, str] = {}
        self.used_from_base: set[str] = set()

    # -- is a relation met already? ------------------------------------------------------

    def _met_by(self, relation: Relation, packages: Mapping[str, Package]) -> str | None:
        package = packages.get(relation.name)
        if package is not None and satisfies(package.version, relation.op, relation.version):
            return package.name
        for candidate in packages.values():
            for provided in candidate.provides:
                if provided.name != relation.name:
                    continue
                if relation.op is None or (
                    provided.version is not None
                    and satisfies(provided.version, relation.op, relation.version)
                ):
                    return candidate.name
        return None

    def _met(self, clause: Clause) -> bool:
        for relation in clause:
            if self._met_by(relation, self.chosen) is not None:
                return True
            owner = self._met_by(relation, self.base.packages)
            if owner is not None:
                self.used_from_base.add(owner)
                return True
        return False

    # -- choosing ------------------------------------------------------------------------

    def _misfit(self, package: Package) -> str | None:
        """Why `package` needs another version of a base package than the base has (its
        own relations to base packages, e.g. perl's `perl-base (= V)`), or None."""
        for clause in package.depends:
            if any(r.name not in self.base.packages for r in clause):
                continue  # something else may satisfy it; the queue will tell
            if not any(
                satisfies(self.base.packages[r.name].version, r.op, r.version) for r in clause
            ):
                installed = self.base.packages[clause[0].name]
                return (
                    f"{package.label} needs {_clause_text(clause)} ({installed.label} in the base)"
                )
        return None

    def fitting(self, name: str, relation: Relation | None = None) -> tuple[Package | None, str]:
        """The newest version of `name` meeting `relation` whose own relations to base
        packages the base meets (a fixed base is never upgraded), or None and why not."""
        versions = self.index.versions(name)
        meeting = [
            p
            for p in versions
            if relation is None or satisfies(p.version, relation.op, relation.version)
        ]
        if not meeting:
            shown = ", ".join(p.version for p in versions[:4])
            return None, f"the archive has {name} {shown}, none of which meets {relation}"
        misfits = []
        for package in meeting:
            why = self._misfit(package)
            if why is None:
                return package, ""
            misfits.append(why)
        return None, f"{misfits[0]}, and a base package is never replaced"

    def _choose(self, relation: Relation) -> tuple[Package | None, str]:
        """A package of the archive for `relation`, or None and why not."""
        installed = self.base.packages.get(relation.name)
        if installed is not None:
            return None, (
                f"{self.base.label} has {relation.name} {installed.version}, which does not "
                f"meet {relation}, and a base package is never replaced"
            )
        chosen = self.chosen.get(relation.name)
        if chosen is not None:
            return None, f"the closure has {chosen.label} already, which does not meet {relation}"
        if self.index.versions(relation.name):
            return self.fitting(relation.name, relation)
        providers = [
            (package, provided)
            for package, provided in self.index.providers(relation.name)
            if relation.op is None
            or (
                provided.version is not None
                and satisfies(provided.version, relation.op, relation.version)
            )
        ]
        if not providers:
            return None, f"the archive has no package {relation.name}"
        names = sorted({p.name for p, _ in providers})
        if len(names) > 1 and not self.lenient:
            return None, (
                f"{relation.name} is a virtual package provided by {', '.join(names)}; "
                "add the one you want to `packages`"
            )
        return next(p for p, _ in providers if p.name == names[0]), ""

    def add(self, package: Package, by: str) -> None:
        self.chosen[package.name] = package
        self.needed_by[package.name] = by

    def run(self, wanted: Sequence[Wanted]) -> None:
        queue: list[tuple[Clause, str]] = []
        for item in wanted:
            installed = self.base.packages.get(item.name)
            if installed is not None:
                raise ResolveError(
                    f"{item.name} is installed in {self.base.label} already "
                    f"({installed.version}); an extension never replaces a base package",
                    "drop it from `packages`",
                )
            if item.version:
                package = self.index.exact(item.name, item.version)
                why = package and self._misfit(package)
                if package is not None and why:
                    raise ResolveError(
                        f"{why}, and a base package is never replaced",
                        "use a version of the package that fits this base, or a newer base",
                    )
            else:
                package, why = self.fitting(item.name)
                if package is None and self.index.versions(item.name):
                    raise ResolveError(
                        why, "use a version of the package that fits this base, or a newer base"
                    )
            if package is None:
                known = [p.version for p in self.index.versions(item.name)]
                if not known and self.index.providers(item.name):
                    raise ResolveError(
                        f"{item.name} is a virtual package; name a package that provides it",
                        "providers: "
                        + ", ".join(sorted({p.name for p, _ in self.index.providers(item.name)})),
                    )
                raise ResolveError(
                    f"the archive has no {item.name}"
                    + (f" {item.version}" if item.version else ""),
                    f"versions there: {', '.join(known)}"
                    if known
                    else "check the name (and the base's components)",
                )
            self.add(package, "requested")
            queue += [(clause, package.name) for clause in package.depends]
        while queue:
            clause, by = queue.pop(0)
            if self._met(clause):
                continue
            reasons = []
            for relation in clause:
                package, why = self._choose(relation)
                if package is not None:
                    self.add(package, by)
                    queue += [(c, package.name) for c in package.depends]
                    break
                reasons.append(why)
            else:
                raise ResolveError(
                    f"{by} depends on {_clause_text(clause)}: {'; '.join(reasons)}",
                    "use a base that has it, or a version of the package that fits this base",
                )

    def check_against_base(self) -> None:
        """Refuse what would break or overwrite the base (see the module docstring)."""
        for package in self.chosen.values():
            for field in ("Conflicts", "Breaks", "Replaces"):
                for clause in package.relations(field):
                    for relation in clause:
                        owner = self._met_by(relation, self.base.packages)
                        if owner is None or owner == package.name:
                            continue
                        what = (
                            "would overwrite files of"
                            if field == "Replaces"
                            else f"{field.lower()} with"
                        )
                        raise ResolveError(
                            f"{package.label} {what} base package {owner} ({field}: {relation})",
                            "an extension must not change the base; use a base without "
                            f"{owner}, or another package",
                        )
        for installed in self.base.packages.values():
            for field in ("Conflicts", "Breaks"):
                for clause in installed.relations(field):
                    for relation in clause:
                        owner = self._met_by(relation, self.chosen)
                        if owner is not None and owner != installed.name:
                            raise ResolveError(
                                f"base package {installed.label} {field.lower()} with "
                                f"{self.chosen[owner].label} ({field}: {relation})",
                                "the base declares it cannot coexist with that package",
                            )


def resolve(wanted: Sequence[Wanted], index: PackageIndex, base: BaseSystem) -> Closure:
    """The packages to add to `base` so that every wanted package is installable."""
    if not wanted:
        raise ResolveError("no packages requested")
    resolver = _Resolver(index, base, lenient=False)
    resolver.run(wanted)
    resolver.check_against_base()
    return Closure(
        requested=tuple(w.name for w in wanted),
        packages=tuple(sorted(resolver.chosen.values(), key=lambda p: p.name)),
        from_base=tuple(sorted(resolver.used_from_base)),
    )


def minimal_install(
    index: PackageIndex, base_label: str, os_id: str, version_id: str, codename: str
) -> BaseSystem:
    """A named release's default minimal install (see sysext.build.debian.base): every
    package of Priority required or important, and what they depend on."""
    wanted = sorted(
        name
        for name, packages in index.by_name.items()
        if (candidate := index.candidate(name)) is not None
        and candidate.priority in MINIMAL_PRIORITIES
        and packages
    )
    empty = BaseSystem(base_label, os_id, version_id, codename, index.arch, {})
    resolver = _Resolver(index, empty, lenient=True)
    resolver.run([Wanted(name) for name in wanted])
    return BaseSystem(
        label=base_label,
        os_id=os_id,
        version_id=version_id,
        codename=codename,
        arch=index.arch,
        packages=dict(resolver.chosen),
        files=None,
    )
