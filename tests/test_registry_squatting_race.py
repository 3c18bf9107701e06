"""File-name squatting cannot slip through a race between replicas (PostgreSQL).

`a` and `a-1` cannot both exist: `a`'s transfer pattern `a-@v-%a.raw` matches every
`a-1-VERSION-ARCH.raw` (service.py `_refuse_squatting`). The check reads the database and
the row is committed later, so two replicas uploading the first images of `a` and `a-1`
at once could both pass the check and both commit, unless the writer locks serialize
them (registry/db/locking.py, service.py `_publishing`).

The race is made certain instead of lucky: the test holds `LOCK TABLE images IN SHARE
MODE` on its own PostgreSQL connection. That lets every SELECT through (the check runs)
but holds every INSERT into `images` (the commit waits), so each round releases the two
uploads only once both are waiting on a lock. Without serialization both have passed the
check by then; with it, one waits on the registry's advisory lock and sees the other's
row when it gets it.

Two `sysext serve` processes share one data directory (local storage, as `-w 2` workers
do) and one PostgreSQL database; `sysext registry check` then compares tree and database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests

from tests.pg_cluster import PostgresCluster
from tests.registry_server import RegistryServer, build_image, free_port
from tests.servers import run_cli

pytestmark = pytest.mark.slow

ROUNDS = 12


@dataclass
class Pair:
    database_url: str
    data: Path
    a: RegistryServer
    b: RegistryServer

    @property
    def dsn(self) -> str:
        return self.database_url.replace("+psycopg", "")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PostgresCluster) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("squat-race")
    data = base / "data"
    database_url = pg_cluster.create_database()
    public_url = f"http://127.0.0.1:{free_port()}"
    env = {"SYSEXT_DATABASE_URL": database_url}
    servers = [
        RegistryServer(
            data=data,
            port=free_port(),
            env=dict(env),
            args=("-w", "1", "--public-url", public_url),
            log_path=base / f"replica-{n}.log",
        )
        for n in ("a", "b")
    ]
    started: list[RegistryServer] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield Pair(database_url, data, servers[0], servers[1])
    finally:
        for server in started:
            server.stop()


def upload(server: RegistryServer, name: str, image: Path) -> requests.Response:
    return requests.put(
        f"{server.url}/api/v1/extensions/{name}/images/{image.name}",
        data=image.read_bytes(),
        headers=server.headers(),
        timeout=120,
    )


def lock_waits(conn: psycopg.Connection[tuple[object, ...]], database: str) -> list[str]:
    """What the backends of the registry's database wait for: `advisory` (a writer lock)
    or `relation` (the table lock this test holds), sorted."""
    rows = conn.execute(
        "SELECT wait_event FROM pg_stat_activity "
        "WHERE datname = %s AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    return sorted(str(row[0]) for row in rows)


Upload = tuple[RegistryServer, str, Path]


def race(pair: Pair, first: Upload, second: Upload) -> tuple[list[requests.Response], list[str]]:
    """Send both uploads at once, with commits held until both are waiting on a lock.

    Returns the answers and what the two uploads were waiting for at that moment."""
    database = pair.dsn.rsplit("/", 1)[1]
    answers: list[requests.Response | BaseException] = [RuntimeError("no answer")] * 2
    barrier = threading.Barrier(2)

    def send(slot: int, server: RegistryServer, name: str, image: Path) -> None:
        barrier.wait()
        try:
            answers[slot] = upload(server, name, image)
        except BaseException as exc:  # reported by the assertion below
            answers[slot] = exc

    with (
        psycopg.connect(pair.dsn) as holder,
        psycopg.connect(pair.dsn, autocommit=True) as watcher,
    ):
        holder.execute("LOCK TABLE images IN SHARE MODE")
        threads = [
            threading.Thread(target=send, args=(slot, *upload_args))
            for slot, upload_args in enumerate((first, second))
        ]
        for thread in threads:
            thread.start()
        # Until both uploads wait and one of them at the table (or one has already been
        # answered). Two advisory waits are a passing moment: a writer handing the lock
        # over while the next one has not woken yet. The deadline only makes a broken
        # registry fail the test instead of hanging it.
        deadline = time.monotonic() + 60
        waits = lock_waits(watcher, database)
        while (len(waits) < 2 or "relation" not in waits) and all(t.is_alive() for t in threads):
            assert time.monotonic() < deadline, "the uploads never reached the database"
            time.sleep(0.02)
            waits = lock_waits(watcher, database)
        holder.commit()  # releases the table lock: the held INSERTs go ahead
        for thread in threads:
            thread.join(timeout=120)
    results = []
    for answer in answers:
        assert isinstance(answer, requests.Response), repr(answer)
        results.append(answer)
    return results, waits


def test_first_uploads_of_a_and_a_1_through_two_replicas(pair: Pair, tmp_path: Path) -> None:
    images = tmp_path / "images"
    rounds = []
    for n in range(ROUNDS):
        short, long = f"race{n}", f"race{n}-1"
        # race{n}-1-2-x86-64.raw is race{n}'s version 1-2 and would be race{n}-1's version 2;
        # race{n}-1-3-x86-64.raw is race{n}-1's version 3 and race{n}'s version 1-3.
        rounds.append(
            (short, build_image(images, short, "1-2"), long, build_image(images, long, "3"))
        )

    failures = []
    winners = []
    for n, (short, short_image, long, long_image) in enumerate(rounds):
        # Alternate which replica gets which extension, and which thread goes first.
        a, b = (pair.a, pair.b) if n % 2 == 0 else (pair.b, pair.a)
        ups = [(a, short, short_image), (b, long, long_image)]
        if n % 4 >= 2:
            ups.reverse()
        answers, waits = race(pair, ups[0], ups[1])
        by_name = {name: answer for (_, name, _), answer in zip(ups, answers, strict=True)}
        codes = sorted(answer.status_code for answer in answers)
        if codes != [200, 409] or waits != ["advisory", "relation"]:
            failures.append(
                f"round {n} (waiting: {', '.join(waits)}): "
                + ", ".join(f"{name} {r.status_code} {r.text[:80]}" for name, r in by_name.items())
            )
            continue
        loser = next(name for name, r in by_name.items() if r.status_code == 409)
        winner = long if loser == short else short
        winners.append(winner)
        # The loser's file would be taken for one of the winner's versions.
        detail = by_name[loser].json()["detail"]
        assert f"would also match extension {winner}'s transfer pattern" in detail, detail
        assert f"{winner}-@v-%a.raw" in detail, detail
    # `sysext registry check` compares tree and database, and reports squatted rows.
    check = run_cli(
        "registry", "check", "--data", pair.data, env={"SYSEXT_DATABASE_URL": pair.database_url}
    )
    assert not failures, (
        f"{len(failures)}/{ROUNDS} rounds let both extensions in:\n"
        + "\n".join(failures)
        + f"\n`sysext registry check` says:\n{check.stdout}"
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "consistent: the public tree serves exactly what the database holds" in check.stdout

    # The database holds exactly the winners, one image each.
    with psycopg.connect(pair.dsn) as conn:
        names = sorted(str(r[0]) for r in conn.execute("SELECT name FROM images").fetchall())
    assert names == sorted(winners)


def test_new_versions_of_existing_extensions_still_publish_in_parallel(
    pair: Pair, tmp_path: Path
) -> None:
    """Only a publish that creates an extension takes the registry-wide key exclusively:
    new versions of two existing extensions both get past the writer locks and wait
    side by side on the table lock, none on an advisory lock."""
    images = tmp_path / "images"
    names = ("para", "parb")
    for name in names:
        first = upload(pair.a, name, build_image(images, name, "1.0"))
        assert first.status_code == 200, first.text
    for n, version in enumerate(("1.1", "1.2", "1.3")):
        a, b = (pair.a, pair.b) if n % 2 == 0 else (pair.b, pair.a)
        answers, waits = race(
            pair,
            (a, names[0], build_image(images, names[0], version)),
            (b, names[1], build_image(images, names[1], version)),
        )
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert waits == ["relation", "relation"]
