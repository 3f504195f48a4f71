"""The ages histogram (GET /stats/ages) from the index's day buckets, against a count of the records
with ages worked out independently (tests/dates.py), for many filters, dates and Feb 29 births."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import pytest
from dates import ms, ref_age, utc_date

from userdata.ages import age_counts
from userdata.index import Filters, UserIndex, birth_days
from userdata.records import DAY_MS, UserRecord

NOWS = [
    pytest.param(ms(2028, 2, 29, 12), id="leap-feb29"),
    pytest.param(ms(2028, 2, 28, 23, 59, 59, 999), id="leap-feb28-last-ms"),
    pytest.param(ms(2027, 2, 28, 8), id="non-leap-feb28"),
    pytest.param(ms(2027, 3, 1), id="non-leap-mar1-midnight"),
    pytest.param(ms(2026, 12, 31, 23, 59, 59, 999), id="dec31-last-ms"),
    pytest.param(ms(2026, 6, 15, 17), id="mid-june"),
    pytest.param(ms(2100, 3, 1), id="century-non-leap-mar1"),
]
AGE_BOUNDS = [None, 0, 0.5, 1, 18, 30, 30.5, 45, 99.99, 126, 1e9]


def _records(rng: random.Random) -> list[UserRecord]:
    births = [rng.randint(ms(1900, 1, 1), ms(2025, 6, 30)) for _ in range(300)]
    leap_years = list(range(1904, 2025, 4))
    births += [
        ms(rng.choice(leap_years), 2, 29) + rng.choice((0, rng.randrange(DAY_MS), DAY_MS - 1)) for _ in range(40)
    ]
    births += [
        ms(y, m, d) + rng.randrange(DAY_MS) for y in (1960, 2000) for m, d in ((2, 28), (3, 1), (12, 31), (1, 1))
    ]
    for param in NOWS:  # on, the day before and the day after each date's birthday, in many years
        now = param.values[0]
        assert isinstance(now, int)
        today = utc_date(now)
        for delta in (-1, 0, 1):
            for year in rng.sample(range(1901, 2024), 3):
                try:
                    born = dt.date(year, today.month, today.day) + dt.timedelta(days=delta)
                except ValueError:  # Feb 29 of a year without one
                    born = dt.date(year, 2, 28) + dt.timedelta(days=delta)
                births.append(ms(born.year, born.month, born.day) + rng.randrange(DAY_MS))
    births += [ms(1850, 6, 1)]  # one much older: a long run of zero counts before it
    return [
        UserRecord(str(n), "Ann", "Lee", birthts, f"src-data/{n}.png" if rng.random() < 0.5 else None)
        for n, birthts in enumerate(births)
    ]


def _expected(records: list[UserRecord], filters: Filters, now_ms: int) -> list[tuple[int, int]]:
    """The histogram by brute force: every record's age, the filters applied, counted."""
    today = utc_date(now_ms)
    ages: Counter[int] = Counter()
    for r in records:
        age = ref_age(utc_date(r.birthts), today)
        if filters.has_image is not None and (r.img_path is not None) != filters.has_image:
            continue
        if (filters.min_age is None or age >= filters.min_age) and (filters.max_age is None or age <= filters.max_age):
            ages[age] += 1
    return [(age, ages[age]) for age in range(min(ages), max(ages) + 1)] if ages else []


