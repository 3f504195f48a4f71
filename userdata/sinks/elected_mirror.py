"""The database mirror of a replica among several: it writes only while this replica is the writer,
and on the lock's own session (:meth:`userdata.election.Election.session`), so that a write of a
writer deposed meanwhile cannot land.

A reader keeps the changes in memory (the latest state of each user) and touches no table; on
each win, the new writer first makes the whole table equal to its index (a full sync), then
writes changes as they come. A reader's lag is nobody's problem (/health shows it, calls it ok),
but a database it cannot reach is: nobody may be writing then.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import asyncpg

from ..election import Election, NotWriter
from .postgres import PostgresMirror, _wait_any
from .postgres_table import CREATE_TABLE

__all__ = ("ElectedMirror",)


class ElectedMirror(PostgresMirror):
    """:class:`PostgresMirror` (same arguments after ``election``) that syncs only while
    ``election.is_writer``."""

    def __init__(self, election: Election, *args: Any, **kwargs: Any) -> None:
        self.election = election
        self._own_error: str | None = None
        super().__init__(*args, **kwargs)
        election.on_change.append(self._role_changed)

    @property
    def error(self) -> str | None:
        """Why the database cannot be used: the writer's own writes, a reader's election says."""
        # A database the election cannot reach is the mirror's problem too: nobody may write.
        return self._own_error if self.election.is_writer else self.election.error

    @error.setter
    def error(self, value: str | None) -> None:
        self._own_error = value

    def _role_changed(self, writer: bool) -> None:
        # Won: what the table holds may be anyone's. Lost: nothing more is written.
        self._full_sync_needed = True
        self._wake.set()

    async def connect(self) -> None:
        """The table created where missing, on the lock's session, which every write uses."""
        async with self.election.session() as con, con.transaction():
            await con.execute(CREATE_TABLE)
        self._pool = cast(asyncpg.Pool, _OnSession(self.election))

    async def _catch_up(self) -> None:
        while True:
            while not self.election.is_writer:
                if self._stopping.is_set():
                    return
                # Elected but not confirmed lately (elected stays set): asked again each poll.
                waiting = () if self.election.elected.is_set() else (self.election.elected,)
                await _wait_any(*waiting, self._stopping, timeout=self.election.poll)
            try:
                await super()._catch_up()
                return
            except NotWriter:  # deposed meanwhile: nothing was written
                self._full_sync_needed = True

    def _is_behind(self, lag: float) -> bool:
        # A reader's lag is no problem while it can tell another replica writes; one that cannot
        # (no session to the database, or it fails) is behind as a writer would be.
        if self.election.is_writer or not self.election.connected:
            return super()._is_behind(lag)
        return self.error is not None


class _OnSession:
    """What the mirror takes for its pool: each "connection" the lock's own session, so that no
    write lands once this replica is deposed (NotWriter when it is known to be; a statement on a
    session the server has ended fails). Closing it leaves the session to the election."""

    def __init__(self, election: Election) -> None:
        self.election = election

    def acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        return self.election.session()

    async def close(self) -> None:
        pass

    def terminate(self) -> None:
        pass
