"""Shared fixtures: the CLI as a subprocess, and a local HTTP server for upstream files.

Upstream sites are unreachable from test machines, so tests serve upstream-shaped files
from 127.0.0.1 and point recipes at them through the builder's mirror setting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.registry_server import RegistryServer
from tests.servers import StaticServer, run_cli, serve_directory

# Registry test modules that run once on SQLite and once on PostgreSQL (`--registry-db`,
# default both): the API, uploads, tokens, channels, yank/promote, restarts, crashes and
# parallel uploads, OS-bound images, stored metadata, the small-file cache, provisioning and
# the audit log. test_registry_hardening.py stays on SQLite: its "nothing changed" proof reads
# the SQLite file directly. test_registry_scale.py runs parallel publishes, kill -9,
# restarts and the migrations (0001 → head → base → head) on PostgreSQL.
REGISTRY_DB_MODULES = frozenset(
    {
        "test_registry_http",
        "test_audit",
        "test_registry_os_bound",
        "test_registry_robustness",
        "test_registry_metadata",
        "test_registry_cache",
        "test_provision_registry",
        "test_rollout_policy",
        "test_rollout_fleet",
        "test_host_reports",
        "test_rollout_canary_reports",
    }
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="the inner loop: only tests that need no root, no booted container, no "
        "PostgreSQL or Ceph, no browser and are not marked slow (scripts/test.sh --fast)",
    )
    parser.addoption(
        "--heavy",
        action="store_true",
        help="only what --fast leaves out: tests that need root, a booted container, "
        "PostgreSQL or Ceph, a browser, or are marked slow (scripts/test.sh runs --fast in "
        "parallel, then these one at a time)",
    )
    parser.addoption(
        "--fork",
        action="store_true",
        help="start `sysext` runs and test registries by forking a process that has "
        "imported the project, where that cannot change an outcome (tests/forkserver.py); "
        "scripts/test.sh --fast passes it",
    )
    parser.addoption(
        "--registry-db",
        default=os.environ.get("SYSEXT_TEST_REGISTRY_DB", "sqlite,postgresql"),
        help="databases the registry tests run on: sqlite, postgresql or both (comma-separated)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # The inner loop forks CLI runs from a process that has imported the CLI already
    # (tests/forkserver.py says when that cannot change an outcome); everything else,
    # CI included, execs a fresh interpreter for every run.
    if config.getoption("--fork"):
        from tests import forkserver

        forkserver.enable()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] not in REGISTRY_DB_MODULES:
        return
    engines = [e.strip() for e in metafunc.config.getoption("--registry-db").split(",")]
    if metafunc.config.getoption("--fast"):
        engines = [e for e in engines if e == "sqlite"]
    metafunc.parametrize("registry_database", engines, indirect=True, scope="module")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """One throw-away PostgreSQL for the whole session (tests/pg_cluster.py)."""
    from tests.pg_cluster import remove_cluster, start_cluster

    cluster = start_cluster()
    try:
        yield cluster
    finally:
        remove_cluster(cluster)


@pytest.fixture(scope="session")
def ceph_rgw() -> Iterator[object]:
    """One single-node Ceph with radosgw (a real S3 engine) for the session (ceph_rgw.py)."""
    from tests.ceph_rgw import ceph_available, start_rgw, stop_rgw

    if not ceph_available():
        pytest.fail("Ceph is not installed (ceph-mon, ceph-osd, radosgw): scripts/setup.sh --test")
    if os.geteuid() != 0:
        pytest.skip("the test Ceph cluster runs as root")
    rgw = start_rgw()
    try:
        yield rgw
    finally:
        stop_rgw(rgw)


@pytest.fixture(scope="module", autouse=True)
def registry_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The registry's database engine for this module: its servers get a fresh PostgreSQL
    database per data directory, or the default SQLite file."""
    from tests import registry_server

    engine = getattr(request, "param", "sqlite")
    if engine == "sqlite":
        yield engine
        return
    if engine != "postgresql":
        raise pytest.UsageError(f"--registry-db: unknown database {engine!r}")
    cluster = request.getfixturevalue("pg_cluster")
    databases: dict[Path, str] = {}

    def database_for(data: Path) -> str:
        key = data.resolve()
        if key not in databases:
            databases[key] = cluster.create_database()  # type: ignore[attr-defined]
        return databases[key]

    registry_server.database_for = database_for
    try:
        yield engine
    finally:
        registry_server.database_for = None


