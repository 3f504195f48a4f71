"""The PostgreSQL mirror against a real server: the service's table follows the files in /data.

Most tests use a database of this module's own on the machine's server; the outage tests use a
throwaway server they stop and start. Without PostgreSQL they skip, unless TESTS_REQUIRE_POSTGRES.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from helpers import fast_settings, wait_until
from pgserver import (
    execute,
    free_port,
    own_database,
)

from userdata.__main__ import process
from userdata.index import Diff, UserIndex
from userdata.keys import MIRROR
from userdata.records import MIN_BIRTHTS, UserRecord
from userdata.sinks.postgres import DatabaseUnavailable, PostgresMirror, mirror_once, pg_microseconds

SYNC_TIMEOUT = 15.0  # seconds for the table to follow a change

ROW_SQL = "SELECT id, user_id, first_name, last_name, birthdate, img_path FROM users"


@pytest.fixture(scope="module")
def postgres_db() -> Iterator[str]:
    """A database of this module's own on the machine's server, dropped at the end."""
    with own_database() as url:
        yield url


@pytest.fixture
def database_url(postgres_db: str) -> str:
    """The module's database without a users table: every test starts from nothing."""
    execute(postgres_db, "DROP TABLE IF EXISTS users")
    return postgres_db


def to_birthts(birthdate: dt.datetime) -> int:
    return (birthdate - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


async def table(url: str) -> list[dict[str, Any]]:
    """The users table as /data shows users, sorted like it, each with its row's id."""
    con = await asyncpg.connect(url, timeout=10)
    try:
        rows = await con.fetch(ROW_SQL)
    finally:
        await con.close()
    users = [
        {
            "id": r["id"],
            "user_id": r["user_id"],
            "first_name": r["first_name"],
            "last_name": r["last_name"],
            "birthts": to_birthts(r["birthdate"]),
            "img_path": r["img_path"],
        }
        for r in rows
    ]
    return sorted(users, key=lambda u: u["user_id"])


def without_ids(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in u.items() if k != "id"} for u in users]


def ids(users: list[dict[str, Any]]) -> dict[str, int]:
    return {u["user_id"]: u["id"] for u in users}


async def wait_mirrored(service: Any, url: str, timeout: float = SYNC_TIMEOUT) -> list[dict[str, Any]]:
    """Wait until the table holds exactly what /data says and the mirror says it is in sync."""
    seen: dict[str, list[dict[str, Any]]] = {}

    async def equal() -> bool:
        data = await service.get("/data")
        try:
            seen["table"] = rows = await table(url)
        except asyncpg.UndefinedTableError:
            return False  # the mirror has not connected yet
        mirror = service.app[MIRROR]
        return without_ids(rows) == data and mirror.pending == 0 and mirror.error is None

    await wait_until(equal, timeout, message=lambda: f"for the table to equal /data; table: {seen.get('table')}")
    return seen["table"]


async def test_the_table_and_its_unique_index_are_created_and_health_shows_the_mirror(
    start_service, data_dir, source_dir, database_url
):
    service = await start_service(fast_settings(data_dir, database_url=database_url))
    await wait_mirrored(service, database_url)
    con = await asyncpg.connect(database_url)
    try:
        columns = await con.fetch(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_name = 'users' ORDER BY ordinal_position"
        )
        unique = await con.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'users' AND indexdef LIKE 'CREATE UNIQUE%(user_id)'"
        )
    finally:
        await con.close()
    assert [tuple(c) for c in columns] == [
        ("id", "bigint", "NO"),
        ("user_id", "text", "NO"),
        ("first_name", "text", "NO"),
        ("last_name", "text", "NO"),
        ("birthdate", "timestamp with time zone", "NO"),
        ("img_path", "text", "YES"),
    ]
    assert len(unique) == 1, unique
    health = await service.get("/health")
    assert health["status"] == "ok", health
    assert health["mirror"] == {"status": "ok", "lag_s": 0, "pending": 0}, health


