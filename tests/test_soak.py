"""The fault suite (``make soak``): the real service under load while its dependencies fail.

Each test runs ``userdata serve`` as a subprocess, as users run it. Writers change thousands of
files (or objects) and readers query all along, while one fault at a time strikes: the process
killed mid-write, the S3 connection slowed and cut by a loopback proxy, PostgreSQL stopped, the
output location full and then read-only. After each: nothing lost (the index equals the files),
output.csv whole and equal, and no 5xx for a valid request at any time.

``SOAK_SECONDS`` is the length of each phase: 2 in ``make test``, longer in ``make soak``. The
figures of each test are printed at the end of the run (README.md reports them).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from helpers import S3Bucket, wait_until
from proxy import FaultProxy
from served import Served, free_port

PHASE = float(os.environ.get("SOAK_SECONDS", "2"))
#: Each test's own bound: its phases and the waits after its faults, whatever the phase length.
pytestmark = pytest.mark.timeout(300 + PHASE * 20)
USERS = 2_000  # at the start; writers add, change and delete among USERS * 3 / 2 ids
WRITERS = 2
READERS = 4
SETTLE = 45.0  # seconds for the service to catch up once a fault ends
DETECT = 10.0  # seconds for /health to show a fault
QUERIES = ("/data", "/data?min_age=20&max_age=60", "/data?is_image_exists=false", "/stats", "/health")

#: Each test's figures, printed at the end of the run (conftest's pytest_terminal_summary).
FIGURES: list[tuple[str, dict[str, Any]]] = []


# What the files hold, and the writers that change them


def csv_of(first_name: str, birthts: int) -> bytes:
    return f"first_name, last_name, birthts\n{first_name}, Soak, {birthts}\n".encode()


class Files:
    """What the source holds (user_id -> first_name) and writers that keep changing it.

    Each writer owns the ids ``i % WRITERS == n``, so the last change of every id is known:
    after the writers stop, the service must show exactly ``expected()``.
    """

    def __init__(self, put: Callable[[str, bytes], object], delete: Callable[[str], object], seed: int) -> None:
        self._put, self._delete = put, delete
        self.users: dict[str, str] = {}
        self.changes = 0
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def fill(self) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: self.write(str(i), 0), range(USERS)))

    def write(self, user_id: str, version: int) -> None:
        first_name = f"V{version}x{user_id}"
        self._put(user_id, csv_of(first_name, 10**11 + int(user_id) * 10**6))
        self.users[user_id] = first_name

    def remove(self, user_id: str) -> None:
        self._delete(user_id)
        self.users.pop(user_id, None)

    def expected(self) -> dict[str, str]:
        return dict(self.users)

    def _run(self, n: int, rng: random.Random, pause: float) -> None:
        ids = [str(i) for i in range(USERS * 3 // 2) if i % WRITERS == n]
        version = 0
        while not self._stop.is_set():
            version += 1
            user_id = rng.choice(ids)
            if rng.random() < 0.25 and user_id in self.users:
                self.remove(user_id)
            else:
                self.write(user_id, version)
            self.changes += 1
            if pause:
                time.sleep(pause)

    @contextlib.contextmanager
    def changing(self, pause: float = 0.0) -> Iterator[None]:
        """Writers change files in threads until the block ends."""
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, args=(n, random.Random(self._rng.random()), pause), daemon=True)
            for n in range(WRITERS)
        ]
        for thread in self._threads:
            thread.start()
        try:
            yield
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(30)


def folder_files(source_dir: Path, seed: int) -> Files:
    source_dir.mkdir(parents=True, exist_ok=True)
    return Files(
        lambda user_id, body: (source_dir / f"{user_id}.csv").write_bytes(body),
        lambda user_id: (source_dir / f"{user_id}.csv").unlink(missing_ok=True),
        seed,
    )


# Readers


@dataclass
class Readers:
    """Readers querying the service all along: every answer's status and time."""

    url: str
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)

    async def _read(self, session: aiohttp.ClientSession, rng: random.Random, stop: asyncio.Event) -> None:
        while not stop.is_set():
            path = rng.choice(QUERIES)
            started = time.monotonic()
            try:
                async with session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=30)) as r:
                    await r.read()
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                    if r.status != 200:
                        self.bad.append(f"{path}: {r.status} {(await r.text())[:200]}")
            except (TimeoutError, aiohttp.ClientError) as e:
                self.errors.append(f"{path}: {e!r}")
            self.times.append(time.monotonic() - started)

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(self._read(session, random.Random(n), stop)) for n in range(READERS)]
            try:
                yield
            finally:
                stop.set()
                await asyncio.gather(*tasks)

    def check(self) -> None:
        """No answer but 200 for these valid requests, and every request answered."""
        assert not self.bad, self.bad[:5]
        assert not self.errors, self.errors[:5]
        assert self.times, "no request was made"

    def figures(self) -> dict[str, Any]:
        times = sorted(self.times)
        return {
            "requests": len(times),
            "non-200": sum(n for s, n in self.statuses.items() if s != 200),
            "p99 ms": round(times[int(len(times) * 0.99)] * 1000),
            "max ms": round(times[-1] * 1000),
        }


