"""The in-memory UserIndex, checked against a brute-force reference.

The reference age (tests/dates.py) is written with datetime.date, independently of
userdata.records.
"""

from __future__ import annotations

import datetime as dt
import random
from statistics import fmean

import pytest
from dates import MS_PER_YEAR, ms, ref_age, utc_date

from userdata.index import Diff, Filters, Stats, UserIndex
from userdata.records import DAY_MS, YEAR_MS, UserRecord


def record(user_id: str, birthts: int, img: bool = False, first: str = "Ann", last: str = "Lee") -> UserRecord:
    return UserRecord(user_id, first, last, birthts, f"src-data/{user_id}.png" if img else None)


def ids(records: list[UserRecord]) -> list[str]:
    return [r.user_id for r in records]


# --- brute-force reference for query and stats ---------------------------------------------

NOWS = [
    pytest.param(ms(2028, 2, 29, 12), id="leap-feb29-noon"),
    pytest.param(ms(2028, 2, 29), id="leap-feb29-midnight"),
    pytest.param(ms(2028, 2, 28, 23, 59, 59, 999), id="leap-feb28-last-ms"),
    pytest.param(ms(2026, 2, 28, 8, 30), id="non-leap-feb28"),
    pytest.param(ms(2026, 3, 1), id="non-leap-mar1-midnight"),
    pytest.param(ms(2025, 12, 31, 23, 59, 59, 999), id="dec31-last-ms"),
    pytest.param(ms(2026, 1, 1), id="jan1-midnight"),
    pytest.param(ms(2026, 6, 15, 17, 45), id="mid-june"),
    pytest.param(ms(2100, 2, 28, 6), id="century-non-leap-feb28"),
    pytest.param(ms(2100, 3, 1), id="century-non-leap-mar1"),
]
AGE_BOUNDS = [None, 0, 0.5, 1, 18, 25, 26, 30, 30.5, 45, 99.99, 100, 125, 126, 200, 1e9]
BIRTH_MIN, BIRTH_MAX = ms(1900, 1, 1), ms(2025, 6, 30, 23, 59, 59, 999)


def _random_records(rng: random.Random) -> list[UserRecord]:
    births: list[int] = []
    # spread uniformly over 1900..mid-2025
    births += [rng.randint(BIRTH_MIN, BIRTH_MAX) for _ in range(250)]
    # Feb 29 births at random times, and some exactly at midnight / on the last ms of the day
    leap_years = [y for y in range(1904, 2025, 4) if y != 1900]
    births += [ms(rng.choice(leap_years), 2, 29) + rng.randrange(DAY_MS) for _ in range(25)]
    births += [ms(rng.choice(leap_years), 2, 29) for _ in range(5)]
    births += [ms(rng.choice(leap_years), 2, 29, 23, 59, 59, 999) for _ in range(5)]
    births += [ms(1900, 1, 1), ms(1969, 12, 31, 23, 59, 59, 999), 0, ms(2000, 2, 29)]
    births += [rng.randint(-25_000, 20_000) * DAY_MS for _ in range(30)]  # midnights
    births += [rng.randint(-25_000, 20_000) * DAY_MS - 1 for _ in range(10)]  # last ms of a day
    # births on, just before and just after the calendar day of every "now", in many years
    for param in NOWS:
        instant = param.values[0]
        assert isinstance(instant, int)
        today = utc_date(instant)
        for delta in (-1, 0, 1):
            for _ in range(4):
                year = rng.randint(1900, 2024)
                try:
                    born = dt.date(year, today.month, today.day) + dt.timedelta(days=delta)
                except ValueError:
                    born = dt.date(year, 2, 28) + dt.timedelta(days=delta)
                births.append(ms(born.year, born.month, born.day) + rng.choice((0, rng.randrange(DAY_MS), DAY_MS - 1)))
    # several users on one day
    shared = ms(1985, 7, 4)
    births += [shared + rng.randrange(DAY_MS) for _ in range(6)]
    assert all(BIRTH_MIN <= b <= BIRTH_MAX for b in births)
    rng.shuffle(births)
    user_ids = rng.sample(range(1, 100_000), len(births))
    records = []
    for n, (number, birthts) in enumerate(zip(user_ids, births, strict=True)):
        user_id = f"{number:06d}" if n % 5 == 0 else str(number)  # some with leading zeros
        records.append(record(user_id, birthts, img=rng.random() < 0.5, first=f"F{n}", last=f"L{n}"))
    return records


