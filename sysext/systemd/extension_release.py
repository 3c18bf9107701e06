"""The extension-release file: what it says, how it is named, and whether a host merges it.

Written to `usr/lib/extension-release.d/extension-release.NAME` (spec §1.1), NAME being the
*activation* name (`/etc/extensions/NAME.raw`), not the versioned file name (§1.2): hosts
link the stable name to the downloaded `NAME-VERSION-ARCH.raw`, and systemd looks up the
release file by the name of the path it was given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sysext.core.errors import SysextError
from sysext.systemd.architecture import SYSTEMD_ARCHITECTURES, Architecture
from sysext.systemd.osrelease import format_os_release
from sysext.systemd.versioning import version_problem

RELEASE_DIR = "usr/lib/extension-release.d"
ANY = "_any"
# Extension names: the ONE rule `pack`, `build`, lint, `publish` and the registry share. A
# name is a file name (NAME.raw, extension-release.NAME), a URL path segment, a sysupdate
# pattern literal and component (`-C NAME`, /etc/sysupdate.NAME.d) and part of systemd unit
# names (sysext-update-NAME.timer), so it keeps to the characters valid in all of them:
# unit names allow only [A-Za-z0-9:_.\\-] (systemd.unit(5)), hence no '+'. `-` is allowed
# (docker-compose); never a leading `.` (`.#` marks temporaries, spec §1.7) or `..`.
NAME_MAX = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# os-release(5): ID and SYSEXT_LEVEL are lower-case letters, digits, '.', '_', '-'.
_OS_ID = re.compile(r"[a-z0-9._-]+")
_LEVEL = re.compile(r"[a-z0-9._-]+")
_SCOPES = ("system", "initrd", "portable")
# The fields ExtensionRelease manages itself; `extra` must not override them.
MANAGED_KEYS = frozenset(
    {"ID", "SYSEXT_LEVEL", "VERSION_ID", "ARCHITECTURE", "SYSEXT_ID", "SYSEXT_VERSION_ID",
     "SYSEXT_SCOPE", "EXTENSION_RELOAD_MANAGER"}
)  # fmt: skip


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an extension's name, or None (the rule shared by every command)."""
    if not name:
        return "the extension name is empty"
    if "/" in name:
        return f"extension name {name!r} contains '/'"
    if name.endswith(".raw"):
        return f"extension name {name!r} ends in .raw (systemd strips it from the file name)"
    if len(name) > NAME_MAX:
        return f"extension name {name[:20]!r}… is {len(name)} characters, more than {NAME_MAX}"
    if not _NAME.fullmatch(name) or ".." in name:
        return (
            f"invalid extension name {name!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (no '..'; '+' cannot appear in the systemd unit "
            "names that update it)"
        )
    return None


# Linux file names (NAME_MAX) and systemd's filename_is_valid() stop at 255 bytes; an
# image name beyond it can be neither linked into /etc/extensions nor listed in SHA256SUMS.
MAX_FILENAME_BYTES = 255


def image_filename_problem(filename: str) -> str | None:
    """Why `filename` cannot be an image file name on hosts (and in a registry), or None.

    One rule for `sysext pack`/`build` and the registry's uploads, so that what the builder
    writes is what the registry can serve.
    """
    size = len(filename.encode())
    if size > MAX_FILENAME_BYTES:
        return (
            f"image file name {filename[:40]}… is {size} bytes; file names (and SHA256SUMS "
            f"entries) hold at most {MAX_FILENAME_BYTES}"
        )
    return None


# What to do when an OS binding cannot be named unambiguously (bound_name_problem).
BOUND_NAME_HINT = (
    "OS-bound images need a version and a VERSION_ID without '-' (e.g. 9.0.1 or 9.0+1); "
    "for hosts whose VERSION_ID has a '-', bind by SYSEXT_LEVEL or build for any OS"
)


def bound_version_id_problem(version_id: str) -> str | None:
    """Why no OS-bound image name can carry `version_id` unambiguously, or None."""
    if "-" in version_id:
        head, _, tail = version_id.rpartition("-")
        return (
            f"VERSION_ID {version_id} contains '-': the OS-bound name "
            f"NAME-VERSION-{version_id}-ARCH.raw would also be version VERSION-{head} "
            f"for hosts with VERSION_ID={tail}"
        )
    return None


