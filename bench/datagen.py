"""Benchmark data: demo users as files or S3 objects, or as records for building an index directly."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import random
import sys
from collections.abc import Iterator
from pathlib import Path

from userdata.demo import FIRST_ID, FIRST_NAMES, LAST_NAMES, MAX_BIRTHTS, MIN_BIRTHTS, PNG_SHARE, iter_demo
from userdata.records import UserRecord
from userdata.stores.s3 import S3Store
from userdata.stores.s3_http import Answer

__all__ = ("BUCKET", "OLD_QUERY", "PREFIX", "make_records", "upload_users", "write_users")

BUCKET = "datalake"
PREFIX = "src-data/"
#: Users of make_records born 1921-1925: about 100 of them, whatever the size; OLD_QUERY finds them.
OLD_USERS = 100
OLD_QUERY = "min_age=100"
_OLD_FROM = calendar.timegm((1921, 1, 1, 0, 0, 0)) * 1000
_OLD_TO = calendar.timegm((1926, 1, 1, 0, 0, 0)) * 1000 - 1


def write_users(data_dir: Path, users: int, seed: int = 0) -> Path:
    """Write ``users`` demo users (two thirds with a PNG) under ``<data_dir>/<bucket>/<prefix>``.

    The files are those of ``userdata.demo``, written in place (no temporary name and rename, as
    nothing watches the folder yet). Returns the source folder.
    """
    source = data_dir / BUCKET / PREFIX
    source.mkdir(parents=True, exist_ok=True)
    for name, data in iter_demo(users, seed):
        with open(source / name, "wb") as f:
            f.write(data)
    return source


async def upload_users(endpoint: str, bucket: str, users: int, seed: int = 0, concurrency: int = 64) -> int:
    """PUT the demo users' objects into ``bucket`` (created if missing); returns the object count."""
    store = S3Store(endpoint, bucket, PREFIX, concurrency=concurrency, max_attempts=8)
    await store.open()
    try:
        with contextlib.suppress(Answer):  # BucketAlreadyOwnedByYou
            await store.create_bucket()
        files = iter_demo(users, seed)

        async def put_some() -> int:
            count = 0
            for name, data in files:  # shared iterator: each worker takes the next object
                await store.write(PREFIX + name, data)
                count += 1
            return count

        return sum(await asyncio.gather(*(put_some() for _ in range(concurrency))))
    finally:
        await store.close()


def _fresh(text: str) -> str:
    # A name as parsing a file gives it: a str object of its own, then interned by
    # parse_user_csv, as the service does for every name it reads.
    return sys.intern(text.encode().decode())


def iter_records(users: int, seed: int = 1) -> Iterator[UserRecord]:
    """Records like the demo's (births 1940-2010, two thirds with an image), without files.

    One user in ``users // OLD_USERS`` is born in 1921-1925 instead, so :data:`OLD_QUERY`
    returns about :data:`OLD_USERS` records at any size.
    """
    rng = random.Random(seed)
    every = max(1, users // OLD_USERS)
    for i in range(users):
        user_id = str(FIRST_ID + i)
        old = i % every == every // 2
        birthts = rng.randint(_OLD_FROM, _OLD_TO) if old else rng.randint(MIN_BIRTHTS, MAX_BIRTHTS)
        img_path = f"{PREFIX}{user_id}.png" if rng.random() < PNG_SHARE else None
        yield UserRecord(user_id, _fresh(rng.choice(FIRST_NAMES)), _fresh(rng.choice(LAST_NAMES)), birthts, img_path)


def make_records(users: int, seed: int = 1) -> list[UserRecord]:
    """The records of :func:`iter_records` as a list."""
    return list(iter_records(users, seed))
