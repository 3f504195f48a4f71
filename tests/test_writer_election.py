"""One writer among replicas (issue 17): in-process apps on one throwaway PostgreSQL and one bucket.

With a database the replicas elect the writer; only it writes output.csv (conditional PUTs) and
the table, and another takes over when it stops. Without one, --read-only keeps a replica from
writing anything.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from helpers import S3Bucket, Service, SpyStore, fast_settings, wait_until
from natsserver import NatsServer

from userdata.app import create_store
from userdata.keys import ELECTION
from userdata.sinks.catalog_hint import hint_key

Start = Callable[..., Awaitable[Service]]
#: Seconds a takeover may take: the lease (3 s) and a poll, with room for a slow machine.
FAILOVER = 8.0
OUTPUT = "processed_data/output.csv"
HINT = hint_key(OUTPUT)


class CountingStore(SpyStore):
    """Counts the writes of each key that reach the store, and what each conditional one was on."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.written: list[str] = []
        #: (key, ETag) of each write_if tried, landed or not (None: unconditional)
        self.conditions: list[tuple[str, str | None]] = []

    async def write(self, key: str, data: bytes) -> None:
        await super().write(key, data)
        self.written.append(key)

    async def write_if(self, key: str, data: bytes, etag: str | None) -> str:
        self.conditions.append((key, etag))
        found = await super().write_if(key, data, etag)
        self.written.append(key)
        return found


def output_ids(data: bytes | None) -> list[str]:
    return [] if data is None else [row[0] for row in csv.reader(io.StringIO(data.decode(), newline=""))][1:]


async def table_ids(url: str) -> list[str]:
    con = await asyncpg.connect(url, timeout=10)
    try:
        if await con.fetchval("SELECT to_regclass('users')") is None:
            return []
        return [r["user_id"] for r in await con.fetch("SELECT user_id FROM users ORDER BY user_id")]
    finally:
        await con.close()


async def sessions(url: str) -> dict[str, int]:
    """The service's connections to the database, by application name."""
    con = await asyncpg.connect(url, timeout=10)
    try:
        found = await con.fetch(
            "SELECT application_name AS name, count(*) AS n FROM pg_stat_activity"
            " WHERE application_name LIKE 'userdata%' GROUP BY 1"
        )
    finally:
        await con.close()
    return {r["name"]: r["n"] for r in found}


@pytest.fixture(scope="module")
def nats(module_nats: NatsServer) -> NatsServer:
    """Replicas are fed by JetStream: only they elect a writer."""
    return module_nats


async def start_replicas(
    start_service: Start, s3: S3Bucket, url: str, n: int, nats: NatsServer
) -> list[tuple[Service, CountingStore]]:
    replicas = []
    for _ in range(n):
        settings = s3.settings(database_url=url, nats_url=nats.url)
        store = CountingStore(create_store(settings))
        replicas.append((await start_service(settings, store=store), store))
    return replicas


def store_of(replicas: list[tuple[Service, CountingStore]], service: Service) -> CountingStore:
    return next(store for s, store in replicas if s is service)


async def roles(services: list[Service]) -> list[str]:
    return [(await service.get("/health")).get("role", "?") for service in services]


async def the_writer(services: list[Service]) -> Service:
    """The one replica of ``services`` that /health calls the writer, once exactly one does."""

    async def one() -> bool:
        found = await roles(services)
        return found.count("writer") == 1 and found.count("reader") == len(services) - 1

    await wait_until(one, timeout=FAILOVER, message="for exactly one writer")
    return next(s for s, role in zip(services, await roles(services), strict=True) if role == "writer")


async def two_users_three_replicas(
    start_service: Start, s3: S3Bucket, url: str, nats: NatsServer
) -> tuple[list[tuple[Service, CountingStore]], list[Service], Service]:
    """Users 1 and 2 in the bucket, three replicas on them, and the writer once output.csv is written."""
    s3.put_user("1", "Ann")
    s3.put_user("2", "Bob")
    replicas = await start_replicas(start_service, s3, url, 3, nats)
    services = [service for service, _ in replicas]
    writer = await the_writer(services)
    await wait_until(lambda: output_ids(s3.get(OUTPUT)) == ["1", "2"], message="for output.csv")
    return replicas, services, writer


async def test_only_the_elected_writer_writes_and_another_takes_over_when_it_stops(
    start_service: Start, s3: S3Bucket, throwaway_url: str, nats: NatsServer
) -> None:
    replicas, services, writer = await two_users_three_replicas(start_service, s3, throwaway_url, nats)
    await wait_until(lambda: not writer.output.dirty, message="for the writer's output to settle")
    await wait_until(lambda: table_ids(throwaway_url), message="for the table")
    assert await table_ids(throwaway_url) == ["1", "2"]
    for service, store in replicas:
        health = await service.get("/health")
        assert health["status"] == "ok", health
        if service is writer:
            assert health["role"] == "writer" and health["epoch"] >= 1, health
            assert OUTPUT in store.written and service.output.writes >= 1
        else:
            assert health["role"] == "reader" and health["epoch"] is None, health
            assert store.written == [] and service.output.writes == 0, store.written
    epoch = (await writer.get("/health"))["epoch"]

    async def on_the_locks_sessions() -> bool:  # the mirror writes on them: no pool of its own
        return await sessions(throwaway_url) == {"userdata-election": 3}

    await wait_until(on_the_locks_sessions, message="for the only sessions to be the election's")

    # The writer stops: another takes over, its epoch larger, and finding in the store the very
    # bytes it would write (output.csv and hint), writes nothing.
    await writer.stop()
    rest = [service for service in services if service is not writer]
    successor = await the_writer(rest)
    assert (await successor.get("/health"))["epoch"] > epoch
    await settled_writer(successor)
    assert store_of(replicas, successor).written == [] and successor.output.writes == 0

    # After a change, the new writer rewrites output.csv and the table; the other reader does not write.
    s3.put_user("3", "Cy")
    for service in rest:
        await service.post("/data")
    await wait_until(lambda: output_ids(s3.get(OUTPUT)) == ["1", "2", "3"], message="for the new output.csv")

    async def mirrored() -> bool:
        return await table_ids(throwaway_url) == ["1", "2", "3"]

    await wait_until(mirrored, message="for the new writer to mirror the change")
    reader = next(service for service in rest if service is not successor)
    assert reader.output.writes == 0
    assert (await reader.get("/health"))["role"] == "reader"


