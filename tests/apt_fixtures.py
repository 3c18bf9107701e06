"""A Debian-shaped archive and base roots for tests of the `apt` source kind.

The archive holds real .deb files (built with dpkg-deb), Packages indices (xz, as Debian's
are, and by-hash copies), and InRelease files cleartext-signed by a test key, laid out as
`debian/` and `debian-security/` below one directory that tests serve over 127.0.0.1 and
reach through SYSEXT_MIRRORS rules for `apt://debian/` and `apt://debian-security/`.
A base root is a directory with os-release, merged-/usr links and a dpkg database.
"""

from __future__ import annotations

import email.utils
import hashlib
import lzma
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pysequoia

from sysext.core.process import run
from tests.upstream_fixtures import SigningKey

ARCH = "amd64"


@dataclass
class Deb:
    name: str
    version: str
    arch: str = ARCH
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    conflicts: str = ""
    breaks: str = ""
    replaces: str = ""
    priority: str = "optional"
    files: dict[str, bytes] = field(default_factory=dict)  # path → content
    links: dict[str, str] = field(default_factory=dict)  # path → target
    modes: dict[str, int] = field(default_factory=dict)  # path → mode (default 0644/0755)
    scripts: dict[str, str] = field(default_factory=dict)  # preinst, postinst…

    @property
    def file_name(self) -> str:
        return f"{self.name}_{self.version.split(':', 1)[-1]}_{self.arch}.deb"

    def control(self) -> str:
        fields = {
            "Package": self.name,
            "Version": self.version,
            "Architecture": self.arch,
            "Maintainer": "Test <test@example.invalid>",
            "Priority": self.priority,
            "Depends": self.depends,
            "Pre-Depends": self.pre_depends,
            "Provides": self.provides,
            "Conflicts": self.conflicts,
            "Breaks": self.breaks,
            "Replaces": self.replaces,
            "Description": f"{self.name} for tests",
        }
        return "".join(f"{k}: {v}\n" for k, v in fields.items() if v)


