"""userdata.records: parse_user_csv, and the day and age arithmetic.

parse_user_csv is checked on the original data set and a corpus of malformed and unusual files;
expected values are written from SPEC.md ("Records"), never copied from the parser's output.
Ages are checked against a reference written with datetime (tests/dates.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from dates import MS_PER_YEAR, day_number, ms, ref_age

from userdata.records import (
    _USUAL,
    DAY_MS,
    YEAR_MS,
    InvalidRecord,
    UserFields,
    _parse_text,
    _split_rows,
    age_on,
    day_of,
    latest_birth_day_for_age,
    parse_user_csv,
)

#: The original task's 100 users (``<id>.csv`` + some ``<id>.png``), beside the project.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "provectus-src-data"

#: A fixed "now" (2026-01-15T12:00:00Z) so that "in the future" does not depend on the clock.
NOW_MS = 1_768_478_400_000
HEADER = b"first_name, last_name, birthts\n"


def one_line(reason: str) -> bool:
    return bool(reason) and "\n" not in reason and "\r" not in reason and len(reason.splitlines()) == 1


def reject_reason(data: bytes, *, now_ms: int = NOW_MS) -> str:
    with pytest.raises(InvalidRecord) as info:
        parse_user_csv(data, now_ms=now_ms)
    return str(info.value)


# --- the real data -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_csvs() -> list[Path]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the original data set is not present at {SHARED_DATA}")
    paths = sorted(SHARED_DATA.glob("*.csv"))
    if not paths:
        pytest.skip(f"no CSV files in {SHARED_DATA}")
    return paths


def _read_independently(path: Path) -> UserFields:
    """The simple format of the real files: a header line, one data row, ", " between values."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) == 2, f"{path.name} is not a header and one row"
    names = [name.strip() for name in lines[0].split(",")]
    values = dict(zip(names, (value.strip() for value in lines[1].split(",")), strict=True))
    return UserFields(values["first_name"], values["last_name"], int(values["birthts"]))


def test_original_data_set_has_the_hundred_users(shared_csvs: list[Path]) -> None:
    assert len(shared_csvs) == 100
    assert {p.stem for p in shared_csvs} == {str(i) for i in range(1000, 1100)}


def test_every_original_csv_parses_to_what_the_file_says(shared_csvs: list[Path]) -> None:
    for path in shared_csvs:
        assert parse_user_csv(path.read_bytes()) == _read_independently(path), path.name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("1000.csv", UserFields("Susan", "Lee", 612302400000), id="1000"),
        pytest.param("1001.csv", UserFields("Rosa", "Garcia", 670626000000), id="1001"),
        pytest.param("1099.csv", UserFields("Samuel", "Ladner", 815259600000), id="1099"),
    ],
)
def test_known_original_users_parse_to_their_values(shared_csvs: list[Path], name: str, expected: UserFields) -> None:
    path = SHARED_DATA / name
    assert _read_independently(path) == expected  # the file really says this
    assert parse_user_csv(path.read_bytes()) == expected


# --- the corpus ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """An expected rejection whose reason matches ``pattern`` (a case-insensitive regex)."""

    pattern: str


SUSAN = UserFields("Susan", "Lee", 612302400000)
NOT_AN_INTEGER = r"birthts"