async def settled_writer(service: Service) -> None:
    """Wait until ``service`` is the writer and its output writer has had its round since the win
    (rewrite() runs as it wins, before /health can say writer; dirty until the round is done)."""

    async def settled() -> bool:
        return (await service.get("/health")).get("role") == "writer" and not service.output.dirty

    await wait_until(settled, timeout=FAILOVER, message="for the new writer's output to settle")


async def test_a_takeover_writes_output_csv_and_its_hint_only_if_they_changed(
    start_service: Start, s3: S3Bucket, throwaway_url: str, nats: NatsServer
) -> None:
    replicas, services, first = await two_users_three_replicas(start_service, s3, throwaway_url, nats)
    await wait_until(lambda: not first.output.dirty and first.output.hint_writes == 1, message="for the hint")

    # Unchanged data: the successor looks at both objects, finds its own bytes, writes neither.
    await first.stop()
    second = await the_writer([s for s in services if s is not first])
    await settled_writer(second)
    assert sorted(store_of(replicas, second).looks) == sorted([OUTPUT, HINT])
    assert store_of(replicas, second).written == [] and store_of(replicas, second).conditions == []
    assert second.output.writes == second.output.hint_writes == second.output.failures == 0

    # A change the writer stops before writing (as within its settle delay; here it is kept from
    # writing): its successor finds other bytes, and writes both, conditional on the ETags seen.
    second.output.gate.may_write = lambda: False
    seen = {key: s3.client.head_object(Bucket=s3.name, Key=key)["ETag"] for key in (OUTPUT, HINT)}
    s3.put_user("3", "Cy")
    third = next(s for s in services if s is not first and s is not second)
    for service in (second, third):
        await service.post("/data")
    await second.stop()
    await settled_writer(third)
    assert output_ids(s3.get(OUTPUT)) == ["1", "2", "3"]
    assert store_of(replicas, third).conditions == [(OUTPUT, seen[OUTPUT]), (HINT, seen[HINT])]
    assert third.output.writes == third.output.hint_writes == 1 and third.output.failures == 0
    assert store_of(replicas, second).written == []


async def test_a_new_writer_whose_etag_is_stale_forgets_it_and_writes_again(
    start_service: Start, s3: S3Bucket, throwaway_url: str, nats: NatsServer
) -> None:
    s3.put_user("1", "Ann")
    [(service, _)] = await start_replicas(start_service, s3, throwaway_url, 1, nats)
    await the_writer([service])
    await wait_until(lambda: output_ids(s3.get(OUTPUT)) == ["1"], message="for output.csv")
    s3.put(OUTPUT, "someone else's\n")  # its ETag is no longer the one the writer saw
    s3.put_user("2", "Bob")
    await service.post("/data")
    await wait_until(lambda: output_ids(s3.get(OUTPUT)) == ["1", "2"], message="for the rewrite")
    assert service.output.failures >= 1  # the conditional PUT failed first
    assert service.app[ELECTION].is_writer


async def test_a_read_only_replica_serves_changes_and_never_writes(
    start_service: Start,
    data_dir: Path,
    source_dir: Path,
    write_user: Callable[..., Path],
    output_path: Path,
    throwaway_url: str,
) -> None:
    write_user("1", "Ann")
    output_path.parent.mkdir(parents=True)
    output_path.write_text("user_id,first_name,last_name,birthts,img_path\n0,Old,User,0,\n")
    settings = fast_settings(data_dir, read_only=True, database_url=throwaway_url)
    store = CountingStore(create_store(settings))
    service = await start_service(settings, store=store)
    assert await service.user_ids() == ["1"]
    write_user("2", "Bob")
    await wait_until(lambda: "2" in service.index, message="for the change")
    assert await service.user_ids() == ["1", "2"]
    assert await service.output.flush()  # nothing to write, and not a failure
    health = await service.get("/health")
    assert health["status"] == "ok" and health["role"] == "reader", health
    assert "mirror" not in health and ELECTION not in service.app
    assert output_path.read_text() == "user_id,first_name,last_name,birthts,img_path\n0,Old,User,0,\n"
    assert sorted(p.name for p in output_path.parent.iterdir()) == ["output.csv"]  # no hint, no leftovers
    assert store.written == [] and service.output.writes == 0
    assert await table_ids(throwaway_url) == []


async def test_one_service_with_a_database_elects_nothing_and_writes_output_csv_while_it_is_down(
    start_service: Start, data_dir: Path, source_dir: Path, output_path: Path, write_user: Callable[..., Path]
) -> None:
    # Only replicas (fed by JetStream) elect a writer: a database outage must never stop output.csv.
    write_user("1", "Ann")
    service = await start_service(fast_settings(data_dir, database_url="postgresql://u@127.0.0.1:1/none"))
    await wait_until(output_path.exists, message="for output.csv, the database being unreachable")
    assert output_ids(output_path.read_bytes()) == ["1"]
    health = await service.get("/health")
    assert "role" not in health and ELECTION not in service.app, health
