"""What the pipeline reports of a rescan, and what a start restores before its first load."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from .catalog import Hint
from .index import Diff
from .records import UserRecord

__all__ = ("RescanReport", "Restore", "Restored")


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
