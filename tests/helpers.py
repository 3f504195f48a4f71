"""What tests share besides fixtures: waiting on conditions, fast settings, a running service."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from userdata.demo import make_png
from userdata.index import UserIndex
from userdata.keys import INDEX, OUTPUT, PIPELINE
from userdata.pipeline import Pipeline
from userdata.settings import Settings
from userdata.sinks.output_csv import OutputWriter
from userdata.stores import Listing, ObjectError, Store, Version

if TYPE_CHECKING:
    from _collections_abc import dict_items

#: The original task's 100 users, beside the project when it is there (never committed).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "provectus-src-data"
PNG = make_png(4, 4, (10, 120, 200))


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, message: str | Callable[[], str] = "", every: float = 0.01
) -> None:
    """Wait until ``predicate()`` (awaited when it returns an awaitable) is true, or fail; it is
    asked every ``every`` seconds."""
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
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[None]:
    """The pipeline's task, running, its first load done; cancelled at the end."""
    task = asyncio.create_task(pipeline.run())
    try:
        await pipeline.loaded.wait()
        yield
    finally:
        task.cancel()


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
    client: TestClient[web.Request, web.Application]

    @property
    def pipeline(self) -> Pipeline:
        return self.app[PIPELINE]

    @property
    def index(self) -> UserIndex:
        return self.app[INDEX]

    @property
    def output(self) -> OutputWriter:
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


class WatchedListing(dict[str, Version]):
    """A listing that records the threads its items are walked on."""

    def __init__(self, listing: Listing, threads: list[threading.Thread]) -> None:
        super().__init__(listing)
        self.threads = threads

    def items(self) -> dict_items[str, Version]:
        self.threads.append(threading.current_thread())
        return super().items()


class SpyStore:
    """A store wrapper for tests: records what is asked of it, and fails or acts on demand.

    ``fail`` (an exception) is raised by every call while set; ``before_read`` runs before each
    read_many (to change the store between a listing and its reads); ``after_read`` is awaited
    after each read_many has read (to hold a scan's reads back); ``unreadable`` names keys
    read_many and stat_many report as objects that cannot be read, and why.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads: list[str] = []
        self.stats: list[str] = []
        #: keys whose ETag was asked for (a writer's look before its first write after a win)
        self.looks: list[str] = []
        #: listings made
        self.listings = 0
        #: gc.isenabled() at each listing
        self.collector: list[bool] = []
        #: the threads each listing's items were walked on
        self.listing_threads: list[threading.Thread] = []
        self.fail: Exception | None = None
        self.before_read: Callable[[], None] | None = None
        #: key -> why it cannot be read: read_many gives an ObjectError for it
        self.unreadable: dict[str, str] = {}
        #: awaited with the keys after each read_many has read them, before it returns
        self.after_read: Callable[[Collection[str]], Awaitable[None]] | None = None
        #: keys whose reading raises an unexpected error (a bug, as far as the pipeline knows)
        self.explode: set[str] = set()

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    @property
    def bad_names(self) -> dict[str, str]:
        return self.store.bad_names

    def describe(self) -> str:
        return f"spy on {self.store.describe()}"

    async def open(self) -> None:
        await self.store.open()

    async def remove_leftovers(self, key: str) -> int:
        return await self.store.remove_leftovers(key)

    async def close(self) -> None:
        await self.store.close()

    async def list_objects(self, *, versions: bool = True) -> Listing:
        self.listings += 1
        self.collector.append(gc.isenabled())
        self._check()
        return WatchedListing(await self.store.list_objects(versions=versions), self.listing_threads)

    async def read_many(self, keys: Collection[str], parse: Callable[[bytes], Any]) -> dict[str, Any]:
        self._check()
        if bad := self.explode & set(keys):
            raise RuntimeError(f"cannot handle {sorted(bad)}")
        self.reads.extend(keys)
        if self.before_read is not None:
            self.before_read()
        found = await self.store.read_many(keys, parse)
        if self.after_read is not None:
            await self.after_read(keys)
        return found | {key: ObjectError(why) for key, why in self.unreadable.items() if key in found}

    async def stat_many(self, keys: Collection[str]) -> dict[str, Any]:
        self._check()
        self.stats.extend(keys)
        found = await self.store.stat_many(keys)
        return found | {key: ObjectError(why) for key, why in self.unreadable.items() if key in found}

    async def read(self, key: str) -> bytes | None:
        self._check()
        return await self.store.read(key)

    async def write(self, key: str, data: bytes) -> None:
        self._check()
        await self.store.write(key, data)

    async def etag(self, key: str) -> str | None:
        self._check()
        self.looks.append(key)
        return await self.store.etag(key)

    async def write_if(self, key: str, data: bytes, etag: str | None) -> str:
        self._check()
        return await self.store.write_if(key, data, etag)


def catalog_state(pipeline: Pipeline) -> dict[str, object]:
    """The pipeline's catalog as plain data, to compare."""
    catalog = pipeline.reconciler.catalog
    return {
        "versions": dict(catalog.versions),
        "csv_keys": dict(catalog.csv_keys),
        "png_keys": dict(catalog.png_keys),
        "rejected": dict(catalog.rejected),
        "conflicts": set(catalog.conflicts),
    }


class RandomFolder:
    """Random changes to a source folder, each file's mtime moved on so a listing sees it."""

    def __init__(self, root: Path, rng: random.Random, prefix: str = "src/", users: int = 12) -> None:
        self.dir = root / "bucket" / prefix
        self.dir.mkdir(parents=True)
        self.rng = rng
        self.users = [str(i) for i in range(users)]
        self.clock = 1_700_000_000_000_000_000
        #: the names changed (written or deleted) since this was last cleared
        self.touched: set[str] = set()

    def _write(self, name: str, body: bytes) -> None:
        path = self.dir / name
        self.touched.add(name)
        path.write_bytes(body)
        self.clock += 1_000_000_000
        os.utime(path, ns=(self.clock, self.clock))

    def change(self) -> None:
        rng, user = self.rng, self.rng.choice(self.users)
        csv = user + rng.choice([".csv", ".csv", ".csv", ".CSV"])  # now and then, a second CSV
        png = user + rng.choice([".png", ".png", ".PNG"])
        action = rng.random()
        if action < 0.4:
            first = rng.choice(["Ann", "Bob", "Cy"])
            self._write(csv, f"first_name, last_name, birthts\n{first}, Lee, {rng.randrange(10**12)}\n".encode())
        elif action < 0.5:
            self._write(csv, rng.choice([b"", b"first_name\nAnn\n", b"\xff\xfe", b"first_name, last_name, birthts\n"]))
        elif action < 0.7:
            (self.dir / csv).unlink(missing_ok=True)
            self.touched.add(csv)
        elif action < 0.8:
            self._write(png, b"\x89PNG")
        elif action < 0.95:
            (self.dir / png).unlink(missing_ok=True)
            self.touched.add(png)
        else:  # a name that is no source object: hidden, temporary, another extension, no user_id
            ignored = rng.choice(["." + csv, csv + "~", csv + ".tmp", user + ".txt", ".csv", ".PNG", user + "csv"])
            self._write(ignored, f"first_name, last_name, birthts\nIg, Nored, {rng.randrange(10**12)}\n".encode())