CORPUS = [
    # accepted
    pytest.param(HEADER + b"Susan, Lee, 612302400000\n", SUSAN, id="plain"),
    pytest.param(HEADER + b'"Su\rsan", Lee, 0\n', Rejected("first_name contains a line break"), id="cr-in-name"),
    pytest.param(HEADER + b'Susan, "Lee\r\nJr", 0\n', Rejected("last_name contains a line break"), id="crlf-in-name"),
    pytest.param(HEADER + b"Susan, Lee, 612302400000", SUSAN, id="no-final-newline"),
    pytest.param(b"\xef\xbb\xbf" + HEADER + b"Susan, Lee, 612302400000\n", SUSAN, id="utf8-bom"),
    pytest.param(b"first_name, last_name, birthts\r\nSusan, Lee, 612302400000\r\n", SUSAN, id="crlf"),
    pytest.param(b"first_name, last_name, birthts\rSusan, Lee, 612302400000\r", SUSAN, id="cr-only"),
    pytest.param(b"first_name,last_name,birthts\nSusan,Lee,612302400000\n", SUSAN, id="no-spaces"),
    pytest.param(
        b"  BirthTS ,First_Name,   LAST_NAME \n612302400000, Susan, Lee\n",
        SUSAN,
        id="header-reordered-mixed-case-spaces",
    ),
    pytest.param(
        b"id, first_name, email, last_name, birthts, note\n7, Susan, s@example.com, Lee, 612302400000, hi\n",
        SUSAN,
        id="extra-columns",
    ),
    pytest.param(
        HEADER + b'"Lee, Susan", "Lee, Jr.", 612302400000\n',
        UserFields("Lee, Susan", "Lee, Jr.", 612302400000),
        id="quoted-values-holding-commas",
    ),
    pytest.param(
        HEADER + b'"Su ""Sue"" san", Lee, "612302400000"\n',
        UserFields('Su "Sue" san', "Lee", 612302400000),
        id="quoted-value-with-escaped-quotes",
    ),
    pytest.param(
        b"\n\n" + HEADER + b"\n   \n\t\nSusan, Lee, 612302400000\n\n\n", SUSAN, id="blank-lines-before-between-after"
    ),
    pytest.param(
        b"\r\n" + b"first_name, last_name, birthts\r\n\r\nSusan, Lee, 612302400000\r\n\r\n",
        SUSAN,
        id="blank-lines-crlf",
    ),
    pytest.param(
        b"first_name , last_name  , birthts   \nSusan   , Lee\t, 612302400000    \n", SUSAN, id="trailing-spaces"
    ),
    pytest.param(
        HEADER + b"Mary Ann, van der Berg, 612302400000\n",
        UserFields("Mary Ann", "van der Berg", 612302400000),
        id="inner-spaces-kept",
    ),
    pytest.param(
        HEADER + b"Old, Timer, -2208988800000\n", UserFields("Old", "Timer", -2208988800000), id="negative-birthts-1900"
    ),
    pytest.param(HEADER + b"Epoch, Baby, 0\n", UserFields("Epoch", "Baby", 0), id="birthts-zero"),
    pytest.param(HEADER + b"Just, Before, -1\n", UserFields("Just", "Before", -1), id="birthts-minus-one"),
    pytest.param(HEADER + b"Susan, Lee, 000612302400000\n", SUSAN, id="birthts-leading-zeros"),
    pytest.param(HEADER + b"Susan, Lee, " + b"0" * 30 + b"612302400000\n", SUSAN, id="birthts-long-zero-padding"),
    pytest.param(
        HEADER + b"Susan, Lee, " + b"0" * 5000 + b"612302400000\n", SUSAN, id="birthts-5000-digit-zero-padding"
    ),
    pytest.param(
        HEADER + b"Just, Before, -" + b"0" * 5000 + b"1\n",
        UserFields("Just", "Before", -1),
        id="birthts-minus-zero-padding",
    ),
    pytest.param(HEADER + b"Right, Now, %d\n" % NOW_MS, UserFields("Right", "Now", NOW_MS), id="birthts-exactly-now"),
    pytest.param(
        HEADER + "Zoë, 李, 612302400000\n".encode(),
        UserFields("Zoë", "李", 612302400000),
        id="utf8-names",
    ),
    pytest.param(
        b"\xef\xbb\xbf" + "first_name, last_name, birthts\r\nRenée, Ñúñez-Ørsted, -86400000\r\n".encode(),
        UserFields("Renée", "Ñúñez-Ørsted", -86400000),
        id="bom-crlf-utf8-names",
    ),
    # rejected
    pytest.param(HEADER + b"Zo\xeb, Lee, 612302400000\n", Rejected(r"utf-?8"), id="latin1-bytes"),
    pytest.param("first_name, last_name, birthts\nSusan, Lee, 0\n".encode("utf-16"), Rejected(r"utf-?8"), id="utf16"),
    pytest.param(
        b"first_name, last_name\nSusan, Lee\n",
        Rejected(r"missing.*birthts|birthts.*missing"),
        id="missing-birthts-column",
    ),
    pytest.param(
        b"last_name, birthts\nLee, 0\n",
        Rejected(r"missing.*first_name|first_name.*missing"),
        id="missing-first-name-column",
    ),
    pytest.param(b"firstname, last_name, birthts\nSusan, Lee, 0\n", Rejected(r"first_name"), id="misspelled-column"),
    pytest.param(HEADER, Rejected(r"row"), id="header-only"),
    pytest.param(HEADER + b"\n\n  \n", Rejected(r"row"), id="header-and-blank-lines-only"),
    pytest.param(HEADER + b"Susan, Lee, 0\nRosa, Garcia, 1\n", Rejected(r"row"), id="two-data-rows"),
    pytest.param(HEADER + b"Susan, Lee, 0\nSusan, Lee, 0\n", Rejected(r"row"), id="same-row-twice"),
    pytest.param(HEADER + b"Susan, Lee\n", Rejected(r"row|value"), id="row-shorter-than-header"),
    pytest.param(
        b"first_name, last_name, birthts, note\nSusan, Lee, 0\n",
        Rejected(r"row|value"),
        id="row-shorter-than-header-with-extra-column",
    ),
    pytest.param(HEADER + b'Susan, "Lee, 0\n', Rejected(r"row|value|quot|csv"), id="unterminated-quote"),
    pytest.param(HEADER + b", Lee, 0\n", Rejected(r"first_name"), id="empty-first-name"),
    pytest.param(HEADER + b'"", Lee, 0\n', Rejected(r"first_name"), id="empty-quoted-first-name"),
    pytest.param(HEADER + b"Susan, , 0\n", Rejected(r"last_name"), id="empty-last-name"),
    pytest.param(HEADER + b"Susan,    \t , 0\n", Rejected(r"last_name"), id="whitespace-only-last-name"),
    pytest.param(HEADER + b"Susan, Lee, 1.5\n", Rejected(NOT_AN_INTEGER), id="birthts-decimal"),
    pytest.param(HEADER + b"Susan, Lee, 1e3\n", Rejected(NOT_AN_INTEGER), id="birthts-exponent"),
    pytest.param(HEADER + b"Susan, Lee, +5\n", Rejected(NOT_AN_INTEGER), id="birthts-plus-sign"),
    pytest.param(HEADER + b"Susan, Lee, abc\n", Rejected(NOT_AN_INTEGER), id="birthts-letters"),
    pytest.param(HEADER + b"Susan, Lee, \n", Rejected(NOT_AN_INTEGER), id="birthts-empty"),
    pytest.param(HEADER + b'Susan, Lee, ""\n', Rejected(NOT_AN_INTEGER), id="birthts-empty-quoted"),
    pytest.param(HEADER + "Susan, Lee, ١٢٣\n".encode(), Rejected(NOT_AN_INTEGER), id="birthts-arabic-indic-digits"),
    pytest.param(HEADER + "Susan, Lee, １２３\n".encode(), Rejected(NOT_AN_INTEGER), id="birthts-fullwidth-digits"),
    pytest.param(HEADER + b"Susan, Lee, 1_000\n", Rejected(NOT_AN_INTEGER), id="birthts-underscore"),
    pytest.param(HEADER + b"Susan, Lee, 0x10\n", Rejected(NOT_AN_INTEGER), id="birthts-hex"),
    pytest.param(HEADER + b"Susan, Lee, 12 34\n", Rejected(NOT_AN_INTEGER), id="birthts-inner-space"),
    pytest.param(HEADER + b"Susan, Lee, -\n", Rejected(NOT_AN_INTEGER), id="birthts-lone-minus"),
    pytest.param(HEADER + b"Susan, Lee, --5\n", Rejected(NOT_AN_INTEGER), id="birthts-double-minus"),
    pytest.param(HEADER + b"Susan, Lee, %d\n" % (NOW_MS + 1), Rejected(r"future"), id="birthts-one-ms-in-the-future"),
    pytest.param(HEADER + b"Susan, Lee, 4102444800000\n", Rejected(r"future"), id="birthts-year-2100"),
    pytest.param(HEADER + b"Susan, Lee, " + b"9" * 5000 + b"\n", Rejected(r"birthts"), id="birthts-5000-digits"),
    pytest.param(HEADER + b"Susan, Lee, -" + b"9" * 5000 + b"\n", Rejected(r"birthts"), id="birthts-minus-5000-digits"),
    pytest.param(b"", Rejected(r"empty|no header|missing"), id="empty-file"),
    pytest.param(b"\xef\xbb\xbf", Rejected(r"empty|no header|missing"), id="bom-only"),
    pytest.param(b"\n\n  \r\n\t\n", Rejected(r"empty|no header|missing"), id="only-blank-lines"),
    pytest.param(
        b"first_name, last_name, birthts, birthts\nSusan, Lee, 0, 5\n",
        Rejected(r"birthts.*(more than once|duplicate|twice)|(duplicate|twice).*birthts"),
        id="duplicated-birthts-column",
    ),
    pytest.param(
        b"first_name, last_name, First_Name, birthts\nSusan, Lee, Rosa, 0\n",
        Rejected(r"first_name.*(more than once|duplicate|twice)|(duplicate|twice).*first_name"),
        id="duplicated-first-name-column-other-case",
    ),
    pytest.param(HEADER + b"Su\x00san, Lee, 0\n", Rejected(r"NUL|\\x00|null"), id="nul-byte"),
]


