"""How many users are of each age: ``GET /stats/ages``, from the index's birth-day buckets.

Everyone of age ``a`` today was born in one span of days: after the last birth day giving age
``a + 1``, up to the last one giving age ``a`` (:func:`~userdata.records.latest_birth_day_for_age`).
So each age's count is one :meth:`~userdata.days.DayBuckets.totals` per image group, and the
histogram costs in proportion to the number of ages, not of users.
"""

from __future__ import annotations

from collections.abc import Sequence

from .days import DayBuckets
from .records import age_on, latest_birth_day_for_age

__all__ = ("age_counts",)


def age_counts(
    groups: Sequence[DayBuckets], span: tuple[int | None, int | None] | None, today: int
) -> list[tuple[int, int]]:
    """(age, count) for every whole year of age from the youngest to the oldest user of ``groups``
    born in ``span`` (inclusive birth days, None for no bound; None itself: nobody), counts of
    zero included between them; ages on day ``today`` (UTC day number); [] when nobody is there.

    ``span`` comes from whole-year age bounds (:func:`~userdata.index.birth_days`), so every age
    between the youngest and the oldest lies within it whole: the counts need no clipping to it.
    """
    if span is None:
        return []
    ends = [found for group in groups if (found := group.ends(*span)) is not None]
    if not ends:
        return []
    oldest = age_on(min(first for first, _ in ends), today)
    youngest = age_on(max(last for _, last in ends), today)
    counts: list[tuple[int, int]] = []
    latest = latest_birth_day_for_age(today, youngest)  # the last birth day of each age in turn
    for age in range(youngest, oldest + 1):
        older = latest_birth_day_for_age(today, age + 1)
        first = None if older is None else older + 1
        counts.append((age, sum(group.totals(first, latest)[0] for group in groups)))
        latest = older
    return counts
