"""What tests share besides fixtures: waiting on conditions, fast settings, a running service."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from userdata.demo import make_png
from userdata.keys import INDEX, OUTPUT, PIPELINE
from userdata.settings import Settings

#: The original task's 100 users, beside the project when it is there (never committed).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "provectus-src-data"
PNG = make_png(4, 4, (10, 120, 200))


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, message: str | Callable[[], str] = "") -> None:
    """Wait until ``predicate()`` (awaited when it returns an awaitable) is true, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"condition not met within {timeout} s {text}".strip())
        await asyncio.sleep(0.01)


def fast_settings(data_dir: Path | None, **changes: Any) -> Settings:
    """Settings for tests: short debounces and retries, no periodic rescan unless asked."""
    fast: dict[str, Any] = {
        "port": 0,
        "rescan_interval": 0,
        "watch_debounce_ms": 50,
        "watch_step_ms": 10,
        "output_settle": 0.05,
        "output_max_delay": 0.5,
        "retry_delays": (0.05, 0.1, 0.2),
    }
    return Settings(data_dir=data_dir, **(fast | changes))


@dataclass
class Service:
    """A running app on a free loopback port, and a client for it."""

    app: web.Application
    client: TestClient

    @property
    def pipeline(self):  # type: ignore[no-untyped-def]
        return self.app[PIPELINE]

    @property
    def index(self):  # type: ignore[no-untyped-def]
        return self.app[INDEX]

    @property
    def output(self):  # type: ignore[no-untyped-def]
        return self.app[OUTPUT]

    async def get(self, path: str, status: int = 200) -> Any:
        r = await self.client.get(path)
        assert r.status == status, await r.text()
        return await r.json()

    async def post(self, path: str, status: int = 200) -> Any:
        r = await self.client.post(path)
        assert r.status == status, await r.text()
        return await r.json()

    async def user_ids(self, query: str = "") -> list[str]:
        return [r["user_id"] for r in await self.get("/data" + query)]

    async def stop(self) -> None:
        await self.client.close()


@dataclass
class S3Bucket:
    """A bucket of its own on the test S3 server, and a plain client to change objects in it."""

    endpoint: str
    name: str
    client: Any
    prefix: str = "src-data/"

    def put(self, key: str, body: bytes | str) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body.encode() if isinstance(body, str) else body)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except self.client.exceptions.NoSuchKey:
            return None

    def put_user(
        self, user_id: str, first_name: str = "Ann", last_name: str = "Lee", birthts: int = 0, *, png: bool = False
    ) -> None:
        self.put(
            f"{self.prefix}{user_id}.csv", f"first_name, last_name, birthts\n{first_name}, {last_name}, {birthts}\n"
        )
        if png:
            self.put(f"{self.prefix}{user_id}.png", PNG)

    def settings(self, **changes: Any) -> Settings:
        return fast_settings(changes.pop("data_dir", None), s3_endpoint=self.endpoint, bucket=self.name, **changes)
