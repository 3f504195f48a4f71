"""HTTP load generator, run as a process of its own so it does not share the server's event loop.

    python -m bench.loadgen URL [URL ...] [--concurrency 16] [--duration 5] [--warmup 1]

``concurrency`` workers on one aiohttp session (as many keep-alive connections) send GET requests
back to back, to the URLs in turn, for ``warmup`` seconds (not counted), then for ``duration`` seconds. Prints one JSON
line: requests, errors, rps, and p50/p99/max latency in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp

__all__ = ("generate_load", "percentile")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``sorted_values`` lie (nearest rank)."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


async def generate_load(urls: list[str], concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    """Hit ``urls`` in turn with ``concurrency`` workers; latencies of the requests after ``warmup``."""
    turns = itertools.cycle(urls)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        counted_from, end = start + warmup, start + warmup + duration

        async def worker() -> None:
            nonlocal errors
            while (sent := time.perf_counter()) < end:
                try:
                    async with session.get(next(turns)) as response:
                        await response.read()
                        ok = response.status == 200
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                if sent >= counted_from:
                    latencies.append(time.perf_counter() - sent)
                    errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - counted_from
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("urls", nargs="+", metavar="url")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(generate_load(args.urls, args.concurrency, args.duration, args.warmup))))


if __name__ == "__main__":
    main()