async def test_created_updated_and_deleted_users_follow_into_the_table(
    start_service, data_dir, source_dir, write_user, database_url
):
    service = await start_service(fast_settings(data_dir, database_url=database_url))
    write_user("0001", "Ann", "Lee", MIN_BIRTHTS, png=True)  # 0001-01-01T00:00:00Z, exactly
    write_user("2", csv='first_name, last_name, birthts\nBob, "O\'Brien, Jr.", -1\n')
    write_user("3", "Chloé", "Lee", 697237200123)
    await wait_until(lambda: len(service.index) == 3)
    first = await wait_mirrored(service, database_url)
    assert [(u["user_id"], u["birthts"]) for u in first] == [("0001", MIN_BIRTHTS), ("2", -1), ("3", 697237200123)]

    write_user("2", "Bob", "Brien", 1000)
    (source_dir / "0001.png").unlink()
    (source_dir / "3.csv").unlink()
    await wait_until(lambda: "3" not in service.index and service.index.get("0001").img_path is None)
    after = await wait_mirrored(service, database_url)
    assert without_ids(after) == [
        {"user_id": "0001", "first_name": "Ann", "last_name": "Lee", "birthts": MIN_BIRTHTS, "img_path": None},
        {"user_id": "2", "first_name": "Bob", "last_name": "Brien", "birthts": 1000, "img_path": None},
    ]
    assert ids(after) == {k: v for k, v in ids(first).items() if k != "3"}  # updated in place


async def test_a_restart_keeps_ids_adds_nothing_twice_and_removes_users_deleted_meanwhile(
    start_service, data_dir, source_dir, write_user, database_url
):
    for i in range(20):
        write_user(str(i), f"First{i}", f"Last{i}", i * 1000, png=i % 2 == 0)
    first_service = await start_service(fast_settings(data_dir, database_url=database_url))
    before = await wait_mirrored(first_service, database_url)
    await first_service.stop()
    # A row no user of /data has: the table is kept equal to the index, not merely added to.
    execute(
        database_url,
        "INSERT INTO users (user_id, first_name, last_name, birthdate) VALUES ('stranger', 'S', 'T', now())",
    )
    (source_dir / "3.csv").unlink()
    write_user("4", "Changed", "Name", 4000)
    write_user("new", "New", "User", 5)

    service = await start_service(fast_settings(data_dir, database_url=database_url))
    after = await wait_mirrored(service, database_url)
    assert len(after) == len({u["user_id"] for u in after}) == 20
    kept = {k: v for k, v in ids(before).items() if k != "3"}
    assert {k: v for k, v in ids(after).items() if k != "new"} == kept
    assert ids(after)["new"] > max(ids(before).values())


async def test_a_burst_of_1000_files_is_mirrored(start_service, data_dir, source_dir, write_user, database_url):
    service = await start_service(fast_settings(data_dir, database_url=database_url))
    for i in range(1000):
        write_user(f"u{i:04}", f"First{i}", "Burst", -i * 86_400_000, png=i % 3 == 0)
    await wait_until(lambda: len(service.index) == 1000, SYNC_TIMEOUT)
    rows = await wait_mirrored(service, database_url)
    assert len(rows) == 1000
    for i in range(0, 1000, 2):
        (source_dir / f"u{i:04}.csv").unlink()
    await wait_until(lambda: len(service.index) == 500, SYNC_TIMEOUT)
    assert len(await wait_mirrored(service, database_url)) == 500


async def test_the_first_sync_waits_for_the_whole_index(database_url):
    # A table from an earlier run: a mirror of an index that is still loading must delete nothing.
    full = UserIndex()
    full.apply([UserRecord(str(i), "A", "B", i, None) for i in range(10)])
    await mirror_once(database_url, full)
    index = UserIndex()
    mirror = PostgresMirror(database_url, index, retry_delays=(0.05,))
    loaded = asyncio.Event()
    mirror.start(loaded)
    try:
        mirror.notify(index.apply([UserRecord("0", "A", "B", 0, None)]))  # the load has read one user so far
        await wait_until(lambda: mirror._pool is not None, message="for the mirror to connect")
        assert len(await table(database_url)) == 10
        mirror.notify(index.apply([UserRecord(str(i), "A", "B", i, None) for i in range(1, 9)]))
        loaded.set()
        await wait_until(lambda: mirror.lag == 0 and mirror.pending == 0)
        assert [u["user_id"] for u in await table(database_url)] == [str(i) for i in range(9)]
    finally:
        await mirror.close()


