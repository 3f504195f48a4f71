"""PostgreSQL for tests: the machine's server for most tests, a throwaway one to stop and start.

Tests skip with the reason when no PostgreSQL can be had, unless TESTS_REQUIRE_POSTGRES is set
(``.ci/run`` sets it): then they fail.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import pytest

#: The machine's server: trust authentication on loopback.
ADMIN_URL = os.environ.get("TESTS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TIMEOUT = 30.0  # seconds for any one admin step

T = TypeVar("T")


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it where PostgreSQL is required."""
    if os.environ.get("TESTS_REQUIRE_POSTGRES"):
        pytest.fail(f"{reason} (TESTS_REQUIRE_POSTGRES is set, so this is a failure)", pytrace=False)
    pytest.skip(reason)


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, on a loop of its own in a thread
    (so the event loop of the tests is left alone)."""

    async def main() -> T:
        return await asyncio.wait_for(make(), TIMEOUT)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def create_database(admin_url: str = ADMIN_URL) -> str:
    """A new database with a unique name; returns its URL."""
    name = f"userdata_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        con = await asyncpg.connect(admin_url, timeout=10)
        try:
            await con.execute(f'CREATE DATABASE "{name}"')
        finally:
            await con.close()

    run_async(create)
    return with_database(admin_url, name)


@contextmanager
def own_database() -> Iterator[str]:
    """A database of the caller's own on the machine's server, dropped at the end; where there
    is no server, the test skips (or fails, where PostgreSQL is required)."""
    try:
        url = create_database()
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        unavailable(f"no PostgreSQL server to test against at {ADMIN_URL}: {e}")
    try:
        yield url
    finally:
        drop_database(url)


def drop_database(url: str, admin_url: str = ADMIN_URL) -> None:
    """Drop the database of ``url``, ending its connections first."""
    name = url.rpartition("/")[2]

    async def drop() -> None:
        con = await asyncpg.connect(admin_url, timeout=10)
        try:
            await con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            await con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await con.close()

    run_async(drop)


def execute(url: str, sql: str, *args: Any) -> None:
    async def run() -> None:
        con = await asyncpg.connect(url, timeout=10)
        try:
            await con.execute(sql, *args)
        finally:
            await con.close()

    run_async(run)


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are: ``pg_config --bindir``, else Debian's folders."""
    candidates = []
    if shutil.which("pg_config"):
        done = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            candidates.append(Path(done.stdout.strip()))
    candidates += [
        Path(p)
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]), reverse=True)
    ]
    for path in candidates:
        if all((path / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return path
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """A PostgreSQL server of the tests' own on a free loopback port, to stop and start at will.

    initdb refuses to run as root, so as root the server runs as the ``postgres`` user, in a
    folder under the system's temporary directory that this user can reach.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="userdata-pg-"))
        os.chmod(self.base, 0o755)
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.base, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr or done.stdout}\n{log}")

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        if self.running:
            return
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )
        self.running = True

    def stop(self) -> None:
        if not self.running:
            return
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        self.running = False

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
