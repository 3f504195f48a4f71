"""MinIO bucket notifications (S3 event JSON) -> keys for the pipeline to look at again."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from .objects import classify

__all__ = ("InvalidEvent", "keys_from_event")


class InvalidEvent(ValueError):
    """The body is not an S3 event notification."""


def keys_from_event(payload: Any, bucket: str, prefix: str) -> set[str]:
    """The source keys an event names; records of other buckets or prefixes are ignored.

    Delivery is at least once and unordered, and the event kind is not needed: the pipeline
    reads each key again and finds out whether it was created, changed or deleted.

    >>> event = {"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": "src%2F1.csv"}}}]}
    >>> keys_from_event(event, "b", "src/")
    {'src/1.csv'}
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("Records"), list):
        raise InvalidEvent("expected an S3 event: a JSON object with a Records list")
    keys = set()
    for record in payload["Records"]:
        try:
            name = record["s3"]["bucket"]["name"]
            raw_key = record["s3"]["object"]["key"]
        except (KeyError, TypeError):
            raise InvalidEvent("every record needs s3.bucket.name and s3.object.key") from None
        if not isinstance(name, str) or not isinstance(raw_key, str):
            raise InvalidEvent("s3.bucket.name and s3.object.key must be strings")
        key = unquote_plus(raw_key)  # MinIO sends the key URL-encoded, spaces as '+'
        if name == bucket and classify(key, prefix):
            keys.add(key)
    return keys
