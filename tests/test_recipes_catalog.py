"""The shipped recipe catalogue: every recipe parses and points at its real upstream, and
each of docker, containerd, crio, k3s, kubernetes and tailscale builds from an
upstream-shaped fixture (same URL layout, archive members and checksum files, tiny shell
scripts as binaries) served on 127.0.0.1 through the mirror setting, gives a root-owned
image with its units and release file, and (as root) merges and runs its main binary.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sysext.architecture import Architecture
from sysext.imageread import read_file, read_image
from sysext.recipe import available_recipes, bundled_recipes_dir, load_recipe
from sysext.staging import STANDARD_BIN_DIRS, STANDARD_HOST_BINARIES, exec_lines, is_unit_file
from tests.conftest import CliResult, StaticServer, run_cli

RECIPES = bundled_recipes_dir()
X86, ARM = Architecture.X86_64, Architecture.ARM64
FLATCAR = "ID=flatcar\nVERSION_ID=4000.0.0\nSYSEXT_LEVEL=1.0\n"

# Upstream prefix → directory on the fixture server (the air-gapped mirror layout).
MIRROR_DIRS = {
    "https://github.com/": "gh/",
    "https://dl.k8s.io/": "k8s/",
    "https://storage.googleapis.com/": "gcs/",
    "https://pkgs.tailscale.com/": "ts/",
    "https://download.docker.com/": "docker/",
}


def mirrors_env(server: StaticServer) -> dict[str, str]:
    rules = " ".join(f"{up}={server.url}/{local}" for up, local in MIRROR_DIRS.items())
    return {"SYSEXT_MIRRORS": rules, "SOURCE_DATE_EPOCH": "1700000000"}


def script(text: str) -> tuple[bytes, int]:
    """A stand-in binary: prints `text` whatever its arguments."""
    return (f"#!/bin/sh\necho '{text}'\n".encode(), 0o755)


def data(text: str) -> tuple[bytes, int]:
    return (text.encode(), 0o644)


def tarball(members: dict[str, tuple[bytes, int]], top: str | None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (content, mode) in members.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(content)
            info.mode = mode
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@dataclass
class Upstream:
    """Files to serve, keyed by their real upstream URL."""

    files: dict[str, bytes] = field(default_factory=dict)

    def add(self, url: str, blob: bytes) -> bytes:
        self.files[url] = blob
        return blob

    def publish(self, server: StaticServer) -> None:
        for url, blob in self.files.items():
            prefix = next(p for p in MIRROR_DIRS if url.startswith(p))
            path = server.root / MIRROR_DIRS[prefix] / url.removeprefix(prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)


# -- one fixture per recipe: the upstream release of `version` for one architecture ---------


def docker_upstream(up: Upstream, version: str, arch: Architecture) -> dict[str, str]:
    """No checksum file upstream: the test pins the fixture's hash, as a maintainer would."""
    upstream_arch = {X86: "x86_64", ARM: "aarch64"}[arch]
    members = {
        name: script(f"{name} version {version}")
        for name in (
            "dockerd",
            "docker",
            "docker-init",
            "docker-proxy",
            "containerd",
            "containerd-shim-runc-v2",
            "ctr",
            "runc",
        )
    }
    members["docker"] = script(f"Docker version {version}, build fixture")
    url = f"https://download.docker.com/linux/static/stable/{upstream_arch}/docker-{version}.tgz"
    return {arch.systemd_name: sha(up.add(url, tarball(members, "docker")))}


def containerd_upstream(up: Upstream, version: str, arch: Architecture) -> dict[str, str]:
    a = arch.debian_name
    name = f"containerd-static-{version}-linux-{a}.tar.gz"
    base = f"https://github.com/containerd/containerd/releases/download/v{version}/"
    blob = up.add(
        base + name,
        tarball(
            {
                "bin/containerd": script(f"containerd github.com/containerd/containerd v{version}"),
                "bin/containerd-shim-runc-v2": script("shim"),
                "bin/containerd-stress": script("stress"),
                "bin/ctr": script(f"ctr github.com/containerd/containerd v{version}"),
            },
            None,
        ),
    )
    up.add(base + name + ".sha256sum", f"{sha(blob)}  {name}\n".encode())
    runc_base = "https://github.com/opencontainers/runc/releases/download/v1.2.3/"
    lines = []
    for other in (X86, ARM):
        runc = up.add(
            runc_base + f"runc.{other.debian_name}", script(f"runc version 1.2.3 {other.value}")[0]
        )
        lines.append(f"{sha(runc)}  runc.{other.debian_name}\n")
    up.add(runc_base + "runc.sha256sum", "".join(lines).encode())
    return {}