@pytest.fixture(scope="module")
def population() -> tuple[UserIndex, list[UserRecord]]:
    records = _random_records(random.Random(20240229))
    assert len({r.user_id for r in records}) == len(records) >= 300
    index = UserIndex()
    diff = index.apply(records)
    assert len(diff.added) == len(records)
    return index, records


def _matches(r: UserRecord, f: Filters, today: dt.date) -> bool:
    if f.has_image is not None and (r.img_path is not None) != f.has_image:
        return False
    age = ref_age(utc_date(r.birthts), today)
    if f.min_age is not None and not age >= f.min_age:
        return False
    return f.max_age is None or age <= f.max_age


def test_population_covers_the_interesting_cases(population: tuple[UserIndex, list[UserRecord]]) -> None:
    _, records = population
    dates = [utc_date(r.birthts) for r in records]
    assert sum((d.month, d.day) == (2, 29) for d in dates) >= 30
    assert sum(r.birthts % DAY_MS == 0 for r in records) >= 30
    assert sum(r.birthts < 0 for r in records) >= 100
    assert min(dates).year == 1900 and max(dates).year == 2025
    with_image = sum(r.img_path is not None for r in records)
    assert 0.35 * len(records) < with_image < 0.65 * len(records)


@pytest.mark.parametrize(
    "has_image",
    [pytest.param(None, id="any-image"), pytest.param(True, id="with-image"), pytest.param(False, id="without-image")],
)
@pytest.mark.parametrize("now_ms", NOWS)
def test_query_and_stats_match_brute_force(
    population: tuple[UserIndex, list[UserRecord]], now_ms: int, has_image: bool | None
) -> None:
    index, records = population
    today = utc_date(now_ms)
    by_id = sorted(records, key=lambda r: r.user_id)
    nonempty = 0
    for min_age in AGE_BOUNDS:
        for max_age in AGE_BOUNDS:
            f = Filters(has_image, min_age, max_age)
            expected = [r for r in by_id if _matches(r, f, today)]
            assert index.query(f, now_ms) == expected, f
            stats = index.stats(f, now_ms)
            assert stats.count == len(expected), f
            if expected:
                nonempty += 1
                mean = fmean((now_ms - r.birthts) / MS_PER_YEAR for r in expected)
                assert stats.average_age == pytest.approx(mean, rel=1e-9, abs=1e-9), f
            else:
                assert stats.average_age is None, f
    assert nonempty > len(AGE_BOUNDS) ** 2 // 3  # the comparison is not mostly of empty lists


@pytest.mark.parametrize("now_ms", NOWS)
def test_min_equal_max_selects_exactly_one_age(population: tuple[UserIndex, list[UserRecord]], now_ms: int) -> None:
    index, records = population
    today = utc_date(now_ms)
    ages = {r.user_id: ref_age(utc_date(r.birthts), today) for r in records}
    for age in sorted(set(ages.values())):
        got = ids(index.query(Filters(min_age=age, max_age=age), now_ms))
        assert got == sorted(uid for uid, a in ages.items() if a == age), age
        assert index.stats(Filters(min_age=age, max_age=age), now_ms).count == len(got)


def test_fractional_bounds_round_inward(population: tuple[UserIndex, list[UserRecord]]) -> None:
    index, records = population
    now_ms = ms(2026, 6, 15, 12)
    today = utc_date(now_ms)
    ages = {r.user_id: ref_age(utc_date(r.birthts), today) for r in records}
    assert ids(index.query(Filters(min_age=30.5), now_ms)) == sorted(u for u, a in ages.items() if a >= 31)
    assert ids(index.query(Filters(max_age=30.5), now_ms)) == sorted(u for u, a in ages.items() if a <= 30)
    assert index.query(Filters(min_age=30.5, max_age=30.5), now_ms) == []
    assert index.stats(Filters(min_age=30.5, max_age=30.5), now_ms) == Stats(0, None)