@pytest.mark.parametrize(("data", "expected"), CORPUS)
def test_corpus_file_parses_or_is_rejected_with_a_one_line_reason(data: bytes, expected: UserFields | Rejected) -> None:
    if isinstance(expected, UserFields):
        assert parse_user_csv(data, now_ms=NOW_MS) == expected
    else:
        reason = reject_reason(data)
        assert one_line(reason), repr(reason)
        assert re.search(expected.pattern, reason, re.IGNORECASE), reason
        assert len(reason) < 200, f"reason too long: {len(reason)} characters"


def test_corpus_is_large_enough() -> None:
    accepted = sum(isinstance(p.values[1], UserFields) for p in CORPUS)
    rejected = sum(isinstance(p.values[1], Rejected) for p in CORPUS)
    assert accepted >= 10 and rejected >= 20
    assert len({p.id for p in CORPUS}) == len(CORPUS)


def test_rejects_birthts_in_the_future_relative_to_now_ms() -> None:
    data = HEADER + b"Susan, Lee, 612302400000\n"
    assert parse_user_csv(data, now_ms=612302400000) == SUSAN
    assert "future" in reject_reason(data, now_ms=612302400000 - 1).lower()


def test_defaults_to_the_clock_for_the_future_check() -> None:
    assert parse_user_csv(HEADER + b"Susan, Lee, 612302400000\n") == SUSAN
    # 9999-01-01T00:00:00Z is in the future for as long as this test suite will run
    with pytest.raises(InvalidRecord, match=r"(?i)future"):
        parse_user_csv(HEADER + b"Susan, Lee, 253370764800000\n")


