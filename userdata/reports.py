"""What the pipeline reports of a rescan, what a start restores before its first load, and what
the pipeline tells its metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from .catalog import Hint
from .index import Diff
from .records import UserRecord

__all__ = ("Meter", "RescanReport", "Restore", "Restored")


class Restored(NamedTuple):
    """What a start finds of the last run: each user's last good record, and the catalog's
    hint when it pairs with them (None: read every object)."""

    records: list[UserRecord]
    hint: Hint | None


#: A start-up source of last good records and the catalog's hint (output.csv's), read before
#: the first load.
Restore = Callable[[], Awaitable[Restored]]


@dataclass(frozen=True, slots=True)
class RescanReport:
    """What one rescan found; the body of POST /data."""

    users: int
    added: int
    updated: int
    removed: int
    rejected: int
    duration_ms: int

    @classmethod
    def of(cls, diff: Diff, users: int, rejected: int, started: float) -> RescanReport:
        """The report of a rescan that found ``diff`` and began at ``started`` (time.monotonic)."""
        took = round((time.monotonic() - started) * 1000)
        return cls(users, len(diff.added), len(diff.updated), len(diff.removed), rejected, took)


class Meter:
    """What the pipeline tells its metrics as it works (:class:`userdata.metrics.Metrics`); this
    one hears it and does nothing."""

    def scanned(self, kind: str, seconds: float) -> None:
        """A scan is done: ``kind`` is ``load`` (the first), ``incremental`` or ``forced``."""

    def store_failed(self) -> None:
        """The store could not be listed or read as a whole (the pipeline tries again)."""

    def visible(self, seconds: float) -> None:
        """Changes named to the pipeline are in the index, ``seconds`` after the first of them was named."""
