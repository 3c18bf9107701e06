"""sysupdate transfer files (`/etc/sysupdate.NAME.d/NAME.transfer` and `NAME.conf`) (§2).

`render_transfer` writes the url-file → regular-file shape every systemd 252–262 accepts
(spec §7.7 reference config, plus `Verify=yes`); `parse_transfer` reads the same keys back
with systemd's list semantics, so tests can prove that what we emit means what we intend.

File names: systemd 257+ read `*.transfer` and fall back to `*.conf` (with the warning "As of
v257, transfer definitions should have the '.transfer' extension") only when a directory has
no `*.transfer` at all; 252–256 read only `*.conf` (`context_read_definitions()` in
src/sysupdate/sysupdate.c, v256 and v262). The same text under both names therefore works on
every version without a warning; `transfer_file_names` picks one name when the host's
systemd version is known.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sysext.core.errors import SysextError
from sysext.core.rollout import check_host, host_source_url
from sysext.core.urls import DEFAULT_CHANNEL, KEYRING_BINARY, extension_url
from sysext.systemd.extension_release import BOUND_NAME_HINT, bound_name_problem, name_problem
from sysext.systemd.patterns import PatternError, parse_pattern
from sysext.systemd.versioning import version_problem

EXTENSIONS_DIR = "/opt/extensions"
ACTIVATION_DIR = "/etc/extensions"
# The registry's keys alone (what `sysext butane` installs). systemd never reads it by itself:
# on 262 the update units pass it as $SYSTEMD_OPENPGP_KEYRING, on 252–261 it is combined with
# the vendor keyring into SYSUPDATE_KEYRING_PATH (sysext/provision/keyring_combine.py).
REGISTRY_KEYRING_PATH = "/etc/sysext/keyring.gpg"
# The /etc keyring systemd-pull 252–261 read *instead of* the vendor one (see KEYRING_ORDER).
SYSUPDATE_KEYRING_PATH = "/etc/systemd/import-pubring.gpg"
SYSUPDATE = "/usr/lib/systemd/systemd-sysupdate"
# Which keyring files systemd-pull verifies with (src/import/pull-common.c, verify_gpg()):
KEYRING_ORDER = (
    "252-257: /etc/systemd/import-pubring.gpg if it exists, else the vendor"
    " /usr/lib/systemd/import-pubring.gpg (one file, never both)",
    "258-261: the first of /etc/systemd/import-pubring.pgp, /etc/systemd/import-pubring.gpg,"
    " the vendor /usr/lib/systemd/import-pubring.pgp",
    "262+: $SYSTEMD_OPENPGP_KEYRING alone if set; else the /etc one (.pgp, else .gpg) plus the"
    " vendor /usr/lib/systemd/import-pubring.pgp",
)
# systemd 257 introduced the .transfer suffix; earlier versions read only .conf.
TRANSFER_SUFFIX_SINCE = 257
# Extension names become pattern literals, directory and file names: keep them boring.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# http_url_is_valid(): a lower-case http:// or https:// prefix, then a host.
_HTTP_URL = re.compile(r"https?://[^\s/?#]+(/\S*)?")


class TransferError(SysextError):
    pass


@dataclass(frozen=True)
class TransferSpec:
    name: str
    base_url: str  # the registry root, e.g. https://ext.example.com
    channel: str = DEFAULT_CHANNEL
    minor: str | None = None  # "1.29": follow only 1.29.x (the pattern captures the patch)
    os_bound: bool = False  # image names carry the host's VERSION_ID (%w)
    instances_max: int | None = None  # None: systemd's default (3)
    verify: bool = True
    target_dir: str | None = None  # default /opt/extensions/NAME
    current_symlink: str | None = None  # default /etc/extensions/NAME.raw
    # A managed host (staged rollouts, sysext/core/rollout.py): its app-specific ID and
    # optional group put it in a rollout bucket; None: the channel's own directory.
    host_id: str | None = None
    group: str | None = None
    static: bool = False  # the bucket directory without the host ID (object stores)

    @property
    def source_url(self) -> str:
        if self.host_id is not None:
            return host_source_url(
                self.base_url, self.name, self.channel, self.host_id, self.group, static=self.static
            )
        return extension_url(self.base_url, self.name, self.channel)

    @property
    def match_pattern(self) -> str:
        """The pattern, with `%a` (and `%w`) left for the host to expand."""
        version = f"{self.minor}.@v" if self.minor else "@v"
        os_part = "-%w" if self.os_bound else ""
        return f"{self.name}-{version}{os_part}-%a.raw"

    @property
    def target_path(self) -> str:
        return self.target_dir or f"{EXTENSIONS_DIR}/{self.name}"

    @property
    def symlink_path(self) -> str:
        return self.current_symlink or f"{ACTIVATION_DIR}/{self.name}.raw"


def image_file_name(name: str, version: str, arch: str, *, os_version_id: str | None = None) -> str:
    """The served file name a TransferSpec's pattern is made for (os-bound: with VERSION_ID).

    An OS-bound name whose parts contain '-' would be found by other hosts' `%w` too
    (extension_release.bound_name_problem): refused, like pack and the registry do.
    """
    middle = ""
    if os_version_id is not None:
        problem = bound_name_problem(version, os_version_id)
        if problem:
            raise TransferError(problem, BOUND_NAME_HINT)
        middle = f"-{os_version_id}"
    return f"{name}-{version}{middle}-{arch}.raw"


def validate_spec(spec: TransferSpec) -> None:
    problem = name_problem(spec.name)
    if problem:
        raise TransferError(problem, "e.g. podman, docker-compose, k3s")
    if not _HTTP_URL.fullmatch(spec.base_url):
        raise TransferError(
            f"invalid registry URL {spec.base_url!r}",
            "use http://HOST[:PORT] or https://HOST[:PORT] (sysupdate accepts only these)",
        )
    if not spec.base_url.isascii() or "?" in spec.base_url or "#" in spec.base_url:
        raise TransferError(
            f"registry URL {spec.base_url!r} must be plain ASCII without ?query or #fragment",
            "sysupdate drops query and fragment when building file URLs (§3.1)",
        )
    if not _NAME.fullmatch(spec.channel):
        raise TransferError(f"invalid channel {spec.channel!r}")
    if spec.host_id is not None:
        check_host(spec.host_id, spec.group)
    elif spec.group is not None:
        raise TransferError(
            f"group {spec.group!r} without a host ID", "give --host-id too (a group is per host)"
        )
    if spec.minor is not None:
        problem = version_problem(spec.minor)
        if problem or spec.minor.endswith(".") or "-" in spec.minor:
            raise TransferError(
                f"invalid --minor {spec.minor!r}" + (f": {problem}" if problem else ""),
                "give the version prefix to follow, e.g. --minor 1.29 for 1.29.x",
            )
    if spec.instances_max is not None and spec.instances_max < 2:
        raise TransferError(
            f"InstancesMax={spec.instances_max} is too small",
            "systemd bumps values below 2 to 2 (one running + one new); use --instances 2 or more",
        )
    for label, path in (("target", spec.target_path), ("CurrentSymlink", spec.symlink_path)):
        if not path.startswith("/") or "//" in path or "/../" in f"{path}/":
            raise TransferError(f"{label} path {path!r} must be absolute and normalized")


def _escape_specifiers(text: str) -> str:
    # Path= and MatchPattern= are specifier-expanded: a literal '%' must be '%%' (§2.2).
    return text.replace("%", "%%")


def transfer_file_names(name: str, systemd_version: int | None) -> tuple[str, ...]:
    """The file name(s) to install the transfer under for a host's systemd version (None:
    unknown, so both: 257+ then read only the .transfer, 252–256 only the .conf)."""
    if systemd_version is None:
        return (f"{name}.transfer", f"{name}.conf")
    if systemd_version >= TRANSFER_SUFFIX_SINCE:
        return (f"{name}.transfer",)
    return (f"{name}.conf",)


def render_transfer(spec: TransferSpec, *, file_format: str = "conf") -> str:
    """The transfer file text for `spec` (`file_format` only changes the install hint)."""
    validate_spec(spec)
    if file_format not in ("conf", "transfer"):
        raise TransferError(f"unknown transfer format {file_format!r}", "use conf or transfer")
    name = spec.name
    registry = spec.base_url.rstrip("/")
    directory = f"/etc/sysupdate.{name}.d"
    other = "conf" if file_format == "transfer" else "transfer"
    lines = [
        f"# systemd-sysupdate transfer for the {name!r} extension (generated by sysext).",
        f"# Install as {directory}/{name}.{file_format}, and the same text as {name}.{other}:",
        "# systemd 257+ then read only the .transfer (no warning), 252-256 only the .conf.",
        # Both directories must exist: sysupdate never creates CurrentSymlink's parent, and
        # 254+ fail "Failed to resolve '<Path>'" for a missing target directory (seen with
        # the real 254 client: resource_resolve_path() chases it without CHASE_NONEXISTENT).
        f"#   mkdir -p {spec.target_path} {spec.symlink_path.rsplit('/', 1)[0]}",
        # Not on PATH on Flatcar or Fedora CoreOS: always the full path. Activation as
        # Flatcar documents it (fedora-sysexts too, for Fedora 41).
        f"#   {SYSUPDATE} -C {name} update && systemctl restart systemd-sysext.service",
    ]
    if spec.verify:
        lines += [
            "# Verify=yes: SHA256SUMS must be signed by the registry's key"
            f" ({registry}/{KEYRING_BINARY}, binary).",
            "# Keyrings systemd-pull reads (src/import/pull-common.c):",
            *(f"#   {line}" for line in KEYRING_ORDER),
            "# So before 262 a keyring in /etc REPLACES the vendor one: never put the registry",
            "# key there alone, or the OS's own sysupdate transfers fail with 'No public key'.",
            f"# `sysext butane` keeps it in {REGISTRY_KEYRING_PATH}, combines it with the vendor",
            "# keyring on 252-261 and passes it as $SYSTEMD_OPENPGP_KEYRING on 262. By hand, 262+:",
            f"#   SYSTEMD_OPENPGP_KEYRING={REGISTRY_KEYRING_PATH} {SYSUPDATE} -C {name} update",
        ]
    pattern = spec.match_pattern
    lines += [
        "",
        "[Transfer]",
        f"Verify={'yes' if spec.verify else 'no'}",
        "",
        "[Source]",
        "Type=url-file",
        f"Path={_escape_specifiers(spec.source_url)}",
        f"MatchPattern={pattern}",
        "",
        "[Target]",
        "Type=regular-file",
        f"Path={spec.target_path}",
        f"MatchPattern={pattern}",
        f"CurrentSymlink={spec.symlink_path}",
    ]
    if spec.instances_max is not None:
        lines.append(f"InstancesMax={spec.instances_max}")
    return "\n".join(lines) + "\n"


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferConfig:
    """A transfer file as ordered (section, key, value) assignments."""

    assignments: tuple[tuple[str, str, str], ...]
    sections: tuple[str, ...] = field(default=())

    def values(self, section: str, key: str) -> list[str]:
        return [v for s, k, v in self.assignments if s == section and k == key]

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        """The last assignment wins, as in systemd's config parser."""
        found = self.values(section, key)
        return found[-1] if found else default

    def match_patterns(self, section: str) -> list[str]:
        """MatchPattern= list semantics: words append, an empty value resets, no duplicates."""
        patterns: list[str] = []
        for value in self.values(section, "MatchPattern"):
            if not value.strip():
                patterns.clear()
                continue
            for word in value.split():
                if word not in patterns:
                    patterns.append(word)
        return patterns

    def as_dict(self) -> Mapping[str, Mapping[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for section, key, value in self.assignments:
            out.setdefault(section, {})[key] = value
        return out


def parse_transfer(text: str) -> TransferConfig:
    """Read a transfer file like systemd's config_parse(): sections, `#`/`;` comments,
    backslash continuation; a line without '=' or a key outside a section is an error."""
    assignments: list[tuple[str, str, str]] = []
    sections: list[str] = []
    section: str | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\") and not line.startswith(("#", ";")):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise TransferError(f"transfer line {number}: invalid section header {line!r}")
            section = line[1:-1]
            sections.append(section)
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise TransferError(f"transfer line {number}: missing '=' in {line!r}")
        if section is None:
            raise TransferError(f"transfer line {number}: assignment outside of a section")
        assignments.append((section, key.strip(), value.strip()))
    if pending:
        raise TransferError("transfer file ends with a line continuation")
    return TransferConfig(tuple(assignments), tuple(sections))


def transfer_problems(config: TransferConfig) -> list[str]:
    """What systemd 252–256 would refuse in a url-file → regular-file transfer."""
    problems: list[str] = []
    if config.get("Source", "Type") != "url-file":
        problems.append("[Source] Type= must be url-file")
    path = config.get("Source", "Path") or ""
    if not re.fullmatch(r"(https?://|file:/)\S+", path) or not path.isascii():
        problems.append(f"[Source] Path={path!r} is not an http(s):// or file:/ URL")
    elif re.search(r"%[^%a-zA-Z]|%$", path.replace("%%", "")):
        problems.append(f"[Source] Path={path!r} holds a stray '%'")
    source_patterns = config.match_patterns("Source")
    if not source_patterns:
        problems.append("[Source] lacks MatchPattern=")
    for section in ("Source", "Target"):
        for pattern in config.match_patterns(section):
            try:
                parse_pattern(pattern.replace("%%", "%"))
            except PatternError as exc:
                problems.append(f"[{section}] {exc.message}")
    target_type = config.get("Target", "Type", "regular-file")
    if target_type not in ("regular-file", "partition"):
        problems.append(f"[Target] Type={target_type} cannot take a url-file source")
    target = config.get("Target", "Path") or ""
    if not target.startswith("/"):
        problems.append("[Target] Path= must be an absolute directory")
    verify = (config.get("Transfer", "Verify", "yes") or "").lower()
    if verify not in ("1", "yes", "y", "true", "t", "on", "0", "no", "n", "false", "f", "off"):
        problems.append(f"[Transfer] Verify={verify!r} is not a boolean")
    return problems
