"""The PostgreSQL mirror: the ``users`` table kept equal to the index.

The pipeline tells the mirror what changed (:meth:`PostgresMirror.notify`, cheap and synchronous);
one task of the mirror's own does all the database work, so a slow or absent database never holds
up the HTTP API. On every (re)connection it first makes the whole table equal to the index in one
transaction (a *full sync*: COPY into a staging table, then delete, update and insert what differs),
so nothing can be missed while it was away; afterwards it writes the latest state of each changed
user in batches. A user whose data did not change keeps its row and its ``id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

import asyncpg

from ..index import Diff, UserIndex
from ..records import UserRecord

__all__ = ("DatabaseUnavailable", "PostgresMirror", "SyncReport", "pg_microseconds", "mirror_once")

logger = logging.getLogger("userdata.sinks.postgres")

#: PostgreSQL's epoch, 2000-01-01T00:00:00Z, in milliseconds since the Unix epoch
PG_EPOCH_MS = 946_684_800_000
COLUMNS = ("user_id", "first_name", "last_name", "birthdate", "img_path")
#: Upserts in a batch from this many on go through COPY and a staging table, fewer through executemany.
STAGING_MIN_ROWS = 500
#: Records converted to rows in a thread from this many on, so the event loop stays free.
_THREAD_MIN_ROWS = 5000

Row = tuple[str, str, str, int, str | None]  # birthdate as microseconds since PG_EPOCH_MS

# The table, created on connect when missing. The lock keeps two services starting together from
# racing on CREATE ... IF NOT EXISTS. The unique index is named like the one UNIQUE makes, so it
# is created only where a table of that name exists without one.
CREATE_TABLE = """
SELECT pg_advisory_xact_lock(hashtext('userdata.users'));
CREATE TABLE IF NOT EXISTS users (
    id bigserial PRIMARY KEY,
    user_id text UNIQUE NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    birthdate timestamptz NOT NULL,
    img_path text
);
CREATE UNIQUE INDEX IF NOT EXISTS users_user_id_key ON users (user_id);
"""

_CHANGED = """(users.first_name, users.last_name, users.birthdate, users.img_path)
    IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.birthdate, EXCLUDED.img_path)"""
_ON_CONFLICT = f"""ON CONFLICT (user_id) DO UPDATE SET
    first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
    birthdate = EXCLUDED.birthdate, img_path = EXCLUDED.img_path
WHERE {_CHANGED}"""


def pg_microseconds(birthts: int) -> int:
    """A birthts as PostgreSQL stores a timestamptz: microseconds since 2000-01-01T00:00:00Z."""
    return (birthts - PG_EPOCH_MS) * 1000


def _rows(records: Sequence[UserRecord]) -> list[Row]:
    return [(r.user_id, r.first_name, r.last_name, pg_microseconds(r.birthts), r.img_path) for r in records]


async def _init_connection(con: asyncpg.Connection) -> None:
    # Birthdates go over the wire as PostgreSQL's own integer: exact for every birthts, no datetime
    # built per row, and no surprise from asyncpg's datetime codec, which sends 0001-01-01T00:00Z
    # (datetime.min) as -infinity.
    await con.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=lambda us: (us,), decoder=lambda t: t[0], format="tuple"
    )


async def _rows_off_loop(records: Sequence[UserRecord]) -> list[Row]:
    if len(records) < _THREAD_MIN_ROWS:
        return _rows(records)
    return await asyncio.to_thread(_rows, records)


class DatabaseUnavailable(Exception):
    """The database cannot be reached or used; ``str(exc)`` says why."""


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What a full sync changed in the table."""

    users: int
    inserted: int
    updated: int
    deleted: int
    duration_ms: int


