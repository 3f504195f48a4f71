"""The service's app with an index built directly, for benchmarks 4 and 6.

    python -m bench.server --users N --port P

Runs ``create_app(settings)`` on an empty folder store (no watcher, no periodic rescan), then,
once the first load is done, applies N generated records straight to the index (no files) and
freezes them for the garbage collector, as the service's load does with what it reads.
Two routes are added for the benchmark:

- ``GET /bench/trivial``: the smallest JSON answer, through the same app and request wrapper: the
  framework's ceiling on this machine.
- ``POST /bench/flush?quiet=S``: adds one user (as a real change would), waits the writer's settle
  time, writes output.csv with ``OutputWriter.flush()`` while a ticker measures how late the event
  loop wakes every 1 ms, then, for comparison, ticks for ``S`` seconds with no write, and times
  writing the same bytes with the store alone. Answers the measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from userdata.app import create_app
from userdata.keys import INDEX, OUTPUT, PIPELINE, STORE
from userdata.records import UserRecord
from userdata.settings import Settings

from .datagen import make_records
from .loadgen import percentile

__all__ = ("Ticker", "build_app")

TICK = 0.001


class Ticker:
    """Sleeps ``TICK`` seconds again and again, recording how late each wake-up is."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._since = 0.0

    async def _run(self) -> None:
        while True:
            self._since = time.perf_counter()
            await asyncio.sleep(TICK)
            self.lateness.append(time.perf_counter() - self._since - TICK)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        assert self._task is not None
        # The sleep under way counts too: a loop held up until the measured work ended (its last
        # step synchronous) leaves that sleep late, and only here can it be seen.
        self.lateness.append(max(0.0, time.perf_counter() - self._since - TICK))
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        late = sorted(self.lateness)
        return {"ticks": len(late), "max_ms": late[-1] * 1000, "p99_ms": percentile(late, 0.99) * 1000}


async def trivial(request: web.Request) -> web.Response:
    return web.Response(body=b'{"ok":true}', content_type="application/json")


async def flush(request: web.Request) -> web.Response:
    app = request.app
    index, output = app[INDEX], app[OUTPUT]
    quiet = float(request.query.get("quiet", "2"))
    newcomer = UserRecord(f"bench-{time.time_ns()}", "New", "Comer", 0, None)
    index.apply([newcomer])
    # As the service's writer does, wait for the change to settle before writing: the first
    # GET /stats after a change recomputes the index's prefix sums (tens of ms at 1M users), a
    # stall of the change, not of the write, and in the service it falls in this settle time.
    await asyncio.sleep(output.settle)
    ticker = Ticker()
    ticker.start()
    started = time.perf_counter()
    ok = await output.flush()
    seconds = time.perf_counter() - started
    during = await ticker.stop()
    idle = Ticker()
    idle.start()
    await asyncio.sleep(quiet)
    baseline = await idle.stop()
    data = await app[STORE].read(output.key)
    assert ok
    assert data is not None
    started = time.perf_counter()
    await app[STORE].write(output.key + ".bench", data)
    write_seconds = time.perf_counter() - started
    body: dict[str, Any] = {
        "users": len(index),
        "bytes": len(data),
        "seconds": seconds,
        "write_only_seconds": write_seconds,
        "stall": during,
        "baseline_stall": baseline,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def build_app(data_dir: Path, users: int) -> web.Application:
    """The service's app on an empty folder store, its index filled with ``users`` records."""
    settings = Settings(data_dir=data_dir, watch=False, rescan_interval=0, log_level="warning")
    app = create_app(settings)

    async def fill_index(app: web.Application) -> AsyncIterator[None]:
        # After the first load: its full scan would remove users that have no file.
        await app[PIPELINE].loaded.wait()
        app[INDEX].apply(make_records(users))
        # As the service's load leaves what it built: frozen, out of the collector's way (else a
        # full collection, walking a million records, would stall the loop in the measurements).
        gc.freeze()
        yield

    app.cleanup_ctx.append(fill_index)
    app.router.add_get("/bench/trivial", trivial)
    app.router.add_post("/bench/flush", flush)
    return app


async def serve(users: int, port: int) -> None:
    with tempfile.TemporaryDirectory(prefix="userdata-bench-server-") as tmp:
        runner = web.AppRunner(build_app(Path(tmp), users), access_log=None)  # as `userdata serve`
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.users, args.port))  # until SIGTERM


if __name__ == "__main__":
    main()
