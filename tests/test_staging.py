"""Staging rules on a prepared tree (issue 2 "Safe extraction and staging", spec §1.1/§1.5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sysext.core.errors import SysextError
from sysext.image.staging import EntryKind, scan_tree


def tree_with(base: Path, files: dict[str, str], modes: dict[str, int] | None = None) -> Path:
    tree = base / "tree"
    for rel, content in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for rel, mode in (modes or {}).items():
        os.chmod(tree / rel, mode)
    tree.mkdir(exist_ok=True)
    return tree


HELLO = {"usr/bin/hello": "#!/bin/sh\necho hi\n"}


def test_entries_are_sorted_with_explicit_modes_and_symlinks_kept(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, {**HELLO, "opt/app/data": "x"}, {"usr/bin/hello": 0o750})
    (tree / "usr/bin/hi").symlink_to("hello")
    (tree / "usr/bin/abs").symlink_to("/usr/bin/env")
    staged = scan_tree(tree)
    assert [e.path for e in staged.entries] == sorted(e.path for e in staged.entries)
    by_path = {e.path: e for e in staged.entries}
    assert by_path["usr/bin/hello"].mode == 0o750
    assert by_path["usr/bin/hello"].kind is EntryKind.FILE
    assert by_path["usr/bin/hi"].kind is EntryKind.SYMLINK
    assert by_path["usr/bin/hi"].target == "hello"
    assert by_path["usr/bin/abs"].target == "/usr/bin/env"
    assert by_path["opt/app"].kind is EntryKind.DIR
    assert staged.warnings == ()


@pytest.mark.parametrize(
    ("files", "message", "hint"),
    [
        ({"etc/foo.conf": "x", **HELLO}, "top-level entry 'etc' is not allowed", "tmpfiles.d"),
        ({"var/lib/x": "x", **HELLO}, "top-level entry 'var'", "/usr/share/NAME/"),
        ({"README": "x", **HELLO}, "top-level entry 'README'", "tmpfiles.d"),
        ({"usr/lib/os-release": "ID=x\n", **HELLO}, "usr/lib/os-release must not be", "remove"),
        ({"usr/lib/extension-release.d/extension-release.x": "ID=_any\n", **HELLO},
         "already exists", "extra release fields"),
        ({"usr/share/doc/.keep": ""} , None, None),
    ],
)  # fmt: skip
def test_bad_trees_are_refused(
    tmp_path: Path, files: dict[str, str], message: str | None, hint: str | None
) -> None:
    tree = tree_with(tmp_path, files)
    if message is None:
        scan_tree(tree)  # a tree with only a hidden file is still a tree with a file
        return
    with pytest.raises(SysextError) as caught:
        scan_tree(tree)
    assert message in caught.value.message
    assert hint is not None and hint in (caught.value.hint or "")


def test_empty_tree_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    with pytest.raises(SysextError, match="nothing to ship"):
        scan_tree(tree)


def test_usr_as_symlink_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tmp_path / "real").mkdir()
    (tree / "usr").symlink_to(tmp_path / "real")
    with pytest.raises(SysextError, match="usr must be a directory"):
        scan_tree(tree)


def test_fifo_is_refused(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, HELLO)
    os.mkfifo(tree / "usr/bin/pipe")
    with pytest.raises(SysextError, match=r"usr/bin/pipe is a FIFO") as caught:
        scan_tree(tree)
    assert "tmpfiles.d" in (caught.value.hint or "")


@pytest.mark.root
def test_device_node_is_refused(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, HELLO)
    os.mknod(tree / "usr/null", 0o666 | 0o020000, os.makedev(1, 3))
    with pytest.raises(SysextError, match="usr/null is a device node"):
        scan_tree(tree)


def test_socket_is_refused(tmp_path: Path) -> None:
    import socket

    tree = tree_with(tmp_path, HELLO)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tree / "usr/s"))
        with pytest.raises(SysextError, match="usr/s is a socket"):
            scan_tree(tree)
    finally:
        sock.close()


@pytest.mark.parametrize("mode", [0o4755, 0o2755])
def test_setuid_needs_an_allowance(tmp_path: Path, mode: int) -> None:
    tree = tree_with(tmp_path, HELLO, {"usr/bin/hello": mode})
    with pytest.raises(
        SysextError, match=f"usr/bin/hello has the setuid/setgid bit \\(mode {mode:04o}\\)"
    ):
        scan_tree(tree)
    staged = scan_tree(tree, allow_setuid={"/usr/bin/hello"})
    assert staged.find("usr/bin/hello") is not None
    assert staged.find("usr/bin/hello").mode == mode  # type: ignore[union-attr]


def test_setgid_directory_bit_is_dropped_not_refused(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, HELLO, {"usr/bin": 0o2755})
    assert scan_tree(tree).find("usr/bin").mode == 0o755  # type: ignore[union-attr]


def test_usr_sbin_warns(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, {"usr/sbin/tool": "x"})
    staged = scan_tree(tree)
    assert any("usr/sbin" in w and "prefer usr/bin" in w for w in staged.warnings)


def test_control_characters_in_names_are_refused(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, {**HELLO, "usr/share/a\nb": "x"})
    with pytest.raises(SysextError, match="control character"):
        scan_tree(tree)


def test_symlink_target_with_leading_blank_is_refused(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, HELLO)
    (tree / "usr/bin/odd").symlink_to(" hello")
    with pytest.raises(SysextError, match="symlink target"):
        scan_tree(tree)


# --- units ---------------------------------------------------------------------------------

UNIT = "[Unit]\nDescription=x\n\n[Service]\n{line}\n\n[Install]\nWantedBy=multi-user.target\n"


@pytest.mark.parametrize(
    "line",
    [
        "ExecStart=/usr/bin/hello --serve",
        "ExecStart=-/usr/bin/hello",
        "ExecStart=@/usr/bin/hello hello-argv0",
        "ExecStart=hello",  # bare name: found in the image's usr/bin
        "ExecStartPre=/usr/bin/mkdir -p /var/lib/hello\nExecStart=/usr/bin/hello",
        "ExecStart=/bin/sh -c 'exec /usr/bin/hello'",
        "ExecStart=\nExecStart=/usr/bin/hello",
        "ExecStart=/usr/bin/hello \\\n  --flag",
        "ExecStart=${HELLO_BIN} --x",
    ],
)
def test_units_whose_programs_exist_pass(tmp_path: Path, line: str) -> None:
    tree = tree_with(
        tmp_path,
        {**HELLO, "usr/lib/systemd/system/hello.service": UNIT.format(line=line)},
        {"usr/bin/hello": 0o755},
    )
    assert scan_tree(tree).ships_units


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ExecStart=/usr/local/bin/hello",
         "/usr/local/bin/hello is neither in the image nor a standard host path"),
        ("ExecStart=/opt/hello/bin/hello", "/opt/hello/bin/hello is neither"),
        ("ExecStart=hellod", "'hellod' is neither in the image's usr/bin"),
        ("ExecStartPre=/usr/bin/nonexistent-helper\nExecStart=/usr/bin/hello",
         "nonexistent-helper"),
        ("ExecStart=usr/bin/hello", "absolute path"),
        ("ExecStart=/usr/bin/hello 'unbalanced", "cannot parse"),
    ],
)  # fmt: skip
def test_units_with_missing_programs_are_refused(tmp_path: Path, line: str, message: str) -> None:
    tree = tree_with(
        tmp_path,
        {**HELLO, "usr/lib/systemd/system/hello.service": UNIT.format(line=line)},
        {"usr/bin/hello": 0o755},
    )
    with pytest.raises(SysextError) as caught:
        scan_tree(tree)
    assert "usr/lib/systemd/system/hello.service: line" in caught.value.message
    assert message in caught.value.message


def test_unit_pointing_at_non_executable_file_is_refused(tmp_path: Path) -> None:
    tree = tree_with(
        tmp_path,
        {
            **HELLO,
            "usr/lib/systemd/system/hello.service": UNIT.format(line="ExecStart=/usr/bin/hello"),
        },
        {"usr/bin/hello": 0o644},
    )
    with pytest.raises(SysextError, match="not executable"):
        scan_tree(tree)


def test_drop_ins_are_checked_too(tmp_path: Path) -> None:
    dropin = "[Service]\nExecStart=\nExecStart=/usr/libexec/missing\n"
    tree = tree_with(
        tmp_path, {**HELLO, "usr/lib/systemd/system/docker.service.d/10-x.conf": dropin}
    )
    with pytest.raises(SysextError, match="/usr/libexec/missing is neither"):
        scan_tree(tree)


def test_exec_lines_outside_service_section_are_ignored(tmp_path: Path) -> None:
    unit = "[Unit]\nExecStart=/nope\n[Socket]\nListenStream=/run/x.sock\n"
    tree = tree_with(tmp_path, {**HELLO, "usr/lib/systemd/system/x.socket": unit,
                                "usr/lib/systemd/system/y.service": unit})  # fmt: skip
    scan_tree(tree)