def crio_upstream(up: Upstream, version: str, arch: Architecture) -> dict[str, str]:
    a = arch.debian_name
    members = {
        "bin/crio": script(f"crio version {version}"),
        "bin/crio-status": script("crio-status"),
        "bin/pinns": script("pinns"),
        "bin/conmon": script("conmon version 2.1.12"),
        "bin/conmonrs": script("conmonrs"),
        "bin/crun": script("crun version 1.18"),
        "bin/runc": script("runc version 1.2.3"),
        "bin/crictl": script("crictl version v1.31.1"),
        "cni-plugins/bridge": script("bridge"),
        "cni-plugins/host-local": script("host-local"),
        "cni-plugins/loopback": script("loopback"),
        "cni-plugins/portmap": script("portmap"),
        "etc/crio.conf": data("[crio]\n"),
        "etc/10-crun.conf": data('[crio.runtime]\ndefault_runtime = "crun"\n'),
        "etc/crictl.yaml": data("runtime-endpoint: unix:///var/run/crio/crio.sock\n"),
        "etc/crio-umount.conf": data("/var/lib/containers/*\n"),
        "contrib/crio.service": data("[Service]\nExecStart=/usr/local/bin/crio\n"),
        "contrib/policy.json": data('{"default": [{"type": "insecureAcceptAnything"}]}\n'),
        "contrib/11-crio-ipv4-bridge.conflist": data('{"cniVersion": "1.0.0"}\n'),
        "man/crio.8": data(".TH crio 8\n"),
        "man/crio.conf.5": data(".TH crio.conf 5\n"),
        "completions/bash/crio": data("complete -F _crio crio\n"),
        "install": script("install"),
        "Makefile": data("all:\n"),
        "README.md": data("# CRI-O bundle\n"),
        "LICENSE": data("Apache License 2.0\n"),
    }
    name = f"cri-o.{a}.v{version}.tar.gz"
    base = "https://storage.googleapis.com/cri-o/artifacts/"
    blob = up.add(base + name, tarball(members, "cri-o"))
    up.add(base + name + ".sha256sum", f"{sha(blob)}  {name}\n".encode())
    return {}


def k3s_upstream(up: Upstream, version: str, arch: Architecture) -> dict[str, str]:
    base = f"https://github.com/k3s-io/k3s/releases/download/v{version}/"
    asset = {X86: "k3s", ARM: "k3s-arm64"}[arch]
    blob = up.add(base + asset, script(f"k3s version v{version} ({arch.value})")[0])
    airgap = f"k3s-airgap-images-{arch.debian_name}.tar"
    up.add(
        base + f"sha256sum-{arch.debian_name}.txt",
        f"{'a' * 64}  {airgap}\n{sha(blob)}  {asset}\n".encode(),
    )
    return {}


def kubernetes_upstream(up: Upstream, version: str, arch: Architecture) -> dict[str, str]:
    a = arch.debian_name
    base = f"https://dl.k8s.io/release/v{version}/bin/linux/{a}/"
    for tool in ("kubelet", "kubeadm", "kubectl"):
        blob = up.add(base + tool, script(f"Kubernetes v{version} ({tool})")[0])
        up.add(base + tool + ".sha256", sha(blob).encode())  # a bare hash, no newline
    crictl = f"crictl-v1.31.1-linux-{a}.tar.gz"
    crictl_base = "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.31.1/"
    blob = up.add(crictl_base + crictl, tarball({"crictl": script("crictl version v1.31.1")}, None))
    up.add(crictl_base + crictl + ".sha256", f"{sha(blob)}\n".encode())
    cni = f"cni-plugins-linux-{a}-v1.6.1.tgz"
    cni_base = "https://github.com/containernetworking/plugins/releases/download/v1.6.1/"
    plugins = {f"./{p}": script(p) for p in ("bridge", "host-local", "loopback", "portmap")}
    plugins["./LICENSE"] = data("Apache License 2.0\n")
    blob = up.add(cni_base + cni, tarball(plugins, None))
    up.add(cni_base + cni + ".sha256", f"{sha(blob)}  {cni}\n".encode())
    return {}


