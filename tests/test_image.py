"""`sysext pack` / sysext.build.pack: real mksquashfs and mkfs.erofs, checked with the real
unsquashfs, fsck.erofs and our reader; reproducibility; atomic output; every bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from sysext.build.pack import pack
from sysext.core.errors import SysextError
from sysext.image.formats import Compression, ImageFormat
from sysext.image.read import read_image
from sysext.systemd.architecture import Architecture
from sysext.systemd.extension_release import ExtensionRelease
from sysext.systemd.manifest import parse_manifest
from sysext.systemd.osrelease import parse_os_release
from tests.servers import run_cli

X86 = Architecture.X86_64
RELEASE = ExtensionRelease("hello", "1.0", X86, os_id="flatcar", sysext_level="1.0")


def make_tree(base: Path, *, reverse: bool = False, mtime: int = 1_000_000) -> Path:
    """A small tree with odd owners/modes; `reverse` creates it in the opposite order."""
    tree = base / "tree"
    files = [
        ("usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755),
        ("usr/bin/secret-tool", "#!/bin/sh\n", 0o750),
        ("usr/share/hello/data.txt", "data " * 500, 0o644),
        ("usr/share/hello/private", "p", 0o600),
        ("opt/hello/lib/libx.so", "\0\1\2" * 1000, 0o755),
        ('usr/share/hello/with space & "quote"', "q", 0o644),
    ]
    for rel, content, mode in reversed(files) if reverse else files:
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
    (tree / "usr/share/hello").chmod(0o700)
    (tree / "usr/bin/hi").symlink_to("hello")
    if os.geteuid() == 0:
        for dirpath, dirnames, filenames in os.walk(tree):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), 1234, 5678)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)
    return tree


def listing(tree: Path) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in sorted(dirnames + filenames):
            st = os.lstat(os.path.join(dirpath, name))
            out.append(
                (os.path.relpath(os.path.join(dirpath, name), tree), st.st_mode, st.st_mtime_ns)
            )
    return sorted(out)


def unsquashfs_lln(image: Path) -> dict[str, tuple[str, str]]:
    text = subprocess.run(
        ["unsquashfs", "-lln", str(image)], capture_output=True, text=True, check=True
    ).stdout
    rows = {}
    for line in text.splitlines():
        perms, owner, _size, _date, _time, path = line.split(None, 5)
        path = path.split(" -> ")[0].removeprefix("squashfs-root").lstrip("/")
        rows[path] = (perms, owner)
    return rows


def test_squashfs_image_has_root_owners_and_the_trees_modes(tmp_path: Path) -> None:
    built = pack(make_tree(tmp_path), RELEASE, tmp_path / "out")
    assert built.path == tmp_path / "out" / "hello-1.0-x86-64.raw"
    rows = unsquashfs_lln(built.path)
    assert {owner for _, owner in rows.values()} == {"0/0"}
    assert rows["usr/bin/hello"][0] == "-rwxr-xr-x"
    assert rows["usr/bin/secret-tool"][0] == "-rwxr-x---"
    assert rows["usr/share/hello/private"][0] == "-rw-------"
    assert rows["usr/share/hello"][0] == "drwx------"
    assert rows["usr/bin/hi"][0] == "lrwxrwxrwx"
    assert rows['usr/share/hello/with space & "quote"'][0] == "-rw-r--r--"
    assert rows["usr/lib/extension-release.d/extension-release.hello"][0] == "-rw-r--r--"
    assert "opt/hello/lib/libx.so" in rows
    assert built.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()
    assert built.size == built.path.stat().st_size


def test_release_file_inside_the_image(tmp_path: Path) -> None:
    built = pack(make_tree(tmp_path), RELEASE, tmp_path / "out")
    member = "usr/lib/extension-release.d/extension-release.hello"
    text = subprocess.run(
        ["unsquashfs", "-cat", str(built.path), member], capture_output=True, text=True, check=True
    ).stdout
    assert parse_os_release(text) == {
        "ID": "flatcar",
        "SYSEXT_LEVEL": "1.0",
        "ARCHITECTURE": "x86-64",
        "SYSEXT_ID": "hello",
        "SYSEXT_VERSION_ID": "1.0",
        "SYSEXT_SCOPE": "system portable",
    }


def test_units_turn_on_reload_manager(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    unit = tree / "usr/lib/systemd/system/hello.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/usr/bin/hello\n")
    built = pack(tree, RELEASE, tmp_path / "out")
    assert read_image(built.path).release_files["hello"]["EXTENSION_RELOAD_MANAGER"] == "1"


@pytest.mark.parametrize("image_format", [ImageFormat.SQUASHFS, ImageFormat.EROFS])
def test_rebuilds_are_byte_identical(tmp_path: Path, image_format: ImageFormat) -> None:
    first = pack(make_tree(tmp_path / "a"), RELEASE, tmp_path / "out-a", image_format=image_format)
    # Same content, created in the opposite order with other timestamps and owners.
    tree_b = make_tree(tmp_path / "b", reverse=True, mtime=2_000_000)
    second = pack(tree_b, RELEASE, tmp_path / "out-b", image_format=image_format)
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    # Provenance carries no wall-clock time either.
    assert first.provenance_path is not None and second.provenance_path is not None
    assert first.provenance_path.read_bytes() == second.provenance_path.read_bytes()
    # Rebuilding in place keeps the same bytes and the same manifest.
    again = pack(tree_b, RELEASE, tmp_path / "out-a", image_format=image_format)
    assert again.sha256 == first.sha256


def test_source_date_epoch_sets_every_time(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    zero = pack(tree, RELEASE, tmp_path / "zero")
    later = pack(tree, RELEASE, tmp_path / "later", source_date_epoch=86400 * 365)
    assert zero.sha256 != later.sha256
    text = subprocess.run(
        ["unsquashfs", "-lln", str(later.path)], capture_output=True, text=True
    ).stdout
    dates = {line.split()[3] for line in text.splitlines()}
    assert dates == {"1971-01-01"}


def test_source_date_epoch_from_environment_and_bad_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_tree(tmp_path)
    explicit = pack(tree, RELEASE, tmp_path / "a", source_date_epoch=12345)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "12345")
    from_env = pack(tree, RELEASE, tmp_path / "b")
    assert explicit.sha256 == from_env.sha256
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(SysextError, match="SOURCE_DATE_EPOCH='yesterday' is not an integer"):
        pack(tree, RELEASE, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_the_callers_tree_is_not_modified(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    before = listing(tree)
    pack(tree, RELEASE, tmp_path / "out")
    pack(tree, RELEASE, tmp_path / "out2", image_format=ImageFormat.EROFS)
    assert listing(tree) == before


def test_manifest_lists_only_images_and_merges(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tree = make_tree(tmp_path)
    one = pack(tree, RELEASE, out)
    two = pack(
        tree, ExtensionRelease("hello", "1.1", X86, os_id="flatcar", sysext_level="1.0"), out
    )
    manifest = (out / "SHA256SUMS").read_bytes()
    assert manifest == (
        f"{one.sha256}  hello-1.0-x86-64.raw\n{two.sha256}  hello-1.1-x86-64.raw\n".encode()
    )
    assert [e.filename for e in parse_manifest(manifest)] == [
        "hello-1.0-x86-64.raw",
        "hello-1.1-x86-64.raw",
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS",
        "hello-1.0-x86-64.provenance.json",
        "hello-1.0-x86-64.raw",
        "hello-1.1-x86-64.provenance.json",
        "hello-1.1-x86-64.raw",
    ]


def test_provenance_name_never_extends_the_image_name(tmp_path: Path) -> None:
    built = pack(
        make_tree(tmp_path), RELEASE, tmp_path / "out", provenance={"recipe": "hello.toml"}
    )
    assert built.provenance_path is not None
    # spec §7.2: `hello-@v-x86-64.raw` would match anything starting with the image name.
    assert not built.provenance_path.name.startswith(built.path.name)
    record = json.loads(built.provenance_path.read_text())
    assert record["image"] == {"file": built.path.name, "sha256": built.sha256, "size": built.size}
    assert record["inputs"] == {"recipe": "hello.toml"}
    assert record["build"]["compression"] == "zstd"
    assert record["tools"]["mksquashfs"].startswith("mksquashfs version 4.")
    assert record["extension_release"]["SYSEXT_VERSION_ID"] == "1.0"


@pytest.mark.parametrize(
    ("compression", "words"),
    [
        # Defaults chosen by bench/build.py --read (issue 23): zstd-16 with 1 MiB blocks.
        (None, ("Compression zstd", "compression-level 16", "Block size 1048576")),
        (Compression.GZIP, ("Compression gzip", "Block size 1048576")),
    ],
)
def test_default_compression_as_unsquashfs_reads_it(
    tmp_path: Path, compression: Compression | None, words: tuple[str, ...]
) -> None:
    built = pack(make_tree(tmp_path), RELEASE, tmp_path / "out", compression=compression)
    superblock = subprocess.run(
        ["unsquashfs", "-s", str(built.path)], capture_output=True, text=True, check=True
    ).stdout
    for word in words:
        assert word in superblock, superblock
    record = json.loads(built.provenance_path.read_text()) if built.provenance_path else {}
    assert record["build"]["level"] == (16 if compression is None else 9)


@pytest.mark.parametrize(
    ("image_format", "compression", "level", "reported"),
    [
        (ImageFormat.SQUASHFS, Compression.XZ, None, "xz"),
        (ImageFormat.SQUASHFS, Compression.GZIP, 6, "gzip"),
        (ImageFormat.SQUASHFS, Compression.LZ4, None, "lz4"),
        (ImageFormat.SQUASHFS, Compression.LZ4HC, None, "lz4"),
        (ImageFormat.SQUASHFS, Compression.ZSTD, 3, "zstd"),
        (ImageFormat.EROFS, Compression.LZ4, None, "lz4"),
    ],
)
def test_compressors(
    tmp_path: Path,
    image_format: ImageFormat,
    compression: Compression,
    level: int | None,
    reported: str,
) -> None:
    tree = make_tree(tmp_path)
    (tree / "usr/share/hello/big.txt").write_text("compressible line\n" * 20000)
    built = pack(tree, RELEASE, tmp_path / "out", image_format=image_format,
                 compression=compression, level=level)  # fmt: skip
    contents = read_image(built.path)
    assert contents.compression == reported
    assert contents.release_files["hello"]["SYSEXT_ID"] == "hello"
    assert built.size < 20000 * 18  # it really compressed


@pytest.mark.parametrize(
    ("image_format", "compression", "level", "message"),
    [
        (ImageFormat.EROFS, Compression.ZSTD, None, "erofs images cannot use zstd compression"),
        (ImageFormat.EROFS, Compression.XZ, None, "erofs images cannot use xz"),
        (ImageFormat.SQUASHFS, Compression.ZSTD, 23, "zstd level 23 is out of range"),
        (ImageFormat.SQUASHFS, Compression.GZIP, 0, "gzip level 0 is out of range"),
        (ImageFormat.SQUASHFS, Compression.LZ4, 3, "lz4 compression takes no level"),
        # mksquashfs's xz has no levels (liblzma's default preset).
        (ImageFormat.SQUASHFS, Compression.XZ, 0, "xz compression takes no level"),
    ],
)
def test_unsupported_compression_settings(
    tmp_path: Path,
    image_format: ImageFormat,
    compression: Compression,
    level: int | None,
    message: str,
) -> None:
    with pytest.raises(SysextError, match=message):
        pack(make_tree(tmp_path), RELEASE, tmp_path / "out", image_format=image_format,
             compression=compression, level=level)  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_erofs_image_checks_with_fsck_and_keeps_modes(tmp_path: Path) -> None:
    built = pack(make_tree(tmp_path), RELEASE, tmp_path / "out", image_format=ImageFormat.EROFS)
    dest = tmp_path / "extracted"
    subprocess.run(
        ["fsck.erofs", f"--extract={dest}", str(built.path)], check=True, capture_output=True
    )
    assert (dest / "usr/bin/hello").read_text() == "#!/bin/sh\necho hello\n"
    assert (dest / "usr/bin/secret-tool").stat().st_mode & 0o7777 == 0o750
    assert os.readlink(dest / "usr/bin/hi") == "hello"
    assert (dest / "usr/lib/extension-release.d/extension-release.hello").is_file()
    if os.geteuid() == 0:
        assert {(p.lstat().st_uid, p.lstat().st_gid) for p in dest.rglob("*")} == {(0, 0)}


# --- the CLI and bad inputs: one-line errors, nothing left behind ---------------------------


def test_cli_pack_prints_path_sha_and_size(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("pack", make_tree(tmp_path), "--name", "hello", "--version", "1.0",
                     "--arch", "x86-64", "--os", "flatcar:1.0", "--output", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    image = out / "hello-1.0-x86-64.raw"
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert result.stdout.splitlines() == [
        str(image),
        f"sha256 {digest}",
        f"size   {image.stat().st_size}",
    ]


def test_cli_pack_defaults_to_the_host_architecture_and_any_os(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("pack", make_tree(tmp_path), "--name", "hello", "--version", "2", "-o", out)
    assert result.returncode == 0, result.stderr
    image = out / f"hello-2-{Architecture.from_uname().value}.raw"
    fields = read_image(image).release_files["hello"]
    assert fields["ID"] == "_any" and fields["ARCHITECTURE"] == Architecture.from_uname().value


def _bad_tree(base: Path, kind: str) -> Path:
    tree = make_tree(base)
    if kind == "etc":
        (tree / "etc").mkdir()
        (tree / "etc/hello.conf").write_text("x")
    elif kind == "os-release":
        (tree / "usr/lib").mkdir(exist_ok=True)
        (tree / "usr/lib/os-release").write_text("ID=x\n")
    elif kind == "unit":
        units = tree / "usr/lib/systemd/system"
        units.mkdir(parents=True)
        (units / "hello.service").write_text("[Service]\nExecStart=/usr/local/bin/hello\n")
    elif kind == "fifo":
        os.mkfifo(tree / "usr/bin/fifo")
    elif kind == "setuid":
        (tree / "usr/bin/hello").chmod(0o4755)
    return tree


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("etc", (), "top-level entry 'etc' is not allowed"),
        ("os-release", (), "usr/lib/os-release must not be in an extension"),
        (
            "unit",
            (),
            "ExecStart=/usr/local/bin/hello: /usr/local/bin/hello is neither in the image",
        ),
        ("fifo", (), "usr/bin/fifo is a FIFO"),
        ("setuid", (), "usr/bin/hello has the setuid/setgid bit"),
        ("ok", ("--version", "1.0~rc1"), "version '1.0~rc1' contains '~'"),
        ("ok", ("--name", "a/b"), "extension name 'a/b' contains '/'"),
        # The registry refuses it too (one rule, tests/test_name_rule.py).
        ("ok", ("--name", "gtk+tools"), "invalid extension name 'gtk+tools'"),
        ("ok", ("--arch", "x86_64"), "architecture 'x86_64' is not systemd's name for it"),
        ("ok", ("--arch", "amd64"), "architecture 'amd64' is not systemd's name"),
        ("ok", ("--os", "flatcar:"), "is not ID or ID:SYSEXT_LEVEL"),
        ("ok", ("--format", "ext4"), "unknown image format 'ext4'"),
        ("ok", ("--format", "erofs", "--compression", "zstd"), "erofs images cannot use zstd"),
    ],
)
def test_cli_pack_bad_inputs_leave_nothing_behind(
    tmp_path: Path, kind: str, args: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "SHA256SUMS").write_text("")  # an existing, empty manifest must stay as it is
    options = {"--name": "hello", "--version": "1.0", "--arch": "x86-64"}
    options.update(zip(args[::2], args[1::2], strict=True))  # args are (option, value) pairs
    argv = [part for pair in options.items() for part in pair]
    result = run_cli("pack", _bad_tree(tmp_path, kind), *argv, "--output", out)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert any(line.startswith("hint: ") for line in lines)
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS"]
    assert (out / "SHA256SUMS").read_text() == ""


def test_a_tool_crash_midway_leaves_no_partial_image(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "mksquashfs"
    # Writes half an image to its output argument (mksquashfs SOURCE OUTPUT …), then dies,
    # like an OOM-killed packer.
    fake.write_text('#!/bin/sh\nprintf hsqs-partial > "$2"\n'
                    'echo "mksquashfs: out of memory" >&2\nexit 1\n')  # fmt: skip
    fake.chmod(0o755)
    out = tmp_path / "out"
    result = run_cli(
        "pack", make_tree(tmp_path), "--name", "hello", "--version", "1.0", "-o", out,
        env={"PATH": f"{fake_bin}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "error: mksquashfs failed (exit 1): mksquashfs: out of memory" in result.stderr
    assert list(out.iterdir()) == []


def test_erofs_refuses_names_its_tool_cannot_store(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree / "usr/share" / ("n" * 255)).write_text("x")
    with pytest.raises(
        SysextError, match=r"255-byte file name is more than mkfs\.erofs 1\.5"
    ) as caught:
        pack(tree, RELEASE, tmp_path / "out", image_format=ImageFormat.EROFS)
    assert "--format squashfs" in (caught.value.hint or "")
    assert list((tmp_path / "out").iterdir()) == []
    pack(tree, RELEASE, tmp_path / "out")  # squashfs stores it


def _block_size(image: Path) -> int:
    text = subprocess.run(["unsquashfs", "-s", str(image)], capture_output=True, text=True).stdout
    return int(
        next(line for line in text.splitlines() if line.startswith("Block size")).split()[-1]
    )


def test_block_size_defaults_to_1_mib_and_can_be_chosen(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    assert _block_size(pack(tree, RELEASE, tmp_path / "a").path) == 1 << 20  # zstd-16
    xz = pack(tree, RELEASE, tmp_path / "x", compression=Compression.XZ)
    assert _block_size(xz.path) == 1 << 20
    assert _block_size(pack(tree, RELEASE, tmp_path / "b", block_size=131072).path) == 131072
    for bad in (1000, 3 << 16, 2 << 20):
        with pytest.raises(SysextError, match=f"block size {bad} is not a power of two"):
            pack(tree, RELEASE, tmp_path / "c", block_size=bad)
    with pytest.raises(SysextError, match="squashfs images only"):
        pack(tree, RELEASE, tmp_path / "c", image_format=ImageFormat.EROFS, block_size=4096)
    assert not (tmp_path / "c").exists()


def test_cli_allow_setuid(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree / "usr/bin/hello").chmod(0o4755)
    out = tmp_path / "out"
    args = ("pack", tree, "--name", "hello", "--version", "1", "--arch", "x86-64", "-o", out)
    assert run_cli(*args).returncode == 2
    result = run_cli(*args, "--allow-setuid", "/usr/bin/hello")
    assert result.returncode == 0, result.stderr
    assert unsquashfs_lln(out / "hello-1-x86-64.raw")["usr/bin/hello"][0] == "-rwsr-xr-x"


def test_usr_lib_as_a_symlink_is_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree / "usr/lib64").mkdir()
    (tree / "usr/lib").symlink_to("lib64")
    with pytest.raises(SysextError, match="usr/lib is a symlink, but the extension-release"):
        pack(tree, RELEASE, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SysextError, match="not a directory"):
        pack(make_tree(tmp_path), RELEASE, target)


def test_pack_help_has_an_example() -> None:
    result = run_cli("pack", "--help")
    assert result.returncode == 0
    # The example is on its own indented line (cli/help_text.py).
    assert "Example:" in result.stdout and "    sysext pack " in result.stdout
