"""Birth-day buckets: the users of one image state by day, for the index's age queries.

Ages change only at midnight UTC, so an age range is a range of birth days: a sorted list of the
days present, the user ids and the sum of birthts per day, and prefix sums over the days answer
a count and an average in O(log days).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from itertools import accumulate

from .records import DAY_MS, day_of

__all__ = ("LIST_MAX", "DayBuckets")

#: A day's user ids are a list (under half a dict's size per id) up to this many, then a dict,
#: so that removing one stays cheap however many users share a birthday.
LIST_MAX = 64


class DayBuckets:
    """User ids bucketed by birth day, with prefix sums for counts and averages over a span of days."""

    __slots__ = ("_counts_prefix", "_sums_prefix", "days", "members", "sums")

    def __init__(self) -> None:
        #: Per day, the user ids: a list, or for a crowded day the keys of a dict (see LIST_MAX).
        self.members: dict[int, list[str] | dict[str, None]] = {}
        self.sums: dict[int, int] = {}
        self.days: list[int] = []
        self._counts_prefix: list[int] | None = None
        self._sums_prefix: list[int] | None = None

    def add(self, user_id: str, birthts: int) -> None:
        """Put ``user_id`` in the bucket of its birth day."""
        day = birthts // DAY_MS  # day_of(), inline
        bucket = self.members.get(day)
        if bucket is None:
            self.members[day] = [user_id]
            self.sums[day] = birthts
            insort(self.days, day)
        else:
            if isinstance(bucket, dict):
                bucket[user_id] = None
            elif len(bucket) < LIST_MAX:
                bucket.append(user_id)
            else:
                self.members[day] = dict.fromkeys([*bucket, user_id])
            self.sums[day] += birthts
        self._counts_prefix = self._sums_prefix = None

    def fill(self, members: dict[int, list[str]], sums: dict[int, int]) -> None:
        """Take every day's user ids and birthts sum at once: an empty group's bulk load."""
        self.members = {day: ids if len(ids) <= LIST_MAX else dict.fromkeys(ids) for day, ids in members.items()}
        self.sums = sums
        self.days = sorted(members)
        self.invalidate()

    def invalidate(self) -> None:
        """Forget the prefix sums (after members or sums changed)."""
        self._counts_prefix = self._sums_prefix = None

    def discard(self, user_id: str, birthts: int) -> None:
        """Take ``user_id`` out of the bucket of its birth day (it must be there)."""
        day = day_of(birthts)
        bucket = self.members[day]
        if isinstance(bucket, dict):
            del bucket[user_id]
        else:
            bucket.remove(user_id)
        if bucket:
            self.sums[day] -= birthts
        else:
            del self.members[day], self.sums[day]
            del self.days[bisect_left(self.days, day)]
        self._counts_prefix = self._sums_prefix = None

    def _span(self, lo: int | None, hi: int | None) -> tuple[int, int]:
        i = 0 if lo is None else bisect_left(self.days, lo)
        j = len(self.days) if hi is None else bisect_right(self.days, hi)
        return i, max(i, j)

    def ends(self, lo: int | None, hi: int | None) -> tuple[int, int] | None:
        """The first and the last day with users in lo..hi (inclusive), None if there is none."""
        i, j = self._span(lo, hi)
        return (self.days[i], self.days[j - 1]) if i < j else None

    def totals(self, lo: int | None, hi: int | None) -> tuple[int, int]:
        """(count, sum of birthts) of users born on days lo..hi (inclusive)."""
        if self._counts_prefix is None or self._sums_prefix is None:
            self._counts_prefix = [0, *accumulate(len(self.members[d]) for d in self.days)]
            self._sums_prefix = [0, *accumulate(self.sums[d] for d in self.days)]
        i, j = self._span(lo, hi)
        counts, sums = self._counts_prefix, self._sums_prefix
        return counts[j] - counts[i], sums[j] - sums[i]

    def add_ids(self, lo: int | None, hi: int | None, out: list[str]) -> None:
        """Append to ``out`` the ids of users born on days lo..hi (inclusive)."""
        i, j = self._span(lo, hi)
        members = self.members
        for day in self.days[i:j]:
            out += members[day]
