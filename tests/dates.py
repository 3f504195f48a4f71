"""UTC instants, dates and ages worked out with datetime, independently of userdata.

The references that tests of the age arithmetic (test_records.py) and of the index
(test_index.py) compare against. A Feb 29 birthday falls on Mar 1 in other years.
"""

from __future__ import annotations

import datetime as dt

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MS_PER_YEAR = 365.2425 * 86_400_000


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, milli: int = 0) -> int:
    """Milliseconds since the epoch of a UTC instant."""
    delta = dt.datetime(year, month, day, hour, minute, second, milli * 1000, tzinfo=dt.UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def day_number(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days


def utc_date(ms_: int) -> dt.date:
    return (EPOCH + dt.timedelta(milliseconds=ms_)).date()


def ref_age(born: dt.date, today: dt.date) -> int:
    """Completed years on ``today``; a Feb 29 birthday falls on Mar 1 in other years."""
    try:
        birthday = born.replace(year=today.year)
    except ValueError:  # Feb 29 in a year without one
        birthday = dt.date(today.year, 3, 1)
    return today.year - born.year - (1 if today < birthday else 0)