# Staging: a temporary table for one transaction, filled by COPY, merged into users.
CREATE_STAGING = """
CREATE TEMP TABLE users_staging (
    user_id text NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    birthdate timestamptz NOT NULL,
    img_path text
) ON COMMIT DROP;
"""
# Temporary tables are never analyzed by autovacuum; the joins below plan better with statistics.
ANALYZE_STAGING = "ANALYZE users_staging"
UPDATE_FROM_STAGING = """
UPDATE users SET first_name = s.first_name, last_name = s.last_name, birthdate = s.birthdate, img_path = s.img_path
FROM users_staging s
WHERE users.user_id = s.user_id
    AND (users.first_name, users.last_name, users.birthdate, users.img_path)
        IS DISTINCT FROM (s.first_name, s.last_name, s.birthdate, s.img_path)
"""
# Only users not in the table yet: an INSERT ... ON CONFLICT of every row would draw an id from
# the sequence and lock the row for each existing user. ON CONFLICT stays for a concurrent writer.
INSERT_FROM_STAGING = f"""
INSERT INTO users (user_id, first_name, last_name, birthdate, img_path)
SELECT s.user_id, s.first_name, s.last_name, s.birthdate, s.img_path
FROM users_staging s
WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.user_id = s.user_id)
{_ON_CONFLICT}
"""
DELETE_NOT_STAGED = "DELETE FROM users WHERE NOT EXISTS (SELECT 1 FROM users_staging s WHERE s.user_id = users.user_id)"


async def _stage(con: asyncpg.Connection, rows: list[Row]) -> None:
    await con.execute(CREATE_STAGING)
    await con.copy_records_to_table("users_staging", records=rows, columns=COLUMNS)
    await con.execute(ANALYZE_STAGING)


async def _merge_staged(con: asyncpg.Connection) -> tuple[int, int]:
    """Update and insert from the staging table; returns (updated, inserted)."""
    updated = await con.execute(UPDATE_FROM_STAGING)
    inserted = await con.execute(INSERT_FROM_STAGING)
    return _count(updated), _count(inserted)


# Batches of changes.
UPSERT_USER = f"""
INSERT INTO users (user_id, first_name, last_name, birthdate, img_path) VALUES ($1, $2, $3, $4, $5)
{_ON_CONFLICT}
"""
DELETE_USERS = "DELETE FROM users WHERE user_id = ANY($1::text[])"


async def _write_batch(con: asyncpg.Connection, rows: list[Row], removals: list[str]) -> None:
    async with con.transaction():
        if removals:
            await con.execute(DELETE_USERS, removals)
        if len(rows) >= STAGING_MIN_ROWS:
            await _stage(con, rows)
            await _merge_staged(con)
        elif rows:
            await con.executemany(UPSERT_USER, rows)