def test_query_without_filters_returns_every_record_sorted(population: tuple[UserIndex, list[UserRecord]]) -> None:
    index, records = population
    expected = sorted(records, key=lambda r: r.user_id)
    assert index.query(Filters(), ms(2026, 1, 1)) == expected
    assert index.records() == expected
    assert len(index) == len(records)


# --- apply() -------------------------------------------------------------------------------

NOW = ms(2026, 6, 20, 12)


def test_apply_reports_added_updated_and_removed() -> None:
    index = UserIndex()
    a, b, c = record("a", ms(1990, 1, 1)), record("b", ms(1980, 1, 1), img=True), record("c", ms(1970, 1, 1))
    diff = index.apply([a, b, c])
    assert diff.added == [a, b, c] and diff.updated == [] and diff.removed == []
    assert bool(diff)
    assert index.version == 1

    b2 = record("b", ms(1980, 1, 1), img=True, first="Bea")
    d = record("d", ms(2001, 1, 1))
    diff = index.apply([b2, d], removals=["c"])
    assert diff.added == [d] and diff.updated == [b2] and diff.removed == ["c"]
    assert index.version == 2
    assert index.get("b") == b2 and "c" not in index and index.get("c") is None
    assert ids(index.records()) == ["a", "b", "d"]


def test_assign_makes_the_index_hold_exactly_the_given_users() -> None:
    index = UserIndex()
    a, b, c = record("a", ms(1990, 1, 1)), record("b", ms(1980, 1, 1), img=True), record("c", ms(1970, 1, 1))
    diff = index.assign({"a": a, "b": b, "c": c})
    assert sorted(diff.added) == [a, b, c] and diff.updated == [] and diff.removed == []
    assert index.version == 1

    b2 = record("b", ms(1980, 1, 1), first="Bea")  # no image now
    d = record("d", ms(2001, 1, 1), img=True)
    diff = index.assign({"a": a, "b": b2, "d": d})
    assert diff.added == [d] and diff.updated == [b2] and diff.removed == ["c"]
    assert index.version == 2
    assert index.records() == [a, b2, d]
    now = ms(2026, 6, 15)
    assert index.query(Filters(has_image=True), now) == [d]
    assert index.query(Filters(has_image=False, min_age=40), now) == [b2]
    assert not index.assign({"a": a, "b": b2, "d": d}) and index.version == 2  # the same users
    assert index.assign({}).removed == ["a", "b", "d"] and len(index) == 0 and index.records() == []


def test_differences_are_what_assign_would_change_and_change_nothing() -> None:
    index = UserIndex()
    a, b, c = record("a", ms(1990, 1, 1)), record("b", ms(1980, 1, 1), img=True), record("c", ms(1970, 1, 1))
    index.assign({"a": a, "b": b, "c": c})
    b2, d = record("b", ms(1980, 1, 1), first="Bea"), record("d", ms(2001, 1, 1))
    a_again = UserRecord(*a)  # equal, another object: not a difference
    wanted = {"a": a_again, "b": b2, "d": d}
    upserts, removals = index.differences(wanted)
    assert (upserts, removals) == ([b2, d], ["c"])
    assert index.version == 1 and index.records() == [a, b, c], "only read"
    diff = index.apply(upserts, removals)
    assert (diff.added, diff.updated, diff.removed) == ([d], [b2], ["c"])
    assert index.records() == [a, b2, d] and index.get("a") is a
    assert index.differences(wanted) == ([], [])


def test_applying_an_identical_record_changes_nothing() -> None:
    index = UserIndex()
    a = record("a", ms(1990, 1, 1), img=True)
    index.apply([a])
    version = index.version
    diff = index.apply([record("a", ms(1990, 1, 1), img=True)])  # equal, not the same object
    assert diff == Diff() and not diff
    assert index.version == version
    assert index.records() == [a]
    assert index.stats(Filters(), NOW).count == 1


def test_applying_nothing_changes_nothing() -> None:
    index = UserIndex()
    index.apply([record("a", 0)])
    assert not index.apply()
    assert index.version == 1


def test_removing_an_unknown_id_is_a_no_op() -> None:
    index = UserIndex()
    a = record("a", ms(1990, 1, 1))
    index.apply([a])
    diff = index.apply(removals=["zzz", "A", ""])
    assert not diff and diff.removed == []
    assert index.version == 1
    assert index.records() == [a]
    assert index.stats(Filters(), NOW).count == 1


