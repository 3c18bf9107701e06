"""The upstream-shaped release trees each shipped recipe is built from, and how a case is
built: shared by tests/test_recipes_catalog.py and bench/rebuild.py (no pytest here)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sysext.recipe.model import bundled_recipes_dir
from sysext.systemd.architecture import Architecture
from tests.servers import CliResult, StaticServer, run_cli
from tests.upstream_fixtures import (
    BUILDERS,
    MIRROR_DIRS,
    PINNED_FINGERPRINTS,
    X86,
    SigningKey,
    Upstream,
)

RECIPES = bundled_recipes_dir()
HOST = Architecture.from_uname()
FLATCAR = "ID=flatcar\nVERSION_ID=4230.2.0\nSYSEXT_LEVEL=1.0\n"
BOTH = (X86, Architecture.ARM64)
# Names that are documentation, never programs: they must not sit in a bin directory.
STRAY = re.compile(r"(?i)^(license|licence|readme|notice|changelog|copying)(\.\w+)?$|\.md$")
BIN_DIRS = ("usr/bin/", "usr/sbin/", "opt/cni/bin/", "usr/libexec/")


def mirrors_env(server: StaticServer | str) -> dict[str, str]:
    # Comma-separated, as users write lists in one variable (issue 8).
    url: str = getattr(server, "url", server)
    rules = ",".join(f"{up}={url}/{local}" for up, local in MIRROR_DIRS.items())
    return {"SYSEXT_MIRRORS": rules, "SOURCE_DATE_EPOCH": "1700000000"}


@dataclass(frozen=True)
class Case:
    recipe: str
    version: str  # the fixture's upstream version (what the image is named after)
    arches: tuple[Architecture, ...] = BOTH
    request: str | None = None  # --version as given (default: `version`)
    locked: bool = False  # lock-only upstream: sysext lock, then build --locked
    present: tuple[str, ...] = ()  # image paths this version must have
    absent: tuple[str, ...] = ()  # image paths this version must not have
    links: dict[str, str] = field(default_factory=dict)
    prints: dict[str, str] = field(default_factory=dict)  # program → first output line

    @property
    def id(self) -> str:
        return f"{self.recipe}-{self.version}"


CASES = [
    Case(
        "docker",
        "27.5.1",
        locked=True,
        prints={"usr/bin/docker": "Docker version 27.5.1, build fixture"},
        present=("usr/lib/systemd/system/docker.socket", "usr/lib/sysusers.d/docker.conf"),
    ),
    Case(
        "docker",
        "29.1.2",
        locked=True,
        prints={"usr/bin/docker": "Docker version 29.1.2, build fixture"},
    ),
    Case(
        "containerd",
        "1.7.29",
        present=("usr/bin/containerd-shim-runc-v1",),
        prints={"usr/bin/ctr": "ctr github.com/containerd/containerd v1.7.29"},
    ),
    Case(
        "containerd",
        "2.1.4",
        absent=("usr/bin/containerd-shim-runc-v1",),
        prints={"usr/bin/containerd": "containerd github.com/containerd/containerd v2.1.4"},
    ),
    Case(
        "crio",
        "1.30.9",
        present=(
            "usr/share/crio/cni/11-crio-ipv4-bridge.conflist",
            "usr/share/crio/etc/crio/crio.conf.d/10-crio.conf",
            "usr/share/crio/etc/crio/crio.conf.d/90-sysext.conf",
            "usr/share/licenses/cni-plugins/LICENSE",
        ),
        absent=("usr/libexec/crio/crio-credential-provider", "etc"),
        prints={"usr/bin/crio": "crio 1.30.9", "usr/libexec/crio/crun": "crun 1.30.9"},
    ),
    Case(
        "crio",
        "1.33.5",
        present=(
            "usr/share/crio/cni/10-crio-bridge.conflist.disabled",
            "usr/libexec/crio/crio-credential-provider",
        ),
        prints={"usr/bin/crio": "crio 1.33.5", "opt/cni/bin/bridge": "bridge"},
    ),
    Case(
        "k3s",
        "1.31.4+k3s1",
        links={"usr/bin/kubectl": "k3s", "usr/bin/crictl": "k3s", "usr/bin/ctr": "k3s"},
        prints={"usr/bin/kubectl": "k3s version v1.31.4+k3s1"},
    ),
    Case(
        "kubernetes",
        "1.31.4",
        request="1.31",  # one patch track per minor: stable-1.31.txt
        present=("usr/share/licenses/cni-plugins/LICENSE",),
        absent=("opt/cni/bin/LICENSE", "opt/cni/bin/README.md"),
        prints={"usr/bin/kubelet": "Kubernetes v1.31.4 (kubelet)"},
    ),
    Case("tailscale", "1.78.1", prints={"usr/bin/tailscale": "tailscale 1.78.1"}),
    Case("tailscale", "1.96.2", prints={"usr/bin/tailscaled": "tailscaled 1.96.2"}),
    Case(
        "podman",
        "4.9.4",
        absent=(
            "usr/libexec/podman/quadlet",
            "usr/lib/systemd/system-generators/podman-system-generator",
        ),
        prints={"usr/bin/podman": "podman version 4.9.4"},
    ),
    Case(
        "podman",
        "5.4.1",
        links={
            "usr/lib/systemd/system-generators/podman-system-generator": (
                "../../../libexec/podman/quadlet"
            ),
            "usr/lib/systemd/user-generators/podman-user-generator": (
                "../../../libexec/podman/quadlet"
            ),
        },
        prints={
            "usr/lib/systemd/system-generators/podman-system-generator": "quadlet 5.4.1",
            "usr/libexec/podman/netavark": "netavark",
        },
    ),
    Case(
        "podman",
        "5.8.4",
        present=("usr/share/bash-completion/completions/podman",),
        prints={"usr/lib/systemd/user-generators/podman-user-generator": "quadlet 5.8.4"},
    ),
    Case(
        "docker-compose",
        "5.5.0",
        links={"usr/bin/docker-compose": "../libexec/docker/cli-plugins/docker-compose"},
        prints={"usr/bin/docker-compose": "Docker Compose version v5.5.0"},
    ),
    Case(
        "docker-buildx",
        "0.36.1",
        prints={"usr/libexec/docker/cli-plugins/docker-buildx": "github.com/docker/buildx v0.36.1"},
    ),
    Case("runc", "1.4.2", prints={"usr/bin/runc": "runc version 1.4.2"}),
    Case(
        "cni-plugins",
        "1.9.1",
        present=("usr/share/licenses/cni-plugins/LICENSE",),
        absent=("opt/cni/bin/LICENSE", "opt/cni/bin/README.md"),
        prints={"opt/cni/bin/tuning": "CNI tuning plugin v1.9.1"},
    ),
    Case(  # uploaded before GitHub recorded digests: lock-only
        "wasmtime",
        "14.0.4",
        locked=True,
        absent=("usr/bin/wasmtime-min",),
        prints={"usr/bin/wasmtime": "wasmtime 14.0.4"},
    ),
    Case(  # GitHub's asset digest: no lock needed
        "wasmtime",
        "48.0.0",
        prints={"usr/bin/wasmtime-min": "wasmtime-min 48.0.0"},
    ),
    Case(
        "amazon-ssm-agent",
        "3.3.1142.0",
        present=("usr/share/amazon/ssm/seelog.xml.template",),
        absent=("etc",),
        prints={"usr/bin/ssm-cli": "ssm-cli 3.3.1142.0"},
    ),
    Case(
        "droplet-agent",
        "1.4.0",
        arches=(X86,),
        prints={"usr/bin/droplet-agent": "droplet-agent 1.4.0"},
    ),
    Case(
        "oem-ami",
        "3.3.1142.0",
        present=("usr/lib/systemd/system/multi-user.target.d/10-oem-ami.conf",),
        prints={"usr/bin/amazon-ssm-agent": "amazon-ssm-agent 3.3.1142.0"},
    ),
]


@dataclass
class Built:
    case: Case
    result: CliResult
    out: Path
    steps: list[CliResult]

    def image(self, arch: Architecture) -> Path:
        return self.out / f"{self.case.recipe}-{self.case.version}-{arch.systemd_name}.raw"


def publish_cases(cases: list[Case], root: Path, key: SigningKey) -> None:
    """Every case's upstream release files, for each of its architectures, under `root`."""
    up = Upstream(key=key)
    for case in cases:
        for arch in case.arches:
            BUILDERS[case.recipe](up, case.version, arch)
    up.publish(root)