def test_invalid_record_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty file"):
        parse_user_csv(b"")


# --- every rejection reason is one line ----------------------------------------------------

ADVERSARIAL = [
    pytest.param(HEADER + b'Susan, Lee, "12\n34"\n', id="newline-inside-quoted-birthts"),
    pytest.param(HEADER + b'Susan, Lee, "12\r\n34"\r\n', id="crlf-inside-quoted-birthts"),
    pytest.param(HEADER + b'Susan, Lee, "12\r34"\n', id="cr-inside-quoted-birthts"),
    pytest.param(HEADER + 'Susan, Lee, "1\u20282\u20293\x854"\n'.encode(), id="unicode-line-separators-in-birthts"),
    pytest.param(HEADER + b'Susan, Lee, "1\x0b2\x0c3\x1c4"\n', id="vertical-tab-form-feed-in-birthts"),
    pytest.param(HEADER + b'Susan, Lee, "\n"\n', id="birthts-just-a-newline"),
    pytest.param(b'"first\nname", last_name, birthts\nSusan, Lee, 0\n', id="newline-inside-header-name"),
    pytest.param(b'first_name, last_name, "birth\nts"\nSusan, Lee, 0\n', id="newline-splitting-a-header-name"),
    pytest.param(HEADER + b'"\n", Lee, 0\n', id="first-name-just-a-newline"),
    pytest.param(HEADER + b'Susan, "\r\n", 0\n', id="last-name-just-a-crlf"),
    pytest.param(HEADER + b"Susan, Lee, 0\nRosa, Garcia, 1\nAnn, Bee, 2\n", id="three-rows"),
    pytest.param(HEADER + b"Susan, Lee, " + b"\n".join([b"1"] * 50) + b"\n", id="many-rows"),
    pytest.param(HEADER + b'Susan, Lee, "' + b"9\n" * 3000 + b'"\n', id="long-multiline-birthts"),
    pytest.param(b"\n\xff\n\xfe\n", id="invalid-utf8-after-newlines"),
    pytest.param(HEADER + b"Susan\x00\n, Lee, 0\n", id="nul-and-newline"),
]


