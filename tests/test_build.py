"""`sysext build` end to end: recipe → local upstream-shaped HTTP fixture (through the
mirror setting) → verified, extracted, staged → image checked with unsquashfs, rebuilt
byte-identically, merged with the real systemd-sysext. And every bad input: one clear
error and nothing left in the output directory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from sysext.systemd.architecture import Architecture
from tests.servers import CliResult, StaticServer, run_cli

HOST = Architecture.from_uname()
UPSTREAM = "https://downloads.example.org/hello"
HELLO_SCRIPT = b'#!/bin/sh\necho "hello from the extension $*"\n'

RECIPE = """
name = "hello"
description = "A greeting, as a system extension"
license = "MIT"
version = "1.0"
architectures = ["x86-64", "arm64"]

[arch_map]
x86-64 = "amd64"
arm64 = "arm64"

[[sources]]
url = "https://downloads.example.org/hello/v{version}/hello-{version}-linux-{arch}.tar.gz"
checksum_url = "https://downloads.example.org/hello/v{version}/SHA256SUMS"
strip_components = 1

[[install]]
from = "bin/hello"
to = "usr/bin/hello"
mode = "0750"

[[install]]
from = "share/**/*.txt"
to = "usr/share/hello/"

[[files]]
path = "usr/lib/systemd/system/hello.service"
content = "[Service]\\nType=oneshot\\nExecStart=/usr/bin/hello boot\\n"

[[files]]
path = "usr/lib/systemd/system/multi-user.target.d/10-hello.conf"
content = "[Unit]\\nUpholds=hello.service\\n"

[[links]]
path = "usr/bin/hi"
target = "hello"

[extension_release]
HELLO_FLAVOUR = "plain"
"""


def upstream_tarball(members: dict[str, tuple[bytes, int]], top: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = mode
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def publish(
    server: StaticServer,
    version: str = "1.0",
    members: dict[str, tuple[bytes, int]] | None = None,
    checksum: str | None = None,
) -> Path:
    """Lay out hello's upstream release v{version} on the fixture server."""
    release = server.root / "hello" / f"v{version}"
    release.mkdir(parents=True, exist_ok=True)
    name = f"hello-{version}-linux-{HOST.debian_name}.tar.gz"
    members = members or {
        "bin/hello": (HELLO_SCRIPT, 0o755),
        "share/doc/notes.txt": (b"notes\n", 0o644),
        "share/doc/ignored.md": (b"# no\n", 0o644),
    }
    data = upstream_tarball(members, f"hello-{version}")
    (release / name).write_bytes(data)
    digest = checksum or hashlib.sha256(data).hexdigest()
    (release / "SHA256SUMS").write_text(f"{'f' * 64}  other-file.tar.gz\n{digest}  {name}\n")
    return release / name


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipes" / "hello.toml"
    path.parent.mkdir()
    path.write_text(RECIPE)
    return path


def build(
    tmp_path: Path, server_url: str, *args: str | Path, recipe: str | Path = "hello"
) -> CliResult:
    return run_cli(
        "build",
        recipe,
        "--recipes-dir",
        tmp_path / "recipes",
        "--cache-dir",
        tmp_path / "cache",
        *args,
        env={
            "SYSEXT_MIRRORS": f"{UPSTREAM}/={server_url}/hello/",
            "SOURCE_DATE_EPOCH": "1700000000",
        },
    )


def listing(image: Path) -> dict[str, str]:
    """unsquashfs -lln: path → 'mode owner' for every entry."""
    out = subprocess.run(
        ["unsquashfs", "-lln", image], capture_output=True, text=True, check=True
    ).stdout
    entries = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].startswith("squashfs-root"):
            path = fields[5].removeprefix("squashfs-root").lstrip("/")
            entries[path] = f"{fields[0]} {fields[1]}"
    return entries


def listing_dates(image: Path) -> list[str]:
    out = subprocess.run(
        ["unsquashfs", "-lln", image], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[3] for line in out.splitlines() if "squashfs-root" in line]


