"""Conditional writes (Store.write_if): what fences output.csv against a deposed writer.

Each test runs on both stores: the folder and a bucket of the session's SeaweedFS server, where
the server itself checks ``If-Match`` on the PUT.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import S3Bucket, SpyStore

from userdata.stores import PreconditionFailed, Store, content_etag
from userdata.stores.folder import FolderStore
from userdata.stores.s3 import S3Store

KEY = "processed_data/output.csv"


@dataclass
class Target:
    """A store under test, and a way around it: what another writer (or a reader) does directly."""

    store: Store
    root: Path | None = None
    bucket: S3Bucket | None = None

    def put(self, data: bytes) -> None:
        if self.bucket is not None:
            self.bucket.put(KEY, data)
        else:
            assert self.root is not None
            (self.root / KEY).parent.mkdir(parents=True, exist_ok=True)
            (self.root / KEY).write_bytes(data)

    def get(self) -> bytes | None:
        if self.bucket is not None:
            return self.bucket.get(KEY)
        assert self.root is not None
        path = self.root / KEY
        return path.read_bytes() if path.exists() else None

    def delete(self) -> None:
        if self.bucket is not None:
            self.bucket.delete(KEY)
        else:
            assert self.root is not None
            (self.root / KEY).unlink()

    def etag(self) -> str:
        """The object's ETag as the store's server reports it (the folder: the hash of the file)."""
        if self.bucket is not None:
            return str(self.bucket.client.head_object(Bucket=self.bucket.name, Key=KEY)["ETag"])
        data = self.get()
        assert data is not None
        return content_etag(data)

    def leftovers(self) -> list[str]:
        if self.root is None:
            return []
        return sorted(p.name for p in (self.root / KEY).parent.iterdir() if p.name != "output.csv")


@pytest.fixture(params=["folder", "s3"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "folder":
        yield Target(FolderStore(tmp_path, "bucket", "src/"), root=tmp_path / "bucket")
        return
    bucket: S3Bucket = request.getfixturevalue("s3")
    store = S3Store(bucket.endpoint, bucket.name, bucket.prefix)
    await store.open()
    try:
        yield Target(store, bucket=bucket)
    finally:
        await store.close()


async def test_each_write_is_conditional_on_the_etag_of_the_last(target: Target) -> None:
    first = await target.store.write_if(KEY, b"one\n", None)  # unconditional: the first after winning
    assert first == target.etag() == content_etag(b"one\n")
    second = await target.store.write_if(KEY, b"two\n", first)
    assert second == target.etag() != first
    assert target.get() == b"two\n"
    assert target.leftovers() == []


async def test_a_write_on_a_stale_etag_fails_and_leaves_the_object_as_it_was(target: Target) -> None:
    # The deposed writer's view: it wrote "mine", then the new writer replaced it.
    mine = await target.store.write_if(KEY, b"mine\n", None)
    target.put(b"the new writer's\n")
    with pytest.raises(PreconditionFailed) as raised:
        await target.store.write_if(KEY, b"stale\n", mine)
    assert raised.value.key == KEY and raised.value.etag == mine
    assert target.get() == b"the new writer's\n"
    assert target.leftovers() == []


async def test_a_write_on_an_etag_of_an_object_since_deleted_fails(target: Target) -> None:
    mine = await target.store.write_if(KEY, b"mine\n", None)
    target.delete()
    with pytest.raises(PreconditionFailed):
        await target.store.write_if(KEY, b"stale\n", mine)
    assert target.get() is None


async def test_a_stale_etag_on_an_object_holding_these_very_bytes_is_no_failure(target: Target) -> None:
    # As when a PUT is tried again after its answer was lost: the first try landed.
    mine = await target.store.write_if(KEY, b"old\n", None)
    target.put(b"same\n")
    assert await target.store.write_if(KEY, b"same\n", mine) == target.etag() == content_etag(b"same\n")
    assert target.get() == b"same\n"


async def test_none_writes_whatever_the_object_holds(target: Target) -> None:
    target.put(b"someone else's\n")
    assert await target.store.write_if(KEY, b"ours\n", None) == target.etag()
    assert target.get() == b"ours\n"


async def test_of_writers_racing_on_one_etag_exactly_one_lands(target: Target) -> None:
    # SeaweedFS 4.48 takes the object's lock for a conditional PUT: each loser's 412 comes about
    # a second late while another holds it, hence few rounds.
    for round_ in range(2):
        base = await target.store.write_if(KEY, f"base {round_}\n".encode(), None)
        bodies = [f"writer {i} of round {round_}\n".encode() * 500 for i in range(4)]
        outcomes: list[Any] = await asyncio.gather(
            *(target.store.write_if(KEY, body, base) for body in bodies), return_exceptions=True
        )
        landed = [body for body, outcome in zip(bodies, outcomes, strict=True) if isinstance(outcome, str)]
        assert len(landed) == 1, outcomes
        assert all(isinstance(o, (str, PreconditionFailed)) for o in outcomes), outcomes
        assert target.get() == landed[0]


async def test_the_unconditional_write_is_still_whole(target: Target) -> None:
    await target.store.write(KEY, b"plain\n")
    assert target.get() == b"plain\n"
    assert await target.store.write_if(KEY, b"next\n", content_etag(b"plain\n")) == target.etag()


async def test_the_spy_store_passes_conditional_writes_through(tmp_path: Path) -> None:
    spy = SpyStore(FolderStore(tmp_path, "bucket", "src/"))
    etag = await spy.write_if(KEY, b"one\n", None)
    with pytest.raises(PreconditionFailed):
        await spy.write_if(KEY, b"two\n", content_etag(b"other\n"))
    assert await spy.write_if(KEY, b"two\n", etag) == content_etag(b"two\n")