CORPUS_REJECTIONS = [pytest.param(p.values[0], id=p.id) for p in CORPUS if isinstance(p.values[1], Rejected)]


@pytest.mark.parametrize("data", [*ADVERSARIAL, *CORPUS_REJECTIONS])
def test_every_rejection_reason_is_a_single_line(data: bytes) -> None:
    reason = reject_reason(data)
    assert one_line(reason), repr(reason)
    assert reason == reason.strip(), repr(reason)


@pytest.mark.parametrize(
    "text",
    [
        "a,b\r\n1, 2\r\n",
        "a,b\r1,2\r",
        "a,b\n\n ,\n1,2\n",
        "a, b ,c\n 1 ,2,\n",
        ",,,\n",
        "a,b\n1,2",
        "x\u2028y,z\n1,2\n",
        "a,b\x0c\n1,2\n",
        "\ta ,\tb\n1,2\n",
    ],
)
def test_unquoted_rows_split_as_the_csv_module_splits_them(text: str) -> None:
    reference = [
        [value.strip() for value in row]
        for row in csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
        if any(value.strip() for value in row)
    ]
    assert _split_rows(text) == reference


# --- the usual-file fast path ----------------------------------------------------------------

_PIECES = {
    "bom": ["", "\ufeff", "\ufeff\ufeff"],
    "header": [
        "first_name, last_name, birthts",
        "first_name,last_name,birthts",
        "First_Name, last_name, birthts",
        "first_name,  last_name, birthts",
        "birthts, first_name, last_name",
        "first_name, last_name",
    ],
    "newline": ["\n", "\r\n", "\r", "\n\n", ""],
    "name": [
        "Susan",
        "Mary Ann",
        "Zoë",
        "李",
        " Susan",
        "Susan ",
        "\tSusan",
        "Susan\u00a0",
        "\u2003Su",
        "S",
        "",
        "Su\x00",
        "Su\x0bsan",
        "Su\u2028san",
        'Su"san',
        "Su,san",
        "x" * 70000,
    ],
    "sep": [", ", ",", " , ", ",  "],
    "birthts": [
        "612302400000",
        "0",
        "-1",
        "-0",
        "007",
        "-62135596800000",
        "-62135596800001",
        "1768478400000",
        "1768478400001",
        "123456789012345678",
        "1234567890123456789",
        "1e5",
        " 5",
        "5 ",
        "+5",
        "--5",
        "",
    ],
    "end": ["\n", "\r\n", "", "\n\n", "\n \n", "\r"],
}


def _outcome(parse: object, *args: object, **kwargs: object) -> object:
    try:
        return parse(*args, **kwargs)  # type: ignore[operator]
    except InvalidRecord as e:
        return ("rejected", str(e))


def test_the_fast_path_parses_as_the_general_path_does() -> None:
    """Every variant of the usual file parses (or is rejected) exactly as the general path says."""
    rng = random.Random(7)

    def piece(kind: str) -> str:  # mostly the usual one, so that both paths get their share
        options = _PIECES[kind]
        return options[0] if rng.random() < 0.75 else rng.choice(options)

    matched = 0
    for _ in range(20_000):
        parts = ("bom", "header", "newline", "name", "sep", "name", "sep", "birthts", "end")
        text = "".join(piece(kind) for kind in parts)
        matched += _USUAL(text) is not None
        data = text.encode()
        assert _outcome(parse_user_csv, data, now_ms=NOW_MS) == _outcome(_parse_text, text, NOW_MS), repr(text)
    assert 2_000 < matched < 18_000  # both paths were exercised


