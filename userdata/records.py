"""User records: parsing a user's CSV, and age arithmetic on calendar dates in UTC."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import sys
import time
from typing import NamedTuple

__all__ = (
    "DAY_MS",
    "YEAR_MS",
    "InvalidRecord",
    "UserRecord",
    "UserFields",
    "age_on",
    "day_of",
    "latest_birth_day_for_age",
    "parse_user_csv",
)

DAY_MS = 86_400_000
#: The mean Gregorian year, used for the exact (fractional) ages averaged by /stats.
YEAR_MS = 365.2425 * DAY_MS
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
#: birthts of 0001-01-01T00:00:00Z: earlier times have no calendar date here.
MIN_BIRTHTS = (dt.date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * DAY_MS

REQUIRED_COLUMNS = ("first_name", "last_name", "birthts")
_INTEGER = re.compile(r"-?[0-9]+")
#: Files shorter than this without quotes are split by hand (the csv module has a field size limit).
_FAST_MAX = 65536
#: The usual file, whole: a BOM or none, the exact header (", " or "," between names), one row
#: of two names with nothing to trim, quote or reject, and a birthts of at most 18 digits (no
#: leading zeros beyond "0"). What it matches parses to what the general path gives, several
#: times faster; anything else takes the general path, which also words the reasons for rejecting.
_NAME = r'([^\s,"\x00]|[^\s,"\x00][^,"\r\n\x00]*[^\s,"\x00])'
_USUAL = re.compile(
    r"\ufeff?first_name, ?last_name, ?birthts\r?\n" + _NAME + ", ?" + _NAME + r", ?(0|-?[1-9][0-9]{0,17})(?:\r?\n)?"
).fullmatch


class InvalidRecord(ValueError):
    """A source CSV that cannot be a user; ``str(exc)`` is a one-line reason."""


#: Bumped whenever what makes a file valid, or its record, changes: verdicts kept from before
#: (the catalog's hint) are then not trusted.
RULES = 1
#: The reason's start for a birthts after the time of reading: the one rejection time can undo.
FUTURE_BIRTHTS = "birthts in the future"


class UserFields(NamedTuple):
    """What a valid user CSV says (a tuple: made once per file read, and never kept)."""

    first_name: str
    last_name: str
    birthts: int


class UserRecord(NamedTuple):
    """One user as served by the API; field order is the JSON and output.csv order.

    A tuple: immutable, made and compared in C (a load makes one per user).
    """

    user_id: str
    first_name: str
    last_name: str
    birthts: int
    img_path: str | None


def parse_user_csv(data: bytes, *, now_ms: int | None = None) -> UserFields:
    """Parse a user's CSV (a header and exactly one data row).

    UTF-8 with or without BOM, CRLF or LF; header names are trimmed and matched
    case-insensitively in any order; extra columns are ignored; values are trimmed;
    blank lines are ignored. Raises :class:`InvalidRecord` with a one-line reason.

    >>> parse_user_csv(b"first_name, last_name, birthts\\nSusan, Lee, 612302400000\\n")
    UserFields(first_name='Susan', last_name='Lee', birthts=612302400000)
    """
    try:
        text = data.decode()  # a BOM stays, as U+FEFF (the codec "utf-8-sig" is written in Python)
    except UnicodeDecodeError as e:
        raise InvalidRecord(f"not UTF-8 (byte {e.start})") from None
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    usual = _USUAL(text) if len(text) < _FAST_MAX else None
    if usual is not None:
        first_name, last_name, raw_birthts = usual.groups()
        birthts = int(raw_birthts)
        if MIN_BIRTHTS <= birthts <= now:
            # Names repeat across users: one copy each keeps the index small.
            return _new(UserFields, (sys.intern(first_name), sys.intern(last_name), birthts))
    return _parse_text(text, now)


def _parse_text(text: str, now: int) -> UserFields:
    """The general path of :func:`parse_user_csv`, for any decoded file."""
    if text[:1] == "\ufeff":
        text = text[1:]
    if "\x00" in text:
        raise InvalidRecord("contains a NUL character")
    rows = _split_rows(text)
    if not rows:
        raise InvalidRecord("empty file")
    header = _header(rows[0])
    if len(rows) != 2:
        raise InvalidRecord(f"expected exactly one data row, found {len(rows) - 1}")
    row = rows[1]
    if len(row) < len(header):
        raise InvalidRecord(f"data row has {len(row)} values, header has {len(header)}")
    first_name, last_name, raw_birthts = (row[header.index(name)] for name in REQUIRED_COLUMNS)
    names = (("first_name", first_name), ("last_name", last_name))
    for name, value in names:
        if not value:
            raise InvalidRecord(f"{name} is empty")
    for name, value in names:
        if "\n" in value or "\r" in value:  # a quoted value may hold one: no name does
            raise InvalidRecord(f"{name} contains a line break")
    return UserFields(sys.intern(first_name), sys.intern(last_name), _birthts(raw_birthts, now))


def _header(names: list[str]) -> list[str]:
    """The header's names, lowercased; raises InvalidRecord unless each required one is there once."""
    header = [name.lower() for name in names]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise InvalidRecord(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for name in REQUIRED_COLUMNS:
        if header.count(name) > 1:
            raise InvalidRecord(f"column {name} appears more than once")
    return header


def _birthts(raw: str, now: int) -> int:
    """birthts from its text; raises InvalidRecord unless an integer between the year 1 and ``now``."""
    if not _INTEGER.fullmatch(raw):
        raise InvalidRecord(f"birthts is not an integer: {_excerpt(raw)}")
    digits = raw.lstrip("-").lstrip("0") or "0"
    if len(digits) > 20:  # far from any date; also keeps int() within its digit limit
        raise InvalidRecord(f"birthts is out of range: {_excerpt(raw)}")
    birthts = -int(digits) if raw.startswith("-") else int(digits)
    if birthts > now:
        raise InvalidRecord(f"{FUTURE_BIRTHTS}: {birthts}")
    if birthts < MIN_BIRTHTS:
        raise InvalidRecord(f"birthts {birthts} is before the year 1")
    return birthts


#: A NamedTuple made in C (its own constructor is a Python function).
_new = tuple.__new__


def _split_rows(text: str) -> list[list[str]]:
    """The non-blank rows of ``text``, values trimmed; raises InvalidRecord for malformed CSV."""
    if '"' not in text and len(text) < _FAST_MAX:
        # Without quotes a CSV row is its values split at commas: what the csv module would
        # give, several times faster. Line ends as csv knows them: CRLF, LF or CR.
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return [values for line in lines if any(values := [value.strip() for value in line.split(",")])]
    try:
        return [
            [value.strip() for value in row]
            for row in csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
            if any(value.strip() for value in row)
        ]
    except csv.Error as e:
        raise InvalidRecord(f"malformed CSV: {e}") from None


def _excerpt(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


# Ages. A day number counts days since 1970-01-01 (negative before), in UTC.


def day_of(ms: int) -> int:
    """The UTC day number of a time in milliseconds since the epoch."""
    return ms // DAY_MS


def _date(day: int) -> dt.date:
    return dt.date.fromordinal(day + _EPOCH_ORDINAL)


def age_on(birth: int, today: int) -> int:
    """Completed years on day ``today`` of someone born on day ``birth``.

    A Feb 29 birthday counts from Mar 1 in other years.
    """
    b, t = _date(birth), _date(today)
    return t.year - b.year - ((t.month, t.day) < (b.month, b.day))


def latest_birth_day_for_age(today: int, age: int) -> int | None:
    """The last birth day whose age on ``today`` is at least ``age``, or None if no such day.

    Born on day d, one is ``age`` or older exactly when (year(d) + age, month, day) <= today's
    (year, month, day); so the bound is today's date moved back ``age`` years, or Feb 28 when
    that lands on a Feb 29 that does not exist.
    """
    t = _date(today)
    year = t.year - age
    if year < dt.MINYEAR:
        return None
    if year > dt.MAXYEAR:
        return today  # age < 0: everyone qualifies; today is the latest possible birth day
    day = t.day
    if t.month == 2 and day == 29 and not _is_leap(year):
        day = 28
    return dt.date(year, t.month, day).toordinal() - _EPOCH_ORDINAL


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
