"""Installing an extension never breaks the OS's own sysupdate updates (issue 20, item 2).

A host whose OS updates itself with systemd-sysupdate: its vendor keyring in
/usr/lib/systemd (import-pubring.gpg before 258, .pgp since), an OS transfer in
/etc/sysupdate.d signed by the vendor key. It is provisioned with `sysext butane --ignition`
through the real Ignition files stage; then, with the REAL systemd-sysupdate (the client is
a parameter, tests/sysupdate_client.py HOST_CLIENTS), both the OS transfer and the extension
verify, and after the vendor keyring changes with an OS update the OS transfer still does.
The old way (the registry key alone as /etc/systemd/import-pubring.gpg) is shown failing on
the same host, so the test can tell the two apart.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sysext.provision.keyring_combine import SCRIPT
from sysext.trust import signing
from tests.conftest import StaticServer, run_cli
from tests.registry_server import build_image, running_registry
from tests.sysupdate_client import HOST_CLIENTS, HostClient, host_sysupdate, run_in_host_view
from tests.test_provision_hosts import stage, upload

pytestmark = pytest.mark.root

OS_TRANSFER = """\
[Transfer]
Verify=yes

[Source]
Type=url-file
Path={url}/os
MatchPattern=vendoros-@v-%a.raw

[Target]
Type=regular-file
Path=/var/lib/vendoros
MatchPattern=vendoros-@v-%a.raw
"""
EXTENSION_KEYRING = "/etc/sysext/keyring.gpg"


@pytest.fixture(params=sorted(HOST_CLIENTS), ids=lambda name: f"systemd-{name}")
def client(request: pytest.FixtureRequest) -> HostClient:
    factory: Callable[[], HostClient] = HOST_CLIENTS[request.param]
    return factory()


def publish_os(directory: Path, version: str, key: Path) -> None:
    """The vendor's update server: vendoros-VERSION-x86-64.raw, signed SHA256SUMS."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"vendoros-{version}-x86-64.raw").write_bytes(f"os {version}\n".encode() * 64)
    signing.sign_directory(directory, key)


def combine(
    client: HostClient, root: Path, *, version: str | None = None
) -> subprocess.CompletedProcess[str]:
    """What sysext-keyring.service runs (at boot and before every update unit)."""
    env = {
        **client.env,
        "SYSEXT_REGISTRY_KEYRING": f"{root}{EXTENSION_KEYRING}",
        "SYSEXT_SYSUPDATE": str(client.sysupdate),
    }
    if version is not None:
        env["SYSEXT_SYSTEMD_VERSION"] = version
    return run_in_host_view(root, ["sh", f"{root}/etc/sysext/keyring-combine"], env)


def update_os(client: HostClient, root: Path) -> subprocess.CompletedProcess[str]:
    return host_sysupdate(client, root, ["update"])


def update_extension(client: HostClient, root: Path, name: str) -> subprocess.CompletedProcess[str]:
    # The update unit's Environment= (read by systemd-pull 262+, ignored before).
    keyring = {"SYSTEMD_OPENPGP_KEYRING": f"{root}{EXTENSION_KEYRING}"}
    return host_sysupdate(client, root, ["-C", name, "update"], extra_env=keyring)


def installed_os(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "var/lib/vendoros").iterdir())