# --- days and ages: the constants, and the reference itself ---------------------------------


def test_day_and_year_constants() -> None:
    assert ms(1970, 1, 2) == DAY_MS
    assert pytest.approx(MS_PER_YEAR, rel=1e-15) == YEAR_MS


def test_ms_helper_matches_known_instants() -> None:
    assert ms(1970, 1, 1) == 0
    assert ms(1989, 5, 27, 20) == 612302400000  # 1000.csv of the original data
    assert ms(1969, 12, 31, 23, 59, 59, 999) == -1


@pytest.mark.parametrize(
    ("born", "today", "expected"),
    [
        pytest.param(dt.date(2000, 6, 15), dt.date(2026, 6, 14), 25, id="day-before-birthday"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2001, 2, 28), 0, id="feb29-on-feb28"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2001, 3, 1), 1, id="feb29-on-mar1"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2004, 2, 29), 4, id="feb29-on-feb29"),
    ],
)
def test_reference_age_itself(born: dt.date, today: dt.date, expected: int) -> None:
    assert ref_age(born, today) == expected


# --- age arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("born", "today", "expected"),
    [
        pytest.param(dt.date(2000, 6, 15), dt.date(2026, 6, 14), 25, id="spec-day-before-26th-birthday"),
        pytest.param(dt.date(2000, 6, 15), dt.date(2026, 6, 15), 26, id="spec-on-26th-birthday"),
        pytest.param(dt.date(2000, 6, 15), dt.date(2026, 6, 16), 26, id="day-after-birthday"),
        pytest.param(dt.date(2000, 6, 15), dt.date(2000, 6, 15), 0, id="born-today"),
        pytest.param(dt.date(2000, 6, 15), dt.date(2001, 6, 14), 0, id="almost-one"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2025, 2, 28), 24, id="feb29-birth-on-feb28-non-leap"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2025, 3, 1), 25, id="feb29-birth-on-mar1-non-leap"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2024, 2, 28), 23, id="feb29-birth-on-feb28-leap"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2024, 2, 29), 24, id="feb29-birth-on-feb29-leap"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2024, 3, 1), 24, id="feb29-birth-on-mar1-leap"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2100, 2, 28), 99, id="feb29-birth-on-feb28-2100-not-leap"),
        pytest.param(dt.date(2000, 2, 29), dt.date(2100, 3, 1), 100, id="feb29-birth-on-mar1-2100-not-leap"),
        pytest.param(dt.date(2000, 2, 28), dt.date(2024, 2, 28), 24, id="feb28-birth-on-feb28"),
        pytest.param(dt.date(2000, 3, 1), dt.date(2024, 2, 29), 23, id="mar1-birth-on-feb29"),
        pytest.param(dt.date(1999, 12, 31), dt.date(2025, 1, 1), 25, id="dec31-birth-on-jan1"),
        pytest.param(dt.date(2000, 1, 1), dt.date(2025, 12, 31), 25, id="jan1-birth-on-dec31"),
        pytest.param(dt.date(1969, 12, 31), dt.date(1970, 1, 1), 0, id="pre-epoch-day-before-epoch"),
        pytest.param(dt.date(1969, 12, 31), dt.date(2069, 12, 31), 100, id="pre-epoch-100th-birthday"),
        pytest.param(dt.date(1900, 1, 1), dt.date(2025, 12, 31), 125, id="born-1900"),
        pytest.param(dt.date(1960, 2, 29), dt.date(1961, 2, 28), 0, id="pre-epoch-feb29-on-feb28"),
        pytest.param(dt.date(1960, 2, 29), dt.date(1961, 3, 1), 1, id="pre-epoch-feb29-on-mar1"),
        pytest.param(dt.date(1900, 3, 1), dt.date(1969, 12, 31), 69, id="both-before-epoch"),
    ],
)
def test_age_on_counts_completed_calendar_years(born: dt.date, today: dt.date, expected: int) -> None:
    assert age_on(day_number(born), day_number(today)) == expected