def tailscale_upstream(up: Upstream, version: str, arch: Architecture) -> dict[str, str]:
    a = arch.debian_name
    top = f"tailscale_{version}_{a}"
    members = {
        "tailscale": script(f"{version}\n  tailscale commit: fixture"),
        "tailscaled": script(f"{version}"),
        "systemd/tailscaled.service": data("[Service]\nExecStart=/usr/sbin/tailscaled\n"),
        "systemd/tailscaled.defaults": data('PORT="41641"\nFLAGS=""\n'),
    }
    blob = up.add(f"https://pkgs.tailscale.com/stable/{top}.tgz", tarball(members, top))
    up.add(f"https://pkgs.tailscale.com/stable/{top}.tgz.sha256", f"{sha(blob)}\n".encode())
    return {}


@dataclass(frozen=True)
class Case:
    name: str
    version: str  # the fixture's version (not the recipe's default)
    upstream: Callable[[Upstream, str, Architecture], dict[str, str]]  # → pins to append
    command: tuple[str, ...]  # run from the merged /usr
    output: str  # what it prints
    executables: tuple[str, ...]
    units: tuple[str, ...]
    data_files: tuple[str, ...] = ()
    links: dict[str, str] = field(default_factory=dict)


CASES = [
    Case(
        "docker",
        "0.0.1",
        docker_upstream,
        ("usr/bin/docker", "--version"),
        "Docker version 0.0.1, build fixture",
        (
            "usr/bin/dockerd",
            "usr/bin/docker",
            "usr/bin/docker-init",
            "usr/bin/docker-proxy",
            "usr/bin/containerd",
            "usr/bin/containerd-shim-runc-v2",
            "usr/bin/ctr",
            "usr/bin/runc",
        ),
        (
            "usr/lib/systemd/system/docker.service",
            "usr/lib/systemd/system/docker.socket",
            "usr/lib/systemd/system/containerd.service",
            "usr/lib/systemd/system/sockets.target.d/10-docker.conf",
        ),
        ("usr/lib/sysusers.d/docker.conf",),
    ),
    Case(
        "containerd",
        "0.0.2",
        containerd_upstream,
        ("usr/bin/containerd", "--version"),
        "containerd github.com/containerd/containerd v0.0.2",
        (
            "usr/bin/containerd",
            "usr/bin/containerd-shim-runc-v2",
            "usr/bin/ctr",
            "usr/bin/runc",
        ),
        (
            "usr/lib/systemd/system/containerd.service",
            "usr/lib/systemd/system/multi-user.target.d/10-containerd.conf",
        ),
    ),
    Case(
        "crio",
        "0.0.3",
        crio_upstream,
        ("usr/bin/crio", "--version"),
        "crio version 0.0.3",
        (
            "usr/bin/crio",
            "usr/bin/pinns",
            "usr/bin/conmon",
            "usr/bin/crun",
            "usr/bin/runc",
            "usr/bin/crictl",
            "opt/cni/bin/bridge",
            "opt/cni/bin/loopback",
        ),
        (
            "usr/lib/systemd/system/crio.service",
            "usr/lib/systemd/system/multi-user.target.d/10-crio.conf",
        ),
        (
            "usr/share/crio/etc/crio/crio.conf",
            "usr/share/crio/etc/crio/crio.conf.d/10-crun.conf",
            "usr/share/crio/etc/crictl.yaml",
            "usr/share/crio/etc/containers/policy.json",
            "usr/share/crio/etc/cni/net.d/11-crio-ipv4-bridge.conflist",
            "usr/lib/tmpfiles.d/10-crio.conf",
            "usr/share/man/man8/crio.8",
        ),
    ),
    Case(
        "k3s",
        "0.0.4+k3s1",
        k3s_upstream,
        ("usr/bin/kubectl", "version"),  # through the multi-call symlink
        "k3s version v0.0.4+k3s1 (x86-64)",
        ("usr/bin/k3s",),
        (
            "usr/lib/systemd/system/k3s.service",
            "usr/lib/systemd/system/k3s-agent.service",
            "usr/lib/systemd/system/multi-user.target.d/10-k3s.conf",
        ),
        links={"usr/bin/kubectl": "k3s", "usr/bin/crictl": "k3s", "usr/bin/ctr": "k3s"},
    ),
    Case(
        "kubernetes",
        "0.0.5",
        kubernetes_upstream,
        ("usr/bin/kubelet", "--version"),
        "Kubernetes v0.0.5 (kubelet)",
        (
            "usr/bin/kubelet",
            "usr/bin/kubeadm",
            "usr/bin/kubectl",
            "usr/bin/crictl",
            "opt/cni/bin/bridge",
            "opt/cni/bin/host-local",
        ),
        (
            "usr/lib/systemd/system/kubelet.service",
            "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
            "usr/lib/systemd/system/multi-user.target.d/10-kubelet.conf",
        ),
        ("usr/lib/tmpfiles.d/10-kubernetes.conf",),
        links={
            "usr/libexec/kubernetes/kubelet-plugins/volume/exec": "/var/lib/kubelet/volumeplugins"
        },
    ),
    Case(
        "tailscale",
        "0.0.6",
        tailscale_upstream,
        ("usr/bin/tailscale", "version"),
        "0.0.6\n  tailscale commit: fixture",
        ("usr/bin/tailscale", "usr/bin/tailscaled"),
        (
            "usr/lib/systemd/system/tailscaled.service",
            "usr/lib/systemd/system/multi-user.target.d/10-tailscale.conf",
        ),
        ("usr/share/tailscale/tailscaled.defaults", "usr/lib/tmpfiles.d/10-tailscale.conf"),
    ),
]


