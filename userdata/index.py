"""The in-memory user index: records by user_id, and birth-day buckets for age queries.

Ages change only at midnight UTC, so an age range is a range of birth days. Users are kept in
two groups (with and without an image) of :class:`~userdata.days.DayBuckets`: a count and an
average cost O(log days), and a filtered list costs in proportion to what it returns.

The index does no I/O and never awaits: one task (the pipeline) writes it, views read it.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field

from .days import DayBuckets
from .records import DAY_MS, YEAR_MS, UserRecord, latest_birth_day_for_age

__all__ = ("Diff", "Filters", "Stats", "UserIndex", "birth_days")

#: Batches adding or removing more ids than this (plus 1/64 of the index) re-sort all ids.
_RESORT_MIN = 256


@dataclass(frozen=True, slots=True)
class Filters:
    """Query filters; ``None`` means "no condition"."""

    has_image: bool | None = None
    min_age: float | None = None
    max_age: float | None = None


@dataclass(slots=True)  # not frozen: made at each /stats request, and a frozen one costs 3x
class Stats:
    count: int
    average_age: float | None


@dataclass(slots=True)
class Diff:
    """What one :meth:`UserIndex.apply` changed."""

    added: list[UserRecord] = field(default_factory=list)
    updated: list[UserRecord] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed)


class UserIndex:
    """All users in memory, answering /data and /stats queries."""

    def __init__(self) -> None:
        self._users: dict[str, UserRecord] = {}
        self._groups = (DayBuckets(), DayBuckets())  # [without image, with image]
        #: every user_id, sorted; kept up to date by apply() (re-sorted whole after a large batch)
        self._sorted_ids: list[str] = []
        #: Bumped by every apply() that changed something; sinks compare it.
        self.version = 0

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users

    def get(self, user_id: str) -> UserRecord | None:
        return self._users.get(user_id)

    def user_ids(self) -> Iterable[str]:
        return self._users.keys()

    def apply(self, upserts: Iterable[UserRecord] = (), removals: Iterable[str] = ()) -> Diff:
        """Insert or replace records and remove user ids; returns what actually changed."""
        if not self._users and not removals:
            upserts = list(upserts)
            users = {record.user_id: record for record in upserts}
            if len(users) == len(upserts):
                return self._fill(users)  # a first load: every record is new, no id repeats
        diff = Diff()
        users, groups, added = self._users, self._groups, diff.added
        for record in upserts:
            user_id = record.user_id
            old = users.get(user_id)
            if old is None:
                added.append(record)
            elif old == record:
                if old is not record:  # the same values in new objects, whose strings others share
                    users[user_id] = record
                continue
            else:
                diff.updated.append(record)
                groups[old.img_path is not None].discard(user_id, old.birthts)
            groups[record.img_path is not None].add(user_id, record.birthts)
            users[user_id] = record
        for user_id in removals:
            old = users.pop(user_id, None)
            if old is not None:
                self._group(old).discard(user_id, old.birthts)
                diff.removed.append(user_id)
        if diff:
            self.version += 1
            self._update_sorted(diff)
        return diff

    def assign(self, users: dict[str, UserRecord]) -> Diff:
        """Make the index hold exactly ``users`` (user_id -> record); returns what changed.

        An empty index takes ``users`` as it is (the caller must not change it afterwards).
        """
        if not self._users:
            return self._fill(users)
        return self.apply(*self.differences(users))

    def differences(self, users: dict[str, UserRecord]) -> tuple[list[UserRecord], list[str]]:
        """What :meth:`assign` of ``users`` changes, as (upserts, removals) for :meth:`apply`: the
        records new or unlike the index's (an equal record is left as the index holds it), and
        the ids the index holds that ``users`` lacks.

        Only reads, so it may run on another thread; the loop may write the index meanwhile (the
        caller then leaves alone the users it wrote): each step over the index's own dict is one
        C call, which no write can come between. The ids are copied in one (a copy of pointers),
        not set against ``users`` in one: building that set holds the GIL, and so the event
        loop, for as long as hashing every id takes.
        """
        held = self._users
        upserts = [record for user_id, record in users.items() if held.get(user_id) != record]
        removals = [user_id for user_id in list(held) if user_id not in users]
        removals.sort()
        return upserts, removals

    def _fill(self, users: dict[str, UserRecord]) -> Diff:
        """:meth:`apply` to an empty index, in bulk: one pass, and each group's days sorted once."""
        self._users = users
        records = list(users.values())
        without: dict[int, list[str]] = {}  # day -> user ids, per group
        with_image: dict[int, list[str]] = {}
        sums_without: dict[int, int] = {}  # day -> sum of birthts, per group
        sums_with: dict[int, int] = {}
        for user_id, _, _, birthts, img_path in records:
            day = birthts // DAY_MS
            if img_path is None:
                days, sums = without, sums_without
            else:
                days, sums = with_image, sums_with
            bucket = days.get(day)
            if bucket is None:
                days[day] = [user_id]
                sums[day] = birthts
            else:
                bucket.append(user_id)
                sums[day] += birthts
        self._groups[0].fill(without, sums_without)
        self._groups[1].fill(with_image, sums_with)
        diff = Diff(added=records)
        if records:
            self.version += 1
            self._update_sorted(diff)
        return diff

    def _update_sorted(self, diff: Diff) -> None:
        ids = self._sorted_ids
        if len(diff.added) + len(diff.removed) > _RESORT_MIN + len(ids) // 64:
            self._sorted_ids = sorted(self._users)  # a bulk change: one sort beats many moves
            return
        for user_id in diff.removed:
            del ids[bisect_left(ids, user_id)]
        for record in diff.added:
            insort(ids, record.user_id)

    def _group(self, record: UserRecord) -> DayBuckets:
        return self._groups[record.img_path is not None]

    def groups(self, has_image: bool | None) -> tuple[DayBuckets, ...]:
        """The day buckets of the users with an image or without (None: both)."""
        return self._groups if has_image is None else (self._groups[has_image],)

    def records(self) -> list[UserRecord]:
        """Every record, sorted by user_id."""
        users = self._users
        return [users[user_id] for user_id in self._sorted_ids]

    def ids_after(self, last: str | None, count: int) -> list[str]:
        """Up to ``count`` user ids, sorted, that come after ``last`` (from the first if None).

        Walking the ids in such slices meets every user present throughout exactly once, in
        order, however the index changes between the slices.
        """
        ids = self._sorted_ids
        start = 0 if last is None else bisect_right(ids, last)
        return ids[start : start + count]

    def query(self, filters: Filters, now_ms: int) -> list[UserRecord]:
        """Records matching ``filters`` on the UTC date of ``now_ms``, sorted by user_id."""
        return self.select(filters.has_image, birth_days(filters, now_ms))

    def select(self, has_image: bool | None, span: tuple[int | None, int | None] | None) -> list[UserRecord]:
        """Records with an image or not (None: either) born in ``span`` (:func:`birth_days`), sorted."""
        users = self._users
        if span is None:
            return []
        lo, hi = span
        if lo is None and hi is None:
            if has_image is None:
                return self.records()
            return [r for r in map(users.__getitem__, self._sorted_ids) if (r.img_path is not None) is has_image]
        return [users[uid] for uid in sorted(self._ids_in(has_image, lo, hi))]

    def _ids_in(self, has_image: bool | None, lo: int | None, hi: int | None) -> list[str]:
        """Ids of the users with an image or not (None: either) born on days ``lo`` to ``hi``, unsorted."""
        ids: list[str] = []
        for group in self.groups(has_image):
            group.add_ids(lo, hi, ids)
        return ids

    def page(
        self, has_image: bool | None, span: tuple[int | None, int | None] | None, after: str | None, limit: int
    ) -> tuple[list[UserRecord], bool]:
        """Up to ``limit`` records of :meth:`select`'s selection after the user_id ``after``, and whether
        more follow. Its cost follows the page, not the selection: the sorted ids are walked from
        ``after`` while matches are dense; a sparse selection is taken from its day buckets."""
        if span is None:
            return [], False
        lo, hi = span
        users, ids = self._users, self._sorted_ids
        everyone = has_image is None and lo is None and hi is None  # then a slice of the sorted ids
        count = 0 if everyone else sum(group.totals(lo, hi)[0] for group in self.groups(has_image))
        if count and limit * len(users) // count <= 4 * count:  # dense: walk the sorted ids
            found: list[UserRecord] = []
            for index in range(0 if after is None else bisect_right(ids, after), len(ids)):
                record = users[ids[index]]
                day = record.birthts // DAY_MS
                if (
                    (has_image is None or (record.img_path is not None) is has_image)
                    and (lo is None or day >= lo)
                    and (hi is None or day <= hi)
                ):
                    if len(found) == limit:
                        return found, True
                    found.append(record)
            return found, False
        selected = ids if everyone else sorted(self._ids_in(has_image, lo, hi))
        start = 0 if after is None else bisect_right(selected, after)
        return [users[uid] for uid in selected[start : start + limit]], start + limit < len(selected)

    def stats(self, filters: Filters, now_ms: int) -> Stats:
        """Count and mean exact age (years of 365.2425 days) of the users matching ``filters``."""
        span = birth_days(filters, now_ms)
        if span is None:
            return Stats(0, None)
        count = total = 0
        for group in self.groups(filters.has_image):
            c, s = group.totals(*span)
            count += c
            total += s
        if not count:
            return Stats(0, None)
        return Stats(count, (now_ms * count - total) / count / YEAR_MS)


def birth_days(filters: Filters, now_ms: int) -> tuple[int | None, int | None] | None:
    """The inclusive range of birth days the age filters allow (None: no bound), or None if empty.

    Ages are whole years, so min_age=30.5 means age >= 31 and max_age=30.5 means age <= 30.
    """
    today = now_ms // DAY_MS
    lo = hi = None
    if filters.min_age is not None:
        hi = latest_birth_day_for_age(today, math.ceil(filters.min_age))
        if hi is None:
            return None
    if filters.max_age is not None:
        # age <= b  <=>  not (age >= b + 1)  <=>  born after the last day giving age b + 1
        older = latest_birth_day_for_age(today, math.floor(filters.max_age) + 1)
        lo = None if older is None else older + 1
    if lo is not None and hi is not None and lo > hi:
        return None
    return lo, hi
