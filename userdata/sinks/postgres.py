"""The PostgreSQL mirror: the ``users`` table kept equal to the index.

The pipeline tells the mirror what changed (:meth:`PostgresMirror.notify`, cheap and synchronous);
one task of the mirror's own does all the database work, so a slow or absent database never holds
up the HTTP API. On every (re)connection it first makes the whole table equal to the index in one
transaction (a *full sync*: COPY into a staging table, then delete, update and insert what differs),
so nothing can be missed while it was away; afterwards it writes the latest state of each changed
user in batches. A user whose data did not change keeps its row and its ``id``. The SQL is in
:mod:`userdata.sinks.postgres_table`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..backoff import DEFAULT_DELAYS, Backoff
from ..index import Diff, UserIndex
from ..redact import Redactor, url_secrets
from .backlog import Backlog
from .postgres_table import DB_ERRORS, DatabaseUnavailable, open_pool, pg_microseconds, replace_all, write_changes

__all__ = ("DatabaseUnavailable", "PostgresMirror", "SyncReport", "mirror_once", "pg_microseconds")

logger = logging.getLogger("userdata.sinks.postgres")


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What a full sync changed in the table."""

    users: int
    inserted: int
    updated: int
    deleted: int
    duration_ms: int


class PostgresMirror:
    """Keeps the ``users`` table of ``database_url`` equal to ``index``.

    Feed it with :meth:`notify` (a pipeline listener) and run it with :meth:`start`; :meth:`close`
    stops it. It never raises to its callers: while the database cannot be used, ``error`` says
    why, changes wait in memory, and it reconnects with backoff, then syncs everything again.

    :param database_url: a ``postgresql://`` URL, as asyncpg takes it
    :param index: the index to mirror; every change to it must reach :meth:`notify`
    :param retry_delays: seconds to wait after the first, second, ... failure in a row; the last repeats
    :param connect_timeout: seconds a connection attempt may take
    :param command_timeout: seconds a statement may take before the connection counts as lost
    :param lag_limit: seconds of lag after which :meth:`problem` calls the mirror behind even with no
        error yet, as a database that hangs raises nothing for a while

    Wired as the app does it::

        mirror = PostgresMirror("postgresql://localhost/app", index)
        pipeline.listeners.append(mirror.notify)
        mirror.start(pipeline.loaded)
    """

    def __init__(
        self,
        database_url: str,
        index: UserIndex,
        *,
        retry_delays: tuple[float, ...] = DEFAULT_DELAYS,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
        lag_limit: float = 30.0,
    ) -> None:
        self.database_url = database_url
        self._redactor = Redactor(url_secrets(database_url))  # an error may quote the URL
        self.index = index
        self.lag_limit = lag_limit
        #: why the database cannot be used right now, None when it can
        self.error: str | None = None
        self._backoff = Backoff(retry_delays)
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._full_sync_needed = True
        self._backlog = Backlog()
        self._loaded = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # The pipeline's and /health's side: never awaits.

    def notify(self, diff: Diff) -> None:
        """A pipeline listener: remember the latest wanted state of each changed user."""
        self._backlog.add(diff)
        self._wake.set()

    @property
    def lag(self) -> float:
        """Seconds since the oldest change not yet in the database; 0 when in sync."""
        return self._backlog.lag

    @property
    def pending(self) -> int:
        """How many users have a change not yet in the database."""
        return len(self._backlog)

    def problem(self) -> str | None:
        """Why /health should call the mirror behind, None when it is not."""
        lag = self.lag
        if not self._is_behind(lag):
            return None
        why = self.error or "writes are slow"  # a database that hangs raises nothing for a while
        return f"database mirror behind: {why}, lag {lag:.1f} s"

    def summary(self) -> dict[str, Any]:
        """The mirror's object in /health: ``status`` (ok or degraded), ``lag_s`` and ``pending``."""
        lag = self.lag
        status = "degraded" if self._is_behind(lag) else "ok"
        return {"status": status, "lag_s": round(lag, 3), "pending": self.pending}

    def _is_behind(self, lag: float) -> bool:
        return self.error is not None or lag > self.lag_limit

    # Life cycle.

    def start(self, loaded: asyncio.Event) -> None:
        """Run the mirror in a task of its own; the first sync waits for ``loaded`` (the index is whole).

        Syncing an index that is not loaded yet would delete the rows of users not read so far.
        """
        self._loaded = loaded
        self._task = asyncio.create_task(self.run(), name="userdata.mirror")

    async def close(self, grace: float = 2.0) -> None:
        """Stop: let the task write what is pending for up to ``grace`` seconds, then cancel it."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                # Abort the connection first: a cancelled transaction would otherwise wait for its
                # rollback, up to command_timeout when the server does not answer.
                self._terminate_pool()
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        await self._close_pool()

    async def run(self) -> None:
        """Keep the table equal to the index until closed; never raises."""
        while True:
            self._wake.clear()
            try:
                await self._catch_up()
            except Exception as e:
                delay = self._failed(e)
                if self._stopping.is_set():
                    return
                await _wait_any(self._stopping, timeout=delay)
                continue
            if self._stopping.is_set():
                return
            await _wait_any(self._wake, self._stopping, *(() if self._loaded.is_set() else (self._loaded,)))

    async def _catch_up(self) -> None:
        if self._pool is None:
            await self.connect()
        if self._loaded.is_set():
            if self._full_sync_needed:
                await self.sync_all()
            while self._backlog.pending:
                await self._write_pending()
        if self.error is not None:
            logger.info("database reachable again; mirror in sync")
        self.error = None
        self._backoff.succeeded()

    def _failed(self, error: Exception) -> float:
        """Record a failure; returns how long to wait before trying again."""
        self._full_sync_needed = True  # who knows what happened to the table meanwhile
        self._terminate_pool()
        self.error = self._redactor.redact(str(error)) or type(error).__name__
        delay = self._backoff.failed()
        if isinstance(error, (DatabaseUnavailable, *DB_ERRORS)):
            logger.warning("database mirror behind (%s); trying again in %.1f s", self.error, delay)
        else:
            logger.error("database mirror failed; trying again in %.1f s", delay, exc_info=error)
        return delay

    # The database.

    async def connect(self) -> None:
        """Create the connection pool, and the table when it is missing; raises DatabaseUnavailable."""
        self._pool = await open_pool(
            self.database_url, connect_timeout=self._connect_timeout, command_timeout=self._command_timeout
        )

    async def sync_all(self) -> SyncReport:
        """Make the table equal to the whole index, in one transaction; raises DatabaseUnavailable.

        Rows of users not in the index are deleted, changed ones updated in place (their ``id``
        stays), missing ones inserted; unchanged rows are not touched.
        """
        if self._pool is None:
            raise DatabaseUnavailable("not connected")
        started = time.monotonic()
        records = self.index.records()  # every change notified so far is in it
        self._backlog.take()
        try:
            inserted, updated, deleted = await replace_all(self._pool, records)
        except BaseException:
            self._backlog.restore()
            raise
        self._backlog.written()
        self._full_sync_needed = False
        report = SyncReport(len(records), inserted, updated, deleted, round((time.monotonic() - started) * 1000))
        logger.info(
            "database mirror synced %d users in %d ms: %d inserted, %d updated, %d deleted",
            report.users,
            report.duration_ms,
            report.inserted,
            report.updated,
            report.deleted,
        )
        return report

    async def _write_pending(self) -> None:
        assert self._pool is not None
        try:
            upserts, removals = await write_changes(self._pool, self._backlog.take())
        except BaseException:
            self._backlog.restore()
            raise
        self._backlog.written()
        logger.debug("database mirror wrote %d upserts, %d deletions", upserts, removals)

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), 1.0)
        except Exception:  # a dead server or a connection still busy: just drop them
            pool.terminate()

    def _terminate_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()


async def mirror_once(database_url: str, index: UserIndex) -> SyncReport:
    """Connect, make the table equal to ``index``, disconnect; raises DatabaseUnavailable."""
    mirror = PostgresMirror(database_url, index)
    try:
        await mirror.connect()
        return await mirror.sync_all()
    finally:
        await mirror.close()


async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Wait until one of ``events`` is set, or ``timeout`` seconds have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