def build_case(
    tmp_path: Path, server: StaticServer, case: Case, arches: tuple[Architecture, ...]
) -> tuple[CliResult, Path]:
    """Publish the fixture release and build the shipped recipe (plus pins, if any)."""
    up = Upstream()
    pins: dict[str, str] = {}
    for arch in arches:
        pins.update(case.upstream(up, case.version, arch))
    up.publish(server)
    recipes = tmp_path / "recipes"
    recipes.mkdir(exist_ok=True)
    text = (RECIPES / f"{case.name}.toml").read_text()
    if pins:
        text += f'\n[sources.sha256."{case.version}"]\n'
        text += "".join(f'{arch} = "{digest}"\n' for arch, digest in pins.items())
    (recipes / f"{case.name}.toml").write_text(text)
    out = tmp_path / "out"
    arch_args = [arg for arch in arches for arg in ("--arch", arch.systemd_name)]
    result = run_cli(
        "build",
        case.name,
        "--recipes-dir",
        recipes,
        "--cache-dir",
        tmp_path / "cache",
        "--version",
        case.version,
        *arch_args,
        "--output",
        out,
        env=mirrors_env(server),
    )
    return result, out


# -- (1) every recipe parses and points at its real upstream --------------------------------

EXPECTED_URLS = {
    "docker": {
        X86: ["https://download.docker.com/linux/static/stable/x86_64/docker-{v}.tgz"],
        ARM: ["https://download.docker.com/linux/static/stable/aarch64/docker-{v}.tgz"],
    },
    "containerd": {
        a: [
            "https://github.com/containerd/containerd/releases/download/v{v}/"
            f"containerd-static-{{v}}-linux-{a.debian_name}.tar.gz",
            f"https://github.com/opencontainers/runc/releases/download/v1.2.3/runc.{a.debian_name}",
        ]
        for a in (X86, ARM)
    },
    "crio": {
        a: [f"https://storage.googleapis.com/cri-o/artifacts/cri-o.{a.debian_name}.v{{v}}.tar.gz"]
        for a in (X86, ARM)
    },
    "k3s": {
        X86: ["https://github.com/k3s-io/k3s/releases/download/v{v}/k3s"],
        ARM: ["https://github.com/k3s-io/k3s/releases/download/v{v}/k3s-arm64"],
    },
    "kubernetes": {
        a: [
            f"https://dl.k8s.io/release/v{{v}}/bin/linux/{a.debian_name}/{tool}"
            for tool in ("kubelet", "kubeadm", "kubectl")
        ]
        + [
            "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.31.1/"
            f"crictl-v1.31.1-linux-{a.debian_name}.tar.gz",
            "https://github.com/containernetworking/plugins/releases/download/v1.6.1/"
            f"cni-plugins-linux-{a.debian_name}-v1.6.1.tgz",
        ]
        for a in (X86, ARM)
    },
    "tailscale": {
        a: [f"https://pkgs.tailscale.com/stable/tailscale_{{v}}_{a.debian_name}.tgz"]
        for a in (X86, ARM)
    },
    "podman": {
        a: [
            "https://github.com/mgoltzsche/podman-static/releases/download/v{v}/"
            f"podman-linux-{a.debian_name}.tar.gz"
        ]
        for a in (X86, ARM)
    },
}

