#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite (ruff and mypy included).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k manifest -x`.
#
# The whole suite runs in two parts: first what the inner loop runs (below), in parallel on
# every core; then the rest (pytest --heavy: root, booted containers, PostgreSQL and Ceph,
# the browser, tests marked slow) one test at a time, since those share engines and
# containers and measure the machine. Together they are exactly the whole suite.
#
# --fast: the inner loop while working. Skips the install when .venv is up to date with
# pyproject.toml, and runs only what needs no root, no booted container, no PostgreSQL or
# Ceph and no browser, and is not marked slow (pytest --fast, tests/conftest.py), in
# parallel on every core, forking the CLI instead of starting it (pytest --fork).
set -euo pipefail
cd "$(dirname "$0")/.."

# The suite starts the CLI and the registry as subprocesses hundreds of times; each start
# would compile the project's ~140 modules again (and pytest rewrite every test module
# again in every worker) where the environment says not to cache bytecode. Cache it for
# the test run: the files go to __pycache__/, which git ignores.
unset PYTHONDONTWRITEBYTECODE

# Two pytest workers per core: the fast tests mostly wait (for a CLI or registry subprocess
# to start, a server to answer, a packer), so one worker per core leaves the cores idle
# half the time. A test module stays on one worker (--dist loadfile): several modules share
# one registry across their tests, which build on each other in order, and a module's
# fixtures are then set up once, not once per worker.
# Modules start longest first (by the last run's times, tests/conftest.py), not xdist's
# default of the most tests first.
parallel=(-n "$(($(nproc) * 2))" --dist loadfile --no-loadscope-reorder)

if [ "${1:-}" = "--fast" ]; then
  shift
  if [ -x .venv/bin/python ] && [ .venv/.sysext-test-installed -nt pyproject.toml ]; then
    echo "==> .venv is up to date (bash scripts/setup.sh --test reinstalls)"
  else
    bash scripts/setup.sh --test
  fi
  echo "==> running the fast tests"
  # --fork: each `sysext` run and test registry is forked from a process per worker that
  # has imported the project already (a fresh interpreter costs 0.2-1 s of CPU), where
  # that cannot change the outcome (tests/forkserver.py). The full run below, as CI runs
  # it, execs a fresh interpreter every time. SYSEXT_TEST_FORK=0 turns it off here too.
  fork=(--fork)
  [ "${SYSEXT_TEST_FORK:-1}" = 0 ] && fork=()
  exec .venv/bin/python -m pytest --fast "${fork[@]}" "${parallel[@]}" -q "$@"
fi

bash scripts/setup.sh --test
echo "==> running the test suite, part 1 of 2: what needs nothing but Python, in parallel"
fast=0
.venv/bin/python -m pytest --fast "${parallel[@]}" "$@" || fast=$?
echo "==> part 2 of 2: root, booted containers, PostgreSQL, Ceph, the browser, slow tests"
heavy=0
.venv/bin/python -m pytest --heavy "$@" || heavy=$?
# Exit status 5 is "no test selected": fine for one part when the other ran tests
# (`scripts/test.sh tests/test_manifest.py` selects nothing heavy).
if [ "$fast" = 5 ] && [ "$heavy" = 5 ]; then exit 5; fi
[ "$fast" = 5 ] && fast=0
[ "$heavy" = 5 ] && heavy=0
if [ "$fast" != 0 ]; then exit "$fast"; fi
exit "$heavy"
