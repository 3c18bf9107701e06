"""Hosts as Flatcar and Fedora CoreOS run them (issue 15, with issue 9 item 3 and issue 8
item 6): OS-bound images chosen by the host's VERSION_ID, the OS's own extensions masked,
the Fedora CoreOS layout with its SELinux relabel step, and update units that fail visibly.

Everything runs against one real registry (`sysext serve`). Configs are checked by the real
ignition-validate and staged into a scratch root by the real Ignition files stage (Debian's
ignition 2.14 binary, `-platform file -stage files -root ROOT`); the update script the
config installs is run with the real systemd-sysupdate 254.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from sysext.build.pack import pack
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease
from sysext.systemd.patterns import HostInfo, expand_specifiers, match_pattern
from sysext.systemd.transfer import parse_transfer
from sysext.trust import signing
from tests.registry_server import RegistryServer, running_registry
from tests.servers import StaticServer, run_cli
from tests.test_provision import SCHEMA_3_4_0, ignition_validate, schema_problems

ARCH = "x86-64"
IGNITION = Path("/usr/lib/dracut/modules.d/30ignition/ignition")
# (name, version, VERSION_ID or None, X_SYSEXT_REPLACES or None)
PUBLISHED = (
    ("docker", "28.0.1", None, "docker-flatcar containerd-flatcar"),
    ("podman", "5.4.0", None, "flatcar-podman"),
    ("hello", "1.0", None, None),
    ("kmod", "1.0", "3975.2.0", None),
    ("kmod", "1.0", "4081.2.0", None),
    ("kmod", "1.1", "4081.2.0", None),
)


def build(
    work: Path, name: str, version: str, version_id: str | None, replaces: str | None
) -> Path:
    tree = work / f"tree-{name}-{version}-{version_id}"
    binary = tree / "usr" / "bin" / name
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\necho {name} {version}\n")
    binary.chmod(0o755)
    release = ExtensionRelease(
        name,
        version,
        Architecture(ARCH),
        os_id="flatcar" if version_id else "_any",
        version_id=version_id,
        extra={"X_SYSEXT_REPLACES": replaces} if replaces else {},
    )
    return pack(tree, release, work / "out" / f"{name}-{version}-{version_id}").path


def upload(reg: RegistryServer, image: Path) -> None:
    name = image.name.split("-")[0]
    response = requests.put(
        f"{reg.url}/api/v1/extensions/{name}/images/{image.name}",
        data=image.read_bytes(),
        headers=reg.headers(),
        timeout=60,
    )
    assert response.status_code == 200, response.text


@pytest.fixture(scope="session")
def hosts_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One registry for this module and the docs-commands test (started once)."""
    work = tmp_path_factory.mktemp("hosts")
    with running_registry(work / "data") as reg:
        for entry in PUBLISHED:
            upload(reg, build(work, *entry))
        yield reg


@pytest.fixture
def registry(hosts_registry: RegistryServer) -> RegistryServer:
    return hosts_registry


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def butane(reg: RegistryServer, *args: str) -> dict[str, Any]:
    result = run_cli("butane", *args, "--registry", reg.url)
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


def ignition(reg: RegistryServer, *args: str) -> str:
    result = run_cli("butane", *args, "--registry", reg.url, "--ignition")
    assert result.returncode == 0, result.stderr
    return result.stdout


def files_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in document["storage"]["files"]}


# --- OS-bound extensions: image, hash and %w pattern agree ---------------------------------


@pytest.mark.parametrize(("os_version", "expected"), [("4081.2.0", "1.1"), ("3975.2.0", "1.0")])
def test_os_bound_config_picks_the_hosts_image_and_a_w_pattern(
    registry: RegistryServer, os_version: str, expected: str
) -> None:
    document = butane(registry, "kmod", "--os-version", os_version)
    files = files_of(document)
    filename = f"kmod-{expected}-{os_version}-{ARCH}.raw"
    entry = files[f"/opt/extensions/kmod/{filename}"]
    served = requests.get(f"{registry.url}/extensions/kmod/{filename}", timeout=10)
    assert entry["contents"]["verification"]["hash"] == f"sha256-{sha256(served.content)}"
    transfer = parse_transfer(files["/etc/sysupdate.kmod.d/kmod.conf"]["contents"]["inline"])
    (pattern,) = transfer.match_patterns("Target")
    assert pattern == "kmod-@v-%w-%a.raw"
    # The host this config is for sees exactly the installed file, with the version pinned.
    host = HostInfo(arch=ARCH, os_release={"ID": "flatcar", "VERSION_ID": os_version})
    match = match_pattern(expand_specifiers(pattern, host), filename, strict=True)
    assert match is not None and match.version == expected
    # The API answers the same text for the same choices.
    api = requests.get(
        f"{registry.url}/api/v1/extensions/kmod/butane",
        params={"os_version": os_version},
        timeout=30,
    )
    assert api.status_code == 200, api.text
    assert yaml.safe_load(api.text) == document


