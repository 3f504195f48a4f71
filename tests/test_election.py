"""The writer election against a throwaway PostgreSQL server: one writer, failover, fencing.

Elections here run with a short lease (LEASE) and poll often, each test with a lock key of its
own, so that sessions left by one test cannot hold another's lock. Without PostgreSQL's server
binaries they skip, unless TESTS_REQUIRE_POSTGRES.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from helpers import wait_until
from pgserver import free_port

from userdata.election import Election, NotWriter

LEASE = 2.0
POLL = 0.1
#: Seconds a takeover may take beyond lease + poll: the new writer's round trips, a loaded machine.
MARGIN = 1.5
ROOT = Path(__file__).resolve().parents[1]

Start = Callable[..., Election]
#: What a statement on a session the server has ended raises (InternalClientError: sent before
#: the client read the end).
DEAD_SESSION = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


@pytest.fixture
def key() -> int:
    return random.getrandbits(62)


@pytest.fixture
async def url(throwaway_url: str) -> str:
    con = await asyncpg.connect(throwaway_url, timeout=10)
    try:
        await con.execute("CREATE TABLE IF NOT EXISTS fenced_writes (key bigint, epoch bigint, what text)")
    finally:
        await con.close()
    return throwaway_url


@pytest.fixture
async def start(url: str, key: int) -> AsyncIterator[Start]:
    """Start an election on the test's key; every one started is closed at the end."""
    started: list[Election] = []

    def make(lease: float = LEASE, poll: float = POLL) -> Election:
        election = Election(url, key=key, lease=lease, poll=poll)
        election.start()
        started.append(election)
        return election

    yield make
    for election in started:
        await election.close()


