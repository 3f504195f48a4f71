from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers import PNG, S3Bucket, Service, fast_settings, wait_until
from natsserver import NatsServer, nats_binary
from pgserver import ThrowawayPostgres, execute, find_bindir, unavailable
from seaweed import SeaweedFS, require_weed, s3_client
from served import Served

from userdata.app import create_app
from userdata.keys import PIPELINE
from userdata.settings import Settings
from userdata.stores import Store


@pytest.fixture(autouse=True)
def isolate_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("USERDATA_", "AWS_")):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def source_dir(data_dir: Path) -> Path:
    path = data_dir / "datalake" / "src-data"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def output_path(data_dir: Path) -> Path:
    return data_dir / "datalake" / "processed_data" / "output.csv"


@pytest.fixture
def write_user(source_dir: Path) -> Callable[..., Path]:
    """Write ``<user_id>.csv`` (and ``<user_id>.png`` with png=True); returns the CSV's path."""

    def write(
        user_id: str,
        first_name: str = "Ann",
        last_name: str = "Lee",
        birthts: int = 0,
        *,
        png: bool = False,
        csv: bytes | str | None = None,
        name: str | None = None,
    ) -> Path:
        body = csv if csv is not None else f"first_name, last_name, birthts\n{first_name}, {last_name}, {birthts}\n"
        path = source_dir / (name or f"{user_id}.csv")
        path.write_bytes(body.encode() if isinstance(body, str) else body)
        if png:
            (source_dir / f"{user_id}.png").write_bytes(PNG)
        return path

    return write


@pytest.fixture
async def start_service() -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    """Start the app for some settings on a free port; every one started is stopped at the end."""
    started: list[Service] = []

    async def start(settings: Settings, *, loaded: bool = True, store: Store | None = None) -> Service:
        app = create_app(settings, store=store)
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        service = Service(app, client)
        started.append(service)
        if loaded:
            await wait_until(app[PIPELINE].loaded.is_set, message="for the first load")
        return service

    yield start
    for service in reversed(started):
        await service.stop()


@pytest.fixture
async def service(start_service: Callable[..., Awaitable[Service]], data_dir: Path, source_dir: Path) -> Service:
    return await start_service(fast_settings(data_dir))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real S3 server for the session, on loopback ports of its own."""
    server = SeaweedFS(require_weed(), tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A new bucket on the session's S3 server; the service finds credentials in AWS_* as users' would."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    bucket = S3Bucket(seaweedfs.endpoint, f"test-{uuid.uuid4().hex[:12]}", s3_client(seaweedfs.endpoint))
    bucket.client.create_bucket(Bucket=bucket.name)
    return bucket


@pytest.fixture
def environ() -> dict[str, str]:
    """The environment for commands: ours without any USERDATA_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("USERDATA_")}


@pytest.fixture
async def serve(tmp_path: Path, environ: dict[str, str]) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Start ``python -m userdata serve *args``; every one still running at the end is killed."""
    started: list[Served] = []

    async def start(*args: str, env: Mapping[str, str] | None = None, port: int | None = None) -> Served:
        log = tmp_path / f"serve-{len(started)}.log"
        port_args = () if port is None else ("--port", str(port))
        with open(log, "wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "userdata", "serve", *port_args, *args,
                cwd=tmp_path,
                env={**environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        served = Served(process, port or 0, log)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.returncode is None:
            await served.kill()


def _nats(directory: Path) -> Iterator[NatsServer]:
    server = NatsServer(nats_binary(), directory)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS server with JetStream of the test's own, started (stop and start it at will)."""
    yield from _nats(tmp_path / "nats")


@pytest.fixture(scope="module")
def module_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One NATS server with JetStream for a module's tests."""
    yield from _nats(tmp_path_factory.mktemp("nats"))


@pytest.fixture(scope="module")
def throwaway_server() -> Iterator[ThrowawayPostgres]:
    """A server of the tests' own, to stop and start; removed at the end whatever happened."""
    bindir = find_bindir()
    if bindir is None:
        unavailable("no PostgreSQL server binaries (initdb, pg_ctl; Debian's postgresql package) to run a server")
    server = ThrowawayPostgres(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def throwaway_url(throwaway_server: ThrowawayPostgres) -> str:
    throwaway_server.start()
    execute(throwaway_server.url, "DROP TABLE IF EXISTS users")
    return throwaway_server.url


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault suite's figures (tests/test_soak.py), when it ran."""
    from test_soak import FIGURES

    if FIGURES:
        terminalreporter.section("fault suite figures")
        for name, figures in FIGURES:
            terminalreporter.write_line(f"{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
