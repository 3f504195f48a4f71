"""Cold loads (benchmarks 1 and 2): the pipeline's first load, and the floors it is compared with.

Each function runs in a fresh interpreter (``bench.child``), so its peak RSS is its own. The
floors do only the I/O a load cannot avoid, at the service's own concurrency: list the source
objects and read every CSV's bytes; nothing is parsed, PNGs are only listed. For the folder,
:func:`load_least_folder` is a second reference: the least Python work a load does at all; for
S3, :func:`load_botocore_s3`: the same I/O through aiobotocore, the service's client before.
"""

from __future__ import annotations

import asyncio
import gc
import html
import inspect
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from userdata.index import UserIndex
from userdata.pipeline import Pipeline
from userdata.records import UserRecord, parse_user_csv
from userdata.stores import Store
from userdata.stores.folder import FolderStore
from userdata.stores.s3 import S3Store
from userdata.stores.sigv4 import Credentials, Signer, canonical_query, quote_key

from .datagen import BUCKET, PREFIX
from .procs import memory_kib

__all__ = (
    "folder_threads",
    "load_floor_folder",
    "load_botocore_s3",
    "load_floor_s3",
    "least_load",
    "load_folder",
    "load_least_folder",
    "load_s3",
)

_CHUNK = 128  # files per task of the folder floor, as the folder store hands to a thread


def folder_threads() -> int:
    """The most reading threads the folder store uses by default (it reads on one or on these)."""
    return int(inspect.signature(FolderStore.__init__).parameters["threads"].default)


async def _load(store: Store, users: int) -> dict[str, Any]:
    await store.open()
    index = UserIndex()
    pipeline = Pipeline(store, index, PREFIX)
    rss_before = memory_kib("VmRSS")
    started = time.perf_counter()
    report = await pipeline.load()
    seconds = time.perf_counter() - started
    await store.close()
    if len(index) != users or report.rejected:
        raise RuntimeError(f"loaded {len(index)} users ({report.rejected} rejected), expected {users}")
    return {"seconds": seconds, "retained_kib": memory_kib("VmRSS") - rss_before}


def load_folder(data_dir: str, users: int) -> dict[str, Any]:
    """Time ``Pipeline(...).load()`` from the folder store, with the service's defaults."""
    return asyncio.run(_load(FolderStore(Path(data_dir), BUCKET, PREFIX), users))


def load_s3(endpoint: str, bucket: str, users: int) -> dict[str, Any]:
    """Time ``Pipeline(...).load()`` from S3, with the service's defaults."""
    return asyncio.run(_load(S3Store(endpoint, bucket, PREFIX), users))


def _read_files(paths: list[str]) -> int:
    """Total bytes of ``paths``, read with the fewest Python objects (no file objects)."""
    size = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            while chunk := os.read(fd, 1 << 16):
                size += len(chunk)
        finally:
            os.close(fd)
    return size


def load_floor_folder(data_dir: str, users: int) -> dict[str, Any]:
    """List the source folder and read every CSV's bytes on the store's number of threads."""
    source = os.path.join(data_dir, BUCKET, PREFIX)
    started = time.perf_counter()
    with os.scandir(source) as entries:
        names = [entry.name for entry in entries if entry.is_file()]
    paths = [os.path.join(source, name) for name in names if name[-4:].lower() == ".csv"]
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    with ThreadPoolExecutor(folder_threads()) as pool:
        size = sum(pool.map(_read_files, chunks))
    seconds = time.perf_counter() - started
    if len(paths) != users:
        raise RuntimeError(f"found {len(paths)} CSVs, expected {users}")
    return {"seconds": seconds, "objects": len(names), "bytes": size}


def load_least_folder(data_dir: str, users: int) -> dict[str, Any]:
    """Time :func:`least_load`: the least Python work a load from the folder does."""
    gc.disable()  # as the service's load
    started = time.perf_counter()
    index = least_load(data_dir)
    seconds = time.perf_counter() - started
    gc.enable()
    if len(index) != users:
        raise RuntimeError(f"loaded {len(index)} users, expected {users}")
    return {"seconds": seconds}


