"""The ``users`` table in PostgreSQL: its SQL, and connecting, replacing it whole, writing changes.

Stateless: the functions that use the database take a pool and raise DatabaseUnavailable when it
cannot be used; when to call them is :class:`userdata.sinks.postgres.PostgresMirror`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import asyncpg

from ..records import UserRecord

__all__ = (
    "COLUMNS",
    "DB_ERRORS",
    "PG_EPOCH_MS",
    "STAGING_MIN_ROWS",
    "DatabaseUnavailable",
    "Row",
    "build_rows",
    "init_connection",
    "open_pool",
    "pg_microseconds",
    "replace_all",
    "write_changes",
)

#: PostgreSQL's epoch, 2000-01-01T00:00:00Z, in milliseconds since the Unix epoch
PG_EPOCH_MS = 946_684_800_000
COLUMNS = ("user_id", "first_name", "last_name", "birthdate", "img_path")
#: Upserts in a batch from this many on go through COPY and a staging table, fewer through
#: executemany: the staging table costs a few statements however few the rows, executemany work per row.
STAGING_MIN_ROWS = 500
#: Records are converted to rows in a thread from this many on, so the event loop stays free.
_THREAD_MIN_ROWS = 5000

Row = tuple[str, str, str, int, str | None]  # birthdate as microseconds since PG_EPOCH_MS


#: What says the database, or the way to it, is not usable right now.
DB_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class DatabaseUnavailable(Exception):
    """The database cannot be reached or used; ``str(exc)`` says why."""


def _unavailable(error: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(str(error) or type(error).__name__)


def pg_microseconds(birthts: int) -> int:
    """A birthts as PostgreSQL stores a timestamptz: microseconds since 2000-01-01T00:00:00Z."""
    return (birthts - PG_EPOCH_MS) * 1000


def build_rows(records: Sequence[UserRecord]) -> list[Row]:
    """The table's rows for ``records``, in the order of :data:`COLUMNS`."""
    return [(r.user_id, r.first_name, r.last_name, pg_microseconds(r.birthts), r.img_path) for r in records]


async def _build_rows_off_loop(records: Sequence[UserRecord]) -> list[Row]:
    if len(records) < _THREAD_MIN_ROWS:
        return build_rows(records)
    return await asyncio.to_thread(build_rows, records)


async def init_connection(con: asyncpg.Connection) -> None:
    """Set up a new connection for the mirror's statements (the pool's, or the election's session)."""
    # Birthdates go over the wire as PostgreSQL's own integer: exact for every birthts, no datetime
    # built per row, and no surprise from asyncpg's datetime codec, which sends 0001-01-01T00:00Z
    # (datetime.min) as -infinity.
    await con.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=lambda us: (us,), decoder=lambda t: t[0], format="tuple"
    )


# The lock keeps two services starting together from racing on CREATE ... IF NOT EXISTS. The unique
# index is named like the one UNIQUE makes, so it is created only where a table of that name exists
# without one.
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


async def open_pool(database_url: str, *, connect_timeout: float, command_timeout: float) -> asyncpg.Pool:
    """A pool of one connection, with the table created where missing; raises DatabaseUnavailable.

    :param connect_timeout: seconds a connection attempt may take
    :param command_timeout: seconds a statement may take before the connection counts as lost
    """
    try:
        pool = await asyncpg.create_pool(
            database_url,
            min_size=1,
            max_size=1,  # one task writes, one transaction at a time
            timeout=connect_timeout,
            command_timeout=command_timeout,
            server_settings={"application_name": "userdata"},
            init=init_connection,
        )
    except DB_ERRORS as e:
        raise _unavailable(e) from e
    try:
        async with pool.acquire() as con, con.transaction():
            await con.execute(CREATE_TABLE)
    except DB_ERRORS as e:
        pool.terminate()
        raise _unavailable(e) from e
    return pool


_CHANGED = """(users.first_name, users.last_name, users.birthdate, users.img_path)
    IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.birthdate, EXCLUDED.img_path)"""
_ON_CONFLICT = f"""ON CONFLICT (user_id) DO UPDATE SET
    first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
    birthdate = EXCLUDED.birthdate, img_path = EXCLUDED.img_path
WHERE {_CHANGED}"""

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


async def replace_all(pool: asyncpg.Pool, records: Sequence[UserRecord]) -> tuple[int, int, int]:
    """Make the table hold exactly ``records``, in one transaction; raises DatabaseUnavailable.

    Rows of users not in ``records`` are deleted, changed ones updated in place (their ``id``
    stays), missing ones inserted; unchanged rows are not touched. Returns (inserted, updated, deleted).
    """
    rows = await _build_rows_off_loop(records)
    try:
        async with pool.acquire() as con, con.transaction():
            await _stage(con, rows)
            deleted = _count(await con.execute(DELETE_NOT_STAGED))
            updated, inserted = await _merge_staged(con)
    except DB_ERRORS as e:
        raise _unavailable(e) from e
    return inserted, updated, deleted


UPSERT_USER = f"""
INSERT INTO users (user_id, first_name, last_name, birthdate, img_path) VALUES ($1, $2, $3, $4, $5)
{_ON_CONFLICT}
"""
DELETE_USERS = "DELETE FROM users WHERE user_id = ANY($1::text[])"


async def write_changes(pool: asyncpg.Pool, changes: Mapping[str, UserRecord | None]) -> tuple[int, int]:
    """Write the wanted state of each user, in one transaction; raises DatabaseUnavailable.

    :param changes: user_id -> the record its row should hold, None when it should have no row
    :return: how many rows were upserted and how many users deleted
    """
    upserts = [r for r in changes.values() if r is not None]
    removals = [user_id for user_id, r in changes.items() if r is None]
    rows = await _build_rows_off_loop(upserts)
    try:
        async with pool.acquire() as con, con.transaction():
            if removals:
                await con.execute(DELETE_USERS, removals)
            if len(rows) >= STAGING_MIN_ROWS:
                await _stage(con, rows)
                await _merge_staged(con)
            elif rows:
                await con.executemany(UPSERT_USER, rows)
    except DB_ERRORS as e:
        raise _unavailable(e) from e
    return len(upserts), len(removals)


def _count(status: str) -> int:
    """The row count of a command status such as ``INSERT 0 5`` or ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])
