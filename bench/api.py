"""Benchmarks 4 and 6: query throughput beside the framework's ceiling, and writing output.csv.

The server (``bench.server``) and the load generator (``bench.loadgen``) are processes of their
own; this module starts them one at a time and reads the server's CPU time around each run.
Where wrk is installed, an independent probe follows: wrk (one thread, 16 connections) on a
trivial handler in a plain aiohttp app (``bench.bare``), first and last, and between them the
service's own trivial route, /stats and /data pages.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any

from .datagen import OLD_QUERY
from .procs import ROOT, bench_env, cpu_seconds, free_port, stop_process, wait_http

__all__ = ("ENDPOINTS", "TRIVIAL", "WRK_CONNECTIONS", "WRK_ENDPOINTS", "run_api")

TRIVIAL = "/bench/trivial"
#: name -> path; the trivial handler first, as the others are compared with it. A path with
#: ``{n}`` stands for :data:`VARIANTS` queries, sent in turn.
ENDPOINTS: dict[str, str] = {
    "trivial": TRIVIAL,
    "stats": "/stats",
    "stats_filtered": "/stats?is_image_exists=true&min_age=30&max_age=40",
    "data_filtered": f"/data?{OLD_QUERY}",
    # The same ~100 users (ages 100-105), each max_age a different span of birth days: more
    # queries in turn than /data keeps bodies for, so every request searches and serialises.
    "data_uncached": f"/data?{OLD_QUERY}&max_age={{n}}",
    # A page of 100 of all users, asked again and again (a dashboard's first page), then pages
    # after 256 different ids in turn, so that nearly every one is searched and rendered.
    "data_page": "/data?limit=100",
    "data_page_uncached": "/data?limit=100&after={n}",
}
#: What the independent probe (wrk, when installed) measures, beside a trivial handler in a plain
#: aiohttp app ("bare", first and last: the machine's speed drifts).
WRK_ENDPOINTS = ("bare", "trivial", "stats", "data_page", "data_page_uncached", "bare_page", "bare_again")
WRK_CONNECTIONS = 16
#: The ``{n}`` of a path: one query each, in turn.
VARIANTS = range(106, 106 + 256)


def urls(base: str, path: str) -> list[str]:
    """The URLs ``path`` stands for."""
    return [base + path.format(n=n) for n in VARIANTS] if "{n}" in path else [base + path]


def _load(targets: list[str], concurrency: int, duration: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *targets, f"--concurrency={concurrency}", f"--duration={duration}"],
        cwd=ROOT,
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _wrk(targets: list[str], duration: float) -> dict[str, Any]:
    """wrk's requests per second and latency for ``targets`` (more than one: taken in turn)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        paths = ", ".join(f'"{urllib.parse.urlsplit(t).path}?{urllib.parse.urlsplit(t).query}"' for t in targets)
        script.write(
            f"local paths = {{{paths}}}\nlocal n = 0\n"
            "request = function()\n  n = n % #paths + 1\n  return wrk.format('GET', paths[n])\nend\n"
        )
        script.flush()
        args = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency", "-s", script.name]
        out = subprocess.run([*args, targets[0]], capture_output=True, text=True, timeout=duration + 60, check=True)
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: ([0-9]+)", out.stdout)
    return {"rps": rps, "non_2xx": int(errors.group(1)) if errors else 0}


def _probe(base: str, duration: float) -> dict[str, Any]:
    """wrk on :data:`WRK_ENDPOINTS`, "bare" on a plain aiohttp app's trivial handler (bench.bare)."""
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "bench.bare", f"--port={port}"], cwd=ROOT, env=bench_env())
    try:
        bare_url = f"http://127.0.0.1:{port}{TRIVIAL}"
        wait_http(bare_url, timeout=60, proc=bare)
        probe = {}
        # The page's size, for plain aiohttp to answer as many bytes.
        with urllib.request.urlopen(base + ENDPOINTS["data_page"], timeout=60) as r:
            page_bytes = len(r.read())
        for name in WRK_ENDPOINTS:
            if name == "bare_page":
                targets = [f"http://127.0.0.1:{port}/bench/bytes?n={page_bytes}"]
            else:
                targets = [bare_url] if name.startswith("bare") else urls(base, ENDPOINTS[name])
            probe[name] = _wrk(targets, duration)
        probe["bare_page"]["bytes"] = page_bytes
    finally:
        bare.terminate()
        bare.wait(30)
    probe["bare"]["rps"] = (probe["bare"]["rps"] + probe.pop("bare_again")["rps"]) / 2
    return probe


def _measure_output(base: str, concurrency: int, quiet: float) -> dict[str, Any]:
    """POST /bench/flush while the load generator keeps sending GET /stats."""
    load = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", base + "/stats", f"--concurrency={concurrency}", "--duration=300"],
        cwd=ROOT,
        env=bench_env(),
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # requests are flowing
        request = urllib.request.Request(f"{base}/bench/flush?quiet={quiet}", method="POST")
        with urllib.request.urlopen(request, timeout=600) as r:
            result: dict[str, Any] = json.loads(r.read())
    finally:
        load.terminate()
        load.wait(10)
    return result


def run_api(users: int, concurrency: int, duration: float) -> dict[str, Any]:
    """Serve ``users`` records and measure each of :data:`ENDPOINTS`, then the output.csv write."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.server", f"--users={users}", f"--port={port}"],
        cwd=ROOT,
        env=bench_env(),
        stdout=subprocess.DEVNULL,
    )
    results: dict[str, Any] = {"users": users, "concurrency": concurrency, "duration": duration}
    try:
        wait_http(base + TRIVIAL, timeout=600, proc=server)
        wait_http(base + "/health", timeout=60, proc=server)
        # The ceiling is measured first and last, and averaged: the machine's speed drifts.
        for name in [*ENDPOINTS, "trivial_again"]:
            cpu = cpu_seconds(server.pid)
            load = _load(urls(base, ENDPOINTS[name.removesuffix("_again")]), concurrency, duration)
            # warm-up requests are in the CPU time too: per request, it slightly overstates the cost
            load["server_cpu_us"] = (cpu_seconds(server.pid) - cpu) / max(1, load["requests"]) * 1e6
            results[name] = load
        first, last = results.pop("trivial"), results.pop("trivial_again")
        results["trivial"] = {key: (first[key] + last[key]) / 2 for key in first}
        results["trivial_runs"] = [first, last]
        if shutil.which("wrk"):
            results["wrk"] = _probe(base, duration)
        results["output"] = _measure_output(base, concurrency, quiet=2.0)
    finally:
        stop_process(server, 30)
    return results
