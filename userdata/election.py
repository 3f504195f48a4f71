"""One writer among replicas, elected through a PostgreSQL session advisory lock.

Every replica keeps a connection of its own (the *session*) and asks for the lock every ``poll``
seconds; the one that gets it is the writer until its session ends. On winning it increments the
fencing counter (table ``userdata_fencing``, one row per lock key) in that session: its ``epoch``,
larger than every writer's before.

A holder that stops talking must not keep the lock for good, so the session is opened with
``idle_session_timeout`` (and ``idle_in_transaction_session_timeout``) set to the ``lease``: the
server ends the session of a holder frozen (SIGSTOP, a stalled VM) or cut off for that long, and
the lock is free. A live holder therefore heartbeats (``SELECT 1``) on the session every lease/3.
Its own view is bounded the same way: :attr:`Election.is_writer` is true only until two thirds
of the lease after the last heartbeat was *sent* (before the server can have started counting),
so a holder that wakes up from a freeze longer than that knows it may be deposed before any
round trip, and a failed heartbeat or a closed connection demotes it at once.

Writes that must not land once this replica is deposed go through :meth:`Election.session`: on
the lock's own session, which is gone when the lock is. Writes elsewhere (output.csv in S3) check
:attr:`Election.is_writer` right before, and are conditional on the ETag last written or seen
(:meth:`userdata.stores.Store.write_if`, :mod:`userdata.sinks.write_gate`). Needs PostgreSQL 14
or newer (idle_session_timeout), and a direct connection or a session-mode pooler: advisory
locks break behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import asyncpg

from .redact import Redactor, url_secrets

__all__ = ("KEY", "Election", "NotWriter")

logger = logging.getLogger("userdata.election")

#: The lock's key, and its row in userdata_fencing: "userdata" in ASCII, as a bigint.
KEY = int.from_bytes(b"userdata", "big")
#: The part of the lease after a heartbeat was sent that this replica trusts itself the writer.
TRUST = 2 / 3
#: What says the session, or the way to it, is not usable. InternalClientError: a statement sent
#: on a session the server has just ended, before the client has read the end.
_DB_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
# Seconds that keep counting while the process is stopped (and, on Linux, while the machine sleeps).
_clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)

FENCING_TABLE = """
SELECT pg_advisory_xact_lock(hashtext('userdata.fencing'));
CREATE TABLE IF NOT EXISTS userdata_fencing (id bigint PRIMARY KEY, epoch bigint NOT NULL);
"""
NEXT_EPOCH = """
INSERT INTO userdata_fencing AS f (id, epoch) VALUES ($1, 1)
ON CONFLICT (id) DO UPDATE SET epoch = f.epoch + 1
RETURNING epoch
"""


def _now() -> float:
    return time.clock_gettime(_clock)


async def _open_session(url: str, lease: float, timeout: float, command_timeout: float | None) -> asyncpg.Connection:
    """A connection that the server ends once idle for ``lease`` seconds, in a transaction or not."""
    conn = await asyncpg.connect(
        url, timeout=timeout, command_timeout=command_timeout, server_settings={"application_name": "userdata-election"}
    )
    ms = max(1, round(lease * 1000))
    try:
        await conn.execute(
            f"SET idle_session_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}", timeout=timeout
        )
    except BaseException:
        conn.terminate()
        raise
    return conn


class NotWriter(Exception):
    """This replica is not the writer (any more): nothing was written."""


class Election:
    """Which replica of those sharing ``database_url`` (and ``key``) writes; :meth:`start` it.

    :param database_url: a ``postgresql://`` URL, as asyncpg takes it
    :param key: the advisory lock's key (a bigint); replicas with the same key elect one writer
    :param lease: seconds a holder that stops talking keeps the lock at most
    :param poll: seconds between a reader's tries for the lock (shorter than the lease)
    :param connect_timeout: seconds a connection attempt may take
    :param command_timeout: asyncpg's default timeout for statements run on :meth:`session`
    :param init: awaited with each new session before it is used (type codecs, say)

    ``on_change`` callbacks hear ``True`` when this replica becomes the writer and ``False`` when
    it stops being it; ``elected`` is set while it holds the lock.
    """

    def __init__(
        self,
        database_url: str,
        *,
        key: int = KEY,
        lease: float = 3.0,
        poll: float = 0.5,
        connect_timeout: float = 5.0,
        command_timeout: float | None = 60.0,
        init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> None:
        if not 0 < poll < lease:
            raise ValueError(f"poll ({poll} s) must be positive and shorter than the lease ({lease} s)")
        self.database_url = database_url
        self.key = key
        self.lease = lease
        self.poll = poll
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._init = init
        self._redactor = Redactor(url_secrets(database_url))
        #: the fencing counter's value of this replica's term as the writer; None while it is not
        self.epoch: int | None = None
        #: why the database cannot be used right now, None when it can
        self.error: str | None = None
        self.on_change: list[Callable[[bool], None]] = []
        self.elected = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._holding = False
        self._valid_until = 0.0
        self._using = asyncio.Lock()  # one statement at a time on the session
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def is_writer(self) -> bool:
        """Whether this replica holds the lock, as far as it can know without asking: false from
        when its session is seen closed, or when no heartbeat confirmed it for long enough that
        the server may have ended it (during a :meth:`session` longer than that, too)."""
        conn = self._conn
        return self._holding and conn is not None and not conn.is_closed() and _now() < self._valid_until

    @property
    def connected(self) -> bool:
        """Whether it has a session to the database (a reader with one is told who holds the lock)."""
        return self._conn is not None

    def problem(self) -> str | None:
        """Why /health should call the election degraded, None when the database can be used."""
        return None if self.error is None else f"writer election: database unreachable: {self.error}"

    def summary(self) -> dict[str, Any]:
        """The election's object in /health: ``role`` (writer or reader) and ``epoch``."""
        return {"role": "writer" if self.is_writer else "reader", "epoch": self.epoch}

    # Life cycle.

    def start(self) -> None:
        """Run :meth:`run` in a task of its own."""
        self._task = asyncio.create_task(self.run(), name="userdata.election")

    async def close(self, grace: float = 1.0) -> None:
        """Stop, and give the lock up: no longer the writer first, then the session closed (for
        up to ``grace`` seconds waiting for a :meth:`session` under way; then cut)."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        self._demote("closed")
        if conn is None:
            return
        try:
            async with asyncio.timeout(grace), self._using:
                await conn.close()
        except (*_DB_ERRORS, TimeoutError):
            conn.terminate()

    async def run(self) -> None:
        """Contend for the lock, then hold it and heartbeat, until closed; never raises."""
        while not self._stopping.is_set():
            try:
                delay = await self._step()
            except Exception as e:
                if not isinstance(e, _DB_ERRORS):
                    logger.error("writer election failed", exc_info=e)
                self._failed(e)
                delay = self.poll
            else:
                if self.error is not None:
                    logger.info("writer election: database reachable again")
                self.error = None
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _step(self) -> float:
        """Connect if need be, then try for the lock or confirm it; seconds until the next step."""
        if self._conn is None:
            await self._connect()
        async with self._using:
            conn, sent = self._conn, _now()
            if conn is None:  # lost meanwhile
                return 0.0
            if self._holding:
                await conn.fetchval("SELECT 1", timeout=self.lease / 3)
                self._valid_until = sent + self.lease * TRUST
                return max(0.0, sent + self.lease / 3 - _now())
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key, timeout=self.lease / 3):
                await self._won(conn, sent)
                return max(0.0, sent + self.lease / 3 - _now())
        return self.poll

    async def _won(self, conn: asyncpg.Connection, sent: float) -> None:
        # Should this fail, the session is dropped (by run), and the lock with it.
        async with conn.transaction():
            await conn.execute(FENCING_TABLE, timeout=self.lease / 3)
            epoch: int = await conn.fetchval(NEXT_EPOCH, self.key, timeout=self.lease / 3)
        self.epoch, self._holding, self._valid_until = epoch, True, sent + self.lease * TRUST
        logger.info("this replica is the writer now (epoch %d)", epoch)
        self._changed()

    async def _connect(self) -> None:
        conn = await _open_session(self.database_url, self.lease, self._connect_timeout, self._command_timeout)
        try:
            if self._init is not None:
                await self._init(conn)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn

    def _terminated(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:
            self._drop("the lock's session ended")

    def _failed(self, error: Exception) -> None:
        first = self.error is None
        self.error = self._redactor.redact(str(error)) or type(error).__name__
        if first:
            logger.warning("writer election: database unusable (%s); trying again every %.1f s", self.error, self.poll)
        self._drop(self.error)

    def _drop(self, why: str) -> None:
        """Not the writer any more, at once; the session cut (the server frees the lock with it)."""
        conn, self._conn = self._conn, None
        self._demote(why)
        if conn is not None:
            conn.terminate()

    def _demote(self, why: str) -> None:
        self._valid_until = 0.0
        if self._holding:
            logger.warning("no longer the writer (epoch %s): %s", self.epoch, why)
            self._holding, self.epoch = False, None
            self._changed()

    def _changed(self) -> None:
        if self._holding:
            self.elected.set()
        else:
            self.elected.clear()
        for callback in list(self.on_change):
            try:
                callback(self._holding)
            except Exception:
                logger.exception("an election listener failed")

    # Writes fenced by the lock.

    @asynccontextmanager
    async def session(self) -> AsyncIterator[asyncpg.Connection]:
        """The lock's own session, for writes that must not land unless this replica is the writer.

        Raises NotWriter when it is not. A deposed writer that does not know it yet (it was frozen,
        say) is given its old session, which the server has ended: every statement on it fails.
        Any error in the block but an SQL error on a live session ends the term (the session is
        cut): who knows what state it left. While the block runs, nothing else uses the session
        and heartbeats wait: keep it shorter than the lease, or :attr:`is_writer` reads false
        meanwhile; a pause inside a transaction longer than the lease ends the session.
        """
        async with self._using:
            conn = self._conn
            if not self._holding or conn is None or conn.is_closed():
                raise NotWriter(f"not the writer (lock {self.key})")
            try:
                yield conn
            except BaseException as e:
                if (conn.is_closed() or not isinstance(e, asyncpg.PostgresError)) and conn is self._conn:
                    self._drop(f"the lock's session failed ({type(e).__name__})")
                raise