def test_os_updates_keep_verifying_after_an_extension_is_provisioned(
    client: HostClient, static_server: StaticServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    os_dir = static_server.root / "os"
    vendor_v1, vendor_v2 = tmp_path / "vendor-1.pgp", tmp_path / "vendor-2.pgp"
    signing.generate_key(vendor_v1, "Vendor OS 1 <os@vendor.example>")
    signing.generate_key(vendor_v2, "Vendor OS 2 <os@vendor.example>")
    vendor_keyring = root / "usr/lib/systemd" / client.vendor_keyring_name
    vendor_keyring.parent.mkdir(parents=True)
    vendor_keyring.write_bytes(signing.export_public_key(vendor_v1))
    (root / "etc/sysupdate.d").mkdir(parents=True)
    (root / "etc/sysupdate.d/50-os.conf").write_text(OS_TRANSFER.format(url=static_server.url))
    (root / "var/lib/vendoros").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=flatcar\nVERSION_ID=4081.2.0\n")

    # Before any extension: the OS updates with its vendor keyring.
    publish_os(os_dir, "1.0", vendor_v1)
    before = update_os(client, root)
    assert before.returncode == 0, before.stderr
    assert "Signature verification succeeded." in before.stderr
    assert installed_os(root) == ["vendoros-1.0-x86-64.raw"]

    images = tmp_path / "images"
    with running_registry(tmp_path / "data") as registry:
        upload(registry, build_image(images, "hello", "1.0"))
        config = run_cli("butane", "hello", "--registry", registry.url, "--ignition")
        assert config.returncode == 0, config.stderr
        stage(config.stdout, root, tmp_path)
        # Ignition wrote the registry key beside, never over, a keyring systemd reads.
        assert (root / EXTENSION_KEYRING.lstrip("/")).read_bytes() == registry.keyring()
        assert not (root / "etc/systemd/import-pubring.gpg").exists()
        assert not (root / "etc/systemd/import-pubring.pgp").exists()

        # The old way, for contrast: the registry key alone in /etc breaks the OS update
        # before 262; 262 reads /etc and the vendor keyring together (NEWS 262).
        publish_os(os_dir, "1.1", vendor_v1)
        if client.version < 262:
            old_way = root / "etc/systemd/import-pubring.gpg"
            old_way.write_bytes(registry.keyring())
            broken = update_os(client, root)
            assert broken.returncode != 0
            assert "No public key" in broken.stderr, broken.stderr
            assert installed_os(root) == ["vendoros-1.0-x86-64.raw"]
            old_way.unlink()

        # sysext-keyring.service, as at boot: both verify now.
        combined = combine(client, root)
        assert combined.returncode == 0, combined.stderr
        if client.version < 262:
            assert combined.stdout.startswith(f"sysext-keyring: systemd {client.version}: ")
        os_update = update_os(client, root)
        assert os_update.returncode == 0, os_update.stderr
        assert "Signature verification succeeded." in os_update.stderr
        assert installed_os(root) == ["vendoros-1.0-x86-64.raw", "vendoros-1.1-x86-64.raw"]
        upload(registry, build_image(images, "hello", "1.1"))
        extension = update_extension(client, root, "hello")
        assert extension.returncode == 0, extension.stderr
        assert "Signature verification succeeded." in extension.stderr
        assert "Successfully installed update '1.1'." in extension.stderr

        # An OS update brings a new vendor key; the vendor signs with it from now on.
        vendor_keyring.write_bytes(signing.export_public_key(vendor_v2))
        publish_os(os_dir, "1.2", vendor_v2)
        if client.version < 262:
            # A combination made before the change would still hold the old vendor key:
            stale = update_os(client, root)
            assert stale.returncode != 0 and "No public key" in stale.stderr, stale.stderr
        # …which is why the unit recombines at boot and before every update.
        assert combine(client, root).returncode == 0
        after = update_os(client, root)
        assert after.returncode == 0, after.stderr
        assert "Signature verification succeeded." in after.stderr
        assert "vendoros-1.2-x86-64.raw" in installed_os(root)
        upload(registry, build_image(images, "hello", "1.2"))
        extension = update_extension(client, root, "hello")
        assert extension.returncode == 0, extension.stderr
        assert "Successfully installed update '1.2'." in extension.stderr


def test_the_combiner_never_overwrites_a_keyring_it_did_not_write(
    client: HostClient, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    registry_key, admin_key = tmp_path / "registry.pgp", tmp_path / "admin.pgp"
    signing.generate_key(registry_key)
    signing.generate_key(admin_key)
    (root / "etc/sysext").mkdir(parents=True)
    (root / "etc/sysext/keyring.gpg").write_bytes(signing.export_public_key(registry_key))
    (root / "etc/sysext/keyring-combine").write_text(SCRIPT)
    admin = root / "etc/systemd/import-pubring.gpg"
    admin.parent.mkdir(parents=True)
    admin.write_bytes(signing.export_public_key(admin_key))
    refused = combine(client, root, version="257")
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "sysext-keyring: /etc/systemd/import-pubring.gpg exists and was not written by "
        "sysext-keyring: it already replaces the vendor keyring; add the registry key to it"
    ), refused.stderr
    assert admin.read_bytes() == signing.export_public_key(admin_key)

    # Its own file it rewrites, and on 262 (which merges /etc and the vendor keyring
    # itself, NEWS 262) it removes it: the units pass the registry keyring instead.
    admin.unlink()
    assert combine(client, root, version="257").returncode == 0
    assert admin.read_bytes() == signing.export_public_key(registry_key)
    assert combine(client, root, version="258").returncode == 0
    removed = combine(client, root, version="262")
    assert removed.returncode == 0, removed.stderr
    assert "systemd 262 combines /etc and vendor keyrings itself" in removed.stdout
    assert not admin.exists()
    assert not (root / "etc/sysext/import-pubring.sha256").exists()
    # Nothing to do on 262 with nothing written before.
    assert combine(client, root, version="262").stdout == ""