def test_removing_twice_reports_the_removal_once() -> None:
    index = UserIndex()
    index.apply([record("a", 0), record("b", 0)])
    assert index.apply(removals=["a"]).removed == ["a"]
    assert index.apply(removals=["a"]).removed == []
    assert ids(index.records()) == ["b"]


def test_updating_birthts_moves_the_user_between_age_ranges() -> None:
    index = UserIndex()
    young = record("u", ms(2000, 6, 15, 9))  # 26 on NOW (2026-06-20)
    other = record("v", ms(1950, 1, 1))  # 76
    index.apply([young, other])
    assert ids(index.query(Filters(max_age=30), NOW)) == ["u"]
    assert ids(index.query(Filters(min_age=40), NOW)) == ["v"]

    older = record("u", ms(1980, 6, 21, 9))  # 45 on NOW: birthday tomorrow
    diff = index.apply([older])
    assert diff.updated == [older] and not diff.added and not diff.removed
    assert ids(index.query(Filters(max_age=30), NOW)) == []
    assert ids(index.query(Filters(min_age=40), NOW)) == ["u", "v"]
    assert ids(index.query(Filters(min_age=45, max_age=45), NOW)) == ["u"]
    assert ids(index.query(Filters(min_age=46), NOW)) == ["v"]
    stats = index.stats(Filters(), NOW)
    assert stats.count == 2
    assert stats.average_age == pytest.approx(((NOW - older.birthts) + (NOW - other.birthts)) / 2 / MS_PER_YEAR)
    assert index.stats(Filters(max_age=30), NOW) == Stats(0, None)


def test_updating_birthts_within_the_same_day_keeps_queries_and_average_right() -> None:
    index = UserIndex()
    index.apply([record("a", ms(1990, 5, 5, 1)), record("b", ms(1990, 5, 5, 2))])
    index.apply([record("a", ms(1990, 5, 5, 23))])
    stats = index.stats(Filters(min_age=36, max_age=36), NOW)
    assert stats.count == 2
    expected = ((NOW - ms(1990, 5, 5, 23)) + (NOW - ms(1990, 5, 5, 2))) / 2 / MS_PER_YEAR
    assert stats.average_age == pytest.approx(expected, rel=1e-12)


def test_updating_img_path_moves_the_user_between_image_groups() -> None:
    index = UserIndex()
    index.apply([record("u", ms(1990, 1, 1)), record("w", ms(1991, 1, 1), img=True)])
    assert ids(index.query(Filters(has_image=True), NOW)) == ["w"]
    assert ids(index.query(Filters(has_image=False), NOW)) == ["u"]

    with_image = record("u", ms(1990, 1, 1), img=True)
    assert index.apply([with_image]).updated == [with_image]
    assert ids(index.query(Filters(has_image=True), NOW)) == ["u", "w"]
    assert index.query(Filters(has_image=False), NOW) == []
    assert ids(index.query(Filters(has_image=True, min_age=36), NOW)) == ["u"]
    assert index.stats(Filters(has_image=True), NOW).count == 2
    assert index.stats(Filters(has_image=False), NOW) == Stats(0, None)
    assert index.stats(Filters(has_image=False, min_age=1), NOW) == Stats(0, None)

    without_image = record("u", ms(1990, 1, 1))
    assert index.apply([without_image]).updated == [without_image]
    assert ids(index.query(Filters(has_image=True), NOW)) == ["w"]
    assert index.query(Filters(has_image=False, min_age=30), NOW) == [without_image]
    assert index.stats(Filters(has_image=False), NOW).count == 1


