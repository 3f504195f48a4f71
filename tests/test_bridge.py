"""The tests' stand-in for MinIO's NATS publisher (bench/bridge.py): filer metadata to events."""

from __future__ import annotations

from typing import Any

import orjson

from bench.bridge import changes, minio_event
from userdata.events import objects_from_event

ROOT = "/buckets/b/"


def entry(name: str, *, folder: bool = False) -> dict[str, Any]:
    return {"name": name, "isDirectory": folder}


Entry = dict[str, Any] | None


def meta(directory: str, old: Entry, new: Entry, new_parent: str = "") -> dict[str, Any]:
    note = {"oldEntry": old, "newEntry": new, "newParentPath": new_parent}
    return {"directory": directory, "eventNotification": note}


def test_creates_overwrites_deletes_and_renames() -> None:
    assert changes(meta("/buckets/b/src", None, entry("1.csv")), ROOT) == [("src/1.csv", True)]
    assert changes(meta("/buckets/b/src", entry("1.csv"), entry("1.csv")), ROOT) == [("src/1.csv", True)]
    assert changes(meta("/buckets/b/src", entry("1.csv"), None), ROOT) == [("src/1.csv", False)]
    moved = meta("/buckets/b/src", entry("1.csv"), entry("2.csv"), "/buckets/b/src")
    assert changes(moved, ROOT) == [("src/1.csv", False), ("src/2.csv", True)]


def test_folders_and_other_buckets_are_left_out() -> None:
    assert changes(meta("/buckets/b", None, entry("src", folder=True)), ROOT) == []
    assert changes(meta("/buckets/other", None, entry("1.csv")), ROOT) == []


def test_its_events_are_what_the_service_reads_from_minio() -> None:
    for created in (True, False):
        payload = orjson.loads(minio_event("b", "src/a b+c.csv", created))
        assert payload["Key"] == "b/src/a b+c.csv"
        assert payload["EventName"].startswith("s3:ObjectCreated:" if created else "s3:ObjectRemoved:")
        (found,) = objects_from_event(payload, "b", "src/")
        assert found.key == "src/a b+c.csv"  # escaped as MinIO escapes it, read back whole