def bound_name_problem(version: str, version_id: str) -> str | None:
    """Why NAME-VERSION-VERSIONID-ARCH.raw would mean two things, or None (issue 19, finding 6).

    Hosts find OS-bound images with `MatchPattern=NAME-@v-%w-%a.raw`; sysupdate's `@v`
    takes everything up to the *first* `-VERSIONID-ARCH.raw` and never backtracks (spec
    §2.3), and '-' is valid in both parts. So `kmod-9.0-3815-2-x86-64.raw` is 9.0 for
    VERSION_ID=3815-2 and 9.0-3815 for VERSION_ID=2: both hosts would download it, and
    one of them cannot merge it. With no '-' in either part, the field before ARCH is
    the VERSION_ID for the registry, the resolver and every host's pattern alike, so
    `pack`/`build --os-version-id`, the registry's uploads and its Butane all refuse
    anything else (one rule).
    """
    problem = bound_version_id_problem(version_id)
    if problem:
        return problem
    if "-" in version:
        head, _, tail = version.partition("-")
        return (
            f"version {version} contains '-': the OS-bound name "
            f"NAME-{version}-{version_id}-ARCH.raw would also be version {head} for hosts "
            f"with VERSION_ID={tail}-{version_id}"
        )
    return None


def release_file_path(name: str) -> str:
    """Image path of the release file for activation name `name` (spec §1.1)."""
    return f"{RELEASE_DIR}/extension-release.{name}"