def test_build_from_fixture_checks_modes_owner_and_release(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server)
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out)
    assert result.returncode == 0, result.stderr
    image = out / f"hello-1.0-{HOST.systemd_name}.raw"
    assert result.stdout.strip() == str(image)
    entries = listing(image)
    assert entries["usr/bin/hello"] == "-rwxr-x--- 0/0"
    # Every inode carries SOURCE_DATE_EPOCH (1700000000 = 2023-11-14), not the build time.
    assert set(listing_dates(image)) == {"2023-11-14"}
    assert entries["usr/bin/hi"].startswith("lrwxrwxrwx 0/0")
    assert entries["usr/share/hello/notes.txt"] == "-rw-r--r-- 0/0"
    assert "usr/share/hello/ignored.md" not in entries
    assert entries["usr/lib/systemd/system/hello.service"] == "-rw-r--r-- 0/0"
    assert entries["usr/lib/systemd/system/multi-user.target.d/10-hello.conf"] == "-rw-r--r-- 0/0"
    assert all(value.split()[1] == "0/0" for value in entries.values())
    release = subprocess.run(
        ["unsquashfs", "-cat", image, "usr/lib/extension-release.d/extension-release.hello"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ID=_any" in release
    assert f"ARCHITECTURE={HOST.systemd_name}" in release
    assert "SYSEXT_VERSION_ID=1.0" in release
    assert "EXTENSION_RELOAD_MANAGER=1" in release
    assert "HELLO_FLAVOUR=plain" in release
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert (out / "SHA256SUMS").read_text() == f"{digest}  {image.name}\n"
    provenance = json.loads((out / f"hello-1.0-{HOST.systemd_name}.provenance.json").read_text())
    source = provenance["inputs"]["sources"][0]
    assert source["origin"].startswith(f"{UPSTREAM}/v1.0/hello-1.0-linux-")
    tarball = static_server.root / "hello/v1.0" / source["file"]
    assert source["sha256"] == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert (
        provenance["inputs"]["recipe"]["sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    )

    # Same inputs, a fresh download (--refresh) into another directory: identical bytes.
    again = tmp_path / "again"
    result = build(tmp_path, static_server.url, "--output", again, "--refresh")
    assert result.returncode == 0, result.stderr
    assert (again / image.name).read_bytes() == image.read_bytes()
    assert (again / "SHA256SUMS").read_bytes() == (out / "SHA256SUMS").read_bytes()


def test_os_option_and_recipe_default(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server)
    recipe.write_text('os = "flatcar:1.0"\n' + RECIPE)
    out = tmp_path / "out"
    assert build(tmp_path, static_server.url, "--output", out).returncode == 0
    image = out / f"hello-1.0-{HOST.systemd_name}.raw"
    release = subprocess.run(
        ["unsquashfs", "-cat", image, "usr/lib/extension-release.d/extension-release.hello"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ID=flatcar" in release and "SYSEXT_LEVEL=1.0" in release
    # Fedora hosts have no SYSEXT_LEVEL: only a VERSION_ID binding merges there.
    for spec in ("fedora", "fedora:42"):
        refused = build(tmp_path, static_server.url, "--output", out, "--os", spec)
        assert refused.returncode == 2
        assert "--os fedora --os-version-id 42" in refused.stderr, refused.stderr
    result = build(
        tmp_path, static_server.url, "--output", out, "--os", "fedora", "--os-version-id", "42"
    )
    assert result.returncode == 0, result.stderr
    fedora_image = out / f"hello-1.0-42-{HOST.systemd_name}.raw"
    release = subprocess.run(
        ["unsquashfs", "-cat", fedora_image, "usr/lib/extension-release.d/extension-release.hello"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ID=fedora" in release and "VERSION_ID=42" in release
    assert "SYSEXT_LEVEL" not in release


@pytest.mark.root
def test_built_image_merges_and_its_binary_runs(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    from tests.merge_helper import merge_and_run

    publish(static_server)
    out = tmp_path / "out"
    assert build(tmp_path, static_server.url, "--output", out).returncode == 0
    image = out / f"hello-1.0-{HOST.systemd_name}.raw"
    result = merge_and_run([image], "ID=debian\nVERSION_ID=12\n", ["{root}/usr/bin/hi", "merged"])
    assert result.merge.returncode == 0, result.merge.stderr
    assert result.command.stdout == "hello from the extension merged\n"
    assert result.after_unmerge.returncode != 0


# -- every bad input: one line, the right words, nothing written ------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_failed_cleanly(result: CliResult, out: Path, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def test_checksum_mismatch(tmp_path: Path, static_server: StaticServer, recipe: Path) -> None:
    publish(static_server, checksum="0" * 64)
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out)
    assert_failed_cleanly(
        result,
        out,
        f"{UPSTREAM}/v1.0/hello-1.0-linux-{HOST.debian_name}.tar.gz",
        f"sha256 mismatch (expected {'0' * 64}, got ",
    )
    assert "--refresh" in result.stderr


def test_unknown_version_is_a_404_naming_the_url(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server)
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out, "--version", "9.9")
    assert_failed_cleanly(result, out, f"{UPSTREAM}/v9.9/SHA256SUMS", "HTTP 404")


def test_checksum_file_without_our_file(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server)
    (static_server.root / "hello/v1.0/SHA256SUMS").write_text(f"{'a' * 64}  unrelated.tar.gz\n")
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out)
    assert_failed_cleanly(
        result, out, "SHA256SUMS: no sha256 line for", f"hello-1.0-linux-{HOST.debian_name}"
    )


def test_unreachable_mirror(tmp_path: Path, recipe: Path) -> None:
    out = tmp_path / "out"
    result = build(tmp_path, f"http://127.0.0.1:{closed_port()}", "--output", out)
    assert_failed_cleanly(result, out, f"{UPSTREAM}/v1.0/SHA256SUMS", "cannot connect")


def test_traversal_member_in_upstream_archive(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(
        static_server, members={"bin/hello": (HELLO_SCRIPT, 0o755), "../../evil": (b"x", 0o644)}
    )
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out)
    assert_failed_cleanly(
        result, out, f"hello-1.0-linux-{HOST.debian_name}.tar.gz", "'hello-1.0/../../evil'", "'..'"
    )
    assert not (tmp_path / "evil").exists()


def test_install_rule_matching_nothing(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server, members={"sbin/hello": (HELLO_SCRIPT, 0o755)})
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out)
    assert_failed_cleanly(
        result, out, "recipe hello.toml: install[0].from: 'bin/hello' matched nothing"
    )
    assert "sbin/hello" in result.stderr  # the hint shows what the source holds


def test_unit_starting_a_missing_binary(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server)
    recipe.write_text(RECIPE.replace("ExecStart=/usr/bin/hello", "ExecStart=/usr/bin/helo"))
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out)
    assert_failed_cleanly(result, out, "hello.service", "/usr/bin/helo")


def test_setuid_from_upstream_needs_permission(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server, members={"bin/hello": (HELLO_SCRIPT, 0o4755)})
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out)
    assert_failed_cleanly(result, out, "member 'hello-1.0/bin/hello' is setuid/setgid")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--arch", "riscv64"], ["recipe hello.toml does not support riscv64"]),
        (["--arch", "x86_64"], ["architecture 'x86_64' is not systemd's name"]),
        (["--version", "1.0~rc1"], ["--version: version '1.0~rc1' contains '~'"]),
        (["--os", "flatcar:"], ["--os 'flatcar:' is not ID or ID:SYSEXT_LEVEL"]),
        (["--block-size", "1000"], ["block size 1000 is not a power of two"]),
        (["--format", "erofs", "--block-size", "4096"], ["squashfs images only"]),
    ],
)
def test_bad_options(
    tmp_path: Path, static_server: StaticServer, recipe: Path, args: list[str], fragments: list[str]
) -> None:
    publish(static_server)
    out = tmp_path / "out"
    assert_failed_cleanly(
        build(tmp_path, static_server.url, "--output", out, *args), out, *fragments
    )


def test_versions_from_a_github_shaped_feed(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    recipe.write_text(RECIPE + '\n[versions]\ngithub = "example/hello"\n')
    api = static_server.root / "api/repos/example/hello/releases"
    api.parent.mkdir(parents=True)
    api.write_text(
        json.dumps(
            [
                {"tag_name": "v1.10.0", "draft": False, "prerelease": False},
                {"tag_name": "v1.9.2", "draft": False, "prerelease": False},
                {"tag_name": "v2.0.0-rc1", "draft": False, "prerelease": True},
                {"tag_name": "v3.0.0", "draft": True, "prerelease": False},
                {"tag_name": "v1.2~beta", "draft": False, "prerelease": False},
                {"tag_name": "v1.0", "draft": False, "prerelease": False},
            ]
        )
    )
    result = run_cli(
        "versions",
        "hello",
        "--recipes-dir",
        tmp_path / "recipes",
        env={"SYSEXT_MIRRORS": f"https://api.github.com/={static_server.url}/api/"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1.10.0", "1.9.2", "1.0 *"]
    api.unlink()
    result = run_cli(
        "versions",
        "hello",
        "--recipes-dir",
        tmp_path / "recipes",
        env={"SYSEXT_MIRRORS": f"https://api.github.com/={static_server.url}/api/"},
    )
    assert result.returncode == 2
    assert "https://api.github.com/repos/example/hello/releases?per_page=100" in result.stderr
    assert "HTTP 404" in result.stderr


def test_versions_without_a_feed(tmp_path: Path, recipe: Path) -> None:
    result = run_cli("versions", "hello", "--recipes-dir", tmp_path / "recipes")
    assert result.returncode == 2
    assert "error: recipe hello.toml has no [versions] table" in result.stderr


# -- the shipped podman recipe against an upstream-shaped fixture --------------------------

PODMAN_MEMBERS: dict[str, tuple[bytes, int]] = {
    "etc/containers/containers.conf": (
        b'[containers]\ninit_path = "/usr/local/lib/podman/catatonit"\n',
        0o644,
    ),
    "etc/containers/policy.json": (b'{"default": [{"type": "insecureAcceptAnything"}]}\n', 0o644),
    "etc/containers/registries.conf": (b'unqualified-search-registries = ["docker.io"]\n', 0o644),
    "etc/containers/storage.conf": (b'[storage]\ndriver = "overlay"\n', 0o644),
    "usr/local/bin/podman": (b"#!/bin/sh\necho 'podman version 0.0.1-fixture'\n", 0o755),
    "usr/local/bin/crun": (b"#!/bin/sh\necho crun\n", 0o755),
    "usr/local/bin/fuse-overlayfs": (b"#!/bin/sh\n", 0o755),
    "usr/local/lib/podman/conmon": (b"#!/bin/sh\necho conmon\n", 0o755),
    "usr/local/lib/podman/rootlessport": (b"#!/bin/sh\n", 0o755),
    "usr/local/lib/podman/catatonit": (b"#!/bin/sh\n", 0o755),
    "usr/local/lib/systemd/system/podman.service": (
        b"[Service]\nExecStart=/usr/local/bin/podman system service\n",
        0o644,
    ),
}


def test_podman_recipe_builds_from_its_real_url_layout(
    tmp_path: Path, static_server: StaticServer
) -> None:
    """The shipped recipe, unchanged but for the signing key's fingerprint (a test key in
    place of podman-static's), fetched from its real upstream URL through the mirror
    setting and verified against the detached `.asc` signature."""
    from tests.upstream_fixtures import PINNED_FINGERPRINTS, SigningKey

    version = "0.0.1-fixture"
    arch = HOST.debian_name
    tarball = upstream_tarball(PODMAN_MEMBERS, f"podman-linux-{arch}")
    asset = (
        static_server.root
        / f"gh/mgoltzsche/podman-static/releases/download/v{version}/podman-linux-{arch}.tar.gz"
    )
    asset.parent.mkdir(parents=True)
    asset.write_bytes(tarball)
    key = SigningKey()
    asset.with_name(asset.name + ".asc").write_bytes(key.sign(tarball, armor=True))
    (static_server.root / "keys/pks").mkdir(parents=True)
    (static_server.root / "keys/pks/lookup").write_bytes(key.armored)
    shipped = Path(__file__).resolve().parent.parent / "recipes" / "podman.toml"
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "podman.toml").write_text(
        shipped.read_text().replace(PINNED_FINGERPRINTS[0], key.fingerprint)
    )
    out = tmp_path / "out"
    env = {
        "SYSEXT_MIRRORS": f"https://github.com/={static_server.url}/gh/ "
        f"https://keyserver.ubuntu.com/={static_server.url}/keys/"
    }
    args = ["build", "podman", "--recipes-dir", recipes, "--cache-dir", tmp_path / "cache"]
    # A release without its signature is refused.
    unsigned = tmp_path / "unsigned"
    result = run_cli(*args, "--version", "0.0.2", "--output", unsigned, env=env)
    assert_failed_cleanly(
        result, unsigned, "podman-linux-", ".tar.gz.asc: signature missing (HTTP 404"
    )
    result = run_cli(*args, "--version", version, "--output", out, env=env)
    assert result.returncode == 0, result.stderr
    image = out / f"podman-{version}-{HOST.systemd_name}.raw"
    entries = listing(image)
    for path in (
        "usr/bin/podman",
        "usr/bin/crun",
        "usr/bin/fuse-overlayfs",
        "usr/libexec/podman/conmon",
        "usr/libexec/podman/rootlessport",
        "usr/libexec/podman/catatonit",
    ):
        assert entries[path] == "-rwxr-xr-x 0/0", path
    for path in (
        "usr/share/podman/containers/policy.json",
        "usr/share/podman/containers/registries.conf",
        "usr/share/containers/storage.conf",
        "usr/share/containers/containers.conf",
        "usr/lib/tmpfiles.d/10-podman.conf",
        "usr/lib/systemd/system/podman.socket",
        "usr/lib/systemd/system/podman.service",
        "usr/lib/systemd/system/sockets.target.d/10-podman.conf",
    ):
        assert entries[path] == "-rw-r--r-- 0/0", path
    # Nothing of /usr/local or /etc leaks into the image, and upstream's containers.conf
    # (pointing at /usr/local) is replaced by the recipe's own.
    assert not [p for p in entries if p.startswith(("usr/local", "etc"))]
    assert "usr/share/podman/containers/containers.conf" not in entries
    conf = subprocess.run(
        ["unsquashfs", "-cat", image, "usr/share/containers/containers.conf"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'init_path = "/usr/libexec/podman/catatonit"' in conf
    assert "/usr/local" not in conf.split("[containers]", 1)[1]
    assert provenance_origin(out, f"podman-{version}-{HOST.systemd_name}") == (
        f"https://github.com/mgoltzsche/podman-static/releases/download/v{version}/"
        f"podman-linux-{arch}.tar.gz"
    )
    if os.geteuid() == 0:  # merging needs loop mounts
        from tests.merge_helper import merge_and_run

        flatcar = "ID=flatcar\nVERSION_ID=4000.0.0\nSYSEXT_LEVEL=1.0\n"
        merged = merge_and_run([image], flatcar, ["{root}/usr/bin/podman", "--version"])
        assert merged.command.stdout == "podman version 0.0.1-fixture\n", merged


def provenance_origin(out: Path, stem: str) -> str:
    record = json.loads((out / f"{stem}.provenance.json").read_text())
    return str(record["inputs"]["sources"][0]["origin"])


def test_sign_key_signs_the_output_and_a_bad_key_writes_nothing(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server)
    key = tmp_path / "release.key"
    assert run_cli("key", "generate", "--output", key).returncode == 0
    out = tmp_path / "out"
    missing = tmp_path / "missing.key"
    result = build(tmp_path, static_server.url, "--output", out, "--sign-key", missing)
    assert_failed_cleanly(result, out, str(missing))
    result = build(tmp_path, static_server.url, "--output", out, "--sign-key", key)
    assert result.returncode == 0, result.stderr
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(run_cli_bytes("key", "export", key))
    verified = subprocess.run(
        ["gpgv", "--keyring", keyring, out / "SHA256SUMS.gpg", out / "SHA256SUMS"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert (out / "SHA256SUMS").read_text().endswith(f"hello-1.0-{HOST.systemd_name}.raw\n")


def run_cli_bytes(*args: str | Path) -> bytes:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "sysext.cli.main", *map(str, args)],
        capture_output=True,
        check=True,
    ).stdout


def test_erofs_build_is_reproducible_too(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server)
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        result = build(tmp_path, static_server.url, "--output", out, "--format", "erofs")
        assert result.returncode == 0, result.stderr
    name = f"hello-1.0-{HOST.systemd_name}.raw"
    assert (first / name).read_bytes() == (second / name).read_bytes()
    dump = subprocess.run(
        ["dump.erofs", "--path=/usr/bin/hello", first / name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert dump.returncode == 0, dump.stderr
    assert "Uid: 0   Gid: 0  Access: 0750/rwxr-x---" in dump.stdout
    assert "Timestamp: 2023-11-14" in dump.stdout  # SOURCE_DATE_EPOCH=1700000000


def test_compression_and_block_size_reach_the_image(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    publish(static_server)
    out = tmp_path / "out"
    # Per-recipe overrides of the default (zstd-16, 1 MiB blocks).
    args = ("--output", out, "--compression", "gzip", "--level", "6", "--block-size", "131072")
    assert build(tmp_path, static_server.url, *args).returncode == 0
    name = f"hello-1.0-{HOST.systemd_name}.raw"
    superblock = subprocess.run(
        ["unsquashfs", "-s", out / name], capture_output=True, text=True, check=True
    ).stdout
    assert "Compression gzip" in superblock and "compression-level 6" in superblock
    assert "Block size 131072" in superblock, superblock
    # Other options are other inputs: the default settings pack again instead of "unchanged".
    again = build(tmp_path, static_server.url, "--output", out)
    assert again.returncode == 0 and "unchanged" not in again.stdout, again.stdout
    superblock = subprocess.run(
        ["unsquashfs", "-s", out / name], capture_output=True, text=True, check=True
    ).stdout
    assert "Compression zstd" in superblock and "compression-level 16" in superblock
    assert "Block size 1048576" in superblock, superblock


def test_several_architectures_and_all_or_nothing(
    tmp_path: Path, static_server: StaticServer, recipe: Path
) -> None:
    release = static_server.root / "hello/v1.0"
    release.mkdir(parents=True)
    lines = []
    for arch in ("amd64", "arm64"):
        data = upstream_tarball({"bin/hello": (HELLO_SCRIPT, 0o755)}, "hello-1.0")
        (release / f"hello-1.0-linux-{arch}.tar.gz").write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  hello-1.0-linux-{arch}.tar.gz\n")
    recipe.write_text(
        RECIPE.replace('from = "share/**/*.txt"', 'from = "share/**/*.txt"\noptional = true')
    )
    both = ("--arch", "x86-64", "--arch", "arm64")
    # arm64 is missing from the checksum file: x86-64 staged fine, but nothing is written.
    (release / "SHA256SUMS").write_text(lines[0])
    out = tmp_path / "out"
    result = build(tmp_path, static_server.url, "--output", out, *both)
    assert_failed_cleanly(result, out, "no sha256 line for hello-1.0-linux-arm64.tar.gz")
    (release / "SHA256SUMS").write_text("".join(lines))
    result = build(tmp_path, static_server.url, "--output", out, *both)
    assert result.returncode == 0, result.stderr
    names = ["hello-1.0-arm64.raw", "hello-1.0-x86-64.raw"]
    manifest = (out / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in manifest] == names
    arm = subprocess.run(
        [
            "unsquashfs",
            "-cat",
            out / names[0],
            "usr/lib/extension-release.d/extension-release.hello",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ARCHITECTURE=arm64" in arm
