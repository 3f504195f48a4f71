"""MinIO bucket notifications (S3 event JSON) -> source objects for the pipeline to look at again."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_plus

from .names import bad_name, shown
from .objects import SourceObject, classify

__all__ = ("InvalidEvent", "objects_from_event")

logger = logging.getLogger("userdata.events")


class InvalidEvent(ValueError):
    """The body is not an S3 event notification."""


def objects_from_event(payload: Any, bucket: str, prefix: str) -> set[SourceObject]:
    """The source objects an event names; records of other buckets or prefixes are ignored.

    Delivery is at least once and unordered, and the event kind is not needed: the pipeline
    reads each key again and finds out whether it was created, changed or deleted. A key that
    is not UTF-8 or holds a control character is logged (escaped) and ignored, never queued:
    answering 400 would have MinIO send the whole batch again and again.

    >>> event = {"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": "src%2F1.csv"}}}]}
    >>> objects_from_event(event, "b", "src/")
    {SourceObject(key='src/1.csv', kind='csv', user_id='1')}
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("Records"), list):
        raise InvalidEvent("expected an S3 event: a JSON object with a Records list")
    objects = set()
    for record in payload["Records"]:
        try:
            name = record["s3"]["bucket"]["name"]
            raw_key = record["s3"]["object"]["key"]
        except (KeyError, TypeError):
            raise InvalidEvent("every record needs s3.bucket.name and s3.object.key") from None
        if not isinstance(name, str) or not isinstance(raw_key, str):
            raise InvalidEvent("s3.bucket.name and s3.object.key must be strings")
        if name != bucket:
            continue
        try:
            key = unquote_plus(raw_key, errors="strict")  # MinIO sends the key URL-encoded, spaces as '+'
        except UnicodeDecodeError:
            logger.warning("ignoring an event's key that is not UTF-8: %s", shown(raw_key))
            continue
        if bad_name(key):
            logger.warning("ignoring an event's key that holds a control character: %s", shown(key))
        elif (obj := classify(key, prefix)) is not None:
            objects.add(obj)
    return objects
