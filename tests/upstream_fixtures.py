"""Upstream-shaped release trees for every shipped recipe (../shared research, recipes/*.toml
headers): the same URLs, file names, archive members and layouts across versions, checksum
formats and signatures as the real releases, with tiny shell scripts as binaries.

Each builder adds one version's files for one architecture to an `Upstream` and returns
nothing; `Upstream.publish()` writes them under a local HTTP server's root, in the
directories the mirror setting maps each upstream host to (MIRROR_DIRS).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pysequoia

from sysext.systemd.architecture import Architecture
from tests.rpm_fixture import rpm_package
from tests.servers import StaticServer

X86, ARM = Architecture.X86_64, Architecture.ARM64

# Upstream prefix → directory on the fixture server (the air-gapped mirror layout).
MIRROR_DIRS = {
    "https://github.com/": "gh/",
    "https://api.github.com/": "api/",
    "https://dl.k8s.io/": "k8s/",
    "https://storage.googleapis.com/": "gcs/",
    "https://pkgs.tailscale.com/": "ts/",
    "https://download.docker.com/": "docker/",
    "https://s3.us-east-1.amazonaws.com/": "s3/",
    "https://keyserver.ubuntu.com/": "keys/",
}

Member = tuple[bytes, int] | str  # (content, mode), or a symlink target


def script(text: str) -> tuple[bytes, int]:
    """A stand-in binary: prints `text` whatever its arguments."""
    return (f"#!/bin/sh\necho '{text}'\n".encode(), 0o755)


def data(text: str) -> tuple[bytes, int]:
    return (text.encode(), 0o644)


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def tarball(members: dict[str, Member], top: str | None, *, xz: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz" if xz else "w:gz") as tar:
        if top:
            info = tarfile.TarInfo(top)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, member in members.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.mtime = 1_700_000_000
            if isinstance(member, str):
                info.type, info.linkname = tarfile.SYMTYPE, member
                tar.addfile(info)
                continue
            content, mode = member
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class SigningKey:
    """A test OpenPGP key standing in for an upstream's release key."""

    def __init__(self) -> None:
        self.tsk = pysequoia.Tsk.generate("Upstream Release <release@upstream.invalid>")
        self.cert = self.tsk.extract_certificate()
        self.fingerprint = self.cert.fingerprint.upper()
        self.armored = str(self.cert).encode()

    def sig_issuer(self, blob: bytes) -> str:
        """The issuer a signature of this key names (its signing subkey's fingerprint)."""
        sig = pysequoia.Sig.from_bytes(self.sign(blob, armor=False))
        return str(sig.issuer_fingerprint).upper()

    def sign(self, blob: bytes, *, armor: bool) -> bytes:
        return bytes(
            pysequoia.sign(
                self.tsk.signer(), blob, mode=pysequoia.SignatureMode.DETACHED, armor=armor
            )
        )


@dataclass
class Upstream:
    """Files to serve, keyed by their real upstream URL; `key` signs where upstream does."""

    files: dict[str, bytes] = field(default_factory=dict)
    key: SigningKey = field(default_factory=SigningKey)

    def add(self, url: str, blob: bytes) -> bytes:
        self.files[url] = blob
        return blob

    def publish(self, target: Path | StaticServer) -> None:
        # A server is duck-typed: pytest may load conftest under two module names.
        root: Path = target if isinstance(target, Path) else target.root
        for url, blob in self.files.items():
            prefix = next(p for p in MIRROR_DIRS if url.startswith(p))
            relative = url.removeprefix(prefix).split("?", 1)[0]
            path = root / MIRROR_DIRS[prefix] / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)


def minor(version: str) -> int:
    return int(version.split(".")[1])


def major(version: str) -> int:
    return int(version.split(".")[0])


# -- one builder per recipe ---------------------------------------------------------------


def docker(up: Upstream, version: str, arch: Architecture) -> None:
    """No checksum, no signature: the recipe is lock-only."""
    upstream_arch = {X86: "x86_64", ARM: "aarch64"}[arch]
    names = ["dockerd", "docker-init", "docker-proxy", "containerd", "ctr", "runc"]
    names.append("containerd-shim-runc-v2")
    members: dict[str, Member] = {n: script(f"{n} {version}") for n in names}
    members["docker"] = script(f"Docker version {version}, build fixture")
    url = f"https://download.docker.com/linux/static/stable/{upstream_arch}/docker-{version}.tgz"
    up.add(url, tarball(members, "docker"))


