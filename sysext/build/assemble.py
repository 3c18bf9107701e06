"""Install rules: from extracted sources to the staged tree that becomes the image.

Each `[[install]]` rule copies the members of one source that match a glob (`*` within one
path segment, `**` across segments) to an image path: into a directory when `to` ends in
`/` (keeping each member's base name, and whole subtrees for matched directories), or to
exactly that path when the glob matches one member. Modes are explicit: the rule's `mode`,
else 0755 for anything executable and 0644 otherwise; setuid/setgid bits survive only for
image paths the recipe lists in `allow_setuid`. Inline `[[files]]` and `[[links]]` follow.
Two rules writing the same image path is an error, never a silent overwrite.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from sysext.build.extract import list_members
from sysext.core.errors import SysextError
from sysext.recipe.model import InstallRule, Recipe

_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID


def glob_match(pattern: str, path: str) -> bool:
    """Match a `/`-separated path against a glob whose `**` segment spans directories."""
    return _match_parts(pattern.split("/"), path.split("/"))


def _match_parts(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match_parts(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match_parts(rest, parts[1:])


class _Tree:
    """The staged tree plus a record of which rule wrote each path."""

    def __init__(self, root: Path, recipe: Recipe) -> None:
        self.root = root
        self.recipe = recipe
        self.owner: dict[str, str] = {}
        self.allow_setuid = {p.strip("/") for p in recipe.allow_setuid}

    def error(self, where: str, message: str, hint: str | None = None) -> SysextError:
        return SysextError(f"recipe {self.recipe.file_label}: {where}: {message}", hint)

    def claim(self, path: str, where: str) -> Path:
        if path in self.owner:
            raise self.error(
                where,
                f"{path} is already provided by {self.owner[path]}",
                "make the globs or targets of the rules disjoint",
            )
        self.owner[path] = where
        target = self.root / path
        parent = target.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o755)
        elif not parent.is_dir() or parent.is_symlink():
            raise self.error(where, f"cannot create {path}: a parent is not a directory")
        return target

    def mode_for(self, path: str, source_mode: int, rule_mode: int | None, where: str) -> int:
        mode = rule_mode if rule_mode is not None else (0o755 if source_mode & 0o111 else 0o644)
        special = (rule_mode if rule_mode is not None else source_mode) & _SPECIAL_BITS
        if special and path not in self.allow_setuid:
            raise self.error(
                where,
                f"{path} would be setuid/setgid",
                f'list "{path}" in the recipe\'s allow_setuid if this is intended',
            )
        return (mode & 0o777) | special

    def copy(self, src: Path, path: str, rule_mode: int | None, where: str) -> None:
        info = os.lstat(src)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(src), self.claim(path, where))
        elif stat.S_ISDIR(info.st_mode):
            directory = self.root / path
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            for child in sorted(os.listdir(src)):
                self.copy(src / child, f"{path}/{child}", rule_mode, where)
        elif stat.S_ISREG(info.st_mode):
            target = self.claim(path, where)
            shutil.copyfile(src, target)
            os.chmod(target, self.mode_for(path, info.st_mode, rule_mode, where))
        else:
            raise self.error(where, f"{src.name} is not a file, directory or symlink")


def assemble(
    recipe: Recipe,
    extracted: Mapping[str, Path],
    root: Path,
    *,
    whole_trees: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Build the staged tree in `root`; return {image path: rule that wrote it}.

    `whole_trees` names sources that arrive laid out as an image tree (apt): without an
    install rule of their own, their usr/ and opt/ are installed whole.
    """
    tree = _Tree(root, recipe)
    ruled = {rule.source for rule in recipe.install}
    for spec in recipe.sources:
        if spec.id in whole_trees and spec.id in extracted and spec.id not in ruled:
            for top in ("usr", "opt"):
                if (extracted[spec.id] / top).is_dir():
                    tree.copy(extracted[spec.id] / top, top, None, f"sources[{spec.index}]")
    members = {source_id: list(list_members(path)) for source_id, path in extracted.items()}
    for rule in recipe.install:
        if rule.source not in extracted:
            continue  # the source does not apply to this architecture
        _apply(tree, rule, extracted[rule.source], members[rule.source])
    for index, inline in enumerate(recipe.files):
        where = f"files[{index}]"
        target = tree.claim(inline.path, where)
        target.write_text(inline.content, encoding="utf-8")
        os.chmod(target, tree.mode_for(inline.path, 0, inline.mode, where))
    for index, link in enumerate(recipe.links):
        if link.optional and not _target_in_image(root, link.path, link.target):
            continue  # e.g. quadlet's generator links, for versions that ship quadlet
        os.symlink(link.target, tree.claim(link.path, f"links[{index}]"))
    # Directories created along the way get fixed modes too: the image must not depend on
    # the builder's umask.
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, 0o755)
    return tree.owner


def _target_in_image(root: Path, link_path: str, target: str) -> bool:
    """Whether a link's target names something already staged (absolute targets are image
    paths, since the image's /usr becomes the host's)."""
    if target.startswith("/"):
        resolved = os.path.normpath(target.lstrip("/"))
    else:
        resolved = os.path.normpath(os.path.join(os.path.dirname(link_path), target))
    return not resolved.startswith("..") and os.path.lexists(root / resolved)


def _excluded(rule: InstallRule, member: str) -> bool:
    base = member.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(base, pattern) for pattern in rule.exclude)


def _apply(tree: _Tree, rule: InstallRule, source_root: Path, members: list[str]) -> None:
    where = f"install[{rule.index}]"
    matched = [m for m in members if glob_match(rule.match, m) and not _excluded(rule, m)]
    # A matched directory brings its subtree; do not copy its members a second time.
    matched_dirs = [m for m in matched if (source_root / m).is_dir()]
    matched = [m for m in matched if not any(m.startswith(d + "/") for d in matched_dirs if d != m)]
    if not matched:
        if rule.optional:
            return
        shown = ", ".join(members[:8]) + (", …" if len(members) > 8 else "")
        raise tree.error(
            f"{where}.from",
            f"{rule.match!r} matched nothing in source {rule.source!r}",
            f"the source holds: {shown or '(nothing)'}",
        )
    if not rule.into_directory and len(matched) != 1:
        raise tree.error(
            f"{where}.from",
            f"{rule.match!r} matched {len(matched)} members but `to` names one file",
            "end `to` with '/' to install them into a directory",
        )
    for member in matched:
        destination = rule.to + member.rsplit("/", 1)[-1] if rule.into_directory else rule.to
        tree.copy(source_root / member, destination, rule.mode, where)