# What the service shows


async def data_of(served: Served) -> dict[str, str]:
    status, data = await served.get("/data")
    assert status == 200, (status, data)
    return {user["user_id"]: user["first_name"] for user in data}


def output_of(body: bytes | None) -> dict[str, str] | None:
    """output.csv's users (user_id -> first_name); it must always parse whole."""
    if body is None:
        return None
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert rows[0] == ["user_id", "first_name", "last_name", "birthts", "img_path"], rows[:1]
    assert all(len(row) == 5 for row in rows), "output.csv is whole"
    return {row[0]: row[1] for row in rows[1:]}


async def caught_up(served: Served, files: Files, output: Callable[[], bytes | None]) -> float:
    """Wait until /data and output.csv equal the files and /health is ok; the seconds it took."""
    started = time.monotonic()
    expected = files.expected()
    seen: dict[str, Any] = {}

    async def equal() -> bool:
        seen["data"] = data = await data_of(served)
        if data != expected:
            return False
        seen["output"] = await asyncio.to_thread(lambda: output_of(output()))
        seen["health"] = (await served.get("/health"))[1]
        return bool(seen["output"] == expected and seen["health"]["status"] == "ok")

    def why() -> str:
        data, written = seen.get("data") or {}, seen.get("output") or {}
        wrong = sorted(k for k in expected.keys() | data.keys() if expected.get(k) != data.get(k))[:5]
        stale = sorted(k for k in expected.keys() | written.keys() if expected.get(k) != written.get(k))[:5]
        health = seen.get("health")
        return f"/data differs at {wrong}, output.csv at {stale}; /health {health}\n{served.output()[-3000:]}"

    await wait_until(equal, SETTLE, message=why, every=0.2)  # each look reads all of /data
    return time.monotonic() - started


async def degraded(served: Served, cause: str) -> float:
    """Wait until /health is degraded naming ``cause``; the seconds it took."""
    started = time.monotonic()

    async def shows() -> bool:
        status, health = await served.get("/health")
        return status == 200 and health["status"] == "degraded" and cause in health.get("cause", "")

    await wait_until(shows, DETECT, message=lambda: f"/health degraded with {cause!r}\n{served.output()[-3000:]}")
    return time.monotonic() - started


def record(name: str, files: Files, readers: Readers, **figures: Any) -> None:
    FIGURES.append((name, {"phase s": PHASE, "changes": files.changes, **readers.figures(), **figures}))


# The faults


async def test_writers_and_readers_through_kills_lose_nothing(serve, data_dir: Path, source_dir: Path) -> None:
    files = folder_files(source_dir, 1)
    files.fill()
    output_path = source_dir.parent / "processed_data" / "output.csv"

    def output() -> bytes | None:
        return output_path.read_bytes() if output_path.exists() else None

    args = ("--data-dir", str(data_dir), "--rescan-interval", str(max(1, PHASE / 2)))
    served = await serve(*args, port=free_port())
    await served.wait_healthy()
    readers = Readers(served.url)
    async with readers.reading():
        with files.changing():
            await asyncio.sleep(PHASE * 2)  # load: writers and readers at full speed
        settled = await caught_up(served, files, output)
    readers.check()

    restarts = []
    rng = random.Random(2)
    for _ in range(3):  # killed at a random moment of changes and writes, then started again
        with files.changing():
            await asyncio.sleep(rng.uniform(0.2, PHASE))
            await served.kill()
        served = await serve(*args, port=free_port())
        started = time.monotonic()
        await served.wait_healthy()
        await caught_up(served, files, output)
        restarts.append(time.monotonic() - started)
    assert await served.stop(signal.SIGTERM) == 0, served.output()
    assert not list(output_path.parent.glob(".*.tmp")), "no write's leftover"
    record("writers and readers, then 3 kills (folder)", files, readers, **{
        "caught up s": round(settled, 1),
        "restart to equal s (max)": round(max(restarts), 1),
    })  # fmt: skip


