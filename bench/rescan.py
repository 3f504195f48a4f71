"""Rescans beside requests and changes (benchmark 7): how long each holds up the event loop, and
how soon a change named meanwhile shows.

After a load, an incremental rescan (nothing changed) and a forced one (every CSV read again, as
``POST /data``) run while a ticker sleeping 1 ms records how late it wakes: the longest wait is
the longest a request would have waited. While the forced one runs, a new user's CSV is written
through the store and named to the pipeline (as the webhook or the watcher would), one after the
other, each timed until the index holds it. Runs in a fresh interpreter (``bench.child``); the
baseline is the same ticker with no rescan.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from userdata.index import Diff, UserIndex
from userdata.objects import classify
from userdata.pipeline import Pipeline
from userdata.stores import Store
from userdata.stores.folder import FolderStore
from userdata.stores.s3 import S3Store

from .datagen import BUCKET, PREFIX
from .server import Ticker

__all__ = ("measure_rescans", "measure_rescans_s3")

#: Changes named at most while one forced rescan runs.
_CHANGES = 50


async def _changes_during(pipeline: Pipeline, store: Store, scan: asyncio.Future[Any]) -> list[float]:
    """Seconds from writing each new user to seeing it in the index, while ``scan`` runs."""
    seconds: list[float] = []
    shown: dict[str, asyncio.Event] = {}

    def listen(diff: Diff) -> None:  # the sinks hear of a change as soon as the index holds it
        for record in diff.added:
            if record.user_id in shown:
                shown[record.user_id].set()

    pipeline.listeners.append(listen)
    await asyncio.sleep(0.05)  # the scan under way
    for n in range(_CHANGES):
        if scan.done():
            break
        key = f"{PREFIX}during-{n}.csv"
        started = time.perf_counter()
        await store.write(key, f"first_name, last_name, birthts\nDuring, Scan, {n}\n".encode())
        obj = classify(key, PREFIX)
        assert obj is not None
        shown[obj.user_id] = asyncio.Event()
        pipeline.submit([obj])
        await asyncio.wait_for(shown[obj.user_id].wait(), 30)
        seconds.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return seconds


async def _measure(store: Store, users: int) -> dict[str, Any]:
    await store.open()
    pipeline = Pipeline(store, UserIndex(), PREFIX)
    task = asyncio.create_task(pipeline.run())  # loads, then waits for requests, as in the service
    results: dict[str, Any] = {}
    try:
        await pipeline.loaded.wait()
        if len(pipeline.index) != users:
            raise RuntimeError(f"loaded {len(pipeline.index)} users, expected {users}")
        ticker = Ticker()
        ticker.start()
        await asyncio.sleep(1.0)
        results["baseline"] = await ticker.stop()
        for name, force in (("incremental", False), ("forced", True)):
            ticker = Ticker()
            ticker.start()
            started = time.perf_counter()
            scan = pipeline.rescan(force=force)
            during = await _changes_during(pipeline, store, scan) if force else []
            report = await scan
            seconds = time.perf_counter() - started
            results[name] = {"seconds": seconds, "changed": report.added + report.updated + report.removed}
            results[name].update(await ticker.stop())
            if during:
                results[name]["change_ms"] = {
                    "count": len(during),
                    "p50": statistics.median(during) * 1000,
                    "max": max(during) * 1000,
                }
        results["dict_growth_ms"] = longest_insert(len(pipeline.reconciler.catalog.versions))
    finally:
        task.cancel()
        await store.close()
    return results


def longest_insert(size: int) -> float:
    """The longest single insert, in ms, of a dict of keys like the catalog's growing to ``size``.

    A dict that outgrows its table rebuilds it in one step that holds the GIL, wherever it runs:
    the least stall any scan that builds a dict of this size can cause.
    """
    grown: dict[str, int] = {}
    longest = 0.0
    for i in range(size):
        key = f"{PREFIX}{i}.csv"
        started = time.perf_counter()
        grown[key] = i
        longest = max(longest, time.perf_counter() - started)
    return longest * 1000


def measure_rescans(data_dir: str, users: int) -> dict[str, Any]:
    """Load ``users`` from the folder, then time both rescans and the event loop's longest wait."""
    try:
        return asyncio.run(_measure(FolderStore(Path(data_dir), BUCKET, PREFIX), users))
    finally:
        for path in (Path(data_dir) / BUCKET / PREFIX).glob("during-*.csv"):
            path.unlink()


def measure_rescans_s3(endpoint: str, bucket: str, users: int) -> dict[str, Any]:
    """The same from S3 (the users written meanwhile stay in the bucket, which serves no other load)."""
    return asyncio.run(_measure(S3Store(endpoint, bucket, PREFIX), users))