def least_load(data_dir: str) -> UserIndex:
    """The floor's I/O plus what every user costs at the least, for valid demo files only.

    One loop on one thread (no hops, no batches, no GIL shared with anyone) lists the folder,
    opens, fstats (a version is kept for rescans) and reads each CSV, parses it with the service's
    parser and makes its record, then fills a ``UserIndex``. No catalog of keys, no checks for
    conflicts, errors or other kinds of file: what the service does beyond this is its own cost.
    """
    source = os.path.join(data_dir, BUCKET, PREFIX)
    csvs: dict[str, str] = {}  # user_id -> file name
    images: dict[str, str] = {}  # user_id -> key
    with os.scandir(source) as entries:
        for entry in entries:
            name = entry.name
            suffix = name[-4:].lower()
            if suffix == ".csv":
                csvs[name[:-4]] = name
            elif suffix == ".png":
                images[name[:-4]] = PREFIX + name
    now_ms = time.time_ns() // 1_000_000
    versions: dict[str, tuple[int, int]] = {}
    records: dict[str, UserRecord] = {}
    for user_id, name in csvs.items():
        fd = os.open(f"{source}/{name}", os.O_RDONLY)
        try:
            st = os.fstat(fd)
            data = os.read(fd, st.st_size + 1)
        finally:
            os.close(fd)
        versions[name] = (st.st_size, st.st_mtime_ns)
        records[user_id] = UserRecord(user_id, *parse_user_csv(data, now_ms=now_ms), images.get(user_id))
    index = UserIndex()
    index.assign(records)
    return index


async def _cheapest_s3(endpoint: str, bucket: str, users: int) -> dict[str, Any]:
    # The least a client can do: one aiohttp session, requests signed with the day's key, keys
    # found in each listing page by a regex, bodies read and dropped; the store's concurrency.
    credentials = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    signer = Signer(credentials, "us-east-1", urlsplit(endpoint).netloc)
    concurrency = S3Store(endpoint, bucket, PREFIX).concurrency
    path = f"/{bucket}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        started = time.perf_counter()
        keys: list[str] = []
        params = {"list-type": "2", "prefix": PREFIX, "delimiter": "/"}
        while True:
            query = canonical_query(params)
            url = URL(f"{endpoint}{path}?{query}", encoded=True)
            async with session.get(url, headers=signer.headers("GET", path, query)) as response:
                page = await response.text()
            keys.extend(re.findall(r"<Key>([^<]*)</Key>", page))
            token = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", page)
            if token is None:
                break
            params["continuation-token"] = html.unescape(token[1])
        csvs = [key for key in keys if key[-4:].lower() == ".csv"]
        slots = asyncio.Semaphore(concurrency)

        async def get(key: str) -> int:
            key_path = f"{path}/{quote_key(key)}"
            async with (
                slots,
                session.get(URL(endpoint + key_path, encoded=True), headers=signer.headers("GET", key_path)) as r,
            ):
                if r.status != 200:
                    raise RuntimeError(f"GET {key}: {r.status}")
                return len(await r.read())

        size = sum(await asyncio.gather(*(get(key) for key in csvs)))
        return _floor_result(time.perf_counter() - started, keys, csvs, users, size)


async def _botocore_s3(endpoint: str, bucket: str, users: int) -> dict[str, Any]:
    # aiobotocore as the service used it before: the same concurrency, retries and checksums.
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    concurrency = S3Store(endpoint, bucket, PREFIX).concurrency
    config = AioConfig(
        max_pool_connections=concurrency,
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = get_session()
    async with session.create_client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config) as s3:
        started = time.perf_counter()
        keys: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=PREFIX, Delimiter="/"):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        csvs = [key for key in keys if key[-4:].lower() == ".csv"]
        slots = asyncio.Semaphore(concurrency)

        async def get(key: str) -> int:
            async with slots:
                response = await s3.get_object(Bucket=bucket, Key=key)
                async with response["Body"] as body:
                    return len(await body.read())

        size = sum(await asyncio.gather(*(get(key) for key in csvs)))
        return _floor_result(time.perf_counter() - started, keys, csvs, users, size)


def _floor_result(seconds: float, keys: list[str], csvs: list[str], users: int, size: int) -> dict[str, Any]:
    if len(csvs) != users:
        raise RuntimeError(f"listed {len(csvs)} CSVs, expected {users}")
    return {"seconds": seconds, "objects": len(keys), "bytes": size}


def load_floor_s3(endpoint: str, bucket: str, users: int) -> dict[str, Any]:
    """List the prefix and GET every CSV with the cheapest client: aiohttp and a signer alone."""
    return asyncio.run(_cheapest_s3(endpoint, bucket, users))


def load_botocore_s3(endpoint: str, bucket: str, users: int) -> dict[str, Any]:
    """List the prefix and GET every CSV with aiobotocore alone, at the store's concurrency."""
    return asyncio.run(_botocore_s3(endpoint, bucket, users))