def build_deb(deb: Deb, directory: Path) -> Path:
    """The .deb of `deb`, built by dpkg-deb (owner root, xz data member)."""
    root = directory / f".build-{deb.name}-{deb.version.replace(':', '_')}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(deb.control())
    for name, text in deb.scripts.items():
        script = root / "DEBIAN" / name
        script.write_text(text)
        script.chmod(0o755)
    for path, content in deb.files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        default = 0o755 if "/bin/" in f"/{path}" else 0o644
        target.chmod(deb.modes.get(path, default))
    for path, link in deb.links.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(link)
    out = directory / deb.file_name
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, out])
    shutil.rmtree(root)
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Archive:
    """Suites of one release: CODENAME, CODENAME-updates (in debian/) and
    CODENAME-security (in debian-security/)."""

    root: Path
    key: SigningKey = field(default_factory=SigningKey)
    codename: str = "bookworm"
    suites: dict[str, list[Deb]] = field(default_factory=dict)
    valid_until: dict[str, float] = field(default_factory=dict)  # suite → epoch seconds

    def __post_init__(self) -> None:
        for suite in self.suite_names:
            self.suites.setdefault(suite, [])

    @property
    def suite_names(self) -> tuple[str, str, str]:
        return (self.codename, f"{self.codename}-updates", f"{self.codename}-security")

    def add(self, suite: str, *debs: Deb) -> None:
        self.suites[suite].extend(debs)

    def archive_of(self, suite: str) -> Path:
        return self.root / ("debian-security" if suite.endswith("-security") else "debian")

    def keyring(self) -> Path:
        path = self.root / "archive-keyring.asc"
        path.write_bytes(self.key.armored)
        return path

    def mirrors(self, url: str) -> str:
        return f"apt://debian/={url}/debian/ apt://debian-security/={url}/debian-security/"

    def deb_path(self, deb: Deb) -> Path:
        return self.archive_of(self.suite_of(deb)) / self.pool_path(deb)

    def suite_of(self, deb: Deb) -> str:
        return next(s for s, debs in self.suites.items() if deb in debs)

    @staticmethod
    def pool_path(deb: Deb) -> str:
        return f"pool/main/{deb.name[0]}/{deb.name}/{deb.file_name}"

    def publish(self) -> None:
        for suite, debs in self.suites.items():
            top = self.archive_of(suite)
            stanzas = []
            for deb in debs:
                pool = top / self.pool_path(deb)
                pool.parent.mkdir(parents=True, exist_ok=True)
                if not pool.exists():
                    build_deb(deb, pool.parent)
                data = pool.read_bytes()
                stanzas.append(
                    deb.control()
                    + f"Filename: {self.pool_path(deb)}\nSize: {len(data)}\n"
                    + f"SHA256: {_sha256(data)}\n"
                )
            self.write_index(suite, "\n".join(stanzas).encode())

    def write_index(
        self,
        suite: str,
        packages: bytes,
        *,
        sign_with: SigningKey | None = None,
        codename: str | None = None,
    ) -> None:
        """Write SUITE's Packages (plain, xz, by-hash) and its signed InRelease."""
        directory = self.archive_of(suite) / "dists" / suite / "main" / "binary-amd64"
        directory.mkdir(parents=True, exist_ok=True)
        compressed = lzma.compress(packages)
        (directory / "Packages").write_bytes(packages)
        (directory / "Packages.xz").write_bytes(compressed)
        by_hash = directory / "by-hash" / "SHA256"
        by_hash.mkdir(parents=True, exist_ok=True)
        for blob in (packages, compressed):
            (by_hash / _sha256(blob)).write_bytes(blob)
        self.sign_release(suite, sign_with=sign_with, codename=codename)

    def sign_release(
        self, suite: str, *, sign_with: SigningKey | None = None, codename: str | None = None
    ) -> None:
        dists = self.archive_of(suite) / "dists" / suite
        lines = []
        for path in sorted((dists / "main" / "binary-amd64").glob("Packages*")):
            data = path.read_bytes()
            lines.append(f" {_sha256(data)} {len(data)} main/binary-amd64/{path.name}")
        release = {
            "Origin": "Debian",
            "Label": "Debian",
            "Suite": codename or suite,
            "Codename": codename or suite,
            "Date": email.utils.formatdate(time.time(), usegmt=True),
            "Acquire-By-Hash": "yes",
            "Architectures": "amd64 all",
            "Components": "main",
        }
        if suite in self.valid_until:
            release["Valid-Until"] = email.utils.formatdate(self.valid_until[suite], usegmt=True)
        text = "".join(f"{k}: {v}\n" for k, v in release.items()) + "SHA256:\n"
        text += "\n".join(lines) + "\n"
        signer = (sign_with or self.key).tsk.signer()
        signed = pysequoia.sign(signer, text.encode(), mode=pysequoia.SignatureMode.CLEAR)
        (dists / "InRelease").write_bytes(bytes(signed))


def make_root(
    path: Path,
    packages: list[Deb],
    *,
    os_id: str = "debian",
    version_id: str = "12",
    codename: str = "bookworm",
) -> Path:
    """A merged-/usr base root whose dpkg database lists `packages` (with their files)."""
    (path / "usr/lib").mkdir(parents=True)
    (path / "usr/bin").mkdir()
    (path / "usr/sbin").mkdir()
    (path / "etc").mkdir()
    for name, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        (path / name).symlink_to(target)
    (path / "usr/lib/os-release").write_text(
        f'ID={os_id}\nVERSION_ID="{version_id}"\nVERSION_CODENAME={codename}\n'
        f'PRETTY_NAME="Test base {version_id}"\n'
    )
    (path / "etc/os-release").symlink_to("../usr/lib/os-release")
    info = path / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    stanzas = []
    for deb in [Deb("dpkg", "1.21.22"), *packages]:
        stanzas.append(f"Status: install ok installed\n{deb.control()}")
        listed = ["/."]
        for file_path in sorted([*deb.files, *deb.links]):
            parts = file_path.split("/")
            for i in range(1, len(parts)):
                directory = "/" + "/".join(parts[:i])
                if directory not in listed:
                    listed.append(directory)
            listed.append("/" + file_path)
        (info / f"{deb.name}.list").write_text("\n".join(listed) + "\n")
        for file_path, content in deb.files.items():
            target = path / file_path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    (path / "var/lib/dpkg/status").write_text("\n".join(stanzas))
    return path