async def test_s3_slowed_and_cut_loses_nothing(serve, s3: S3Bucket, tmp_path: Path) -> None:
    proxy = FaultProxy(int(s3.endpoint.rsplit(":", 1)[1])).start()
    token = "soak-token"
    try:
        port = free_port()

        def notify(key: str) -> None:  # as MinIO's webhook would, straight after each change
            body = json.dumps({"Records": [{"s3": {"bucket": {"name": s3.name}, "object": {"key": key}}}]})
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/events",
                data=body.encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            with contextlib.suppress(OSError):  # a webhook lost while the service starts: the rescan finds it
                urllib.request.urlopen(request, timeout=5).close()

        def put(user_id: str, body: bytes) -> None:
            s3.put(f"{s3.prefix}{user_id}.csv", body)
            notify(f"{s3.prefix}{user_id}.csv")

        def delete(user_id: str) -> None:
            s3.delete(f"{s3.prefix}{user_id}.csv")
            notify(f"{s3.prefix}{user_id}.csv")

        files = Files(put, delete, 3)
        files.fill()
        env = {"USERDATA_WEBHOOK_TOKEN": token, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        served = await serve(
            "--s3-endpoint", proxy.endpoint, "--bucket", s3.name, "--rescan-interval", "1", env=env, port=port
        )
        await served.wait_healthy(60)

        def output() -> bytes | None:
            return s3.get("processed_data/output.csv")

        readers = Readers(served.url)
        async with readers.reading():
            with files.changing(pause=0.002):
                await asyncio.sleep(PHASE)
                proxy.slow(0.05)  # every chunk each way 50 ms late
                await asyncio.sleep(PHASE)
                proxy.cut()
                detected = await degraded(served, "store unavailable")
                await asyncio.sleep(PHASE)
                assert len(await data_of(served)) > 0  # the last index is served meanwhile
                proxy.restore()
            settled = await caught_up(served, files, output)
        readers.check()
        assert await served.stop(signal.SIGTERM) == 0, served.output()
        record("S3 slowed, then cut (proxy)", files, readers, **{
            "degraded after s": round(detected, 1),
            "caught up s": round(settled, 1),
            "connections refused": proxy.refused,
        })  # fmt: skip
    finally:
        proxy.stop()


async def test_postgresql_stopped_loses_nothing(serve, data_dir: Path, source_dir: Path, throwaway_server) -> None:
    throwaway_server.start()
    files = folder_files(source_dir, 4)
    files.fill()
    output_path = source_dir.parent / "processed_data" / "output.csv"

    def output() -> bytes | None:
        return output_path.read_bytes() if output_path.exists() else None

    async def table() -> dict[str, str]:
        con = await asyncpg.connect(throwaway_server.url, timeout=10)
        try:
            return {r["user_id"]: r["first_name"] for r in await con.fetch("SELECT user_id, first_name FROM users")}
        finally:
            await con.close()

    env = {"USERDATA_DATABASE_URL": throwaway_server.url}
    served = await serve("--data-dir", str(data_dir), "--rescan-interval", "0", env=env, port=free_port())
    await served.wait_healthy()
    readers = Readers(served.url)
    async with readers.reading():
        with files.changing():
            await asyncio.sleep(PHASE)
            await asyncio.to_thread(throwaway_server.stop)
            detected = await degraded(served, "database mirror behind")
            await asyncio.sleep(PHASE)
        # the index follows the files while the database is down: it is never stale
        expected = files.expected()
        await wait_until(
            _equals(served, expected), SETTLE, every=0.2, message="/data equal to the files while PostgreSQL is down"
        )
        await asyncio.to_thread(throwaway_server.start)
        started = time.monotonic()
        await caught_up(served, files, output)

        async def mirrored() -> bool:
            return await table() == expected

        await wait_until(mirrored, SETTLE, every=0.2, message="the table equal to the files")
        settled = time.monotonic() - started
    readers.check()
    assert await served.stop(signal.SIGTERM) == 0, served.output()
    record("PostgreSQL stopped", files, readers, **{
        "degraded after s": round(detected, 1),
        "table equal after start s": round(settled, 1),
    })  # fmt: skip


def _equals(served: Served, expected: dict[str, str]) -> Callable[[], Any]:
    async def check() -> bool:
        return await data_of(served) == expected

    return check


@pytest.fixture
def small_output_mount(source_dir: Path) -> Iterator[Path]:
    """The bucket's processed_data/ on a tmpfs of 8 MiB of its own, to fill up and make read-only."""
    where = source_dir.parent / "processed_data"
    where.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root with CAP_SYS_ADMIN: {done.stderr.decode(errors='replace')}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_output_location_full_then_read_only_loses_nothing(
    serve, data_dir: Path, source_dir: Path, small_output_mount: Path
) -> None:
    files = folder_files(source_dir, 5)
    files.fill()
    output_path = small_output_mount / "output.csv"

    def output() -> bytes | None:
        return output_path.read_bytes() if output_path.exists() else None

    served = await serve("--data-dir", str(data_dir), "--rescan-interval", "0", port=free_port())
    await served.wait_healthy()
    await caught_up(served, files, output)
    filler = small_output_mount / "filler"

    def strike(fault: str) -> None:
        if fault == "full":
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(small_output_mount)], check=True)

    def mend(fault: str) -> None:
        if fault == "full":
            filler.unlink()
        else:
            subprocess.run(["mount", "-o", "remount,rw", str(small_output_mount)], check=True)

    readers = Readers(served.url)
    figures = {}
    async with readers.reading():
        for fault, cause in (("full", "No space left"), ("read-only", "Read-only file system")):
            with files.changing(pause=0.001):
                await asyncio.to_thread(strike, fault)
                figures[f"{fault}: degraded after s"] = round(await degraded(served, cause), 1)
                assert output_of(output()), "output.csv still whole"
                await asyncio.sleep(PHASE)
                await asyncio.to_thread(mend, fault)
            figures[f"{fault}: caught up s"] = round(await caught_up(served, files, output), 1)
    readers.check()
    assert await served.stop(signal.SIGTERM) == 0, served.output()
    assert not list(small_output_mount.glob(".*.tmp")), "no failed write's leftover"
    record("output location full, then read-only", files, readers, **figures)
