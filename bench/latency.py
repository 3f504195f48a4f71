"""Benchmark 3: change-to-visible latency in folder mode, real watcher, default settings.

``userdata serve`` runs as a process of its own on a folder of demo users (periodic rescan off,
so only the watcher can make a change visible). Files of extra users, born 1900-1915 so that
``GET /data?min_age=110`` returns only them, are then added, rewritten and deleted one at a
time; each change is timed from the moment the file is in place until that query shows it.
"""

from __future__ import annotations

import asyncio
import calendar
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from watchfiles import awatch

from userdata.settings import Settings

from .datagen import BUCKET, PREFIX
from .loadgen import percentile
from .procs import ROOT, bench_env, free_port, stop_process, wait_http

__all__ = ("measure_latency", "measure_watch_floor")

QUERY = "/data?min_age=110"
POLL_INTERVAL = 0.002
DEADLINE = 5.0
_BORN = calendar.timegm((1910, 6, 1, 0, 0, 0)) * 1000


def _write(source: Path, user_id: str, first_name: str) -> None:
    """Write a user's CSV as editors and uploaders do: a hidden temporary file, then a rename."""
    tmp = source / f".{user_id}.csv.tmp"
    tmp.write_bytes(f"first_name, last_name, birthts\n{first_name}, Bench, {_BORN}\n".encode())
    os.replace(tmp, source / f"{user_id}.csv")


async def _visible(session: aiohttp.ClientSession, url: str, expected: dict[str, str]) -> float | None:
    """Seconds until ``url`` lists exactly ``expected`` (user_id -> first_name), None past the deadline."""
    started = time.perf_counter()
    while time.perf_counter() - started < DEADLINE:
        async with session.get(url) as response:
            records = await response.json()
        if {r["user_id"]: r["first_name"] for r in records} == expected:
            return time.perf_counter() - started
        await asyncio.sleep(POLL_INTERVAL)
    return None


async def _changes(base: str, source: Path, count: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    expected: dict[str, str] = {}
    seconds: list[float] = []
    timeouts = 0
    async with aiohttp.ClientSession() as session:
        for n in range(count):
            step = n % 4  # add, add, rewrite, delete: every kind of change, the set stays small
            if step in (0, 1) or not expected:
                user_id = f"bench{n:05}"
                expected[user_id] = "Added"
                _write(source, user_id, "Added")
            elif step == 2:
                user_id = max(expected)
                expected[user_id] = f"Changed{n}"
                _write(source, user_id, expected[user_id])
            else:
                user_id = min(expected)
                del expected[user_id]
                os.unlink(source / f"{user_id}.csv")
            found = await _visible(session, base + QUERY, expected)
            if found is None:
                timeouts += 1
                # wait for the change to show, so the next one is timed on its own
                await _visible(session, base + QUERY, expected)
            else:
                seconds.append(found)
            await asyncio.sleep(rng.uniform(0, 0.1))  # changes land at any phase of the service's work
    seconds.sort()
    return {
        "changes": count,
        "timeouts": timeouts,
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
        "max_ms": seconds[-1] * 1000 if seconds else float("nan"),
    }


async def _watch_floor(source: Path, count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    seconds: list[float] = []
    defaults = Settings()
    stop = asyncio.Event()
    seen: asyncio.Queue[set[str]] = asyncio.Queue()

    async def watch() -> None:
        async for changes in awatch(
            source,
            debounce=defaults.watch_debounce_ms,
            step=defaults.watch_step_ms,
            stop_event=stop,
            recursive=False,
            watch_filter=None,
        ):
            seen.put_nowait({os.path.basename(path) for _, path in changes})

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.5)  # the watch is set up
    try:
        for n in range(count):
            started = time.perf_counter()
            _write(source, f"floor{n:05}", "Floor")
            name = f"floor{n:05}.csv"
            deadline = started + DEADLINE
            while time.perf_counter() < deadline:
                try:
                    names = await asyncio.wait_for(seen.get(), deadline - time.perf_counter())
                except TimeoutError:
                    break
                if name in names:
                    seconds.append(time.perf_counter() - started)
                    break
            await asyncio.sleep(rng.uniform(0, 0.1))  # as between the service's changes
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        # Past the timed part: nothing measured waits on the loop while these block it.
        for path in source.glob("floor*.csv"):  # noqa: ASYNC240
            path.unlink()
    return sorted(seconds)


def measure_watch_floor(data_dir: Path, count: int, seed: int = 0) -> dict[str, Any]:
    """The floor: file in place until awatch, with the service's debounce settings, yields it."""
    seconds = asyncio.run(_watch_floor(data_dir / BUCKET / PREFIX, count, seed))
    return {
        "changes": count,
        "timeouts": count - len(seconds),
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
        "max_ms": seconds[-1] * 1000 if seconds else float("nan"),
    }


def measure_latency(data_dir: Path, users: int, count: int, seed: int = 0) -> dict[str, Any]:
    """Serve ``data_dir`` (``users`` demo users) and time ``count`` changes made one at a time."""
    source = data_dir / BUCKET / PREFIX
    output = data_dir / BUCKET / "processed_data" / "output.csv"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "userdata", "serve", f"--data-dir={data_dir}", f"--port={port}"]
    command += ["--rescan-interval=0", "--log-level=warning"]
    server = subprocess.Popen(command, cwd=ROOT, env=bench_env(), stdout=subprocess.DEVNULL)
    try:
        wait_http(base + "/health", timeout=1800, proc=server)
        deadline = time.monotonic() + 600
        while not output.exists() and time.monotonic() < deadline:  # the first write after the load
            time.sleep(0.1)
        time.sleep(1.0)
        result = asyncio.run(_changes(base, source, count, seed))
    finally:
        stop_process(server, 30)
        for path in source.glob("bench*.csv"):
            path.unlink()
        output.unlink(missing_ok=True)
    result["users"] = users
    return result
