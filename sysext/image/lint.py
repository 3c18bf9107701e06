"""Lint an extension image the way systemd-sysext and systemd-sysupdate will treat it.

Each check cites the rule it mirrors (spec §1.1–§1.5 for sysext, §2.4 for sysupdate
versions, §7.2/§7.6 for names). Optionally, against a host's os-release, say whether
systemd-sysext there would merge the image, following spec §1.3 step by step.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sysext.core.errors import SysextError
from sysext.image.ddi import Role, VerityCheck, check_verity
from sysext.image.read import ImageContents, ImageEntry, read_files, read_image
from sysext.image.staging import is_unit_file, unit_problem
from sysext.image.xattrs import CAPABILITY, describe_capability, is_privileged
from sysext.systemd.architecture import SYSTEMD_ARCHITECTURES, Architecture
from sysext.systemd.extension_release import (
    ANY,
    bound_name_problem,
    host_compatibility,
    name_problem,
)
from sysext.systemd.os_extensions import flatcar_conflicts
from sysext.systemd.versioning import version_problem

_SCOPES = ("system", "initrd", "portable")
_OS_ID = re.compile(r"[a-z0-9._-]+")
_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
# Host files an extension has no business linking to: merged under /usr, such a link turns
# a path services trust (or serve) into a window on the host's secrets.
_SENSITIVE = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
    "/etc/sudoers.d", "/etc/ssh", "/etc/machine-id", "/root", "/var/lib/sss",
    "/etc/systemd/credstore", "/etc/credstore", "/run/credentials",
    "/var/lib/systemd/credential.secret",
)  # fmt: skip
# Symlinks every host (Flatcar, Fedora, Debian, Ubuntu: merged /usr) has outside the image,
# followed when a link's path runs through them: `/var/run/../etc/shadow` is /etc/shadow.
_HOST_LINKS = {
    "bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64",
    "var/run": "../run", "var/lock": "../run/lock",
}  # fmt: skip
_MAX_LINKS = 40  # the kernel's limit on links followed in one lookup (ELOOP)
_SENSITIVE_SET = frozenset(_SENSITIVE)
# Directories holding a secret ("/", "/etc", "/var/lib", …) → one secret below each.
_ABOVE_SECRETS = {
    "/" + "/".join(secret.split("/")[1:depth]): secret
    for secret in reversed(_SENSITIVE)
    for depth in range(1, secret.count("/") + 1)
}


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


# How checks report: add(severity, code, message).
_Add = Callable[[Severity, str, str], None]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str


@dataclass(frozen=True)
class HostVerdict:
    merges: bool
    reason: str


@dataclass(frozen=True)
class LintReport:
    image: Path
    contents: ImageContents
    release_name: str | None
    findings: tuple[Finding, ...]
    host: HostVerdict | None = None
    # A DDI whose hash tree, partition UUIDs and signed root hash agree (the signature's
    # cryptography is checked by sysext.trust.x509.verify_ddi_signature, with certificates).
    verity: VerityCheck | None = None

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def ok(self) -> bool:
        return not self.errors and (self.host is None or self.host.merges)


def lint_image(
    path: Path,
    *,
    host_os_release: Mapping[str, str] | None = None,
    host_arch: Architecture | str | None = None,
    scope: str = "system",
    contents: ImageContents | None = None,
    filename: str | None = None,
    allow_setuid: Iterable[str] = (),
    allow_xattrs: Iterable[str] = (),
) -> LintReport:
    """Check `path`; with `host_os_release`, also decide whether that host merges it.

    `filename`: the name the image is published under when `path` is a temporary file (the
    registry's uploads). `allow_setuid`: image paths that may keep a setuid/setgid bit (the
    builder's allowance); any other such file is an error. `allow_xattrs`: image paths that
    may carry security.* or trusted.* xattrs (file capabilities…); elsewhere an error.
    """
    path = Path(path)
    contents = contents or read_image(path)
    findings: list[Finding] = []
    shown = Path(filename) if filename else path

    def add(severity: Severity, code: str, message: str) -> None:
        findings.append(Finding(severity, code, message))

    name = _pick_release(shown, contents, add)
    release = contents.release_files.get(name, {}) if name else {}
    if name is not None:
        _check_release(name, release, add, scope)
        _check_file_name(shown, name, release, add)
    _check_tree(
        contents,
        release,
        add,
        frozenset(p.strip("/") for p in allow_setuid),
        frozenset(p.strip("/") for p in allow_xattrs),
    )
    _check_units(path, contents, add)
    checked = _check_ddi(path, contents, release, add) if contents.ddi is not None else None
    verdict = None
    if host_os_release is not None:
        arch = host_arch or Architecture.from_uname()
        if name is None:
            verdict = HostVerdict(False, "the image carries no release data, so it is ignored")
        elif contents.find("usr/lib/os-release"):
            verdict = HostVerdict(
                False,
                "the image contains usr/lib/os-release (252 aborts every merge, 255+ "
                "ignores the image)",
            )
        else:
            merges, reason = host_compatibility(release, host_os_release, arch=arch, scope=scope)
            verdict = HostVerdict(merges, reason)
            if merges and name is not None and host_os_release.get("ID") == "flatcar":
                shipped = frozenset(e.path.strip("/") for e in contents.entries)
                for conflict in flatcar_conflicts(name, release, shipped):
                    add(Severity.WARNING, "os-extension", conflict.message)
    return LintReport(path, contents, name, tuple(findings), verdict, checked)


def _check_ddi(
    path: Path, contents: ImageContents, release: Mapping[str, str], add: _Add
) -> VerityCheck | None:
    """A DDI is only worth its format when the kernel can verify it: the hash tree must be
    the data's, the partition UUIDs the root hash's halves, and a signature must be there
    (an unsigned root+verity image merges unprotected on systemd 254, issue 22)."""
    ddi = contents.ddi
    assert ddi is not None
    extra = [p.type_name for p in ddi.partitions if p.role is None]
    if extra:
        add(
            Severity.ERROR,
            "ddi-partitions",
            f"the disk image also holds {', '.join(extra)}: systemd-sysext uses only the root "
            "(or usr) partition and its verity partitions",
        )
    arch = release.get("ARCHITECTURE")
    part_arch = ddi.arch.systemd_name if ddi.arch is not None else None
    if arch and arch != ANY and part_arch is not None and arch != part_arch:
        add(
            Severity.ERROR,
            "ddi-arch",
            f"the root partition's type is for {part_arch}, ARCHITECTURE={arch}: hosts look "
            "for their own architecture's partition type",
        )
    if ddi.find(Role.USR) is not None:
        add(
            Severity.WARNING,
            "ddi-usr",
            "a usr-type partition: systemd-sysext before 255 merges it without verity",
        )
    try:
        checked = check_verity(path)
    except SysextError as exc:
        add(Severity.ERROR, "verity", exc.message.replace(str(path), path.name))
        return None
    if checked.signature is None:
        add(
            Severity.ERROR,
            "verity-unsigned",
            "no verity-sig partition: a host with a signed-only image policy refuses the "
            "image, and systemd 254 merges it without verity",
        )
    return checked


def _pick_release(path: Path, contents: ImageContents, add: _Add) -> str | None:
    for bad, reason in sorted(contents.release_errors.items()):
        add(Severity.ERROR, "release-unreadable", f"extension-release.{bad}: {reason}")
    names = sorted(contents.release_files)
    if not names:
        if not contents.release_errors:
            add(
                Severity.ERROR,
                "release-missing",
                "no usr/lib/extension-release.d/extension-release.NAME: systemd-sysext "
                "ignores an image without release data (spec §1.1)",
            )
        return None
    if len(names) > 1:
        add(
            Severity.WARNING,
            "release-several",
            f"{len(names)} release files ({', '.join(names)}); systemd picks the one named "
            "after the activation name, and refuses ambiguous fallbacks (spec §1.2)",
        )
    stem = _image_stem(path)
    for name in names:
        if stem == name or stem.startswith(name + "-"):
            return name
    return names[0]


def _image_stem(path: Path) -> str:
    name = path.name
    for suffix in (".sysext.raw", ".raw"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_release(name: str, release: Mapping[str, str], add: _Add, scope: str) -> None:
    problem = name_problem(name)
    if problem:
        add(Severity.ERROR, "name-invalid", problem)
    if not release:
        add(Severity.ERROR, "release-empty", f"extension-release.{name} is empty (spec §1.3)")
        return
    os_id = release.get("ID", "")
    if not os_id:
        add(
            Severity.ERROR,
            "id-missing",
            "ID= is missing: systemd-sysext rejects the image everywhere (spec §1.3 step 4); "
            "use ID=_any to match every OS",
        )
    elif os_id != ANY and not _OS_ID.fullmatch(os_id):
        add(
            Severity.WARNING, "id-invalid", f"ID={os_id} cannot equal any host's ID (os-release(5))"
        )
    arch = release.get("ARCHITECTURE")
    if arch is None:
        add(Severity.INFO, "arch-missing", "no ARCHITECTURE=: hosts of every architecture merge it")
    elif arch != ANY and arch not in SYSTEMD_ARCHITECTURES:
        hint = ""
        try:
            Architecture.parse(arch)
        except Exception as exc:  # parse explains upstream spellings (x86_64 → x86-64)
            hint = f" ({getattr(exc, 'hint', None) or exc})"
        add(
            Severity.ERROR,
            "arch-invalid",
            f"ARCHITECTURE={arch} is not a systemd architecture name; no host matches it "
            f"(spec §1.4){hint}",
        )
    if "SYSEXT_SCOPE" in release:
        scopes = release["SYSEXT_SCOPE"].split()
        if not scopes:
            add(Severity.ERROR, "scope-empty", "SYSEXT_SCOPE= is empty: never merged (spec §1.3)")
        unknown = [s for s in scopes if s not in _SCOPES]
        if unknown:
            add(Severity.WARNING, "scope-unknown", f"SYSEXT_SCOPE has unknown {' '.join(unknown)}")
        if scopes and scope not in scopes:
            # An error: /etc/extensions (where hosts and registries put images) is merged
            # on the booted system, so such an image silently disappears after an update.
            where = "on a booted system" if scope == "system" else f"in the {scope}"
            add(
                Severity.ERROR,
                "scope-no-system" if scope == "system" else "scope-mismatch",
                f"SYSEXT_SCOPE={' '.join(scopes)}: never merged {where} (spec §1.3 step 2)",
            )
    version = release.get("SYSEXT_VERSION_ID")
    if version is None:
        add(Severity.WARNING, "version-missing", "no SYSEXT_VERSION_ID=: the version is unknown")
    else:
        problem = version_problem(version)
        if problem:
            add(Severity.ERROR, "version-invalid", f"SYSEXT_VERSION_ID: {problem} (spec §2.4)")
    sysext_id = release.get("SYSEXT_ID")
    if sysext_id is not None and sysext_id != name:
        add(
            Severity.WARNING,
            "sysext-id-mismatch",
            f"SYSEXT_ID={sysext_id} differs from the release file's name {name}",
        )


def _check_file_name(path: Path, name: str, release: Mapping[str, str], add: _Add) -> None:
    stem = _image_stem(path)
    if not path.name.endswith(".raw"):
        add(
            Severity.ERROR,
            "filename-suffix",
            f"{path.name}: systemd-sysext only picks up regular files ending in .raw (spec §1.2)",
        )
        return
    if path.name.endswith(".sysext.raw"):
        add(
            Severity.WARNING,
            "filename-sysext-suffix",
            f"{path.name}: systemd 252 keeps '.sysext' in the image name and would look for "
            f"extension-release.{stem}.sysext; only 255+ strip it (spec §1.2)",
        )
    if stem == name:
        return  # the activation name itself, e.g. /etc/extensions/podman.raw
    version = release.get("SYSEXT_VERSION_ID", "")
    arch = release.get("ARCHITECTURE", "")
    arch_part = f"-{arch}" if arch and arch != ANY else ""
    expected = f"{name}-{version}{arch_part}"
    accepted = {expected}
    version_id = release.get("VERSION_ID")
    if version_id:
        # OS-version-bound images are published as NAME-VERSION-VERSIONID-ARCH.raw, for
        # `MatchPattern=NAME-@v-%w-%a.raw` (spec §2.3). The registry refuses the plain name
        # (every host would be offered the image) and names where '-' makes the binding
        # ambiguous, so validate says the same before anyone uploads.
        expected = f"{name}-{version}-{version_id}{arch_part}"
        accepted = {expected}
        problem = bound_name_problem(version, version_id) if version else None
        if problem:
            add(Severity.ERROR, "filename-bound-ambiguous", f"{path.name}: {problem}")
            return
    if not stem.startswith(name + "-"):
        add(
            Severity.ERROR,
            "filename-name",
            f"{path.name}: the release file is extension-release.{name}, so the image must be "
            f"activated as {name}.raw and published as {expected}.raw (spec §1.2)",
        )
        return
    if version and version_id and stem == f"{name}-{version}{arch_part}":
        add(
            Severity.ERROR,
            "filename-unbound",
            f"{path.name}: VERSION_ID={version_id} binds the image to one OS version, so it "
            f"is published as {expected}.raw (hosts match NAME-@v-%w-%a.raw); under this "
            "name every host would be offered it and the registry refuses it",
        )
        return
    if version and stem not in accepted:
        form = (
            "NAME-SYSEXT_VERSION_ID-VERSION_ID-ARCHITECTURE"
            if version_id
            else ("NAME-SYSEXT_VERSION_ID-ARCHITECTURE")
        )
        add(
            Severity.ERROR,
            "filename-mismatch",
            f"{path.name} does not match its release fields: expected {expected}.raw ({form})",
        )
    add(
        Severity.INFO,
        "activation",
        f"activate as /etc/extensions/{name}.raw (symlink or copy): under its versioned name "
        f"systemd would look for extension-release.{stem} instead (spec §7.6)",
    )


def _check_tree(
    contents: ImageContents,
    release: Mapping[str, str],
    add: _Add,
    allow_setuid: frozenset[str],
    allow_xattrs: frozenset[str],
) -> None:
    top = sorted({e.path.split("/", 1)[0] for e in contents.entries})
    for name in top:
        if name not in ("usr", "opt"):
            add(
                Severity.ERROR,
                "tree-toplevel",
                f"/{name} is in the image but systemd-sysext merges only /usr and /opt (spec §1.5)",
            )
    if contents.find("usr/lib/os-release"):
        add(
            Severity.ERROR,
            "tree-os-release",
            "usr/lib/os-release is in the image: systemd 252 refuses the whole merge, "
            "255+ ignores this image (spec §1.1)",
        )
    foreign = [e for e in contents.entries if e.uid != 0 or e.gid != 0]
    if foreign:
        first = foreign[0]
        add(
            Severity.ERROR,
            "tree-owner",
            f"{len(foreign)} entries are not owned by 0:0 (first: {first.path} "
            f"{first.uid}:{first.gid}); the host has no such users at merge time",
        )
    links = HostLinks(contents.entries)
    too_complex = False
    for entry in contents.entries:
        if entry.kind in ("fifo", "socket", "char-device", "block-device"):
            add(
                Severity.ERROR,
                "tree-special",
                f"{entry.path} is a {entry.kind}; extensions are mounted nodev (spec §1.5)",
            )
        elif entry.kind == "file" and entry.mode & 0o6000 and entry.path not in allow_setuid:
            add(
                Severity.ERROR,
                "tree-setuid",
                f"{entry.path} is setuid/setgid root (mode {entry.mode:04o}): every host "
                "merging it gains a privileged program; allow it explicitly "
                "(recipe `setuid`, --allow-setuid) if that is the point",
            )
        elif entry.kind == "symlink" and entry.target and not too_complex:
            try:
                exposed = links.secret_behind(entry.path)
            except LinksTooComplex:
                exposed, too_complex = None, True
                add(
                    Severity.ERROR,
                    "tree-symlink-complex",
                    f"resolving the image's links (reached {entry.path}) takes more steps than "
                    "any real image needs; an image whose links cannot be checked is refused",
                )
            if exposed is not None:
                resolved, secret = exposed
                via = "" if resolved == entry.target else f" (resolving to {resolved})"
                what = (
                    "a host secret"
                    if secret == resolved or resolved.startswith(secret + "/")
                    else f"a directory above host secrets ({secret})"
                )
                add(
                    Severity.ERROR,
                    "tree-symlink-sensitive",
                    f"{entry.path} links to {entry.target}{via}, {what}; extensions must not "
                    "expose it under /usr or /opt",
                )
        if entry.path not in allow_xattrs:
            _check_xattrs(entry, add)
    if any(e.path == "usr/sbin" for e in contents.entries):
        add(
            Severity.WARNING,
            "tree-sbin",
            "usr/sbin is a symlink to bin on Flatcar and Fedora: prefer usr/bin",
        )
    ships_units = any(
        e.kind != "dir" and e.path.startswith("usr/lib/systemd/system/") for e in contents.entries
    )
    if ships_units and release.get("EXTENSION_RELOAD_MANAGER", "").lower() not in _TRUE:
        add(
            Severity.WARNING,
            "reload-manager",
            "the image ships units but not EXTENSION_RELOAD_MANAGER=1: systemd 255+ will "
            "not daemon-reload after merge, so the units stay unknown until a reload",
        )
    if not any(e.kind != "dir" and not _is_release(e.path) for e in contents.entries):
        add(Severity.WARNING, "tree-empty", "the image holds no files besides its release data")


def _check_units(path: Path, contents: ImageContents, add: _Add) -> None:
    """The staging rule, re-checked on the built image: unit programs must exist."""

    def lookup(rel: str) -> tuple[bool, int] | None:
        entry = contents.find(rel)
        return None if entry is None else (entry.kind == "file", entry.mode)

    units = [e.path for e in contents.entries if e.kind == "file" and is_unit_file(e.path)]
    if not units:
        return
    try:
        texts = read_files(path, units, limit=1 << 20)
    except SysextError as exc:
        add(Severity.WARNING, "unit-unreadable", f"cannot check the units: {exc.message}")
        return
    for unit in units:
        problem = unit_problem(unit, texts[unit].decode("utf-8", "replace"), lookup)
        if problem:
            add(Severity.ERROR, "unit-exec-missing", problem)


def _check_xattrs(entry: ImageEntry, add: _Add) -> None:
    for name, value in entry.xattrs:
        if name == CAPABILITY:
            add(
                Severity.ERROR,
                "tree-capability",
                f"{entry.path} carries file capabilities ({describe_capability(value)}): every "
                "host merging it gains a privileged program, as with setuid; allow it "
                "explicitly (--allow-xattr) if that is the point",
            )
        elif is_privileged(name):
            add(
                Severity.ERROR,
                "tree-xattr",
                f"{entry.path} carries the xattr {name}, which the kernel or overlayfs acts on "
                "(labels, capabilities, overlay markers); allow it explicitly (--allow-xattr) "
                "if that is the point",
            )


class LinksTooComplex(Exception):
    """Resolving the image's links took more steps than any real image needs."""


class HostLinks:
    """Resolve the image's symlinks the way a host that merged the image would.

    The image's usr/ and opt/ lie over the host's, so a path resolves through the image's
    links and directories first, and through the host's well-known links (`_HOST_LINKS`)
    where the image has nothing; everything else of the host counts as a directory. Chains,
    links to directories, `..` and absolute targets all resolve, up to the kernel's 40
    links per lookup. All lookups of one image share a budget of steps (32 per link, plus a
    million): hostile images (many links with 4 KiB targets) are refused rather than
    resolved for minutes, and never waved through unresolved."""

    def __init__(self, entries: Iterable[ImageEntry]) -> None:
        self._links: dict[str, str] = {}
        self._shadowed: set[str] = set()  # host links the image replaces (itself an error)
        for entry in entries:
            if entry.kind == "symlink" and entry.target is not None:
                self._links[entry.path] = entry.target
            if entry.path in _HOST_LINKS:
                self._shadowed.add(entry.path)
        # Real links take a handful of steps each (`../lib/libfoo.so.1`: 4).
        self._budget = 1_000_000 + 32 * len(self._links)
        # Resolved directories (as their prefixes: "usr", "usr/lib", …): every link of a
        # directory starts from the same place, so it is resolved once.
        self._directories: dict[str, tuple[str, ...] | None] = {"": ()}

    def _walk(self, done: list[str], parts: Iterable[str]) -> list[str] | None:
        """Follow `parts` from the resolved prefixes `done`; None on a link loop."""
        pending = deque(parts)
        hops = _MAX_LINKS
        while pending:
            # A step costs more the longer the path built so far (it is copied), so that
            # deep walks cannot make the budget quadratic.
            self._budget -= 1 + (len(done[-1]) >> 6 if done else 0)
            if self._budget < 0:
                raise LinksTooComplex
            part = pending.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            here = f"{done[-1]}/{part}" if done else part
            target = self._links.get(here)
            if target is None and here not in self._shadowed:
                target = _HOST_LINKS.get(here)
            if target is None:
                done.append(here)
                continue
            hops -= 1
            if hops < 0:
                return None
            if target.startswith("/"):
                done = []
            pending.extendleft(reversed(target.split("/")))
        return done

    def _directory(self, path: str) -> tuple[str, ...] | None:
        if path in self._directories:
            return self._directories[path]
        parent, _, name = path.rpartition("/")
        base = self._directory(parent)
        walked = None if base is None else self._walk(list(base), [name])
        resolved = None if walked is None else tuple(walked)
        self._directories[path] = resolved
        return resolved

    def resolve(self, path: str) -> str | None:
        """The absolute host path `path` (an image path) leads to; None on a link loop."""
        parent, _, name = path.rpartition("/")
        base = self._directory(parent)
        done = None if base is None else self._walk(list(base), [name])
        if done is None:
            return None
        return "/" + done[-1] if done else "/"

    def secret_behind(self, path: str) -> tuple[str, str] | None:
        """(where the link at `path` leads, the secret) when that is a host secret, a place
        inside one, or a directory above one (`/`, `/etc`): any of them exposes it."""
        resolved = self.resolve(path)
        if resolved is None:
            return None
        above = _ABOVE_SECRETS.get(resolved)
        if above is not None:
            return resolved, above
        ancestor = resolved
        while ancestor:
            if ancestor in _SENSITIVE_SET:
                return resolved, ancestor
            ancestor = ancestor.rpartition("/")[0]
        return None


def _is_release(path: str) -> bool:
    return path.startswith("usr/lib/extension-release.d/")