def test_os_bound_needs_the_os_version_and_lists_what_exists(registry: RegistryServer) -> None:
    missing = run_cli("butane", "kmod", "--registry", registry.url)
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        "error: kmod is built per OS version: give the host's VERSION_ID",
        "hint: --os-version V (API: os_version=V); x86-64 images exist for OS versions: "
        "4081.2.0, 3975.2.0",
    ]
    other = run_cli("butane", "kmod", "--os-version", "3033.2.0", "--registry", registry.url)
    assert other.returncode == 2
    assert other.stderr.splitlines()[0] == (
        "error: kmod has no x86-64 image for OS version 3033.2.0 in channel 'stable'"
    )
    assert "OS versions: 4081.2.0, 3975.2.0" in other.stderr
    api = requests.get(f"{registry.url}/api/v1/provision/ignition?ext=kmod", timeout=30)
    assert api.status_code == 400 and "OS versions: 4081.2.0, 3975.2.0" in api.json()["detail"]
    api = requests.get(
        f"{registry.url}/api/v1/provision/ignition",
        params={"ext": "kmod", "os_version": "3033.2.0"},
        timeout=30,
    )
    assert api.status_code == 404 and "3033.2.0" in api.json()["detail"]
    # An unbound extension ignores the OS version: it fits every host.
    assert butane(registry, "hello", "--os-version", "3033.2.0")["storage"]["links"][0] == {
        "path": "/etc/extensions/hello.raw",
        "target": "/opt/extensions/hello/hello-1.0-x86-64.raw",
        "hard": False,
    }


def test_transfer_command_writes_the_registrys_own_pattern(registry: RegistryServer) -> None:
    for name, expected in (("kmod", "kmod-@v-%w-%a.raw"), ("hello", "hello-@v-%a.raw")):
        cli = run_cli("transfer", name, "--registry", registry.url)
        assert cli.returncode == 0, cli.stderr
        served = requests.get(f"{registry.url}/extensions/{name}/{name}.conf", timeout=10)
        for text in (cli.stdout, served.text):
            assert parse_transfer(text).match_patterns("Source") == [expected]
            assert parse_transfer(text).match_patterns("Target") == [expected]
    # The FCOS layout: the same text the fcos first-boot config installs.
    fcos = run_cli("transfer", "kmod", "--registry", registry.url, "--variant", "fcos")
    assert fcos.returncode == 0, fcos.stderr
    config = butane(registry, "kmod", "--os-version", "4081.2.0", "--variant", "fcos", "--timer")
    assert files_of(config)["/etc/sysupdate.kmod.d/kmod.conf"]["contents"]["inline"] == (
        fcos.stdout
    )
    assert parse_transfer(fcos.stdout).get("Target", "CurrentSymlink") == (
        "/var/lib/extensions/kmod.raw"
    )
    unknown = run_cli("transfer", "nope", "--registry", registry.url)
    assert unknown.returncode == 2
    assert "serves no 'nope' in channel 'stable'" in unknown.stderr
    assert "--os-bound/--any-os" in unknown.stderr


# --- the OS's own extensions ----------------------------------------------------------------