def containerd(up: Upstream, version: str, arch: Architecture) -> None:
    a = arch.debian_name
    name = f"containerd-static-{version}-linux-{a}.tar.gz"
    base = f"https://github.com/containerd/containerd/releases/download/v{version}/"
    members: dict[str, Member] = {
        "bin/containerd": script(f"containerd github.com/containerd/containerd v{version}"),
        "bin/containerd-shim-runc-v2": script("containerd-shim-runc-v2"),
        "bin/containerd-stress": script("containerd-stress"),
        "bin/ctr": script(f"ctr github.com/containerd/containerd v{version}"),
    }
    if major(version) == 1:  # 1.7 still ships the v1 shims
        members["bin/containerd-shim"] = script("containerd-shim")
        members["bin/containerd-shim-runc-v1"] = script("containerd-shim-runc-v1")
    blob = up.add(base + name, tarball(members, None))
    up.add(base + name + ".sha256sum", f"{sha(blob)}  {name}\n".encode())
    runc_base = "https://github.com/opencontainers/runc/releases/download/v1.2.3/"
    lines = []
    for other in (X86, ARM):
        runc = up.add(
            runc_base + f"runc.{other.debian_name}", script(f"runc 1.2.3 {other.value}")[0]
        )
        lines.append(f"{sha(runc)}  runc.{other.debian_name}\n")
    up.add(runc_base + "runc.sha256sum", "".join(lines).encode())