# Where each recipe's integrity comes from: the upstream checksum file (no pin needed).
EXPECTED_CHECKSUM_URLS = {
    "containerd": [
        "https://github.com/containerd/containerd/releases/download/v{v}/"
        "containerd-static-{v}-linux-{d}.tar.gz.sha256sum",
        "https://github.com/opencontainers/runc/releases/download/v1.2.3/runc.sha256sum",
    ],
    "crio": ["https://storage.googleapis.com/cri-o/artifacts/cri-o.{d}.v{v}.tar.gz.sha256sum"],
    "k3s": ["https://github.com/k3s-io/k3s/releases/download/v{v}/sha256sum-{d}.txt"],
    "kubernetes": [
        "https://dl.k8s.io/release/v{v}/bin/linux/{d}/kubelet.sha256",
        "https://dl.k8s.io/release/v{v}/bin/linux/{d}/kubeadm.sha256",
        "https://dl.k8s.io/release/v{v}/bin/linux/{d}/kubectl.sha256",
        "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.31.1/"
        "crictl-v1.31.1-linux-{d}.tar.gz.sha256",
        "https://github.com/containernetworking/plugins/releases/download/v1.6.1/"
        "cni-plugins-linux-{d}-v1.6.1.tgz.sha256",
    ],
    "tailscale": ["https://pkgs.tailscale.com/stable/tailscale_{v}_{d}.tgz.sha256"],
}


def test_catalogue_lists_the_promised_recipes() -> None:
    names = set(available_recipes(RECIPES))
    assert {"podman", "docker", "containerd", "crio", "k3s", "kubernetes", "tailscale"} <= names


