"""The inner loop's forked CLI runs (tests/forkserver.py) behave as fresh interpreters.

`pytest --fast` runs every `sysext …` of the suite forked from a process that imported the
CLI already. These tests hold that shortcut to what a user's `sysext` does: the same
output and exit status, the same answer to signals, the caller's umask and time zone, and
a fresh interpreter whenever an environment variable read at import time differs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import forkserver
from tests.forkserver import ROOT

BASE_ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def forking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forked runs for this test, whatever the run's options."""
    monkeypatch.setattr(forkserver, "_enabled", True)


def executed(module: str, *args: str, env: dict[str, str], cwd: Path | None = None,
             input: str | None = None) -> tuple[int, str, str]:  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True, text=True, env=env, cwd=cwd, input=input, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def forked(module: str, *args: str, env: dict[str, str], cwd: Path | None = None,
           input: str | None = None) -> tuple[int, str, str]:  # fmt: skip
    result = forkserver.run(module, args, env=env, cwd=cwd, input=input)
    assert result is not None, "this run should have been forked"
    return result


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("transfer", "podman", "--registry", "http://127.0.0.1:9", "--os-bound"),
        ("no-such-command",),  # a usage error: exit 2, one line on stderr
        ("build", "no-such-recipe", "--output", "out"),  # our own one-line error: exit 1
        ("transfer", "--help"),
    ],
    ids=["version", "output", "usage-error", "error", "help"],
)
def test_a_forked_run_prints_and_exits_as_a_fresh_interpreter(
    forking: None, args: tuple[str, ...], tmp_path: Path
) -> None:
    fresh = executed("sysext.cli.main", *args, env=BASE_ENV, cwd=tmp_path)
    assert forked("sysext.cli.main", *args, env=BASE_ENV, cwd=tmp_path) == fresh
    assert not list(tmp_path.iterdir())  # neither left anything behind


def test_standard_input_and_the_working_directory_are_the_callers(
    forking: None, tmp_path: Path
) -> None:
    document = '{"b": 1, "a": [1, 2]}'
    fresh = executed("json.tool", "--sort-keys", env=BASE_ENV, input=document)
    assert forked("json.tool", "--sort-keys", env=BASE_ENV, input=document) == fresh
    assert fresh[0] == 0 and fresh[1].startswith('{\n    "a"')
    (tmp_path / "here.txt").write_text("relative to the caller's directory\n")
    code, out, err = forked("json.tool", "here.txt", env=BASE_ENV, cwd=tmp_path)
    assert code == 1 and "Expecting value" in err, (out, err)


def test_the_time_zone_umask_directory_and_stdio_are_the_callers(forking: None) -> None:
    env = {**BASE_ENV, "TZ": "Asia/Kathmandu"}
    previous = os.umask(0o027)
    try:
        fresh = executed("tests.forkserver_probe", "a b", env=env, cwd=ROOT, input="fed\n")
        run = forked("tests.forkserver_probe", "a b", env=env, cwd=ROOT, input="fed\n")
    finally:
        os.umask(previous)
    assert run == fresh
    assert "zone +0530" in fresh[1]  # Kathmandu was +05:30 in 1970; the zygote runs in UTC
    assert "umask 0o27" in fresh[1] and "stdin fed" in fresh[1]


def test_a_variable_read_while_importing_makes_the_run_a_fresh_interpreter(
    forking: None,
) -> None:
    # sysext.core.steps builds its rich Console (which reads COLUMNS) at import time, so a
    # run at another width cannot be forked from a zygote that imported it at 200.
    forked("sysext.cli.main", "--version", env=BASE_ENV)
    zygote = next(z for z in forkserver._zygotes if z.env.get("COLUMNS") == "200")
    assert "COLUMNS" in zygote.read
    narrow = {**BASE_ENV, "COLUMNS": "80"}
    assert not zygote.can_fork(narrow)
    assert zygote.can_fork({**BASE_ENV, "SYSEXT_NOT_READ_AT_IMPORT": "1"})
    assert not zygote.can_fork({**BASE_ENV, "PYTHONHASHSEED": "7"})  # read at start
    # And the run at 80 columns then wraps its help as a fresh one does.
    help_80 = forkserver.run("sysext.cli.main", ("transfer", "--help"), env=narrow, cwd=None,
                             input=None)  # fmt: skip
    assert help_80 == executed("sysext.cli.main", "transfer", "--help", env=narrow)
    assert max(map(len, help_80[1].splitlines())) <= 80


def test_signals_end_a_forked_run_as_they_end_a_popen(forking: None, tmp_path: Path) -> None:
    log = tmp_path / "log"
    for sig, expected in ((signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 0)):
        with open(log, "wb") as out, open(os.devnull, "rb") as devnull:
            process = forkserver.start(
                "http.server", ("0", "--bind", "127.0.0.1"), env=BASE_ENV, cwd=tmp_path,
                stdio=(devnull.fileno(), out.fileno(), out.fileno()), new_session=True,
            )  # fmt: skip
        assert process is not None
        assert process.poll() is None
        deadline = time.monotonic() + 30
        while b"Serving HTTP" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"Serving HTTP" in log.read_bytes()  # unbuffered as the caller's -u says
        assert os.getpgid(process.pid) == process.pid  # its own session, as asked
        process.send_signal(sig)
        # SIGTERM kills Python; SIGINT is a KeyboardInterrupt http.server catches, exit 0.
        assert process.wait(timeout=30) == expected
        assert process.returncode == expected
