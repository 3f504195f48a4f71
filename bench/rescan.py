"""Rescans beside requests (benchmark 7): how long each holds up the event loop.

After a load from the folder, an incremental rescan (nothing changed) and a forced one (every CSV
read again, as ``POST /data``) run while a ticker sleeping 1 ms records how late it wakes: the
longest wait is the longest a request would have waited. Runs in a fresh interpreter
(``bench.child``); the baseline is the same ticker with no rescan.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from userdata.index import UserIndex
from userdata.pipeline import Pipeline
from userdata.stores.folder import FolderStore

from .datagen import BUCKET, PREFIX
from .server import Ticker

__all__ = ("measure_rescans",)


async def _measure(data_dir: str, users: int) -> dict[str, Any]:
    store = FolderStore(Path(data_dir), BUCKET, PREFIX)
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
            report = await pipeline.rescan(force=force)
            seconds = time.perf_counter() - started
            results[name] = {"seconds": seconds, "changed": report.added + report.updated + report.removed}
            results[name].update(await ticker.stop())
    finally:
        task.cancel()
    return results


def measure_rescans(data_dir: str, users: int) -> dict[str, Any]:
    """Load ``users`` from the folder, then time both rescans and the event loop's longest wait."""
    return asyncio.run(_measure(data_dir, users))