@dataclass(frozen=True)
class ExtensionRelease:
    """The fields of one extension-release file.

    `scope` defaults to ("system", "portable"): exactly systemd's default for an absent
    SYSEXT_SCOPE (spec §1.3), but written out so that `inspect` shows it. Extensions carry
    services for the booted system; merging them into the initrd would start those too
    early, so initrd is opt-in.
    """

    name: str
    version: str
    arch: Architecture | None
    os_id: str = ANY
    sysext_level: str | None = None
    version_id: str | None = None
    scope: tuple[str, ...] = ("system", "portable")
    reload_manager: bool = False
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        problem = name_problem(self.name)
        if problem:
            raise SysextError(problem, "pick a plain name such as 'podman' or 'docker-compose'")
        problem = version_problem(self.version)
        if problem:
            raise SysextError(
                problem,
                "systemd-sysupdate could never match this version; replace '~'/'^' with "
                "'-' or '.', e.g. 1.0-rc1",
            )
        if self.os_id != ANY and not _OS_ID.fullmatch(self.os_id):
            raise SysextError(
                f"os ID {self.os_id!r} is not valid (os-release ID: lower-case letters, "
                "digits, '.', '_', '-')",
                "use the host's ID= value exactly, e.g. flatcar, fedora, debian, or _any",
            )
        if self.sysext_level is not None and not _LEVEL.fullmatch(self.sysext_level):
            raise SysextError(
                f"SYSEXT_LEVEL {self.sysext_level!r} is not valid",
                "use the host's SYSEXT_LEVEL= value exactly, e.g. 1.0",
            )
        if self.version_id is not None:
            self._check_version_id(self.version_id)
        problem = image_filename_problem(self.image_filename)
        if problem:
            raise SysextError(problem, "use a shorter version (or extension name)")
        if self.os_id == ANY and (self.sysext_level or self.version_id):
            raise SysextError(
                "SYSEXT_LEVEL/VERSION_ID have no effect with ID=_any (spec §1.3 step 5)",
                "name the OS: --os flatcar:1.0",
            )
        if not self.scope or any(s not in _SCOPES for s in self.scope):
            raise SysextError(
                f"SYSEXT_SCOPE {' '.join(self.scope)!r} is not valid",
                f"use one or more of: {', '.join(_SCOPES)}",
            )
        for key, value in self.extra.items():
            if key in MANAGED_KEYS:
                raise SysextError(
                    f"extension-release field {key} is set by sysext itself",
                    "use the dedicated option (--os, --arch, the recipe's version) instead",
                )
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
                raise SysextError(
                    f"extension-release field name {key!r} is not valid",
                    "field names are upper-case letters, digits and '_'",
                )
            if "\n" in value:
                raise SysextError(f"extension-release field {key} contains a newline")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def _check_version_id(self, version_id: str) -> None:
        # The VERSION_ID becomes part of the file name (NAME-VERSION-VERSIONID-ARCH.raw)
        # that sysupdate matches with `%w` (spec §2.3), so it must be valid there too.
        problem = version_problem(version_id)
        if problem:
            raise SysextError(
                f"--os-version-id: {problem}",
                "use the host's VERSION_ID= exactly, e.g. 3815.2.0",
            )
        if self.os_id == ANY:
            # ID=_any is accepted before VERSION_ID is ever looked at (spec §1.3 step 5).
            raise SysextError(
                "--os-version-id has no effect with ID=_any (spec §1.3 step 5)",
                f"name the OS: --os flatcar --os-version-id {version_id}",
            )
        if self.sysext_level is not None:
            # With a SYSEXT_LEVEL on both sides, systemd compares levels and ignores the
            # image's VERSION_ID (spec §1.3 step 8): binding to it would bind nothing.
            raise SysextError(
                f"--os-version-id has no effect with SYSEXT_LEVEL={self.sysext_level} "
                "(spec §1.3 step 8)",
                f"drop the level: --os {self.os_id} --os-version-id {version_id}",
            )
        problem = bound_name_problem(self.version, version_id)
        if problem:
            raise SysextError(problem, BOUND_NAME_HINT)

    @property
    def release_path(self) -> str:
        return release_file_path(self.name)

    @property
    def image_stem(self) -> str:
        """`NAME-VERSION-ARCH` (or `NAME-VERSION` for architecture-independent images).

        An OS-version-bound image (VERSION_ID set) is `NAME-VERSION-VERSIONID-ARCH`: hosts
        find it with `MatchPattern=NAME-@v-%w-%a.raw`, `%w` being their own VERSION_ID.
        """
        stem = f"{self.name}-{self.version}"
        if self.version_id is not None:
            stem += f"-{self.version_id}"
        if self.arch is None:
            return stem
        return f"{stem}-{self.arch.systemd_name}"

    @property
    def image_filename(self) -> str:
        return f"{self.image_stem}.raw"

    def fields(self) -> dict[str, str]:
        out: dict[str, str] = {"ID": self.os_id}
        if self.sysext_level:
            out["SYSEXT_LEVEL"] = self.sysext_level
        if self.version_id:
            out["VERSION_ID"] = self.version_id
        if self.arch is not None:
            out["ARCHITECTURE"] = self.arch.systemd_name
        out["SYSEXT_ID"] = self.name
        out["SYSEXT_VERSION_ID"] = self.version
        out["SYSEXT_SCOPE"] = " ".join(self.scope)
        if self.reload_manager:
            out["EXTENSION_RELOAD_MANAGER"] = "1"
        out.update(self.extra)
        return out

    def render(self) -> str:
        return format_os_release(self.fields())

    @staticmethod
    def parse_os_spec(spec: str) -> tuple[str, str | None]:
        """`flatcar:1.0` → ("flatcar", "1.0"); `fedora` → ("fedora", None); `_any`."""
        os_id, sep, level = spec.partition(":")
        if not os_id or (sep and not level):
            raise SysextError(
                f"--os {spec!r} is not ID or ID:SYSEXT_LEVEL",
                "e.g. --os flatcar:1.0, --os fedora, or --os _any",
            )
        return os_id, (level or None)


# OS IDs whose os-release carries no SYSEXT_LEVEL: systemd-sysext then compares the image's
# VERSION_ID with the host's, and an image with neither field is refused (spec §1.3 step 8).
# Fedora CoreOS 42 is such a host (fedora-sysexts builds with VERSION_ID, `-%w-` in names).
VERSION_ID_BOUND_OS = frozenset({"fedora"})