async def test_birthdates_are_stored_as_exact_utc_times_back_to_the_year_1(database_url):
    births = {"first": MIN_BIRTHTS, "just-after": MIN_BIRTHTS + 1, "before-1970": -1, "ms": 697237200123}
    index = UserIndex()
    index.apply([UserRecord(user_id, "A", "B", birthts, None) for user_id, birthts in births.items()])
    await mirror_once(database_url, index)
    con = await asyncpg.connect(database_url)
    try:
        await con.execute("SET TIME ZONE 'UTC'")
        stored = dict(await con.fetch("SELECT user_id, birthdate::text FROM users"))
    finally:
        await con.close()
    assert stored == {
        "first": "0001-01-01 00:00:00+00",
        "just-after": "0001-01-01 00:00:00.001+00",
        "before-1970": "1969-12-31 23:59:59.999+00",
        "ms": "1992-02-04 21:00:00.123+00",
    }
    assert pg_microseconds(0) == -946_684_800_000_000


# Outages: the API never waits for the database, /health says the mirror is behind, it catches up.


async def test_a_database_down_at_start_is_caught_up_with_when_it_comes(
    start_service, data_dir, source_dir, write_user, throwaway_server, throwaway_url
):
    await asyncio.to_thread(throwaway_server.stop)
    write_user("1", "Ann", "Lee", 10)
    service = await start_service(fast_settings(data_dir, database_url=throwaway_url))
    assert await service.user_ids() == ["1"]
    health = await service.get("/health")
    assert health["status"] == "degraded", health
    assert health["cause"].startswith("database mirror behind: "), health
    assert health["mirror"]["status"] == "degraded" and health["mirror"]["pending"] == 1, health
    write_user("2", "Bob", "Lee", 20)
    await wait_until(lambda: "2" in service.index)
    assert await service.user_ids() == ["1", "2"]

    await asyncio.to_thread(throwaway_server.start)
    await wait_mirrored(service, throwaway_url)
    health = await service.get("/health")
    assert health["status"] == "ok" and health["mirror"] == {"status": "ok", "lag_s": 0, "pending": 0}, health


async def test_a_database_stopped_mid_run_is_caught_up_with_when_it_is_back(
    start_service, data_dir, source_dir, write_user, throwaway_server, throwaway_url
):
    for i in range(5):
        write_user(str(i), "Ann", "Lee", i)
    service = await start_service(fast_settings(data_dir, database_url=throwaway_url))
    before = await wait_mirrored(service, throwaway_url)

    await asyncio.to_thread(throwaway_server.stop)
    write_user("1", "Changed", "Lee", 1)
    (source_dir / "2.csv").unlink()
    write_user("9", "New", "User", 9)
    await wait_until(lambda: "9" in service.index and "2" not in service.index)

    async def degraded() -> bool:
        return "database mirror behind" in (await service.get("/health")).get("cause", "")

    await wait_until(degraded, message="for /health to say the mirror is behind")
    started = time.monotonic()
    assert await service.user_ids() == ["0", "1", "3", "4", "9"]
    assert time.monotonic() - started < 1.0  # answered from memory, not held up by the database
    health = await service.get("/health")
    assert health["mirror"]["status"] == "degraded" and health["mirror"]["pending"] == 3, health
    assert health["mirror"]["lag_s"] > 0, health

    await asyncio.to_thread(throwaway_server.start)
    after = await wait_mirrored(service, throwaway_url)
    assert ids(after) == {k: v for k, v in ids(before).items() if k != "2"} | {"9": ids(after)["9"]}
    assert (await service.get("/health"))["status"] == "ok"


async def test_an_unreachable_database_never_holds_up_the_api_nor_the_shutdown(
    start_service, data_dir, source_dir, write_user
):
    write_user("1")
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # nothing listens there
    service = await start_service(fast_settings(data_dir, database_url=url))
    assert await service.user_ids() == ["1"]
    await wait_until(lambda: service.app[MIRROR].error is not None)
    started = time.monotonic()
    await service.stop()
    assert time.monotonic() - started < 2.5


