"""Three replicas as users run them (issue 17): ``userdata serve`` processes on one bucket, fed by
JetStream, one writer elected through PostgreSQL, while the bucket changes and replicas die.

SeaweedFS has no bucket notifications: bench/bridge.py follows its filer's metadata
(``weed filer.meta.tail``) and publishes MinIO-shaped events, duplicating some and swapping
some with the next on purpose, as MinIO's at-least-once delivery may. MinIO's own publisher is
not run here; its configuration is checked in tests/test_deploy.py. The periodic rescan is off:
what a replica learns after its load, it learns from the stream.

A few hundred PUTs and DELETEs over about ten seconds; at a third the writer is SIGKILLed (and
started again), at two thirds a reader is SIGKILLed and started again, then the writer is frozen
with SIGSTOP past the lease and let go. Then, within deadlines, every replica's /data, output.csv
and the table all equal the bucket; the fencing counter only grew; the frozen writer's writes
did not land; the restarted replica was not ready before it had caught up.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from helpers import S3Bucket, wait_until
from natsserver import NatsServer
from pgserver import own_database
from prometheus_client.parser import text_string_to_metric_families
from seaweed import SeaweedFS
from served import Served, free_port, one_writer

from bench.bridge import PROBE, Bridge
from userdata.election import KEY
from userdata.sinks.catalog_hint import hint_key
from userdata.sinks.snapshot import digest

Serve = Callable[..., Awaitable[Served]]
OUTPUT = "processed_data/output.csv"
SEEDED = 100  # users in the bucket before the replicas start
KEYS = 150  # user ids the changes draw from
CHANGES = 300  # PUTs and DELETEs, about PACE apart
PACE = 0.033
FAILOVER = 10.0  # seconds a takeover may take: the 3 s lease, a poll and a slow machine
SETTLE = 30.0  # seconds for everything to agree once the changes end
HINT = hint_key(OUTPUT)
WRITTEN = f"wrote {OUTPUT}: "  # what a replica logs for each write of output.csv that landed (not of HINT)


def csv_body(first_name: str) -> str:
    return f"first_name, last_name, birthts\n{first_name}, Lee, 0\n"


class Bucket:
    """The bucket and what each user's last write made of it (user id -> first name)."""

    def __init__(self, s3: S3Bucket) -> None:
        self.s3 = s3
        self.expected: dict[str, str] = {}

    def put(self, user_id: str, first_name: str) -> None:
        self.s3.put(f"{self.s3.prefix}{user_id}.csv", csv_body(first_name))
        self.expected[user_id] = first_name

    def delete(self, user_id: str) -> None:
        self.s3.delete(f"{self.s3.prefix}{user_id}.csv")
        del self.expected[user_id]

    def listing(self) -> set[str]:
        """The user ids the bucket lists now (one page holds them all)."""
        found = self.s3.client.list_objects_v2(Bucket=self.s3.name, Prefix=self.s3.prefix).get("Contents", [])
        return {o["Key"][len(self.s3.prefix) : -len(".csv")] for o in found}