def test_removing_the_last_user_of_a_birth_day_keeps_other_days_right() -> None:
    index = UserIndex()
    a = record("a", ms(1990, 3, 3, 10))  # alone on its day
    b1, b2 = record("b1", ms(1980, 3, 3, 1)), record("b2", ms(1980, 3, 3, 22))  # sharing a day
    c = record("c", ms(1970, 3, 3))
    index.apply([a, b1, b2, c])

    def check(expected: list[UserRecord]) -> None:
        for f in (
            Filters(),
            Filters(min_age=40),
            Filters(max_age=50),
            Filters(min_age=36, max_age=46),
            Filters(min_age=46, max_age=46),
        ):
            today = utc_date(NOW)
            want = [r for r in sorted(expected, key=lambda r: r.user_id) if _matches(r, f, today)]
            assert index.query(f, NOW) == want, f
            stats = index.stats(f, NOW)
            assert stats.count == len(want), f
            if want:
                assert stats.average_age == pytest.approx(fmean((NOW - r.birthts) / MS_PER_YEAR for r in want)), f
            else:
                assert stats.average_age is None, f

    check([a, b1, b2, c])
    assert index.apply(removals=["a"]).removed == ["a"]
    check([b1, b2, c])
    index.apply(removals=["b1"])
    check([b2, c])
    index.apply(removals=["b2"])
    check([c])
    a_again = record("a", ms(1990, 3, 3, 11))
    index.apply([a_again, b1])
    check([a_again, b1, c])
    index.apply(removals=["a", "b1", "c"])
    check([])
    assert len(index) == 0


def test_records_are_sorted_by_user_id_as_strings() -> None:
    index = UserIndex()
    index.apply([record(u, ms(1990, 1, 1)) for u in ("9", "10", "0001", "1", "100", "b", "A", "01")])
    assert ids(index.records()) == ["0001", "01", "1", "10", "100", "9", "A", "b"]
    assert ids(index.query(Filters(), NOW)) == ["0001", "01", "1", "10", "100", "9", "A", "b"]
    assert ids(index.query(Filters(min_age=1), NOW)) == ["0001", "01", "1", "10", "100", "9", "A", "b"]
    assert ids(index.query(Filters(has_image=False), NOW)) == ["0001", "01", "1", "10", "100", "9", "A", "b"]
    assert index.get("0001") is not None and index.get("1") is not None and index.get("0001") != index.get("1")

    index.apply([record("099", 0)], removals=["10"])
    assert ids(index.records()) == ["0001", "01", "099", "1", "100", "9", "A", "b"]
    renamed = record("9", ms(1990, 1, 1), first="Nine")
    index.apply([renamed])
    assert index.records()[5] == renamed


def test_query_results_are_records_sorted_by_user_id_across_image_groups() -> None:
    index = UserIndex()
    index.apply(
        [record("2", ms(1990, 1, 1), img=True), record("10", ms(1960, 1, 1)), record("1", ms(2000, 1, 1), img=True)]
    )
    assert ids(index.query(Filters(min_age=20), NOW)) == ["1", "10", "2"]
    assert ids(index.query(Filters(max_age=40), NOW)) == ["1", "2"]


# --- stats ---------------------------------------------------------------------------------


def test_stats_of_an_empty_index_has_no_average() -> None:
    index = UserIndex()
    assert index.stats(Filters(), NOW) == Stats(0, None)
    assert index.stats(Filters(has_image=True, min_age=0, max_age=1e9), NOW) == Stats(0, None)
    assert index.query(Filters(), NOW) == []


@pytest.mark.parametrize(
    "filters",
    [
        pytest.param(Filters(min_age=50), id="min-above-everyone"),
        pytest.param(Filters(max_age=10), id="max-below-everyone"),
        pytest.param(Filters(has_image=True), id="nobody-with-image"),
        pytest.param(Filters(min_age=40, max_age=30), id="min-greater-than-max"),
        pytest.param(Filters(min_age=1e9), id="huge-min"),
    ],
)
def test_stats_with_count_zero_has_no_average(filters: Filters) -> None:
    index = UserIndex()
    index.apply([record("a", ms(1990, 1, 1)), record("b", ms(2000, 1, 1))])
    assert index.stats(filters, NOW) == Stats(0, None)
    assert index.query(filters, NOW) == []


def test_average_age_is_exact_and_not_rounded() -> None:
    index = UserIndex()
    births = [ms(1990, 1, 1, 7, 13), ms(1969, 7, 20, 20, 17), ms(2004, 2, 29, 23, 59, 59, 999)]
    index.apply([record(str(n), b) for n, b in enumerate(births)])
    now = ms(2026, 2, 28, 13, 37, 42, 123)
    expected = sum(now - b for b in births) / len(births) / (365.2425 * 86_400 * 1000)
    stats = index.stats(Filters(), now)
    assert stats.count == 3
    assert stats.average_age is not None
    assert stats.average_age == pytest.approx(expected, rel=1e-12)
    assert stats.average_age != round(stats.average_age, 2)