@pytest.mark.parametrize("name", available_recipes(RECIPES))
def test_recipe_parses_and_renders_real_upstream_urls(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.toml")
    assert recipe.name == name
    url_sources = [s for s in recipe.sources if s.kind == "url"]
    for arch in recipe.architectures:
        urls = [
            recipe.expand(s.url or "", recipe.version, arch, "url")
            for s in url_sources
            if s.applies_to(arch)
        ]
        for url in urls:
            assert url.startswith("https://"), url
        if name in EXPECTED_URLS:
            expected = [u.format(v=recipe.version) for u in EXPECTED_URLS[name][arch]]
            assert urls == expected
        if name in EXPECTED_CHECKSUM_URLS:
            checksums = [
                recipe.expand(s.checksum_url or "", recipe.version, arch, "checksum_url")
                for s in url_sources
                if s.applies_to(arch)
            ]
            expected = [
                u.format(v=recipe.version, d=arch.debian_name) for u in EXPECTED_CHECKSUM_URLS[name]
            ]
            assert checksums == expected


def test_new_recipes_support_both_architectures() -> None:
    for name in EXPECTED_URLS:
        assert load_recipe(RECIPES / f"{name}.toml").architectures == (X86, ARM), name


def test_integrity_source_of_each_new_recipe() -> None:
    """Checksum files where upstream publishes them; Docker, which does not, is pinned."""
    for name in EXPECTED_CHECKSUM_URLS:
        recipe = load_recipe(RECIPES / f"{name}.toml")
        assert all(s.checksum_url and s.sha256.empty for s in recipe.sources), name
    docker = load_recipe(RECIPES / "docker.toml")
    (source,) = docker.sources
    assert source.checksum_url is None
    assert source.sha256.lookup(docker.version, ARM, default_version=docker.version)
    # No published x86-64 hash was found: unpinned, so such a build is refused (tested below).
    assert source.sha256.lookup(docker.version, X86, default_version=docker.version) is None


# -- (2) each new recipe builds from its upstream-shaped fixture, merges and runs -----------


def _unit_binaries_exist(image: Path, entries: dict[str, object]) -> None:
    """Every Exec*= program of every shipped unit is in the image or a standard host path."""
    for path in entries:
        if not is_unit_file(path):
            continue
        text = read_file(image, path).decode()
        for _, _, command in exec_lines(text):
            if not command:
                continue
            binary = command.lstrip("@-:+!|").split()[0]
            if binary.lstrip("/") in entries:
                continue
            directory, base = os.path.split(binary)
            assert directory in STANDARD_BIN_DIRS and base in STANDARD_HOST_BINARIES, (
                f"{path}: {binary} is neither in the image nor a standard host binary"
            )


def unit_diagnostics(unit_dir: Path) -> list[str]:
    """What the real systemd (`systemd-analyze verify`) says about the unit files, drop-ins
    included, in `unit_dir`: unknown keys, keys in the wrong section, bad values.

    SYSTEMD_UNIT_PATH puts `unit_dir` first in the search path, so drop-ins in
    `NAME.service.d/` and target drop-ins (`multi-user.target.d/`) are read too. Missing
    binaries are not reported: they are in the image, not on this host.
    """
    names = sorted(p.name for p in unit_dir.iterdir() if p.suffix in {".service", ".socket"})
    names += sorted(p.name[: -len(".d")] for p in unit_dir.glob("*.target.d"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=unit_dir,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_LEVEL": "info"},
        capture_output=True,
        text=True,
        check=False,
    )
    return [line for line in proc.stderr.splitlines() if str(unit_dir) in line]


def test_unit_diagnostics_reports_a_key_in_the_wrong_section(tmp_path: Path) -> None:
    (tmp_path / "demo.service").write_text(
        "[Service]\nExecStart=/bin/true\nStartLimitIntervalSec=5\n"
    )
    (tmp_path / "demo.service.d").mkdir()
    (tmp_path / "demo.service.d/10-x.conf").write_text("[Service]\nBogus=1\n")
    found = unit_diagnostics(tmp_path)
    assert len(found) == 2, found
    assert "demo.service:3: Unknown key 'StartLimitIntervalSec' in section [Service]" in found[0]
    assert "10-x.conf:2: Unknown key 'Bogus'" in found[1]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_recipe_builds_from_upstream_fixture_and_runs(
    tmp_path: Path, static_server: StaticServer, case: Case
) -> None:
    result, out = build_case(tmp_path, static_server, case, (X86,))
    assert result.returncode == 0, result.stderr
    image = out / f"{case.name}-{case.version}-x86-64.raw"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [image.name, f"{case.name}-{case.version}-x86-64.provenance.json", "SHA256SUMS"]
    )

    shown = run_cli("inspect", image, "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["release_files"] == {
        case.name: {
            "ID": "_any",
            "ARCHITECTURE": "x86-64",
            "SYSEXT_ID": case.name,
            "SYSEXT_VERSION_ID": case.version,
            "SYSEXT_SCOPE": "system portable",
            "EXTENSION_RELOAD_MANAGER": "1",
        }
    }
    assert [c for c in info["checks"] if c["severity"] == "error"] == []
    entries = {e["path"]: e for e in info["entries"]}
    assert all((e["uid"], e["gid"]) == (0, 0) for e in entries.values())
    # Nothing outside the merged hierarchies, nothing of upstream's /usr/local layout.
    assert all(p.split("/")[0] in {"usr", "opt"} for p in entries), sorted(entries)
    assert not [p for p in entries if p.startswith("usr/local")]
    for path in case.executables:
        assert (entries[path]["kind"], entries[path]["mode"]) == ("file", "0755"), path
    for path in case.units + case.data_files:
        assert (entries[path]["kind"], entries[path]["mode"]) == ("file", "0644"), path
    for path, target in case.links.items():
        assert (entries[path]["kind"], entries[path].get("target")) == ("symlink", target)
    _unit_binaries_exist(image, entries)
    extracted = tmp_path / "extracted"
    subprocess.run(
        ["unsquashfs", "-q", "-d", extracted, image, "usr/lib/systemd"],
        check=True,
        capture_output=True,
    )
    assert unit_diagnostics(extracted / "usr/lib/systemd/system") == []

    provenance = json.loads(
        (out / f"{case.name}-{case.version}-x86-64.provenance.json").read_text()
    )
    origins = [s["origin"] for s in provenance["inputs"]["sources"]]
    assert all(o.startswith(tuple(MIRROR_DIRS)) for o in origins), origins

    if os.geteuid() == 0:  # merging needs loop mounts
        from tests.merge_helper import merge_and_run

        merged = merge_and_run([image], FLATCAR, ["{root}/" + case.command[0], *case.command[1:]])
        assert merged.merge.returncode == 0, merged
        assert merged.merged_names == [case.name], merged
        assert merged.command.stdout == case.output + "\n", merged
        assert merged.after_unmerge.returncode != 0


def test_k3s_picks_the_arm64_asset_for_arm64(tmp_path: Path, static_server: StaticServer) -> None:
    """k3s names its binary per architecture (k3s / k3s-arm64): one source each."""
    case = next(c for c in CASES if c.name == "k3s")
    result, out = build_case(tmp_path, static_server, case, (X86, ARM))
    assert result.returncode == 0, result.stderr
    for arch in (X86, ARM):
        image = out / f"k3s-{case.version}-{arch.systemd_name}.raw"
        assert read_image(image).release_files["k3s"]["ARCHITECTURE"] == arch.systemd_name
        assert read_file(image, "usr/bin/k3s") == (
            f"#!/bin/sh\necho 'k3s version v{case.version} ({arch.value})'\n".encode()
        )
    sums = (out / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in sums] == [
        f"k3s-{case.version}-arm64.raw",
        f"k3s-{case.version}-x86-64.raw",
    ]


# -- integrity and the unit check, on the shipped recipes -----------------------------------


def test_docker_without_a_pin_for_the_version_is_refused(
    tmp_path: Path, static_server: StaticServer
) -> None:
    """Docker publishes no checksums: an unpinned version must not be trusted."""
    docker_upstream(up := Upstream(), "0.0.9", X86)
    up.publish(static_server)
    out = tmp_path / "out"
    result = run_cli(
        "build",
        RECIPES / "docker.toml",
        "--version",
        "0.0.9",
        "--arch",
        "x86-64",
        "--cache-dir",
        tmp_path / "cache",
        "--output",
        out,
        env=mirrors_env(static_server),
    )
    assert result.returncode == 2
    assert (
        "error: recipe docker.toml: sources[0]: no sha256 pinned for version 0.0.9 on x86-64"
        in (result.stderr)
    )
    assert "hint:" in result.stderr
    assert not out.exists() or not list(out.iterdir())


def test_checksum_file_that_disagrees_stops_the_build(
    tmp_path: Path, static_server: StaticServer
) -> None:
    case = next(c for c in CASES if c.name == "tailscale")
    up = Upstream()
    case.upstream(up, case.version, X86)
    url = f"https://pkgs.tailscale.com/stable/tailscale_{case.version}_amd64.tgz.sha256"
    up.files[url] = b"0" * 64 + b"\n"
    up.publish(static_server)
    out = tmp_path / "out"
    result = run_cli(
        "build",
        RECIPES / "tailscale.toml",
        "--version",
        case.version,
        "--arch",
        "x86-64",
        "--cache-dir",
        tmp_path / "cache",
        "--output",
        out,
        env=mirrors_env(static_server),
    )
    assert result.returncode == 2
    assert "sha256 mismatch" in result.stderr
    assert "tailscale_0.0.6_amd64.tgz" in result.stderr
    assert not out.exists() or not list(out.iterdir())


def test_unit_pointing_at_a_binary_the_recipe_does_not_ship_fails(
    tmp_path: Path, static_server: StaticServer
) -> None:
    """The staging check applies to the catalogue: a typo in a unit is a build error."""
    case = next(c for c in CASES if c.name == "containerd")
    up = Upstream()
    case.upstream(up, case.version, X86)
    up.publish(static_server)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = (RECIPES / "containerd.toml").read_text()
    assert "ExecStart=/usr/bin/containerd\n" in text
    broken = text.replace("ExecStart=/usr/bin/containerd\n", "ExecStart=/usr/bin/containerdd\n")
    (recipes / "containerd.toml").write_text(broken)
    out = tmp_path / "out"
    result = run_cli(
        "build",
        "containerd",
        "--recipes-dir",
        recipes,
        "--version",
        case.version,
        "--arch",
        "x86-64",
        "--cache-dir",
        tmp_path / "cache",
        "--output",
        out,
        env=mirrors_env(static_server),
    )
    assert result.returncode == 2
    assert "/usr/bin/containerdd is neither in the image nor a standard host path" in (
        result.stderr
    )
    assert not out.exists() or not list(out.iterdir())