# What the inner loop leaves out, by the fixtures a test uses: engines and a browser.
HEAVY_FIXTURES = frozenset(
    {"pg_cluster", "ceph_rgw", "browser", "boot_root", "boot_root_newest", "boot_root_262"}
)


def _needs_more_than_python(item: pytest.Item) -> bool:
    if item.get_closest_marker("root") or item.get_closest_marker("slow"):
        return True
    return bool(HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())))


def _in_the_fast_loop(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    engine = callspec.params.get("registry_database", "sqlite") if callspec else "sqlite"
    return engine == "sqlite" and not _needs_more_than_python(item)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fast, heavy = config.getoption("--fast"), config.getoption("--heavy")
    if fast and heavy:
        raise pytest.UsageError("--fast and --heavy select complementary parts: pass one")
    if fast or heavy:
        kept = [item for item in items if _in_the_fast_loop(item) == bool(fast)]
        dropped = set(map(id, kept))
        config.hook.pytest_deselected(items=[i for i in items if id(i) not in dropped])
        items[:] = kept
    _longest_modules_first(config, items)
    if os.geteuid() == 0:
        return
    default = "needs root (loop mounts in a private mount namespace)"
    for item in items:
        marker = item.get_closest_marker("root")
        if marker is not None:  # pytest.mark.root(reason=…) says why a module needs root
            item.add_marker(pytest.mark.skip(reason=marker.kwargs.get("reason", default)))


# Seconds each test module took in the last run that ran it, in pytest's cache. Modules
# run longest first, so that in a parallel run (scripts/test.sh passes xdist
# --no-loadscope-reorder) the few modules that mostly wait on the clock (rollout schedules
# ticking every second) start at once instead of being the tail of the run.
MODULE_SECONDS = "sysext/module-seconds"


def _module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _longest_modules_first(config: pytest.Config, items: list[pytest.Item]) -> None:
    cache = getattr(config, "cache", None)
    seconds: dict[str, float] = cache.get(MODULE_SECONDS, {}) if cache is not None else {}
    if seconds:
        # Stable: a module's tests stay together and in order; unknown modules first.
        items.sort(key=lambda item: -seconds.get(_module_of(item.nodeid), float("inf")))


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = _module_of(report.nodeid)
    _measured[module] = _measured.get(module, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _measured:
        return  # xdist workers: their controller saw every report and writes once
    seconds = cache.get(MODULE_SECONDS, {})
    seconds.update({module: round(total, 2) for module, total in _measured.items()})
    cache.set(MODULE_SECONDS, seconds)


@pytest.fixture
def cli() -> object:
    return run_cli


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[StaticServer]:
    """Serve tmp_path/www over HTTP on 127.0.0.1 (random port) for upstream-shaped files."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as server:
        yield server


@pytest.fixture(scope="session")
def boot_root() -> Path:
    """The cached Debian 12 root with systemd 254 that booted tests boot (tests/booted.py)."""
    from sysext.boot.rootfs import Base, ensure_root

    return ensure_root(Base.DEBIAN_12)


@pytest.fixture(scope="session")
def boot_root_newest() -> Path:
    """The cached Debian 13 root with systemd 257."""
    from sysext.boot.rootfs import Base, ensure_root

    return ensure_root(Base.DEBIAN_13)


@pytest.fixture(scope="session")
def boot_root_262() -> Path:
    """The cached Debian forky root with systemd 262 (booted with a unified cgroup
    hierarchy, sysext/boot/container.py)."""
    from sysext.boot.rootfs import Base, ensure_root

    return ensure_root(Base.DEBIAN_FORKY)


@pytest.fixture
def registry_server(tmp_path: Path) -> Iterator[RegistryServer]:
    """A real `sysext serve` on 127.0.0.1 with its data under tmp_path (registry_server.py)."""
    from tests.registry_server import running_registry

    with running_registry(tmp_path / "registry-data") as server:
        yield server