async def query(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    con = await asyncpg.connect(url, timeout=10)
    try:
        rows: list[asyncpg.Record] = await con.fetch(sql, *args)
        return rows
    finally:
        await con.close()


async def holders(url: str, key: int) -> list[int]:
    """Backends holding the advisory lock on ``key``, as the server sees it."""
    rows = await query(
        url,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = $1 AND objid = $2 AND objsubid = 1",
        key >> 32,
        key & 0xFFFFFFFF,
    )
    return [r["pid"] for r in rows]


async def stored_epoch(url: str, key: int) -> int:
    rows = await query(url, "SELECT epoch FROM userdata_fencing WHERE id = $1", key)
    return int(rows[0]["epoch"])


def writers(elections: list[Election]) -> list[Election]:
    return [e for e in elections if e.is_writer]


async def one_writer(elections: list[Election], timeout: float = LEASE + POLL + MARGIN) -> Election:
    await wait_until(lambda: len(writers(elections)) == 1, timeout, message="for one writer")
    return writers(elections)[0]


async def fenced_write(election: Election, what: str) -> None:
    async with election.session() as conn:
        await conn.execute("INSERT INTO fenced_writes VALUES ($1, $2, $3)", election.key, election.epoch, what)


async def test_of_three_replicas_exactly_one_is_the_writer(start: Start, url: str, key: int) -> None:
    elections = [start() for _ in range(3)]
    writer = await one_writer(elections)
    assert writer.summary() == {"role": "writer", "epoch": await stored_epoch(url, key)}
    assert len(await holders(url, key)) == 1
    # Through several heartbeats and many polls of the others, nothing changes.
    deadline = time.monotonic() + 3 * LEASE
    while time.monotonic() < deadline:
        assert writers(elections) == [writer]
        await asyncio.sleep(0.05)
    assert all(e.summary() == {"role": "reader", "epoch": None} for e in elections if e is not writer)
    assert all(e.problem() is None for e in elections)


async def test_a_writer_that_closes_hands_over_and_epochs_only_grow(start: Start, url: str, key: int) -> None:
    elections = [start() for _ in range(3)]
    epochs = []
    for _ in range(3):
        writer = await one_writer(elections)
        assert writer.epoch is not None and writer.elected.is_set()
        assert writer.epoch == await stored_epoch(url, key)
        epochs.append(writer.epoch)
        await writer.close()  # gives the lock up at once
        assert not writer.is_writer and writer.epoch is None
        elections.remove(writer)
        elections.append(start())
    assert epochs == sorted(set(epochs))


async def test_a_writer_whose_session_is_terminated_is_deposed_and_cannot_write(
    start: Start, url: str, key: int
) -> None:
    first, second = start(), start()
    old = await one_writer([first, second])
    other = second if old is first else first
    roles: list[bool] = []
    old.on_change.append(roles.append)
    epoch = old.epoch
    await fenced_write(old, "while the writer")
    [pid] = await holders(url, key)
    await query(url, "SELECT pg_terminate_backend($1)", pid)
    await wait_until(lambda: not old.is_writer, 2.0, message="for the writer to see its session end")
    with pytest.raises(NotWriter):
        await fenced_write(old, "after it")
    new = await one_writer([first, second])
    assert new is other and new.epoch is not None and epoch is not None and new.epoch > epoch
    assert roles == [False]
    rows = await query(url, "SELECT epoch, what FROM fenced_writes WHERE key = $1", key)
    assert [(r["epoch"], r["what"]) for r in rows] == [(epoch, "while the writer")]
    await wait_until(lambda: old.problem() is None, 2.0, message="for the old writer to contend again")


async def test_a_write_begun_on_the_session_of_a_writer_deposed_meanwhile_fails(
    start: Start, url: str, key: int
) -> None:
    first, second = start(), start()
    old = await one_writer([first, second])
    async with old.session() as conn:  # the deposed writer does not know yet
        [pid] = await holders(url, key)
        await query(url, "SELECT pg_terminate_backend($1)", pid)
        await one_writer([first, second])
        with pytest.raises(DEAD_SESSION):
            await conn.execute("INSERT INTO fenced_writes VALUES ($1, $2, 'deposed')", key, old.epoch)
    assert not old.is_writer
    assert await query(url, "SELECT * FROM fenced_writes WHERE key = $1", key) == []


async def test_the_writers_own_view_ends_before_the_server_ends_its_session(start: Start) -> None:
    # A session kept busy by nothing: no heartbeat can run, and the server counts it idle.
    election = start(lease=2.0)
    await one_writer([election], timeout=5.0)
    async with election.session() as conn:
        await wait_until(lambda: not election.is_writer, 2.0, message="for the writer's own view to end")
        view_ended = time.monotonic()
        assert not conn.is_closed(), "the server ended the session before the writer stopped trusting it"
        await wait_until(conn.is_closed, 3.0, message="for idle_session_timeout to end the session")
        # At least a third of the lease apart: 2/3 of it after the heartbeat was sent, against
        # the whole lease after the server received it.
        assert time.monotonic() - view_ended >= 0.4
    await wait_until(lambda: election.is_writer, 5.0, message="for the lock to be won again")


CHILD = """
import asyncio, sys
import asyncpg
from userdata.election import Election, NotWriter

async def write(election, what):
    async with election.session() as conn:
        await conn.execute("INSERT INTO fenced_writes VALUES ($1, $2, $3)", election.key, election.epoch, what)

async def main():
    url, key, lease, poll = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    election = Election(url, key=key, lease=lease, poll=poll)
    election.start()
    await election.elected.wait()
    await write(election, "before the freeze")
    print("writer", election.epoch, flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # a line once thawed
    print("is_writer", election.is_writer, flush=True)
    try:
        await write(election, "after the freeze")
        print("wrote", flush=True)
    except (NotWriter, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as e:
        print("refused", type(e).__name__, flush=True)
    await election.close()

asyncio.run(main())
"""


async def test_a_frozen_writer_is_replaced_within_the_lease_and_its_writes_fail_when_it_thaws(
    start: Start, url: str, key: int
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, str(key), str(LEASE), str(POLL),
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        line = (await asyncio.wait_for(child.stdout.readline(), 20)).decode().split()
        assert line[0] == "writer", line
        frozen_epoch = int(line[1])
        candidate = start()
        os.kill(child.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        await one_writer([candidate], timeout=LEASE + POLL + MARGIN)
        took = time.monotonic() - frozen_at
        assert candidate.epoch is not None and candidate.epoch > frozen_epoch
        os.kill(child.pid, signal.SIGCONT)
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        out, _ = await asyncio.wait_for(child.communicate(), 20)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    lines = out.decode().splitlines()
    assert lines[0] == "is_writer False"
    assert lines[1].startswith("refused"), lines
    assert child.returncode == 0
    # Not before the frozen writer's session ended: at the soonest a lease after its last
    # heartbeat, which came at most a third of a lease before the freeze.
    assert LEASE * 2 / 3 - 0.05 <= took <= LEASE + POLL + MARGIN
    assert candidate.is_writer
    rows = await query(url, "SELECT epoch, what FROM fenced_writes WHERE key = $1", key)
    assert [(r["epoch"], r["what"]) for r in rows] == [(frozen_epoch, "before the freeze")]


async def test_a_database_that_goes_away_demotes_the_writer_and_health_says_why(
    start: Start, url: str, key: int, throwaway_server
) -> None:
    election = start()
    await one_writer([election])
    epoch = election.epoch
    assert epoch is not None
    await asyncio.to_thread(throwaway_server.stop)
    try:
        await wait_until(lambda: not election.is_writer, 2.0, message="for the writer to step down")
        await wait_until(election.problem, 3.0, message="for the election to report the database")
        assert (election.problem() or "").startswith("writer election: database unreachable: ")
    finally:
        await asyncio.to_thread(throwaway_server.start)
    await one_writer([election], timeout=10.0)
    assert election.epoch is not None and election.epoch > epoch
    await wait_until(lambda: election.problem() is None, 2.0)


async def test_an_unreachable_database_is_a_problem_and_hides_the_password() -> None:
    election = Election(f"postgresql://u:s3cret@127.0.0.1:{free_port()}/db", lease=LEASE, poll=POLL)
    election.start()
    try:
        await wait_until(election.problem, 5.0, message="for the election to report the database")
        assert "s3cret" not in (election.problem() or "")
        assert election.summary() == {"role": "reader", "epoch": None}
    finally:
        await election.close()


def test_the_poll_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError, match="shorter than the lease"):
        Election("postgresql://localhost/x", lease=1.0, poll=1.0)