def check_os_binding(os_id: str, level: str | None, version_id: str | None) -> None:
    """Refuse a binding the named OS can never merge (one line, with the form that does)."""
    if os_id not in VERSION_ID_BOUND_OS:
        return
    example = f"--os {os_id} --os-version-id 42"
    if level is not None:
        raise SysextError(
            f"--os {os_id}:{level}: {os_id} hosts have no SYSEXT_LEVEL in os-release, so "
            "systemd-sysext refuses an image bound by level there",
            f"bind to the host's VERSION_ID instead: {example}",
        )
    if version_id is None:
        raise SysextError(
            f"--os {os_id} needs --os-version-id: without SYSEXT_LEVEL on the host, "
            "systemd-sysext merges only an image with the host's VERSION_ID",
            f"e.g. {example} (or --os _any for every OS)",
        )


# --- host compatibility (spec §1.3) -------------------------------------------------------


def host_compatibility(
    release: Mapping[str, str],
    host: Mapping[str, str],
    *,
    arch: Architecture | str,
    scope: str = "system",
) -> tuple[bool, str]:
    """Would systemd-sysext (252–256) merge an image with `release` on `host`? And why.

    The steps run in extension_release_validate()'s order; the first failing one decides,
    and the reason names it.
    """
    host_arch = arch.systemd_name if isinstance(arch, Architecture) else arch
    if not host.get("ID"):
        return False, "host os-release has no ID= (systemd-sysext refuses to run)"
    if not release:
        return False, "step 1: the extension-release file is empty"
    # Step 2: scope. An absent key means "system portable"; an empty one means nothing.
    scopes = (
        release["SYSEXT_SCOPE"].split() if "SYSEXT_SCOPE" in release else ["system", "portable"]
    )
    if scope not in scopes:
        shown = " ".join(scopes) if scopes else "(empty)"
        default = "" if "SYSEXT_SCOPE" in release else " by default (no SYSEXT_SCOPE=)"
        return False, f"step 2 (scope): the image is for {shown}{default}, not {scope}"
    # Step 3: architecture, before ID, so it applies to ID=_any too.
    image_arch = release.get("ARCHITECTURE", "")
    if image_arch and image_arch != ANY and image_arch != host_arch:
        extra = ""
        if image_arch not in SYSTEMD_ARCHITECTURES:
            extra = " (not a systemd architecture name; systemd spells them like x86-64)"
        return False, (
            f"step 3 (architecture): ARCHITECTURE={image_arch} does not equal the host's "
            f"{host_arch}{extra}"
        )
    # Step 4–5: ID.
    image_id = release.get("ID", "")
    if not image_id:
        return False, "step 4 (ID): the image has no ID= (use ID=_any to match every OS)"
    if image_id == ANY:
        return True, "ID=_any matches every host"
    # Step 6: exact ID match (ID_LIKE only counts from systemd 258 on).
    if image_id != host["ID"]:
        return False, f"step 6 (ID): ID={image_id} does not equal the host's ID={host['ID']}"
    host_level = host.get("SYSEXT_LEVEL", "")
    host_version = host.get("VERSION_ID", "")
    # Step 7: rolling hosts have neither VERSION_ID nor SYSEXT_LEVEL.
    if not host_level and not host_version:
        return True, f"ID={image_id} matches a host without VERSION_ID/SYSEXT_LEVEL"
    # Step 8: level wins over VERSION_ID when both sides have one; string equality only.
    image_level = release.get("SYSEXT_LEVEL", "")
    if host_level and image_level:
        if image_level == host_level:
            return True, f"ID={image_id} and SYSEXT_LEVEL={image_level} match the host"
        return False, (
            f"step 8 (level): SYSEXT_LEVEL={image_level} does not equal the host's "
            f"SYSEXT_LEVEL={host_level} (compared as strings)"
        )
    if host_version:
        image_version = release.get("VERSION_ID", "")
        if not image_version:
            return False, (
                f"step 8 (version): the host has VERSION_ID={host_version} but the image has "
                "neither a matching SYSEXT_LEVEL nor VERSION_ID"
            )
        if image_version != host_version:
            return False, (
                f"step 8 (version): VERSION_ID={image_version} does not equal the host's "
                f"VERSION_ID={host_version}"
            )
        return True, f"ID={image_id} and VERSION_ID={image_version} match the host"
    return True, f"ID={image_id} matches; the host has SYSEXT_LEVEL only and the image none"
