"""A distribution's archive and its trust chain: InRelease → Packages → .deb.

Archives are named by logical URLs, `apt://ID/` (e.g. `apt://debian/`) and, where the
distribution keeps security updates apart, `apt://ID-security/`. The mirror map turns them
into real addresses: a user's rule (`SYSEXT_MIRRORS='apt://debian/=http://mirror/debian/'`
or the config file's [mirrors]) wins, else the URI this machine's apt uses for that
distribution (sysext.build.debian.sources_list). Lock files and provenance record the
logical URLs, so they mean the same on every machine.

Nothing is trusted before it is verified:

1. `dists/SUITE/InRelease` must carry a valid OpenPGP signature by a key of the
   distribution's keyring (the machine's keyring package, or a keyring the recipe names),
   optionally only by the primary keys whose fingerprints the recipe pins (pysequoia). Only
   the signed text is read. Its `Codename`/`Suite` must be the suite asked for (no replay
   of another suite's index) and its `Valid-Until`, when present, in the future.
2. `Packages.xz` (or .gz, or plain) is fetched by the sha256 InRelease lists for it
   (through `by-hash/` when the archive offers it) into the content-addressed cache.
3. Every .deb is fetched by the sha256 its Packages entry lists.

Each failure is one line naming the file and what did not match; nothing unverified enters
the cache.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import gzip
import lzma
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pysequoia

from sysext.build.debian.control import (
    Clause,
    Relation,
    paragraphs,
    parse_provides,
    parse_relations,
)
from sysext.build.debian.version import compare, image_version, version_key
from sysext.core.download import Downloader, DownloadError
from sysext.core.errors import SysextError

SCHEME = "apt://"


class ArchiveError(SysextError):
    """Archive metadata or a package failed verification, or cannot be used."""


@dataclass(frozen=True)
class Family:
    """What sysext knows about a distribution without being told: where its keyring
    package puts the archive keys, its release codenames, and whether security updates
    live in an archive of their own."""

    id: str
    keyring: str
    codenames: Mapping[str, str]  # VERSION_ID → codename
    security_archive: bool


FAMILIES: dict[str, Family] = {
    "debian": Family(
        "debian",
        "/usr/share/keyrings/debian-archive-keyring.gpg",
        {"10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"},
        security_archive=True,
    ),
}


@dataclass(frozen=True)
class Suite:
    archive: str  # logical archive URL, `apt://debian/`
    name: str  # bookworm, bookworm-updates, bookworm-security

    def url(self, path: str) -> str:
        return f"{self.archive}dists/{self.name}/{path}"


@dataclass(frozen=True)
class Distribution:
    """A base's release as resolution needs it: its suites and who signs them."""

    id: str
    version_id: str
    codename: str
    components: tuple[str, ...] = ("main",)
    keyring: Path | None = None  # None: the family's keyring package file
    signing_keys: tuple[str, ...] = ()  # pinned primary fingerprints; empty: any in keyring

    @property
    def label(self) -> str:
        return f"{self.id} {self.version_id} ({self.codename})"

    @property
    def suites(self) -> tuple[Suite, ...]:
        main = f"{SCHEME}{self.id}/"
        found = [Suite(main, self.codename), Suite(main, f"{self.codename}-updates")]
        family = FAMILIES.get(self.id)
        security = f"{SCHEME}{self.id}-security/" if family and family.security_archive else main
        found.append(Suite(security, f"{self.codename}-security"))
        return tuple(found)

    def keyring_path(self) -> Path:
        if self.keyring is not None:
            return self.keyring
        family = FAMILIES.get(self.id)
        if family is None:
            raise ArchiveError(
                f"no archive keyring known for the distribution {self.id!r}",
                'name one in the recipe: [base] keyring = "/usr/share/keyrings/….gpg"',
            )
        return Path(family.keyring)


def codename_for(os_id: str, version_id: str) -> str | None:
    family = FAMILIES.get(os_id)
    return family.codenames.get(version_id) if family else None


def archive_certificates(distribution: Distribution) -> list[pysequoia.Cert]:
    """The certificates allowed to sign the distribution's InRelease files."""
    path = distribution.keyring_path()
    try:
        material = path.read_bytes()
    except OSError as exc:
        family = FAMILIES.get(distribution.id)
        package = f"{family.id}-archive-keyring" if family else "the distribution's keyring"
        raise ArchiveError(
            f"archive keyring {path}: {exc.strerror}",
            f"install {package}, or name a keyring in the recipe's [base] keyring",
        ) from None
    try:
        certs = pysequoia.Cert.split_bytes(material)
    except RuntimeError:
        certs = []
    if not certs:
        raise ArchiveError(f"archive keyring {path}: no OpenPGP certificate in it")
    if distribution.signing_keys:
        wanted = {k.upper() for k in distribution.signing_keys}
        certs = [c for c in certs if c.fingerprint.upper() in wanted]
        if not certs:
            raise ArchiveError(
                f"archive keyring {path} holds none of the pinned keys {', '.join(sorted(wanted))}",
                "check [base] signing_keys against the keyring's fingerprints",
            )
    return certs