def crio(up: Upstream, version: str, arch: Architecture) -> None:
    """The cri-o/packaging bundle: 10-crio.conf from 1.30, the bridge network renamed
    (and disabled) from 1.32, crio-credential-provider from 1.33."""
    a = arch.debian_name
    members: dict[str, Member] = {
        f"bin/{n}": script(f"{n} {version}")
        for n in ("crio", "pinns", "conmon", "conmonrs", "crun", "runc", "crictl")
    }
    if minor(version) >= 33:
        members["bin/crio-credential-provider"] = script("crio-credential-provider")
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        members[f"cni-plugins/{plugin}"] = script(plugin)
    members["cni-plugins/LICENSE"] = (b"Apache License 2.0\n", 0o755)  # as tar'd upstream
    members["cni-plugins/README.md"] = (b"# plugins\n", 0o755)
    members["etc/10-crio.conf"] = data(
        '[crio.runtime]\ndefault_runtime = "crun"\n[crio.runtime.runtimes.crun]\n'
        'runtime_path = "/usr/libexec/crio/crun"\n[crio.image]\n'
        'signature_policy = "/etc/crio/policy.json"\n'
    )
    members["etc/crictl.yaml"] = data("runtime-endpoint: unix:///var/run/crio/crio.sock\n")
    members["etc/crio-umount.conf"] = data("/var/lib/containers/*\n")
    members["etc/crio"] = data("CRIO_CONFIG_OPTIONS=\n")
    members["contrib/crio.service"] = data("[Service]\nExecStart=/usr/local/bin/crio\n")
    members["contrib/policy.json"] = data('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    members["contrib/registries.conf"] = data('unqualified-search-registries = ["docker.io"]\n')
    if minor(version) >= 32:
        members["contrib/10-crio-bridge.conflist.disabled"] = data('{"cniVersion": "1.0.0"}\n')
    else:
        members["contrib/11-crio-ipv4-bridge.conflist"] = data('{"cniVersion": "1.0.0"}\n')
    members["man/crio.8"] = data(".TH crio 8\n")
    members["man/crio.conf.5"] = data(".TH crio.conf 5\n")
    members["completions/bash/crio"] = data("complete -F _crio crio\n")
    members["install"] = (b"#/usr/bin/env sh\nexit 1\n", 0o755)
    members["Makefile"] = data("all: ./install\n")
    members["README.md"] = data("# CRI-O bundle\n")
    members["LICENSE"] = data("Apache License 2.0\n")
    name = f"cri-o.{a}.v{version}.tar.gz"
    base = "https://storage.googleapis.com/cri-o/artifacts/"
    blob = up.add(base + name, tarball(members, "cri-o"))
    up.add(base + name + ".sha256sum", f"{sha(blob)}  {name}\n".encode())


def k3s(up: Upstream, version: str, arch: Architecture) -> None:
    base = f"https://github.com/k3s-io/k3s/releases/download/v{version}/"
    asset = {X86: "k3s", ARM: "k3s-arm64"}[arch]
    blob = up.add(base + asset, script(f"k3s version v{version}")[0])
    airgap = f"k3s-airgap-images-{arch.debian_name}.tar"
    up.add(
        base + f"sha256sum-{arch.debian_name}.txt",
        f"{'a' * 64}  {airgap}\n{sha(blob)}  {asset}\n".encode(),
    )


def kubernetes(up: Upstream, version: str, arch: Architecture) -> None:
    a = arch.debian_name
    base = f"https://dl.k8s.io/release/v{version}/bin/linux/{a}/"
    for tool in ("kubelet", "kubeadm", "kubectl"):
        blob = up.add(base + tool, script(f"Kubernetes v{version} ({tool})")[0])
        up.add(base + tool + ".sha256", sha(blob).encode())  # a bare hash, no newline
    track = ".".join(version.split(".")[:2])
    up.add(f"https://dl.k8s.io/release/stable-{track}.txt", f"v{version}".encode())
    crictl = f"crictl-v1.31.1-linux-{a}.tar.gz"
    crictl_base = "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.31.1/"
    blob = up.add(crictl_base + crictl, tarball({"crictl": script("crictl v1.31.1")}, None))
    up.add(crictl_base + crictl + ".sha256", f"{sha(blob)}\n".encode())
    cni_plugins(up, "1.6.1", arch)


def tailscale(up: Upstream, version: str, arch: Architecture) -> None:
    a = arch.debian_name
    top = f"tailscale_{version}_{a}"
    members: dict[str, Member] = {
        "tailscale": script(f"tailscale {version}"),
        "tailscaled": script(f"tailscaled {version}"),
        "systemd/tailscaled.service": data("[Service]\nExecStart=/usr/sbin/tailscaled\n"),
        "systemd/tailscaled.defaults": data('PORT="41641"\nFLAGS=""\n'),
    }
    if minor(version) >= 94:  # since ~March 2026
        members["systemd/tailscale-online.target"] = data("[Unit]\n")
        members["systemd/tailscale-wait-online.service"] = data(
            "[Service]\nExecStart=/usr/bin/tailscale wait\n"
        )
    blob = up.add(f"https://pkgs.tailscale.com/stable/{top}.tgz", tarball(members, top))
    up.add(f"https://pkgs.tailscale.com/stable/{top}.tgz.sha256", f"{sha(blob)}\n".encode())


def podman(up: Upstream, version: str, arch: Architecture) -> None:
    """podman-static: 4.9 (no quadlet, etc/cni), 5.4.1 (quadlet, units and generator links
    in usr/lib/systemd), 5.4.2+ (all under usr/local/lib/systemd), 5.8+ (completions)."""
    a = arch.debian_name
    members: dict[str, Member] = {
        "README.md": data("# podman-static\n"),
        "etc/containers/containers.conf": data('[engine]\ncgroup_manager = "cgroupfs"\n'),
        "etc/containers/policy.json": data('{"default": [{"type": "insecureAcceptAnything"}]}\n'),
        "etc/containers/registries.conf": data('unqualified-search-registries = ["docker.io"]\n'),
        "etc/containers/storage.conf": data('[storage]\ndriver = "overlay"\n'),
    }
    bins = ["crun", "runc", "fuse-overlayfs", "fusermount3"]
    bins += ["slirp4netns"] if major(version) == 4 else ["pasta"]
    members["usr/local/bin/podman"] = script(f"podman version {version}")
    members.update({f"usr/local/bin/{b}": script(b) for b in bins})
    helpers = ["conmon", "rootlessport", "catatonit"]
    helpers += ["netavark", "aardvark-dns"] if major(version) >= 5 else []
    members.update({f"usr/local/lib/podman/{h}": script(h) for h in helpers})
    units = ["podman.service", "podman.socket", "podman-restart.service"]
    if major(version) == 4:
        members["etc/cni/net.d/87-podman-bridge.conflist"] = data("{}\n")
        members["usr/lib/systemd/system/podman-restart.service"] = data("[Service]\n")
    else:
        members["etc/containers/seccomp.json"] = data("{}\n")
        members["usr/local/libexec/podman/quadlet"] = script(f"quadlet {version}")
        systemd = "usr/lib/systemd" if version == "5.4.1" else "usr/local/lib/systemd"
        to_libexec = "../../../local/libexec" if version == "5.4.1" else "../../../libexec"
        for kind in ("system", "user"):
            for unit in units:
                members[f"{systemd}/{kind}/{unit}"] = data("[Service]\nExecStart=podman\n")
            members[f"{systemd}/{kind}-generators/podman-{kind}-generator"] = (
                f"{to_libexec}/podman/quadlet"
            )
    if major(version) >= 5 and minor(version) >= 8:
        members["usr/local/share/bash-completion/completions/podman"] = data("complete\n")
    url = (
        f"https://github.com/mgoltzsche/podman-static/releases/download/v{version}/"
        f"podman-linux-{a}.tar.gz"
    )
    blob = up.add(url, tarball(members, f"podman-linux-{a}"))
    up.add(url + ".asc", up.key.sign(blob, armor=True))
    up.add(PODMAN_KEY_URL, up.key.armored)


PODMAN_KEY_URL = (
    "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0x"
    "0CCF102C4F95D89E583FF1D4F8B5AF50344BB503"
)


def docker_compose(up: Upstream, version: str, arch: Architecture) -> None:
    a = {X86: "x86_64", ARM: "aarch64"}[arch]
    base = f"https://github.com/docker/compose/releases/download/v{version}/"
    name = f"docker-compose-linux-{a}"
    blob = up.add(base + name, script(f"Docker Compose version v{version}")[0])
    up.add(base + name + ".sha256", f"{sha(blob)} *{name}\n".encode())  # binary mode


def docker_buildx(up: Upstream, version: str, arch: Architecture) -> None:
    base = f"https://github.com/docker/buildx/releases/download/v{version}/"
    lines = []
    for other in (X86, ARM):
        name = f"buildx-v{version}.linux-{other.debian_name}"
        blob = up.add(base + name, script(f"github.com/docker/buildx v{version}")[0])
        lines += [f"{sha(blob)} *{name}\n", f"{'b' * 64} *{name}.sbom.json\n"]
    up.add(base + "checksums.txt", "".join(lines).encode())


def runc(up: Upstream, version: str, arch: Architecture) -> None:
    base = f"https://github.com/opencontainers/runc/releases/download/v{version}/"
    lines = []
    for other in (X86, ARM):
        blob = up.add(base + f"runc.{other.debian_name}", script(f"runc version {version}")[0])
        lines.append(f"{sha(blob)}  runc.{other.debian_name}\n")
    lines.append(f"{'c' * 64}  runc.tar.xz\n")
    up.add(base + "runc.sha256sum", "".join(lines).encode())


def cni_plugins(up: Upstream, version: str, arch: Architecture) -> None:
    a = arch.debian_name
    name = f"cni-plugins-linux-{a}-v{version}.tgz"
    base = f"https://github.com/containernetworking/plugins/releases/download/v{version}/"
    members: dict[str, Member] = {
        f"./{p}": script(f"CNI {p} plugin v{version}")
        for p in ("bridge", "host-local", "loopback", "portmap", "tuning")
    }
    # chown'd and tar'd from bin/ as they are: upstream's licence ships with the plugins.
    members["./LICENSE"] = (b"Apache License 2.0\n", 0o644)
    members["./README.md"] = (b"# CNI plugins\n", 0o644)
    blob = up.add(base + name, tarball(members, None))
    up.add(base + name + ".sha256", f"{sha(blob)}  {name}\n".encode())


def wasmtime(up: Upstream, version: str, arch: Architecture) -> None:
    a = {X86: "x86_64", ARM: "aarch64"}[arch]
    top = f"wasmtime-v{version}-{a}-linux"
    members: dict[str, Member] = {
        "wasmtime": script(f"wasmtime {version}"),
        "LICENSE": data("Apache License 2.0 WITH LLVM-exception\n"),
        "README.md": data("# wasmtime\n"),
    }
    if major(version) >= 15:
        members["wasmtime-min"] = script(f"wasmtime-min {version}")
    base = f"https://github.com/bytecodealliance/wasmtime/releases/download/v{version}/"
    blob = up.add(base + f"{top}.tar.xz", tarball(members, top, xz=True))
    # The releases API: since June 2025 every uploaded asset has a sha256 `digest`.
    api = f"https://api.github.com/repos/bytecodealliance/wasmtime/releases/tags/v{version}"
    assets = json.loads(up.files.get(api, b'{"assets": []}'))["assets"]
    asset: dict[str, object] = {"name": f"{top}.tar.xz", "size": len(blob)}
    if major(version) >= 34:
        asset["digest"] = f"sha256:{sha(blob)}"
    assets.append(asset)
    up.add(api, json.dumps({"tag_name": f"v{version}", "assets": assets}).encode())


SSM_KEY_URL = (
    "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0x"
    "8108A07A9EBE248E3F1C63F254F4F56E693ECA21"
)
SSM_BINARIES = (
    "amazon-ssm-agent",
    "ssm-agent-worker",
    "ssm-document-worker",
    "ssm-session-worker",
    "ssm-session-logger",
    "ssm-cli",
)
SSM_UNIT = (
    "[Unit]\nDescription=amazon-ssm-agent\nAfter=network-online.target\n\n[Service]\n"
    "Type=simple\nWorkingDirectory=/usr/bin/\nExecStart=/usr/bin/amazon-ssm-agent\n"
    "KillMode=process\nRestart=always\nRestartPreventExitStatus=194\nRestartSec=90\n\n"
    "[Install]\nWantedBy=multi-user.target\n"
)


def amazon_ssm_agent(up: Upstream, version: str, arch: Architecture) -> None:
    files = {f"/usr/bin/{b}": script(f"{b} {version}") for b in SSM_BINARIES}
    for name in ("amazon-ssm-agent.json.template", "seelog.xml.template"):
        files[f"/etc/amazon/ssm/{name}"] = data("{}\n")
    for name in ("RELEASENOTES.md", "README.md", "NOTICE.md"):
        files[f"/etc/amazon/ssm/{name}"] = data("# notes\n")
    files["/etc/init/amazon-ssm-agent.conf"] = data("start on runlevel [345]\n")
    files["/etc/systemd/system/amazon-ssm-agent.service"] = data(SSM_UNIT)
    blob = rpm_package("amazon-ssm-agent", version, files, compression="xz")
    base = (
        f"https://s3.us-east-1.amazonaws.com/amazon-ssm-us-east-1/{version}/"
        f"linux_{arch.debian_name}/"
    )
    up.add(base + "amazon-ssm-agent.rpm", blob)
    up.add(base + "amazon-ssm-agent.rpm.sig", up.key.sign(blob, armor=False))
    up.add(SSM_KEY_URL, up.key.armored)


def droplet_agent(up: Upstream, version: str, arch: Architecture) -> None:
    assert arch is X86, "upstream builds amd64 only"
    base = f"https://github.com/digitalocean/droplet-agent/releases/download/{version}/"
    name = f"droplet-agent_{version}_linux_amd64.tar.gz"
    members: dict[str, Member] = {
        "droplet-agent": script(f"droplet-agent {version}"),
        "LICENSE.md": data("Apache License 2.0\n"),
        "README.md": data("# droplet-agent\n"),
        "CHANGELOG.md": data("# changes\n"),
    }
    blob = up.add(base + name, tarball(members, None))
    up.add(base + f"droplet-agent_{version}_checksums.txt", f"{sha(blob)}  {name}\n".encode())


BUILDERS: dict[str, Callable[[Upstream, str, Architecture], None]] = {
    "docker": docker,
    "containerd": containerd,
    "crio": crio,
    "k3s": k3s,
    "kubernetes": kubernetes,
    "tailscale": tailscale,
    "podman": podman,
    "docker-compose": docker_compose,
    "docker-buildx": docker_buildx,
    "runc": runc,
    "cni-plugins": cni_plugins,
    "wasmtime": wasmtime,
    "amazon-ssm-agent": amazon_ssm_agent,
    "oem-ami": amazon_ssm_agent,
    "droplet-agent": droplet_agent,
}

# Real fingerprints pinned by shipped recipes, which tests replace by their own key's.
PINNED_FINGERPRINTS = (
    "0CCF102C4F95D89E583FF1D4F8B5AF50344BB503",
    "8108A07A9EBE248E3F1C63F254F4F56E693ECA21",
)