def test_flatcar_config_switches_off_the_os_extensions_an_image_replaces(
    registry: RegistryServer,
) -> None:
    # The registry read the field from the image at publish time (GET /api/v1/extensions/N).
    detail = requests.get(f"{registry.url}/api/v1/extensions/docker", timeout=10).json()
    assert detail["images"][0]["replaces"] == ["docker-flatcar", "containerd-flatcar"]
    document = butane(registry, "docker", "podman", "hello")
    links = {link["path"]: link for link in document["storage"]["links"]}
    for os_name in ("docker-flatcar", "containerd-flatcar"):
        assert links[f"/etc/extensions/{os_name}.raw"] == {
            "path": f"/etc/extensions/{os_name}.raw",
            "target": "/dev/null",
            "hard": False,
            "overwrite": True,
        }
    enabled = files_of(document)["/etc/flatcar/enabled-sysext.conf"]
    assert enabled["contents"]["inline"] == "-podman\n"
    # Nothing to mask on Fedora CoreOS, and nothing for an image that replaces nothing.
    fcos = butane(registry, "docker", "podman", "--variant", "fcos")
    assert all(link["target"] != "/dev/null" for link in fcos["storage"]["links"])
    assert "/etc/flatcar/enabled-sysext.conf" not in files_of(fcos)
    plain = butane(registry, "hello")
    assert [link["path"] for link in plain["storage"]["links"]] == ["/etc/extensions/hello.raw"]


# --- every variant and spec version validates -----------------------------------------------

VERSIONS = [
    ("flatcar", "3.3.0"),
    ("flatcar", "3.4.0"),
    ("fcos", "3.3.0"),
    ("fcos", "3.4.0"),
    ("fcos", "3.5.0"),
    ("fcos", "3.6.0"),
]


@pytest.mark.parametrize(("variant", "spec"), VERSIONS)
def test_every_variant_and_spec_validates(
    registry: RegistryServer, tmp_path: Path, variant: str, spec: str
) -> None:
    # kmod is OS-bound: on Fedora CoreOS only with a running update timer (it rebases).
    timer = ("--timer",) if variant == "fcos" else ()
    text = ignition(
        registry, "docker", "podman", "kmod", "--os-version", "4081.2.0",
        "--variant", variant, "--ignition-version", spec, *timer,
    )  # fmt: skip
    document = json.loads(text)
    assert document["ignition"]["version"] == spec
    # Debian's ignition-validate 2.14 (bookworm; trixie and forky carry 2.14 too) knows 3.3.0
    # as its newest stable spec. Specs 3.4.0 to 3.6.0 only add fields this project never
    # writes (Ignition's v3_4 to v3_6 schemas have the same keys for files, links with
    # overwrite, and units), so the same document is checked by the real validator as
    # 3.3.0 and against those keys and JSON types.
    assert schema_problems(document) == [], SCHEMA_3_4_0
    document["ignition"]["version"] = "3.3.0"
    assert ignition_validate(json.dumps(document), tmp_path) == ""


# --- the real Ignition files stage ----------------------------------------------------------