# -- InRelease -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexFile:
    sha256: str
    size: int


@dataclass(frozen=True)
class Release:
    """The verified content of one suite's InRelease."""

    suite: Suite
    fields: Mapping[str, str]
    files: Mapping[str, IndexFile]  # path below dists/SUITE/ → its SHA256 line
    signer: str  # fingerprint of the certificate that made the valid signature

    @property
    def by_hash(self) -> bool:
        return self.fields.get("Acquire-By-Hash", "").lower() == "yes"

    def index_url(self, path: str) -> str:
        if self.by_hash:
            directory = path.rsplit("/", 1)[0]
            return self.suite.url(f"{directory}/by-hash/SHA256/{self.files[path].sha256}")
        return self.suite.url(path)


def verify_release(
    data: bytes,
    suite: Suite,
    certs: list[pysequoia.Cert],
    *,
    keyring_label: str,
    now: datetime.datetime | None = None,
) -> Release:
    """Check an InRelease file's signature and metadata; return what it signed."""
    where = suite.url("InRelease")
    try:
        result = pysequoia.verify(bytes=data, store=lambda _ids: certs)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "no valid signature"
        raise ArchiveError(
            f"{where}: not signed by a key of {keyring_label} ({detail}); refusing it",
            "the archive, a mirror or the network changed the file, or the keyring is "
            "outdated (update the keyring package)",
        ) from None
    if not result.valid_sigs or result.bytes is None:
        raise ArchiveError(f"{where}: no valid signature by a key of {keyring_label}")
    text = bytes(result.bytes).decode("utf-8", "replace")
    fields = next(paragraphs(text), {})
    named = {fields.get("Codename", ""), fields.get("Suite", "")}
    if suite.name not in named:
        raise ArchiveError(
            f"{where}: signed for suite {fields.get('Codename') or fields.get('Suite')!r}, "
            f"not {suite.name!r}; refusing it",
            "a mirror serves another suite's index here (an old or misdirected copy)",
        )
    until = fields.get("Valid-Until")
    if until:
        expiry = _date(until, where)
        if expiry < (now or datetime.datetime.now(datetime.UTC)):
            raise ArchiveError(
                f"{where}: expired on {until} (Valid-Until); refusing it",
                "the mirror serves stale metadata; try again later or use another mirror",
            )
    files: dict[str, IndexFile] = {}
    for line in fields.get("SHA256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            files[parts[2]] = IndexFile(parts[0].lower(), int(parts[1]))
    if not files:
        raise ArchiveError(f"{where}: lists no SHA256 checksums; refusing it")
    return Release(suite, fields, files, str(result.valid_sigs[0].certificate).upper())


def _date(text: str, where: str) -> datetime.datetime:
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        raise ArchiveError(f"{where}: cannot read the date {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def fetch_release(
    downloader: Downloader, suite: Suite, certs: list[pysequoia.Cert], *, keyring_label: str
) -> Release:
    """Fetch (never from the cache: it names everything else) and verify an InRelease."""
    data = downloader.fetch_bytes(suite.url("InRelease"), limit=8 << 20)
    return verify_release(data, suite, certs, keyring_label=keyring_label)


# -- Packages --------------------------------------------------------------------------------

_KEEP = frozenset(
    {
        "Package", "Version", "Architecture", "Filename", "SHA256", "Size", "Depends",
        "Pre-Depends", "Provides", "Conflicts", "Breaks", "Replaces", "Priority",
        "Essential", "Source", "Multi-Arch", "Status",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Package:
    """One binary package of an index (or of a base's dpkg status)."""

    name: str
    version: str
    arch: str
    raw: Mapping[str, str] = field(repr=False, compare=False)
    suite: Suite | None = field(default=None, compare=False)  # None: installed in the base

    @property
    def filename(self) -> str:
        return self.raw.get("Filename", "")

    @property
    def sha256(self) -> str:
        return self.raw.get("SHA256", "").lower()

    @property
    def size(self) -> int:
        text = self.raw.get("Size", "0")
        return int(text) if text.isdigit() else 0

    @property
    def priority(self) -> str:
        return self.raw.get("Priority", "")

    @property
    def url(self) -> str:
        assert self.suite is not None
        return self.suite.archive + self.filename

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def pin(self) -> str:
        """`name=version`, as apt spells an exact request."""
        return f"{self.name}={self.version}"

    def relations(self, name: str) -> tuple[Clause, ...]:
        return _relations(self.raw.get(name, ""), f"{self.name} {name}")

    @property
    def depends(self) -> tuple[Clause, ...]:
        return self.relations("Pre-Depends") + self.relations("Depends")

    @property
    def provides(self) -> tuple[Relation, ...]:
        text = self.raw.get("Provides", "")
        return _provides(text) if text else ()


@functools.lru_cache(maxsize=8192)
def _relations(text: str, label: str) -> tuple[Clause, ...]:
    if not text:
        return ()
    try:
        return parse_relations(text, field=label)
    except SysextError as exc:
        raise ArchiveError(exc.message) from None


@functools.lru_cache(maxsize=8192)
def _provides(text: str) -> tuple[Relation, ...]:
    return parse_provides(text)


def parse_packages(text: str, suite: Suite | None) -> list[Package]:
    found = []
    for fields in paragraphs(text, keep=_KEEP):
        name, version = fields.get("Package"), fields.get("Version")
        if name and version:
            found.append(Package(name, version, fields.get("Architecture", ""), fields, suite))
    return found


@dataclass
class PackageIndex:
    """Every package of a distribution's suites for one architecture (and `all`)."""

    arch: str
    by_name: dict[str, list[Package]] = field(default_factory=dict)
    _providers: dict[str, list[tuple[Package, Relation]]] | None = None

    def add(self, packages: Iterable[Package]) -> None:
        for package in packages:
            if package.arch in (self.arch, "all"):
                self.by_name.setdefault(package.name, []).append(package)
                self._providers = None

    def versions(self, name: str) -> list[Package]:
        """Every version of `name`, newest first."""
        found = self.by_name.get(name, [])
        return sorted(found, key=lambda p: version_key(p.version), reverse=True)

    def candidate(self, name: str) -> Package | None:
        """What apt would install: the newest version in any of the suites."""
        found = self.versions(name)
        return found[0] if found else None

    def exact(self, name: str, version: str) -> Package | None:
        """`version` in Debian spelling or as an image version (no epoch, `_` for `~`)."""
        for package in self.versions(name):
            if version in (package.version, image_version(package.version)):
                return package
        return None

    def providers(self, name: str) -> list[tuple[Package, Relation]]:
        """Candidates providing the virtual package `name`, with their Provides entry."""
        if self._providers is None:
            providers: dict[str, list[tuple[Package, Relation]]] = {}
            for packages in self.by_name.values():
                best = max(packages, key=lambda p: version_key(p.version))
                for provided in best.provides:
                    providers.setdefault(provided.name, []).append((best, provided))
            self._providers = providers
        return self._providers.get(name, [])


_PARSED: dict[tuple[str, Suite], list[Package]] = {}
_PARSED_LOCK = threading.Lock()
_PARSED_MAX = 12


def _decompress(path: Path, name: str) -> str:
    data = path.read_bytes()
    try:
        if name.endswith(".xz"):
            data = lzma.decompress(data)
        elif name.endswith(".gz"):
            data = gzip.decompress(data)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise ArchiveError(f"{name}: cannot decompress it ({exc})") from None
    return data.decode("utf-8", "replace")


def fetch_packages(
    downloader: Downloader, release: Release, component: str, arch: str
) -> list[Package]:
    """The verified Packages index of one component of a suite (parsed once per process)."""
    base = f"{component}/binary-{arch}/Packages"
    for name in (f"{base}.xz", f"{base}.gz", base):
        if name in release.files:
            break
    else:
        raise ArchiveError(
            f"{release.suite.url('InRelease')} lists no {base} index",
            f"check [base] components and the architecture ({arch})",
        )
    expected = release.files[name]
    key = (expected.sha256, release.suite)
    with _PARSED_LOCK:
        cached = _PARSED.get(key)
    if cached is not None:
        return cached
    label = f"{release.suite.name}/{name}"
    path = fetch_listed(
        downloader, release.index_url(name), expected.sha256, label=label, lister="InRelease"
    )
    packages = parse_packages(_decompress(path, name), release.suite)
    with _PARSED_LOCK:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = packages
    return packages


def fetch_listed(downloader: Downloader, url: str, sha256: str, *, label: str, lister: str) -> Path:
    """Fetch a file by the sha256 that `lister` (InRelease, Packages) gives for it; a
    mismatch is one line naming the file, not the mirror's by-hash path."""
    try:
        return downloader.fetch(url, sha256, label=label.rsplit("/", 1)[-1])
    except DownloadError as exc:
        if "sha256 mismatch" not in exc.message:
            raise
        detail = exc.message[exc.message.rfind("(expected") :]
        raise ArchiveError(
            f"{label}: sha256 mismatch against {lister} {detail}; refusing it",
            "the mirror serves a file the archive did not sign (tampered, or caught "
            "mid-update); retry later or use another mirror",
        ) from None


def newest(packages: Iterable[Package]) -> Package | None:
    best: Package | None = None
    for package in packages:
        if best is None or compare(package.version, best.version) > 0:
            best = package
    return best