def test_records_stay_sorted_through_small_and_large_batches() -> None:
    rng = random.Random(7)
    index = UserIndex()
    alive: set[str] = set()
    for batch in range(60):
        size = rng.choice((1, 3, 50, 2000))  # small batches move ids into place, large ones re-sort
        upserts = [UserRecord(str(rng.randrange(5000)), "A", "B", rng.randrange(10**12), None) for _ in range(size)]
        removals = rng.sample(sorted(alive), min(len(alive), rng.choice((0, 1, 40, 1500))))
        index.apply(upserts, removals)
        alive = (alive | {r.user_id for r in upserts}) - set(removals)
        assert [r.user_id for r in index.records()] == sorted(alive), batch
        assert index.ids_after(None, 10**6) == sorted(alive)
        if alive:
            middle = sorted(alive)[len(alive) // 2]
            assert index.ids_after(middle, 5) == [i for i in sorted(alive) if i > middle][:5]


def test_a_first_load_in_bulk_builds_what_one_change_at_a_time_builds(
    population: tuple[UserIndex, list[UserRecord]],
) -> None:
    bulk, records = population  # one apply() to an empty index: the bulk path
    stepwise = UserIndex()
    for i in range(0, len(records), 7):
        stepwise.apply(records[i : i + 7])
    assert stepwise.records() == bulk.records()
    now = ms(2026, 6, 15, 17, 45)
    for has_image in (None, True, False):
        for min_age, max_age in ((None, None), (0, 30), (31, 80), (81, None)):
            f = Filters(has_image, min_age, max_age)
            assert stepwise.query(f, now) == bulk.query(f, now), f
            assert stepwise.stats(f, now) == bulk.stats(f, now), f


def test_a_first_batch_naming_a_user_twice_keeps_the_last() -> None:
    index = UserIndex()
    diff = index.apply([record("a", 0), record("b", DAY_MS), record("a", 5 * DAY_MS, img=True)])
    assert [r.user_id for r in diff.added] == ["a", "b"] and diff.updated == [record("a", 5 * DAY_MS, img=True)]
    assert index.records() == [record("a", 5 * DAY_MS, img=True), record("b", DAY_MS)]
    assert index.stats(Filters(has_image=False), 10 * DAY_MS) == Stats(1, 9 * DAY_MS / YEAR_MS)


@pytest.mark.parametrize("bulk", [True, False], ids=["first-load", "one-by-one"])
def test_crowded_birthdays_stay_right_through_changes(bulk: bool) -> None:
    """Many users born on one day (a day's ids turn from a list into a dict past 64)."""
    rng = random.Random(64)
    now = ms(2026, 6, 15)
    days = [ms(1990, 1, 1), ms(1990, 1, 2), ms(2000, 5, 5)]

    def born(user_id: str) -> UserRecord:
        return record(user_id, rng.choice(days) + rng.randrange(DAY_MS), img=rng.random() < 0.5)

    users = {str(i): born(str(i)) for i in range(400)}
    index = UserIndex()
    if bulk:
        index.apply(users.values())
    else:
        for r in users.values():
            index.apply([r])
    for step in range(300):
        user_id = str(rng.randrange(450))
        if rng.random() < 0.4:
            index.apply(removals=[user_id])
            users.pop(user_id, None)
        else:
            users[user_id] = born(user_id)
            index.apply([users[user_id]])
        if step % 25 == 0:
            by_id = sorted(users.values(), key=lambda r: r.user_id)
            for f in (Filters(), Filters(has_image=True), Filters(min_age=30), Filters(max_age=30, has_image=False)):
                expected = [r for r in by_id if _matches(r, f, utc_date(now))]
                assert index.query(f, now) == expected, (step, f)
                assert index.stats(f, now).count == len(expected), (step, f)
    assert max(sum(utc_date(r.birthts) == utc_date(d) for r in users.values()) for d in days) > 64