def recipe_copies(directory: Path, fingerprint: str) -> Path:
    """The shipped recipes with the test key pinned instead of the upstream's, which is
    exactly what a maintainer's edit would be."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in RECIPES.glob("*.toml"):
        text = path.read_text()
        for real in PINNED_FINGERPRINTS:
            text = text.replace(real, fingerprint)
        (directory / path.name).write_text(text)
    shutil.copy(RECIPES / "schema.json", directory / "schema.json")
    return directory


def build_case(
    case: Case,
    server_url: str,
    recipes: Path,
    work: Path,
    arches: tuple[Architecture, ...] | None = None,
    extra: tuple[str, ...] = (),
) -> Built:
    """`sysext build` of one case as a user would run it (after `sysext lock` for lock-only
    upstreams), all architectures in one command."""
    env = mirrors_env(server_url)
    out = work / case.id
    common = ["--recipes-dir", recipes, "--cache-dir", work / "cache"]
    arch_args = [a for arch in arches or case.arches for a in ("--arch", arch.systemd_name)]
    version = ["--version", case.request or case.version]
    steps = []
    lock = ["--lock-file", work / f"{case.id}.lock.json"]
    if case.locked:
        steps.append(run_cli("lock", case.recipe, *version, *arch_args, *common, *lock, env=env))
    build = ["build", case.recipe, *version, *arch_args, *common, *extra, "--output", out]
    result = run_cli(*build, *(["--locked", *lock] if case.locked else []), env=env)
    return Built(case, result, out, steps)