def stage(config: str, root: Path, tmp_path: Path) -> list[str]:
    """Run the real Ignition files stage for `config` into `root`; return the paths it asked
    SELinux to relabel (its `setfiles` call, answered by a stand-in that records them)."""
    if not IGNITION.is_file():
        pytest.fail(f"{IGNITION} is missing: install Debian's ignition (scripts/setup.sh --test)")
    (root / "etc/selinux").mkdir(parents=True, exist_ok=True)
    (root / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    relabelled = tmp_path / "relabelled"
    (fake / "setfiles").write_text(f'#!/bin/sh\ncat > "{relabelled}"\n')
    (fake / "setfiles").chmod(0o755)
    cache = tmp_path / "ignition.json"
    cache.write_text(config)
    result = subprocess.run(
        [
            IGNITION, "-platform", "file", "-stage", "files", "-root", root,
            "-config-cache", cache, "-state-file", tmp_path / "state", "-log-to-stdout",
        ],
        env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return [p for p in relabelled.read_text().split("\0") if p]


@pytest.mark.root
def test_real_ignition_stages_the_flatcar_config_with_masks(
    registry: RegistryServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    # Flatcar's image links its own Docker; the config must replace that link.
    (root / "etc/extensions").mkdir(parents=True)
    (root / "etc/extensions/docker-flatcar.raw").symlink_to(
        "/usr/share/flatcar/sysext/docker-flatcar.raw"
    )
    stage(ignition(registry, "docker", "podman"), root, tmp_path)
    extensions = root / "etc/extensions"
    assert os.readlink(extensions / "docker-flatcar.raw") == "/dev/null"
    assert os.readlink(extensions / "containerd-flatcar.raw") == "/dev/null"
    assert (root / "etc/flatcar/enabled-sysext.conf").read_text() == "-podman\n"
    docker = root / f"opt/extensions/docker/docker-28.0.1-{ARCH}.raw"
    served = requests.get(f"{registry.url}/extensions/docker/{docker.name}", timeout=10)
    assert docker.read_bytes() == served.content
    assert os.readlink(extensions / "docker.raw") == f"/opt/extensions/docker/{docker.name}"
    assert os.access(root / "etc/sysext/update-extension", os.X_OK)
    units = root / "etc/systemd/system"
    assert "ExecStart=/bin/sh /etc/sysext/update-extension docker /etc/extensions/docker.raw " \
        "restart\n" in (units / "sysext-update-docker.service").read_text()  # fmt: skip
    preset = (root / "etc/systemd/system-preset/20-ignition.preset").read_text().splitlines()
    assert "enable sysext-update-docker.timer" in preset
    assert (root / "etc/sysext/keyring.gpg").read_bytes() == registry.keyring()
    assert not (root / "etc/systemd/import-pubring.gpg").exists()

    # On the host, `sysext check --component` reads what the unit uses and finds nothing.
    def check() -> subprocess.CompletedProcess[str]:
        return run_cli("check", "--component", "docker", "--root", root, "--arch", ARCH)

    # Before sysext-keyring.service ran, the check says the combined keyring is missing.
    early = check()
    assert early.returncode == 0, early.stderr
    assert "sysext-keyring.service has not combined the vendor keyring" in early.stdout
    # sysext-keyring.service as at boot (systemd 255 here): the combined keyring appears.
    from tests.sysupdate_client import run_in_host_view

    combined = run_in_host_view(
        root,
        ["sh", f"{root}/etc/sysext/keyring-combine"],
        {
            **os.environ,
            "SYSEXT_SYSTEMD_VERSION": "255",
            "SYSEXT_REGISTRY_KEYRING": f"{root}/etc/sysext/keyring.gpg",
        },
    )
    assert combined.returncode == 0, combined.stderr
    assert (root / "etc/systemd/import-pubring.gpg").read_bytes() == registry.keyring()
    fine = check()
    assert fine.returncode == 0, fine.stderr
    assert "still merges" not in fine.stdout
    assert "installed: 28.0.1" in fine.stdout
    # Flatcar's Docker unmasked again: the host check says both merge and how to fix it.
    (extensions / "docker-flatcar.raw").unlink()
    (extensions / "docker-flatcar.raw").symlink_to("/usr/share/flatcar/sysext/docker-flatcar.raw")
    unmasked = check()
    assert (
        "warning:   Flatcar's docker-flatcar still merges next to docker, which replaces it: "
        "link /etc/extensions/docker-flatcar.raw to /dev/null"
    ) in unmasked.stdout, unmasked.stdout
    # systemd 258+ with an /etc .pgp keyring: that one is used, and the check says so.
    (root / "usr/lib/systemd").mkdir(parents=True)
    (root / "usr/lib/systemd/libsystemd-shared-258.so").write_bytes(b"")
    (root / "etc/systemd/import-pubring.pgp").write_bytes(registry.keyring())
    newer = check()
    assert newer.returncode == 0, newer.stderr
    assert "systemd 258+ verify with it and ignore" in newer.stdout
    foreign = tmp_path / "foreign.pgp"
    signing.generate_key(foreign)
    (root / "etc/systemd/import-pubring.pgp").write_bytes(signing.export_public_key(foreign))
    refused = check()
    assert refused.returncode == 2, refused.stdout
    assert refused.stderr.startswith("error: no public key: signed by "), refused.stderr


@pytest.mark.root
def test_real_ignition_stages_the_fcos_config_with_relabel_unit(
    registry: RegistryServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    relabelled = stage(ignition(registry, "podman", "--variant", "fcos"), root, tmp_path)
    image = f"podman-5.4.0-{ARCH}.raw"
    assert (root / "var/lib/extensions.d/podman" / image).is_file()
    assert os.readlink(root / "var/lib/extensions/podman.raw") == (
        f"/var/lib/extensions.d/podman/{image}"
    )
    # No masks of Flatcar's extensions on Fedora CoreOS.
    assert not (root / "etc/extensions").exists()
    # Ignition relabels what it wrote (the image directories among them) on an SELinux
    # host; the relabel unit repeats that before every merge for what sysupdate writes later.
    # (its patterns cover the topmost directory it created, here ROOT/var).
    written = f"{root}/var/lib/extensions.d/podman/{image}"
    assert any(written.startswith(path) for path in relabelled), relabelled
    unit = (root / "etc/systemd/system/sysext-relabel.service").read_text()
    assert "ExecStart=/usr/sbin/restorecon -RF /var/lib/extensions /var/lib/extensions.d" in unit
    assert "Before=systemd-sysext.service" in unit
    preset = (root / "etc/systemd/system-preset/20-ignition.preset").read_text().splitlines()
    assert "enable sysext-relabel.service" in preset
    assert "enable systemd-sysext.service" in preset
    # Updates are not scheduled on FCOS (SELinux policy), the transfer is there for by hand.
    assert "disable sysext-update-podman.timer" in preset
    transfer = parse_transfer((root / "etc/sysupdate.podman.d/podman.conf").read_text())
    assert transfer.get("Target", "Path") == "/var/lib/extensions.d/podman"
    assert transfer.get("Target", "CurrentSymlink") == "/var/lib/extensions/podman.raw"


# --- the update unit with the real systemd-sysupdate 254 -----------------------------------

_UNIT_RUN = r"""
set -eu
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd
if [ -n "$KEYRING_FILE" ]; then cp "$KEYRING_FILE" /etc/systemd/import-pubring.gpg; fi
mount -t tmpfs -o mode=0755 tmpfs "$VENDOR_KEYRING_DIR"
exec "$@"
"""


def run_update_unit(
    root: Path, name: str, keyring: bytes | None, work: Path
) -> subprocess.CompletedProcess[str]:
    """Run the ExecStart= of the staged sysext-update-NAME.service for host ROOT.

    Its absolute paths get the ROOT prefix; systemd-sysupdate is the real 254 client, run
    as tests/sysupdate_client.py runs it (no --root, transfer copied with ROOT-based target
    paths, host keyring on a private tmpfs). `systemctl` is a stand-in that logs its
    arguments to WORK/systemctl.log: the host's service manager is not under test here.
    """
    from tests.sysupdate_client import (
        VENDOR_KEYRING_DIR,
        _with_rebased_definitions,
        client_env,
        require_client,
    )

    unit = (root / f"etc/systemd/system/sysext-update-{name}.service").read_text()
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = exec_start.removeprefix("ExecStart=").split()
    assert argv[:2] == ["/bin/sh", "/etc/sysext/update-extension"]
    argv = [argv[0], *(f"{root}{a}" if a.startswith("/") else a for a in argv[1:])]
    work.mkdir(parents=True, exist_ok=True)
    definitions = work / f"definitions-{len(list(work.glob('definitions-*')))}"
    rebased = _with_rebased_definitions(root, ["-C", name, "update"], definitions)
    shim = work / "sysupdate"
    shim.write_text(
        "#!/bin/sh\n"
        f'[ "$*" != --version ] || exec "{require_client()}" --version\n'
        f'[ "$*" = "--component={name} update" ] || {{ echo "unexpected: $*" >&2; exit 99; }}\n'
        f'exec "{require_client()}" {" ".join(rebased)}\n'
    )
    shim.chmod(0o755)
    fake = work / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> "{work}/systemctl.log"\n')
    (fake / "systemctl").chmod(0o755)
    keyring_file = ""
    if keyring is not None:
        (work / "keyring.gpg").write_bytes(keyring)
        keyring_file = str(work / "keyring.gpg")
    env = {
        **client_env(),
        "SYSEXT_SYSUPDATE": str(shim),
        "PATH": f"{fake}:{os.environ['PATH']}",
        "KEYRING_FILE": keyring_file,
        "VENDOR_KEYRING_DIR": str(VENDOR_KEYRING_DIR),
    }
    unshare = ["unshare", "-m", "--propagation", "private", "sh", "-c", _UNIT_RUN, "sh"]
    return subprocess.run(
        [*unshare, *argv], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def activations(work: Path) -> list[str]:
    log = work / "systemctl.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.root
def test_update_unit_skips_cleanly_updates_and_fails_visibly(
    registry: RegistryServer, tmp_path: Path
) -> None:
    build_dir = tmp_path / "build"
    upload(registry, build(build_dir, "upd", "1.0", None, None))
    root = tmp_path / "root"
    stage(ignition(registry, "upd"), root, tmp_path)
    # What sysext-keyring.service combines on a host without a vendor keyring.
    keyring = (root / "etc/sysext/keyring.gpg").read_bytes()
    link = root / "etc/extensions/upd.raw"
    work = tmp_path / "work"

    # Nothing newer: a clean skip, exit 0, no activation.
    nothing = run_update_unit(root, "upd", keyring, work)
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout == f"upd: up to date (upd-1.0-{ARCH}.raw), nothing newer is published\n"
    assert activations(work) == []

    # A newer version: installed, the link moved, activated as Flatcar documents.
    upload(registry, build(build_dir, "upd", "1.1", None, None))
    updated = run_update_unit(root, "upd", keyring, work)
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout == (
        f"upd: installed upd-1.1-{ARCH}.raw (was upd-1.0-{ARCH}.raw), activating: restart\n"
    )
    assert activations(work) == ["restart systemd-sysext.service"]
    assert os.readlink(link).endswith(f"/upd-1.1-{ARCH}.raw")

    # A wrong keyring: a FAILED unit (non-zero) with sysupdate's reason, nothing activated.
    upload(registry, build(build_dir, "upd", "1.2", None, None))
    foreign_key = tmp_path / "foreign.pgp"
    signing.generate_key(foreign_key)
    wrong = run_update_unit(root, "upd", signing.export_public_key(foreign_key), work)
    assert wrong.returncode not in (0, 64, 65), wrong
    assert "gpg: Can't check signature: No public key" in wrong.stderr, wrong.stderr
    assert "DOWNLOAD INVALID: Signature verification failed." in wrong.stderr
    assert wrong.stderr.endswith(
        "upd: update FAILED: systemd-sysupdate exited with status 1 "
        "(reason above; sysext check --component upd explains it)\n"
    )
    assert os.readlink(link).endswith(f"/upd-1.1-{ARCH}.raw")

    # The registry down: failed as well, with the connection error in the log.
    transfer = root / "etc/sysupdate.upd.d/upd.conf"
    good = transfer.read_text()
    from tests.registry_server import free_port

    transfer.write_text(good.replace(registry.url, f"http://127.0.0.1:{free_port()}"))
    down = run_update_unit(root, "upd", keyring, work)
    assert down.returncode not in (0, 64, 65), down
    assert "upd: update FAILED" in down.stderr
    assert "Transfer failed: Couldn't connect to server" in down.stderr, down.stderr
    assert activations(work) == ["restart systemd-sysext.service"]

    # Fixed: it recovers on the next run.
    transfer.write_text(good)
    recovered = run_update_unit(root, "upd", keyring, work)
    assert recovered.returncode == 0, recovered.stderr
    assert f"installed upd-1.2-{ARCH}.raw" in recovered.stdout
    assert activations(work) == ["restart systemd-sysext.service"] * 2


def test_a_static_copy_without_api_still_gets_the_masks(
    registry: RegistryServer, static_server: StaticServer
) -> None:
    # A plain HTTP copy of the public tree has no JSON API: the image itself is fetched,
    # checked against SHA256SUMS and read.
    shutil.copytree(registry.data / "public", static_server.root, dirs_exist_ok=True)
    result = run_cli("butane", "docker", "--registry", static_server.url)
    assert result.returncode == 0, result.stderr
    links = yaml.safe_load(result.stdout)["storage"]["links"]
    assert [link["path"] for link in links if link["target"] == "/dev/null"] == [
        "/etc/extensions/docker-flatcar.raw",
        "/etc/extensions/containerd-flatcar.raw",
    ]


def test_validate_warns_where_the_os_extension_would_merge_too(tmp_path: Path) -> None:
    flatcar = tmp_path / "flatcar-os-release"
    flatcar.write_text("ID=flatcar\nVERSION_ID=4081.2.0\nSYSEXT_LEVEL=1.0\n")
    fedora = tmp_path / "fedora-os-release"
    fedora.write_text("ID=fedora\nVERSION_ID=42\n")
    declared = build(tmp_path, "docker", "28.0.1", None, "docker-flatcar containerd-flatcar")
    undeclared = build(tmp_path, "podman", "5.4.0", None, None)

    def validate(image: Path, os_release: Path) -> list[str]:
        result = run_cli("validate", image, "--os-release", os_release, "--arch", ARCH)
        assert result.returncode == 0, result.stdout + result.stderr
        return [line for line in result.stdout.splitlines() if "[os-extension]" in line]

    assert validate(declared, flatcar) == [
        "warning: docker replaces Flatcar's docker-flatcar, which would merge too: link "
        "/etc/extensions/docker-flatcar.raw to /dev/null (sysext butane does) [os-extension]",
        "warning: docker replaces Flatcar's containerd-flatcar, which would merge too: link "
        "/etc/extensions/containerd-flatcar.raw to /dev/null (sysext butane does) [os-extension]",
    ]
    assert validate(undeclared, flatcar) == [
        "warning: podman ships /usr/bin/podman like Flatcar's flatcar-podman when enabled; "
        "both merge and the overlay order picks one: declare X_SYSEXT_REPLACES=flatcar-podman "
        "(recipe key `replaces`) [os-extension]"
    ]
    assert validate(declared, fedora) == []


# --- Fedora CoreOS rebases: OS-bound images need a running update path ----------------------


def test_fcos_os_bound_images_need_a_running_update_timer(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """FCOS moves to each new Fedora release by itself, and its update timer is off by
    default: an image bound to VERSION_ID would silently stop merging. Refused, unless the
    config runs the timer; then `sysext check --component` warns when the host's new
    VERSION_ID has no image."""
    args = ("kmod", "--os-version", "4081.2.0", "--variant", "fcos", "--registry", registry.url)
    for extra in ((), ("--no-timer",), ("--no-updates",)):
        refused = run_cli("butane", *args, *extra)
        assert refused.returncode == 2 and refused.stdout == "", refused
        first, hint = refused.stderr.splitlines()
        assert first.startswith("error: kmod is built for one Fedora VERSION_ID, but Fedora ")
        assert "would silently stop merging after the rebase" in first
        assert hint.startswith("hint: build it --os _any (static binaries) or generate with")
    config = butane(registry, *args[:-2], "--timer")
    units = {u["name"]: u for u in config["systemd"]["units"]}
    assert units["sysext-update-kmod.timer"]["enabled"] is True
    header = run_cli("butane", *args, "--timer").stdout.split("variant:")[0]
    assert "stop merging at that moment and merge again once" in " ".join(header.split())
    # Images for every OS (and Flatcar, whose timer runs by default) are not affected.
    assert (
        run_cli("butane", "hello", "--variant", "fcos", "--registry", registry.url).returncode == 0
    )
    assert run_cli("butane", *args[:3], "--registry", registry.url).returncode == 0

    # The host after a rebase to a VERSION_ID nothing was published for.
    root = tmp_path / "root"
    transfer = files_of(config)["/etc/sysupdate.kmod.d/kmod.transfer"]["contents"]["inline"]
    (root / "etc/sysupdate.kmod.d").mkdir(parents=True)
    (root / "etc/sysupdate.kmod.d/kmod.transfer").write_text(transfer)
    (root / "var/lib/extensions.d/kmod").mkdir(parents=True)
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(registry.keyring())
    os_release = tmp_path / "os-release"
    os_release.write_text("ID=fedora\nVERSION_ID=43\n")
    checked = run_cli(
        "check", "--component", "kmod", "--root", root, "--arch", ARCH,
        "--os-release", os_release, "--keyring", keyring,
    )  # fmt: skip
    assert checked.returncode == 2, checked
    error, hint = checked.stderr.splitlines()
    assert error.startswith("error: no entry of ") and "kmod/SHA256SUMS" in error
    assert hint.startswith(
        "hint: kmod is published per OS version and no image exists for this host's "
        "VERSION_ID=43: an image built for another VERSION_ID does not merge here"
    ), checked.stderr
    os_release.write_text("ID=fedora\nVERSION_ID=4081.2.0\n")
    fine = run_cli(
        "check", "--component", "kmod", "--root", root, "--arch", ARCH,
        "--os-release", os_release, "--keyring", keyring,
    )  # fmt: skip
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert "no image exists" not in fine.stdout