class Replicas:
    """``userdata serve`` replicas on one bucket, stream and database; each started anew on demand."""

    def __init__(self, serve: Serve, s3: S3Bucket, nats_server: NatsServer, database: str) -> None:
        self.serve = serve
        self.args = [
            *("--s3-endpoint", s3.endpoint, "--bucket", s3.name, "--prefix", s3.prefix),
            *("--nats-url", nats_server.url, "--database-url", database, "--rescan-interval", "0"),
        ]
        self.live: list[Served] = []

    async def start(self) -> Served:
        replica = await self.serve(*self.args, env={"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
                                   port=free_port())  # fmt: skip
        self.live.append(replica)
        return replica

    async def kill(self, replica: Served) -> None:
        await replica.kill()
        self.live.remove(replica)

    async def writer(self, among: list[Served] | None = None) -> Served:
        """The one replica of ``among`` (the live ones) whose /health says writer, once exactly one
        does and the others say reader."""
        among = among or self.live
        return among[await one_writer([r.url for r in among], FAILOVER)]


async def answer(replica: Served, path: str) -> tuple[int, Any]:
    try:
        return await replica.get(path)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return 0, None  # not listening yet, or gone


async def role(replica: Served) -> str | None:
    status, body = await answer(replica, "/health")
    return body.get("role") if status == 200 else None


async def metric(replica: Served, name: str) -> float | None:
    """The value of the replica's /metrics gauge ``name``; None while it does not answer."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{replica.url}/metrics?name[]={name}", timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            text = await r.text()
    except (TimeoutError, aiohttp.ClientError):
        return None
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == name]
    (sample,) = family.samples
    return float(sample.value)


async def settled(writer: Served, bucket: Bucket) -> bool:
    """Whether the writer has written all it will until the bucket changes: output.csv holds the
    bucket's users, the hint beside it was written with that output.csv, and the writer's
    /metrics says output.csv lacks no change of its index (a write under way says 1)."""
    output = await asyncio.to_thread(bucket.s3.get, OUTPUT)
    if output is None or output_users(output) != bucket.expected:
        return False
    hint = await asyncio.to_thread(bucket.s3.get, HINT)
    if hint is None or orjson.loads(hint)["meta"]["output"] != digest(output).hex():
        return False
    return await metric(writer, "userdata_output_csv_dirty") == 0


async def served_users(replica: Served) -> dict[str, str] | None:
    status, body = await answer(replica, "/data")
    return {r["user_id"]: r["first_name"] for r in body} if status == 200 else None


def output_users(data: bytes | None) -> dict[str, str] | None:
    if data is None:
        return None
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    return {row["user_id"]: row["first_name"] for row in rows}


async def table_users(url: str) -> dict[str, str]:
    con = await asyncpg.connect(url, timeout=10)
    try:
        if await con.fetchval("SELECT to_regclass('users')") is None:
            return {}
        return {r["user_id"]: r["first_name"] for r in await con.fetch("SELECT user_id, first_name FROM users")}
    finally:
        await con.close()


async def epochs(url: str, seen: list[int], stop: asyncio.Event) -> None:
    """Record each new value of the fencing counter until ``stop``."""
    con = await asyncpg.connect(url, timeout=10)
    try:
        while not stop.is_set():
            if await con.fetchval("SELECT to_regclass('userdata_fencing')") is not None:
                epoch = await con.fetchval("SELECT epoch FROM userdata_fencing WHERE id = $1", KEY)
                if epoch is not None and (not seen or seen[-1] != epoch):
                    seen.append(epoch)
            await asyncio.sleep(0.05)  # a sampling period, not a synchronisation
    finally:
        await con.close()


async def readiness(replica: Served, bucket: Bucket) -> list[int]:
    """/readyz of a replica starting, until it answers 200 (having answered only 503, or nothing
    while not listening); at that moment its /data must equal the bucket (no change is made
    meanwhile). The statuses it gave, 0 while not listening."""
    statuses: list[int] = []

    async def ready() -> bool:
        status, _ = await answer(replica, "/readyz")
        statuses.append(status)
        assert status in (0, 200, 503), status
        return status == 200

    await wait_until(ready, 30, message=lambda: f"for the restarted replica to be ready:\n{replica.output()}")
    assert await served_users(replica) == bucket.expected, "ready before it had caught up"
    return statuses


@pytest.fixture
def database() -> Iterator[str]:
    with own_database() as url:
        yield url


@pytest.fixture
async def bridge(seaweedfs: SeaweedFS, s3: S3Bucket, nats_server: NatsServer) -> AsyncIterator[Bridge]:
    ports = seaweedfs.ports
    found = Bridge(
        seaweedfs.weed,
        f"127.0.0.1:{ports['filer.port']}.{ports['filer.port.grpc']}",
        s3.name,
        s3.prefix,
        nats_server.url,
        "minio.events",
        seed=17,
        duplicate=0.1,
        swap=0.1,
    )
    await asyncio.to_thread(found.start, lambda: s3.put(PROBE, b""))
    yield found
    await asyncio.to_thread(found.stop)


class Changes:
    """CHANGES PUTs and DELETEs, PACE apart; :meth:`pause` holds them (once the one under way is
    done) until :meth:`resume`."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket, self.done = bucket, 0
        self._go, self._held = asyncio.Event(), asyncio.Event()
        self._go.set()

    async def pause(self) -> None:
        self._go.clear()
        await self._held.wait()

    def resume(self) -> None:
        self._held.clear()
        self._go.set()

    async def after(self, count: int) -> None:
        await wait_until(lambda: self.done >= count, 60, message=f"for {count} changes")

    async def run(self) -> None:
        rng, bucket = random.Random(17), self.bucket
        for n in range(CHANGES):
            if not self._go.is_set():
                self._held.set()
                await self._go.wait()
            user_id = str(rng.randrange(KEYS))
            if user_id in bucket.expected and rng.random() < 0.3:
                await asyncio.to_thread(bucket.delete, user_id)
            else:
                await asyncio.to_thread(bucket.put, user_id, f"N{n}")
            self.done = n + 1
            await asyncio.sleep(PACE)  # the pace of the changes, not a synchronisation


async def test_three_replicas_agree_with_the_bucket_through_kills_and_a_freeze(
    s3: S3Bucket, nats_server: NatsServer, database: str, bridge: Bridge, serve: Serve
) -> None:
    # serve last: fixtures end in the reverse order, so the replicas are killed before the bridge,
    # the database (which a replica still reconnecting to would keep from being dropped) and NATS.
    bucket = Bucket(s3)
    for n in range(SEEDED):
        bucket.put(str(n), f"S{n}")
    replicas = Replicas(serve, s3, nats_server, database)
    for _ in range(3):
        replica = await replicas.start()
        await wait_until(partial(status_of, replica, "/readyz", 200), 30, message=replica.output)
    first = await replicas.writer()
    await wait_until(lambda: output_users(s3.get(OUTPUT)) == bucket.expected, 15, message="for output.csv")

    seen_epochs: list[int] = []
    stop_epochs = asyncio.Event()
    sampling = asyncio.create_task(epochs(database, seen_epochs, stop_epochs))
    changes = Changes(bucket)
    changing = asyncio.create_task(changes.run())

    # A third in: the writer dies; another takes over, and the dead one is started again.
    await changes.after(CHANGES // 3)
    await replicas.kill(first)
    await replicas.writer()
    await replicas.start()

    # Two thirds in: a reader dies. Started again once a few changes went by, with none made
    # while it starts, it must not be ready before its /data is the bucket's.
    await changes.after(2 * CHANGES // 3)
    (reader, *_) = [r for r in replicas.live if await role(r) == "reader"]
    await replicas.kill(reader)
    await changes.after(2 * CHANGES // 3 + 15)
    await changes.pause()
    restarted = await replicas.start()
    statuses = await readiness(restarted, bucket)
    assert 503 in statuses, statuses  # it listens before its load: "not ready" was said, not just no answer

    # The writer frozen past the lease, the changes still paused, once it has settled (output.csv
    # and its hint written, nothing left to write): no write of its own is under way when it
    # stops, to be finished and logged once it is let go. Another takes over and writes, the
    # changes running again; let go, the frozen one finds itself deposed, and nothing it tries
    # to write lands.
    frozen = await replicas.writer()
    await wait_until(
        partial(settled, frozen, bucket), 15, message=lambda: f"for the writer to settle:\n{frozen.output()}"
    )
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        logged = frozen.log.stat().st_size  # the frozen process writes no more of it
        before = s3.get(OUTPUT)  # while none writes it and no change is made: the successor's differs
        changes.resume()
        rest = [r for r in replicas.live if r is not frozen]
        successor = await replicas.writer(rest)
        await wait_until(lambda: s3.get(OUTPUT) != before, 15, message="for the successor to write output.csv")
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    await wait_until(lambda: role_is(frozen, "reader"), FAILOVER, message="for the frozen writer to step down")

    await asyncio.wait_for(changing, 60)
    users = bucket.expected
    assert bucket.listing() == set(users)
    for replica in replicas.live:
        await wait_until(partial(serves, replica, users), SETTLE, message=f"for {replica.port}'s /data")
    await wait_until(lambda: output_users(s3.get(OUTPUT)) == users, SETTLE, message="for output.csv")
    await wait_until(lambda: table_is(database, users), SETTLE, message="for the table")
    stop_epochs.set()
    await sampling

    assert seen_epochs == sorted(set(seen_epochs)), seen_epochs  # it only grew
    assert len(seen_epochs) >= 3, seen_epochs  # the first term and two takeovers at least
    after = frozen.log.read_bytes()[logged:].decode(errors="replace")
    assert "no longer the writer" in after, after
    assert WRITTEN not in after, after
    assert await replicas.writer() is successor  # the new term held
    counts = await asyncio.to_thread(bridge.stop)
    assert counts["duplicated"] and counts["swapped"], counts  # the stream was untidy on purpose


async def status_of(replica: Served, path: str, status: int) -> bool:
    return (await answer(replica, path))[0] == status


async def role_is(replica: Served, wanted: str) -> bool:
    return await role(replica) == wanted


async def serves(replica: Served, users: dict[str, str]) -> bool:
    return await served_users(replica) == users


async def table_is(url: str, users: dict[str, str]) -> bool:
    return await table_users(url) == users
