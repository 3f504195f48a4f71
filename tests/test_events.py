"""MinIO bucket notifications -> the source objects they name."""

from __future__ import annotations

from typing import Any

import pytest

from userdata.events import InvalidEvent, objects_from_event
from userdata.objects import SourceObject


def _record(bucket: str, key: str) -> dict[str, Any]:
    return {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def test_keys_are_url_decoded_and_classified() -> None:
    event = {"Records": [_record("lake", "src-data%2Fa+b.csv"), _record("lake", "src-data%2F7.PNG")]}
    assert objects_from_event(event, "lake", "src-data/") == {
        SourceObject("src-data/a b.csv", "csv", "a b"),
        SourceObject("src-data/7.PNG", "png", "7"),
    }


def test_other_buckets_prefixes_and_names_are_ignored() -> None:
    event = {
        "Records": [
            _record("other", "src-data%2F1.csv"),
            _record("lake", "elsewhere%2F2.csv"),
            _record("lake", "src-data%2Fsub%2F3.csv"),
            _record("lake", "src-data%2Fnotes.txt"),
            _record("lake", "src-data%2F4.csv"),
        ]
    }
    assert objects_from_event(event, "lake", "src-data/") == {SourceObject("src-data/4.csv", "csv", "4")}


def test_a_key_named_twice_is_one_object() -> None:
    event = {"Records": [_record("lake", "src-data%2F1.csv")] * 3}
    assert len(objects_from_event(event, "lake", "src-data/")) == 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "a JSON object with a Records list"),
        ({"Records": {}}, "a JSON object with a Records list"),
        ({"Records": [{"s3": {}}]}, "s3.bucket.name and s3.object.key"),
        ({"Records": ["x"]}, "s3.bucket.name and s3.object.key"),
        ({"Records": [{"s3": {"bucket": {"name": 1}, "object": {"key": "k"}}}]}, "must be strings"),
    ],
)
def test_what_is_no_s3_event_is_invalid(payload: Any, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        objects_from_event(payload, "lake", "src-data/")
