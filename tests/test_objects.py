"""Which keys are source objects, and whose."""

from __future__ import annotations

import pytest

from userdata.objects import SourceObject, classify


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("src/1000.csv", SourceObject("src/1000.csv", "csv", "1000")),
        ("src/0001.CSV", SourceObject("src/0001.CSV", "csv", "0001")),
        ("src/7.Png", SourceObject("src/7.Png", "png", "7")),
        ("src/a b.csv", SourceObject("src/a b.csv", "csv", "a b")),
        ("src/x.y.csv", SourceObject("src/x.y.csv", "csv", "x.y")),
    ],
)
def test_csvs_and_pngs_under_the_prefix_are_their_users_objects(key: str, expected: SourceObject) -> None:
    assert classify(key, "src/") == expected


@pytest.mark.parametrize(
    "key",
    [
        "other/1.csv",  # outside the prefix
        "src/sub/1.csv",  # in a sub-folder
        "src/.1.csv",  # hidden
        "src/1.csv~",  # an editor's backup
        "src/1.csv.tmp",
        "src/1.csv.part",
        "src/1.txt",
        "src/.csv",  # no user_id
        "src/csv",
        "src/",
    ],
)
def test_anything_else_is_ignored(key: str) -> None:
    assert classify(key, "src/") is None


def test_an_empty_prefix_is_the_bucket_root() -> None:
    assert classify("1.csv", "") == SourceObject("1.csv", "csv", "1")
    assert classify("dir/1.csv", "") is None


def test_a_source_object_is_the_same_tuple_its_constructor_makes() -> None:
    made = classify("src/1.csv", "src/")
    assert type(made) is SourceObject and made == SourceObject("src/1.csv", "csv", "1")
    assert (made.key, made.kind, made.user_id) == ("src/1.csv", "csv", "1")
