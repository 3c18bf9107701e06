"""`sysext try` as a user runs it, plus the pure parts it is built from.

The booted cases (root) run the CLI in a subprocess against the cached boot root: a daemon
that starts, a unit that fails (its journal is shown), an image made for another OS (not
merged, and `sysext validate`'s reason says why), `--run` returning the command's exit code,
and nothing left behind afterwards (temporary directories, mounts, processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sysext.boot.mirror import AptSource, parse_deb822, parse_one_line, pick_mirror
from sysext.boot.report import parse_show, starting_dependencies
from sysext.boot.rootfs import ROOTS_ENV
from tests.booted import service_image
from tests.servers import run_cli

BOOTS = pytest.mark.root(reason="needs root: boots systemd in a systemd-nspawn container")

# -- pure parts ------------------------------------------------------------------------------


def test_mirror_from_deb822_sources_skips_security_and_comments() -> None:
    text = (
        "Types: deb\n# URIs: http://old.example/debian\nURIs: http://deb.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n"
    )
    sources = parse_deb822(text)
    assert pick_mirror(sources, "bookworm") == AptSource(
        "http://deb.example/debian",
        ("bookworm", "bookworm-updates"),
        "/usr/share/keyrings/debian-archive-keyring.gpg",
    )
    assert pick_mirror(sources, "trixie") is None


def test_mirror_from_one_line_sources() -> None:
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://deb.example/debian bookworm main\n"
    )
    assert parse_one_line(text) == [AptSource("http://deb.example/debian", ("bookworm",), "/k.gpg")]


def test_no_debian_source_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sysext.boot import mirror
    from sysext.core.errors import SysextError

    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "x.sources").write_text(
        "Types: deb\nURIs: http://deb.example/ubuntu\nSuites: noble\n"
    )
    monkeypatch.setattr(mirror, "SOURCES_DIR", tmp_path / "sources.list.d")
    monkeypatch.setattr(mirror, "SOURCES_LIST", tmp_path / "missing.list")
    with pytest.raises(SysextError) as raised:
        mirror.host_debian_mirror("bookworm")
    assert raised.value.message == "no Debian 'bookworm' source in this machine's apt sources"
    assert raised.value.hint is not None and "--root" in raised.value.hint


def test_systemctl_show_blocks_and_starting_dependencies() -> None:
    text = "Id=a.service\nActiveState=active\n\nId=b.socket\nActiveState=failed\n"
    assert parse_show(text) == [
        {"Id": "a.service", "ActiveState": "active"},
        {"Id": "b.socket", "ActiveState": "failed"},
    ]
    drop_in = "[Unit]\nUpholds=x.service y.socket\nWants=z.service\n[Install]\nWantedBy=q\n"
    assert starting_dependencies(drop_in) == ["x.service", "y.socket", "z.service"]
    assert starting_dependencies("[Unit]\nAfter=x.service\n") == []
    assert starting_dependencies("not an ini file") == []


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    image = tmp_path / "x.raw"
    image.write_bytes(b"")
    for args, message in (
        (["--os", "plan9"], "error: --os plan9: unknown"),
        (["--base", "debian-11"], "error: --base debian-11: unknown"),
        (["--root", str(tmp_path)], f"error: --root {tmp_path}: not an OS tree (no usr/)"),
    ):
        result = run_cli("try", image, *args)
        assert result.returncode == 2, result
        assert result.stderr.startswith(message), result.stderr


def test_help_has_an_example() -> None:
    result = run_cli("try", "--help")
    assert result.returncode == 0
    # The example is on its own indented line (cli/help_text.py).
    assert "Example:" in result.stdout and "    sysext try " in result.stdout


# -- booted (root) ---------------------------------------------------------------------------


def flatcar_only_image(directory: Path) -> Path:
    tree = directory / "tree-flatcar"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/fc").write_text("#!/bin/sh\necho fc\n")
    (tree / "usr/bin/fc").chmod(0o755)
    out = directory / "fc-out"
    result = run_cli(
        "pack", tree, "--name", "fc", "--version", "1", "--os", "flatcar:1.0", "-o", out
    )
    assert result.returncode == 0, result.stderr
    return out / "fc-1-x86-64.raw"


def failing_image(directory: Path) -> Path:
    tree = directory / "tree-broken"
    units = tree / "usr/lib/systemd/system"
    (units / "multi-user.target.d").mkdir(parents=True)
    (units / "broken.service").write_text(
        "[Service]\nExecStart=/bin/sh -c 'echo config file missing >&2; exit 3'\n"
    )
    (units / "multi-user.target.d/10-broken.conf").write_text("[Unit]\nUpholds=broken.service\n")
    out = directory / "broken-out"
    result = run_cli("pack", tree, "--name", "broken", "--version", "1", "-o", out)
    assert result.returncode == 0, result.stderr
    return out / "broken-1-x86-64.raw"


@BOOTS
def test_try_reports_merge_units_failures_and_cleans_up(boot_root: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    good = service_image(images, "hello", "1.0")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch), ROOTS_ENV: str(boot_root.parent)}
    args = ["try", good, failing_image(images), flatcar_only_image(images)]
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == 1, result.stderr  # not everything is fine: a unit failed
    report = json.loads(result.stdout)
    assert report["boot"]["state"] == "degraded"
    by_name = {e["name"]: e for e in report["extensions"]}
    assert by_name["hello"]["merged"] is True
    assert by_name["hello"]["units"] == [
        {
            "name": "hello.service",
            "load": "loaded",
            "active": "active",
            "sub": "running",
            "result": "success",
            "meant_to_start": True,
        }
    ]
    assert by_name["broken"]["merged"] is True
    (broken,) = by_name["broken"]["units"]
    assert (broken["active"], broken["result"]) == ("failed", "exit-code")
    assert report["failed_units"] == ["broken.service"]
    assert any("config file missing" in line for line in report["journal"]["broken.service"])
    assert by_name["fc"]["merged"] is False
    assert by_name["fc"]["verdict"]["merges"] is False
    assert "flatcar" in by_name["fc"]["verdict"]["reason"]
    # the same image boots merged when the container shows a Flatcar os-release
    text = run_cli("try", flatcar_only_image(tmp_path), "--os", "flatcar", env=env)
    assert text.returncode == 0, text.stderr
    assert "fc: merged" in text.stdout
    assert "failed units: none" in text.stdout
    # nothing is left: no temporary directory, no mount of it, no container process
    assert list(scratch.iterdir()) == []
    assert str(scratch) not in Path("/proc/self/mountinfo").read_text()


@BOOTS
def test_try_run_returns_the_commands_exit_code(boot_root: Path, tmp_path: Path) -> None:
    image = service_image(tmp_path, "hello", "1.0")
    env = {ROOTS_ENV: str(boot_root.parent)}
    result = run_cli(
        "try", image, "--run", "hello && systemctl is-active hello.service; exit 7", env=env
    )
    assert result.returncode == 7, result.stderr
    assert result.stdout.splitlines()[-2:] == ["hello 1.0", "active"]
    assert "hello: merged" in result.stdout
    assert os.geteuid() == 0


@BOOTS
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_try_cleans_up_when_stopped(boot_root: Path, tmp_path: Path, signum: int) -> None:
    """Killed while its command runs inside (SIGTERM as from `timeout`; SIGINT as Ctrl-C
    sends it to the whole terminal group): the container stops and nothing is left."""
    image = service_image(tmp_path, "hello", "1.0")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        ROOTS_ENV: str(boot_root.parent),
        "NO_COLOR": "1",
    }
    argv = [sys.executable, "-m", "sysext.cli.main", "try", str(image), "--run", "sleep 300"]
    # Own process group, like a terminal's foreground job.
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert proc.stdout is not None
    seen = []
    for raw in proc.stdout:
        seen.append(raw.decode())
        if raw.startswith(b"failed units:"):
            break
    assert any("hello: merged" in line for line in seen), seen
    inside: list[Path] = []
    for _ in range(150):  # the report is printed just before the command starts
        inside = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_sleep_300(p)]
        if inside:
            break
        time.sleep(0.2)
    assert inside, "the command is not running inside"
    os.killpg(proc.pid, signum)
    assert proc.wait(timeout=120) != 0
    assert list(scratch.iterdir()) == []
    assert str(scratch) not in Path("/proc/self/mountinfo").read_text()
    assert not [p for p in inside if p.exists()]


def _is_sleep_300(proc_dir: Path) -> bool:
    try:
        return (proc_dir / "cmdline").read_bytes() == b"sleep\x00300\x00"
    except OSError:
        return False