def _count(status: str) -> int:
    """The row count of a command status such as ``INSERT 0 5`` or ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


#: What says the database, or the way to it, is not usable right now.
_DB_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


class PostgresMirror:
    """Keeps the ``users`` table of ``database_url`` equal to ``index``.

    Feed it with :meth:`notify` (a pipeline listener) and run it with :meth:`start`; :meth:`close`
    stops it. It never raises to its callers: while the database cannot be used, ``error`` says
    why, changes wait in memory, and it reconnects with backoff, then syncs everything again.

    >>> mirror = PostgresMirror("postgresql://localhost/app", UserIndex())  # doctest: +SKIP
    >>> pipeline.listeners.append(mirror.notify); mirror.start(pipeline.loaded)  # doctest: +SKIP
    """

    def __init__(
        self,
        database_url: str,
        index: UserIndex,
        *,
        retry_delays: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30),
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
    ) -> None:
        self.database_url = database_url
        self.index = index
        #: why the database cannot be used right now, None when it can
        self.error: str | None = None
        self._retry_delays = retry_delays or (1.0,)
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._failures = 0
        self._pool: asyncpg.Pool | None = None
        self._full_sync_needed = True
        #: user_id -> the record it should have, None when it should have no row
        self._pending: dict[str, UserRecord | None] = {}
        self._in_flight: dict[str, UserRecord | None] = {}
        #: when the oldest change not yet in the database was made (time.monotonic()), None if none;
        #: the table is not known to be equal to anything until the first full sync
        self._behind_since: float | None = time.monotonic()
        self._flight_since: float | None = None
        self._loaded = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # The pipeline's side: never awaits.

    def notify(self, diff: Diff) -> None:
        """A pipeline listener: remember the latest wanted state of each changed user."""
        pending = self._pending
        for record in diff.added:
            pending[record.user_id] = record
        for record in diff.updated:
            pending[record.user_id] = record
        for user_id in diff.removed:
            pending[user_id] = None
        if self._behind_since is None:
            self._behind_since = time.monotonic()
        self._wake.set()

    @property
    def lag(self) -> float:
        """Seconds since the oldest change not yet in the database; 0 when in sync."""
        since = _earliest(self._behind_since, self._flight_since)
        return 0.0 if since is None else time.monotonic() - since

    @property
    def pending(self) -> int:
        """How many users have a change not yet in the database."""
        if not self._in_flight:
            return len(self._pending)
        return len(self._pending.keys() | self._in_flight.keys())

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
            while self._pending:
                await self._write_pending()
        if self.error is not None:
            logger.info("database reachable again; mirror in sync")
        self.error = None
        self._failures = 0

    def _failed(self, error: Exception) -> float:
        """Record a failure; returns how long to wait before trying again."""
        self._full_sync_needed = True  # who knows what happened to the table meanwhile
        self._terminate_pool()
        self.error = _describe(error)
        delays = self._retry_delays
        delay = delays[min(self._failures, len(delays) - 1)]
        self._failures += 1
        if isinstance(error, (DatabaseUnavailable, *_DB_ERRORS)):
            logger.warning("database mirror behind (%s); trying again in %g s", self.error, delay)
        else:
            logger.error("database mirror failed; trying again in %g s", delay, exc_info=error)
        return delay

    # The database.

    async def connect(self) -> None:
        """Create the connection pool, and the table when it is missing; raises DatabaseUnavailable."""
        try:
            pool = await asyncpg.create_pool(
                self.database_url,
                min_size=1,
                max_size=1,  # one task writes, one transaction at a time
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                server_settings={"application_name": "userdata"},
                init=_init_connection,
            )
        except _DB_ERRORS as e:
            raise DatabaseUnavailable(_describe(e)) from e
        try:
            async with pool.acquire() as con, con.transaction():
                await con.execute(CREATE_TABLE)
        except _DB_ERRORS as e:
            pool.terminate()
            raise DatabaseUnavailable(_describe(e)) from e
        self._pool = pool

    async def sync_all(self) -> SyncReport:
        """Make the table equal to the whole index, in one transaction; raises DatabaseUnavailable.

        Rows of users not in the index are deleted, changed ones updated in place (their ``id``
        stays), missing ones inserted; unchanged rows are not touched.
        """
        if self._pool is None:
            raise DatabaseUnavailable("not connected")
        started = time.monotonic()
        records = self.index.records()  # every change notified so far is in it
        self._in_flight, self._pending = self._pending, {}
        self._flight_since, self._behind_since = _earliest(self._behind_since, self._flight_since), None
        try:
            rows = await _rows_off_loop(records)
            async with self._pool.acquire() as con, con.transaction():
                await _stage(con, rows)
                deleted = _count(await con.execute(DELETE_NOT_STAGED))
                updated, inserted = await _merge_staged(con)
        except BaseException as e:
            self._restore_in_flight()
            if isinstance(e, _DB_ERRORS):
                raise DatabaseUnavailable(_describe(e)) from e
            raise
        self._in_flight, self._flight_since = {}, None
        self._full_sync_needed = False
        report = SyncReport(len(rows), inserted, updated, deleted, round((time.monotonic() - started) * 1000))
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
        batch = self._in_flight = self._pending
        self._pending = {}
        self._flight_since, self._behind_since = self._behind_since, None
        try:
            upserts = [r for r in batch.values() if r is not None]
            removals = [user_id for user_id, r in batch.items() if r is None]
            rows = await _rows_off_loop(upserts)
            async with self._pool.acquire() as con:
                await _write_batch(con, rows, removals)
        except BaseException:
            self._restore_in_flight()
            raise
        self._in_flight, self._flight_since = {}, None
        logger.debug("database mirror wrote %d upserts, %d deletions", len(upserts), len(removals))

    def _restore_in_flight(self) -> None:
        """Put back what a failed write took: changes made since it began win."""
        self._pending = self._in_flight | self._pending
        self._in_flight = {}
        self._behind_since = _earliest(self._flight_since, self._behind_since)
        self._flight_since = None

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


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Wait until one of ``events`` is set, or ``timeout`` seconds have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
