"""What a sink has yet to write: the latest wanted state of each changed user, and since when."""

from __future__ import annotations

import time

from ..index import Diff
from ..records import UserRecord

__all__ = ("Backlog", "Changes")

#: user_id -> the record it should have, None when it should have no row
Changes = dict[str, UserRecord | None]


class Backlog:
    """Changes not yet written, in two parts: ``pending``, and ``in_flight`` while a write runs.

    A write takes what is pending (:meth:`take`), then reports it written (:meth:`written`) or, when
    it failed, puts it back (:meth:`restore`). Only the latest state of a user counts, so a burst of
    changes to one user costs one row. A new backlog is behind from its creation: the table is not
    known to be equal to anything until a first write.
    """

    def __init__(self) -> None:
        self.pending: Changes = {}
        self.in_flight: Changes = {}
        #: when the oldest change not yet written was made (time.monotonic()), None if none
        self.behind_since: float | None = time.monotonic()
        self.flight_since: float | None = None

    def add(self, diff: Diff) -> None:
        """Remember what ``diff`` changed, over what was pending for the same users."""
        pending = self.pending
        for record in diff.added:
            pending[record.user_id] = record
        for record in diff.updated:
            pending[record.user_id] = record
        for user_id in diff.removed:
            pending[user_id] = None
        if self.behind_since is None:
            self.behind_since = time.monotonic()

    @property
    def lag(self) -> float:
        """Seconds since the oldest change not yet written; 0 when there is none."""
        since = _earliest(self.behind_since, self.flight_since)
        return 0.0 if since is None else time.monotonic() - since

    def __len__(self) -> int:
        """How many users have a change not yet written, pending or in flight."""
        if not self.in_flight:
            return len(self.pending)
        return len(self.pending.keys() | self.in_flight.keys())

    def take(self) -> Changes:
        """Move what is pending in flight, and return it."""
        batch = self.in_flight = self.pending
        self.pending = {}
        self.flight_since, self.behind_since = _earliest(self.behind_since, self.flight_since), None
        return batch

    def written(self) -> None:
        """What is in flight is written."""
        self.in_flight, self.flight_since = {}, None

    def restore(self) -> None:
        """Put back what a failed write took: changes made since it began win."""
        self.pending = self.in_flight | self.pending
        self.in_flight = {}
        self.behind_since = _earliest(self.flight_since, self.behind_since)
        self.flight_since = None


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
