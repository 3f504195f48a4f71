"""Restarts on unchanged data, and the memory a loaded process holds (benchmarks 1, 2 and 8).

:func:`prepare_restart` loads the store as the service does and writes output.csv and the
catalog's hint beside it. :func:`measure_restart`, in a fresh interpreter, opens the store,
then times a start as the service makes it (output.csv and its hint restored, the store listed,
nothing read where nothing changed), then one listing of the store alone (the ceiling), and
reports the process's RSS after the start, above what it held before (imports, an open store):
what the index, the catalog and all a load leaves behind cost per user. :func:`measure_cold_rss`
does the same after a cold load (no output.csv, every object read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from userdata.index import UserIndex
from userdata.pipeline import Pipeline
from userdata.sinks.catalog_hint import hint_key
from userdata.sinks.output_csv import OutputWriter
from userdata.stores import Store
from userdata.stores.folder import FolderStore
from userdata.stores.s3 import S3Store

from .datagen import BUCKET, PREFIX
from .procs import memory_kib

__all__ = ("OUTPUT_KEY", "measure_restart", "prepare_restart", "remove_restart_files")

OUTPUT_KEY = "processed_data/output.csv"
T = TypeVar("T")


class _Counting:
    """The store, counting the objects it is asked to read or stat."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.asked = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def read_many(self, keys: Collection[str], parse: Callable[[bytes], T]) -> Any:
        self.asked += len(keys)
        return await self.store.read_many(keys, parse)

    async def stat_many(self, keys: Collection[str]) -> Any:
        self.asked += len(keys)
        return await self.store.stat_many(keys)


def _store(data_dir: str | None, endpoint: str | None, bucket: str | None) -> Store:
    if endpoint is not None:
        assert bucket is not None
        return S3Store(endpoint, bucket, PREFIX)
    assert data_dir is not None
    return FolderStore(Path(data_dir), BUCKET, PREFIX)


def _bucket(store: Store) -> str:
    return store.bucket if isinstance(store, S3Store) else BUCKET


def _started(store: Store, bucket: str) -> tuple[Pipeline, OutputWriter]:
    index = UserIndex()
    pipeline = Pipeline(store, index, PREFIX)
    output = OutputWriter(store, index, OUTPUT_KEY)
    output.follow(lambda: pipeline.reconciler.catalog, pipeline.loaded, bucket=bucket, prefix=PREFIX)
    return pipeline, output


async def _prepare(store: Store, users: int) -> dict[str, Any]:
    await store.open()
    try:
        pipeline, output = _started(store, _bucket(store))
        await pipeline.load(restore=output.restore)
        # S3 buckets keep the users benchmark 7 wrote: at least ``users``
        if len(pipeline.index) < users or not await output.flush():
            raise RuntimeError(f"loaded {len(pipeline.index)} users, expected {users}; or not written")
        return {"users": len(pipeline.index), "hint_bytes": len(await store.read(output.hint_key) or b"")}
    finally:
        await store.close()


async def _restart(store: Store, users: int) -> dict[str, Any]:
    counting = _Counting(store)
    await store.open()
    try:
        rss_before = memory_kib("VmRSS")
        pipeline, output = _started(counting, _bucket(store))
        started = time.perf_counter()
        report = await pipeline.load(restore=output.restore)
        seconds = time.perf_counter() - started
        retained = memory_kib("VmRSS") - rss_before
        if len(pipeline.index) != users or report.added or report.updated or report.removed:
            raise RuntimeError(f"restarted with {len(pipeline.index)} users ({report}), expected {users} unchanged")
        started = time.perf_counter()
        listed = len(await store.list_objects(versions=True))
        listing = time.perf_counter() - started
        return {"seconds": seconds, "read": counting.asked, "listing_seconds": listing, "objects": listed,
                "retained_kib": retained}  # fmt: skip
    finally:
        await store.close()


def prepare_restart(users: int, data_dir: str | None = None, endpoint: str | None = None,
                    bucket: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Load and write output.csv and its hint, as a service that ran before would have."""
    return asyncio.run(_prepare(_store(data_dir, endpoint, bucket), users))


def measure_restart(users: int, data_dir: str | None = None, endpoint: str | None = None,
                    bucket: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Time a start on the data :func:`prepare_restart` left, and one listing beside it."""
    return asyncio.run(_restart(_store(data_dir, endpoint, bucket), users))


def remove_restart_files(data_dir: Path) -> None:
    """Remove what :func:`prepare_restart` wrote in a folder store (other loads must not restore it)."""
    for key in (OUTPUT_KEY, hint_key(OUTPUT_KEY)):
        (data_dir / BUCKET / key).unlink(missing_ok=True)