async def test_a_database_that_hangs_shows_as_behind_once_the_lag_grows(
    start_service, data_dir, source_dir, write_user
):
    # A server that accepts connections and never answers: no error comes for a long while.
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda reader, writer: accepted.append(writer), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    write_user("1")
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/x"
        service = await start_service(fast_settings(data_dir, database_url=url, mirror_lag_limit=0.2))

        async def behind() -> bool:
            status: str = (await service.get("/health"))["mirror"]["status"]
            return status == "degraded"

        await wait_until(behind, message="for /health to say the mirror is behind")
        health = await service.get("/health")
        assert health["status"] == "degraded" and "writes are slow" in health["cause"], health
        assert service.app[MIRROR].error is None  # nothing failed yet: only the lag tells
        await service.stop()
    finally:
        silent.close()
        for writer in accepted:
            writer.close()


# userdata process


async def test_process_writes_the_database(data_dir, write_user, database_url, capsys):
    write_user("1", "Ann", "Lee", 10, png=True)
    write_user("2", "Bob", "Lee", 20)
    settings = fast_settings(data_dir, database_url=database_url)
    assert await process(settings) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["database"] | {"duration_ms": 0} == {
        "users": 2,
        "inserted": 2,
        "updated": 0,
        "deleted": 0,
        "duration_ms": 0,
    }
    assert without_ids(await table(database_url)) == [
        {"user_id": "1", "first_name": "Ann", "last_name": "Lee", "birthts": 10, "img_path": "src-data/1.png"},
        {"user_id": "2", "first_name": "Bob", "last_name": "Lee", "birthts": 20, "img_path": None},
    ]

    (Path(data_dir) / "datalake" / "src-data" / "1.csv").unlink()
    write_user("2", "Bob", "Changed", 20)
    assert await process(settings) == 0
    summary = json.loads(capsys.readouterr().out)
    database = summary["database"]
    assert (database["inserted"], database["updated"], database["deleted"]) == (0, 1, 1)
    assert [u["user_id"] for u in await table(database_url)] == ["2"]


async def test_process_exits_1_naming_the_database_when_it_cannot_be_reached(data_dir, write_user, capsys):
    write_user("1")
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    assert await process(fast_settings(data_dir, database_url=url)) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["users"] == 1  # output.csv was written all the same
    assert err.startswith("userdata: database unavailable: "), err
    with pytest.raises(DatabaseUnavailable):
        await mirror_once(url, UserIndex())


def test_notify_keeps_the_latest_wanted_state_per_user():
    mirror = PostgresMirror("postgresql://127.0.0.1/unused", UserIndex())
    a, b = UserRecord("a", "A", "A", 0, None), UserRecord("b", "B", "B", 0, None)
    mirror.notify(Diff(added=[a, b]))
    mirror.notify(Diff(removed=["a"], updated=[b]))
    assert mirror._backlog.pending == {"a": None, "b": b}
    assert mirror.pending == 2 and mirror.lag > 0


async def test_problem_and_summary_say_why_and_how_far_the_mirror_is_behind(database_url):
    mirror = PostgresMirror(database_url, UserIndex(), lag_limit=0.1)
    try:
        await mirror.connect()
        await mirror.sync_all()
        assert mirror.problem() is None
        assert mirror.summary() == {"status": "ok", "lag_s": 0, "pending": 0}

        mirror.notify(Diff(added=[UserRecord("a", "A", "B", 0, None)]))  # not started: nothing writes it
        assert mirror.problem() is None and mirror.summary()["status"] == "ok"  # behind, not yet too far
        await asyncio.sleep(0.15)
        problem, summary = mirror.problem(), mirror.summary()
        assert problem is not None and re.fullmatch(r"database mirror behind: writes are slow, lag \d+\.\d s", problem)
        assert summary | {"lag_s": 0} == {"status": "degraded", "lag_s": 0, "pending": 1}, summary
        assert summary["lag_s"] > 0.1, summary

        mirror.error = "connection refused"
        problem = mirror.problem()
        assert problem is not None and problem.startswith("database mirror behind: connection refused, lag "), problem
        assert mirror.summary()["status"] == "degraded"
    finally:
        await mirror.close()
