"""Benchmark of the PostgreSQL mirror: a bulk initial sync, a sync with nothing to do, one change.

    python -m bench.postgres [--users 100000] [--changes 50] [--admin-url postgresql://...]

Runs against a database of its own, created on the server of ``--admin-url`` (default: the local
server on 127.0.0.1:5432) and dropped at the end. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid

import asyncpg

from userdata.index import UserIndex
from userdata.records import UserRecord
from userdata.sinks.postgres import PostgresMirror, mirror_once

from .machine import describe_machine


def make_users(count: int, seed: int = 1) -> list[UserRecord]:
    rng = random.Random(seed)
    return [
        UserRecord(
            f"{i:07}",
            rng.choice(("Ann", "Bob", "Chloé", "Dmitri", "Eve")),
            rng.choice(("Lee", "O'Brien, Jr.", "Smith-Jones", "Zhang")),
            rng.randrange(-946_771_200_000, 1_262_304_000_000),  # births over 1940-2010
            f"src-data/{i:07}.png" if i % 3 else None,
        )
        for i in range(count)
    ]


async def one_change_latency(url: str, index: UserIndex, changes: int) -> list[float]:
    """Seconds from a change applied to the index until its row is committed, one change at a time."""
    mirror = PostgresMirror(url, index)
    loaded = asyncio.Event()
    loaded.set()
    mirror.start(loaded)
    con = await asyncpg.connect(url)
    try:
        # Both loops poll on purpose (ASYNC110): the mirror has no event to wait on, and the
        # second one is what is timed, to within one turn of the loop.
        while mirror.pending or mirror.lag or mirror.error is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        seconds = []
        for n in range(changes):
            name = f"Changed{n}"
            old = index.get("0000042")
            assert old is not None
            started = time.perf_counter()
            mirror.notify(index.apply([UserRecord(old.user_id, name, old.last_name, old.birthts, old.img_path)]))
            # in memory or in flight; the mirror's task runs while this one yields
            while mirror.pending:  # noqa: ASYNC110
                await asyncio.sleep(0)
            seconds.append(time.perf_counter() - started)
            assert await con.fetchval("SELECT first_name FROM users WHERE user_id = '0000042'") == name
        return seconds
    finally:
        await con.close()
        await mirror.close()


async def main(users: int, changes: int, admin_url: str) -> None:
    name = f"userdata_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rpartition("/")[0] + "/" + name
    try:
        index = UserIndex()
        index.apply(make_users(users))
        first = await mirror_once(url, index)
        again = await mirror_once(url, index)
        latencies = await one_change_latency(url, index, changes)
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        version = await admin.fetchval("SHOW server_version")
        await admin.close()
    latencies_ms = sorted(s * 1000 for s in latencies)
    print(f"Machine: {describe_machine()}; PostgreSQL {version} on loopback.\n")
    print("| measure | result |")
    print("| --- | --- |")
    print(f"| initial sync of {users:,} users into an empty table | {first.duration_ms / 1000:.2f} s "
          f"({users / (first.duration_ms / 1000):,.0f} users/s) |")  # fmt: skip
    print(f"| sync of the same {users:,} users, nothing changed | {again.duration_ms / 1000:.2f} s |")
    print(f"| one change, applied to the index until committed ({changes} runs) | "
          f"p50 {statistics.median(latencies_ms):.1f} ms, max {latencies_ms[-1]:.1f} ms |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    asyncio.run(main(args.users, args.changes, args.admin_url))