def _counts(index: UserIndex, filters: Filters, now_ms: int) -> list[tuple[int, int]]:
    return age_counts(index.groups(filters.has_image), birth_days(filters, now_ms), now_ms // DAY_MS)


@pytest.fixture(scope="module")
def population() -> tuple[UserIndex, list[UserRecord]]:
    records = _records(random.Random(16))
    index = UserIndex()
    index.apply(records)
    return index, records


@pytest.mark.parametrize("has_image", [None, True, False], ids=["any", "with-image", "without-image"])
@pytest.mark.parametrize("now_ms", NOWS)
def test_the_counts_match_brute_force(
    population: tuple[UserIndex, list[UserRecord]], now_ms: int, has_image: bool | None
) -> None:
    index, records = population
    nonempty = 0
    for min_age in AGE_BOUNDS:
        for max_age in AGE_BOUNDS:
            if min_age is not None and max_age is not None and min_age > max_age:
                continue  # a bad request, never asked of the index
            filters = Filters(has_image, min_age, max_age)
            expected = _expected(records, filters, now_ms)
            assert _counts(index, filters, now_ms) == expected, filters
            nonempty += bool(expected)
    assert nonempty > 20  # not mostly empty answers


def test_the_population_has_what_matters(population: tuple[UserIndex, list[UserRecord]]) -> None:
    _, records = population
    dates = [utc_date(r.birthts) for r in records]
    assert sum((d.month, d.day) == (2, 29) for d in dates) >= 40
    counts = _counts(population[0], Filters(), ms(2026, 6, 15))
    assert counts[-1] == (176, 1) and any(count == 0 for _, count in counts)  # the gap before the oldest


def test_a_feb_29_birthday_counts_from_mar_1_in_other_years() -> None:
    index = UserIndex()
    index.apply([UserRecord("1", "Ann", "Lee", ms(2000, 2, 29, 23, 59), None)])
    for now, age in [
        (ms(2027, 2, 28, 23, 59, 59, 999), 26),
        (ms(2027, 3, 1), 27),
        (ms(2028, 2, 28, 12), 27),
        (ms(2028, 2, 29), 28),
        (ms(2000, 2, 29), 0),
    ]:
        assert _counts(index, Filters(), now) == [(age, 1)], utc_date(now)


def test_zero_counts_fill_the_gaps_and_nothing_lies_beyond() -> None:
    now = ms(2026, 6, 15, 12)
    index = UserIndex()
    index.apply(
        [
            UserRecord("a", "A", "B", ms(2006, 6, 15), None),  # 20 today
            UserRecord("b", "A", "B", ms(2001, 6, 16), "src-data/b.png"),  # 24 until tomorrow
            UserRecord("c", "A", "B", ms(2001, 6, 15, 23), None),  # 25 today
        ]
    )
    assert _counts(index, Filters(), now) == [(20, 1), (21, 0), (22, 0), (23, 0), (24, 1), (25, 1)]
    assert _counts(index, Filters(has_image=False), now) == [(20, 1), (21, 0), (22, 0), (23, 0), (24, 0), (25, 1)]
    assert _counts(index, Filters(has_image=True), now) == [(24, 1)]
    assert _counts(index, Filters(min_age=21, max_age=23), now) == []
    assert _counts(index, Filters(min_age=20.5), now) == [(24, 1), (25, 1)]
    assert _counts(index, Filters(max_age=24.9), now) == [(20, 1), (21, 0), (22, 0), (23, 0), (24, 1)]


@pytest.mark.parametrize("filters", [Filters(), Filters(True), Filters(False, 10, 20), Filters(None, 200)])
def test_an_empty_index_has_no_ages(filters: Filters) -> None:
    assert _counts(UserIndex(), filters, ms(2026, 6, 15)) == []


def test_the_counts_follow_changes_to_the_index() -> None:
    now = ms(2026, 6, 15)
    index = UserIndex()
    index.apply([UserRecord("1", "A", "B", ms(1990, 1, 1), None), UserRecord("2", "A", "B", ms(1980, 1, 1), None)])
    assert _counts(index, Filters(), now) == [(36, 1)] + [(age, 0) for age in range(37, 46)] + [(46, 1)]
    index.apply([UserRecord("2", "A", "B", ms(1989, 1, 1), "src-data/2.png")], ["1"])
    assert _counts(index, Filters(), now) == [(37, 1)]
    assert _counts(index, Filters(has_image=False), now) == []