TODAY = dt.date(2026, 3, 10)


@pytest.mark.parametrize(
    ("born", "expected"),
    [
        pytest.param(dt.date(1990, 3, 9), 36, id="birthday-yesterday"),
        pytest.param(dt.date(1990, 3, 10), 36, id="birthday-today"),
        pytest.param(dt.date(1990, 3, 11), 35, id="birthday-tomorrow"),
        pytest.param(dt.date(1960, 3, 10), 66, id="pre-epoch-birthday-today"),
        pytest.param(dt.date(1960, 3, 11), 65, id="pre-epoch-birthday-tomorrow"),
    ],
)
def test_age_on_changes_on_the_birthday_itself(born: dt.date, expected: int) -> None:
    assert age_on(day_number(born), day_number(TODAY)) == expected


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        pytest.param(0, dt.date(1970, 1, 1), id="epoch"),
        pytest.param(DAY_MS - 1, dt.date(1970, 1, 1), id="last-ms-of-day-0"),
        pytest.param(DAY_MS, dt.date(1970, 1, 2), id="midnight-day-1"),
        pytest.param(-1, dt.date(1969, 12, 31), id="one-ms-before-epoch"),
        pytest.param(-DAY_MS, dt.date(1969, 12, 31), id="midnight-day-minus-1"),
        pytest.param(-DAY_MS - 1, dt.date(1969, 12, 30), id="just-before-midnight-day-minus-1"),
        pytest.param(ms(1900, 1, 1), dt.date(1900, 1, 1), id="1900"),
        pytest.param(ms(2024, 2, 29, 23, 59, 59, 999), dt.date(2024, 2, 29), id="end-of-feb29"),
    ],
)
def test_day_of_is_the_utc_calendar_day(instant: int, expected: dt.date) -> None:
    assert day_of(instant) == day_number(expected)


def test_age_on_matches_reference_on_random_dates() -> None:
    rng = random.Random(1729)
    lo, hi = day_number(dt.date(1890, 1, 1)), day_number(dt.date(2110, 12, 31))
    special = [
        day_number(dt.date(y, m, d))
        for y in (1900, 1960, 2000, 2024, 2100)
        for m, d in ((2, 28), (3, 1), (12, 31), (1, 1))
    ]
    special += [day_number(dt.date(y, 2, 29)) for y in (1904, 1960, 2000, 2024, 2096)]
    days = special + [rng.randint(lo, hi) for _ in range(300)]
    for birth in days:
        for today in days:
            if today >= birth:
                expected = ref_age(
                    dt.date(1970, 1, 1) + dt.timedelta(days=birth), dt.date(1970, 1, 1) + dt.timedelta(days=today)
                )
                assert age_on(birth, today) == expected, (birth, today)


@pytest.mark.parametrize(
    "today",
    [
        pytest.param(dt.date(2028, 2, 29), id="leap-feb29"),
        pytest.param(dt.date(2026, 2, 28), id="non-leap-feb28"),
        pytest.param(dt.date(2026, 3, 1), id="non-leap-mar1"),
        pytest.param(dt.date(2024, 3, 1), id="leap-mar1"),
        pytest.param(dt.date(2025, 12, 31), id="dec31"),
        pytest.param(dt.date(2026, 1, 1), id="jan1"),
        pytest.param(dt.date(2100, 2, 28), id="century-feb28"),
        pytest.param(dt.date(1969, 7, 20), id="before-epoch"),
    ],
)
def test_latest_birth_day_for_age_is_the_boundary_of_the_reference_age(today: dt.date) -> None:
    t = day_number(today)
    for age in range(0, 131):
        bound = latest_birth_day_for_age(t, age)
        assert bound is not None
        born = dt.date(1970, 1, 1) + dt.timedelta(days=bound)
        assert ref_age(born, today) >= age, (age, born)
        assert ref_age(born + dt.timedelta(days=1), today) < age, (age, born)


def test_latest_birth_day_for_an_impossible_age_is_none() -> None:
    assert latest_birth_day_for_age(day_number(dt.date(2026, 1, 1)), 10**9) is None
