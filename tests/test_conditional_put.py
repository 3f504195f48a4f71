"""Conditional writes (Store.write_if): what fences output.csv against a deposed writer.

The store's tests run on both stores: the folder and a bucket of the session's SeaweedFS server,
where the server itself checks ``If-Match`` on the PUT. The write gate's (WriteGate: how the
elected writer uses them) run on a folder.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import S3Bucket, SpyStore, wait_until

from userdata.index import UserIndex
from userdata.records import UserRecord
from userdata.sinks.output_csv import OutputWriter, parse_output
from userdata.sinks.write_gate import NotWriting, WriteGate
from userdata.stores import ABSENT, PreconditionFailed, Store, content_etag
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


async def test_absent_writes_only_where_there_is_no_object(target: Target) -> None:
    assert await target.store.write_if(KEY, b"first\n", ABSENT) == target.etag() == content_etag(b"first\n")
    with pytest.raises(PreconditionFailed):
        await target.store.write_if(KEY, b"second\n", ABSENT)
    assert target.get() == b"first\n"
    # an earlier try of this very write landed: no failure
    assert await target.store.write_if(KEY, b"first\n", ABSENT) == content_etag(b"first\n")
    assert target.leftovers() == []


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


async def test_etag_is_none_without_an_object_and_what_write_if_compares_with_one(target: Target) -> None:
    assert await target.store.etag(KEY) is None
    written = await target.store.write_if(KEY, b"one\n", None)
    assert await target.store.etag(KEY) == written == target.etag()
    target.put(b"someone else's\n")
    assert await target.store.etag(KEY) == target.etag() == content_etag(b"someone else's\n")


# The write gate (what the elected writer writes output.csv and its hint through), on a folder.


class Recording(SpyStore):
    """Records the writes that reach the store; ``meanwhile`` runs once, right after a look (the
    write of another replica landing between the gate's look and its PUT); ``refuse``: every
    conditional write fails, as on a store that does not take the ETags it gives."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        #: the ETag each write_if was conditional on (None: unconditional)
        self.conditions: list[str | None] = []
        #: the event loop's (monotonic) time of each write_if
        self.tried_at: list[float] = []
        self.plain = 0
        self.meanwhile: Callable[[], object] | None = None
        self.refuse = False

    async def etag(self, key: str) -> str | None:
        seen = await super().etag(key)
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return seen

    async def write(self, key: str, data: bytes) -> None:
        self.plain += 1
        await super().write(key, data)

    async def write_if(self, key: str, data: bytes, etag: str | None) -> str:
        self.conditions.append(etag)
        self.tried_at.append(asyncio.get_running_loop().time())
        if self.refuse and etag is not None:
            raise PreconditionFailed(key, etag)
        return await super().write_if(key, data, etag)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Recording, Path]:
    """A recording folder store, and the path of KEY in it (its parent made)."""
    path = tmp_path / "bucket" / KEY
    path.parent.mkdir(parents=True)
    return Recording(FolderStore(tmp_path, "bucket", "src/")), path


async def test_a_new_writer_finding_its_bytes_writes_nothing_and_the_next_write_is_conditional_on_them(
    folder: tuple[Recording, Path],
) -> None:
    store, path = folder
    path.write_bytes(b"same\n")  # the predecessor's
    gate = WriteGate(store, conditional=True)
    gate.forget()  # won
    assert await gate.write(KEY, b"same\n") is False
    assert store.looks == [KEY] and store.conditions == [] and store.plain == 0
    path.write_bytes(b"another replica's\n")
    with pytest.raises(PreconditionFailed):
        await gate.write(KEY, b"next\n")
    assert store.conditions == [content_etag(b"same\n")]
    assert path.read_bytes() == b"another replica's\n"
    # Refused: the next try looks again, and is conditional on what it sees; the one after that
    # is conditional on what it wrote, without a look.
    assert await gate.write(KEY, b"next\n") is True
    assert await gate.write(KEY, b"third\n") is True
    assert store.looks == [KEY, KEY]
    assert store.conditions[1:] == [content_etag(b"another replica's\n"), content_etag(b"next\n")]
    assert path.read_bytes() == b"third\n"


async def test_a_new_writer_finding_other_bytes_writes_on_their_etag_not_over_a_write_landing_after_its_look(
    folder: tuple[Recording, Path],
) -> None:
    store, path = folder
    path.write_bytes(b"old\n")
    store.meanwhile = lambda: path.write_bytes(b"another replica's\n")
    gate = WriteGate(store, conditional=True)
    with pytest.raises(PreconditionFailed):
        await gate.write(KEY, b"ours\n")
    assert store.conditions == [content_etag(b"old\n")]
    assert path.read_bytes() == b"another replica's\n"
    assert await gate.write(KEY, b"ours\n") is True
    assert store.conditions[1:] == [content_etag(b"another replica's\n")]
    assert path.read_bytes() == b"ours\n"


async def test_a_new_writer_finding_no_object_writes_it_only_if_there_is_still_none(
    folder: tuple[Recording, Path],
) -> None:
    store, path = folder
    assert await WriteGate(store, conditional=True).write(KEY, b"first\n") is True
    assert store.conditions == [ABSENT] and path.read_bytes() == b"first\n"
    store.meanwhile = lambda: path.write_bytes(b"another replica's\n")
    path.unlink()
    gate = WriteGate(store, conditional=True)
    with pytest.raises(PreconditionFailed):
        await gate.write(KEY, b"ours\n")
    assert path.read_bytes() == b"another replica's\n"


async def test_a_store_refusing_the_etag_it_gives_is_never_written_unconditionally(
    folder: tuple[Recording, Path],
) -> None:
    # A refusal of the ETag a look gave, and the same ETag seen again, may be a store that never
    # takes it, or another replica's write that brought the bytes back: the write fails again,
    # conditional again, and the object is left as it is.
    store, path = folder
    path.write_bytes(b"old\n")
    store.refuse = True
    gate = WriteGate(store, conditional=True)
    for _ in range(2):
        with pytest.raises(PreconditionFailed):
            await gate.write(KEY, b"ours\n")
    assert store.conditions == [content_etag(b"old\n")] * 2 and store.plain == 0
    assert path.read_bytes() == b"old\n"


async def test_a_write_refused_and_the_object_back_to_bytes_seen_before_is_still_conditional(
    folder: tuple[Recording, Path],
) -> None:
    store, path = folder
    gate = WriteGate(store, conditional=True)
    assert await gate.write(KEY, b"x\n") is True  # ours
    path.write_bytes(b"y\n")  # another replica's
    with pytest.raises(PreconditionFailed):
        await gate.write(KEY, b"ours again\n")
    path.write_bytes(b"x\n")  # and it went back to what we once wrote
    assert await gate.write(KEY, b"ours again\n") is True
    assert store.conditions == [ABSENT, content_etag(b"x\n"), content_etag(b"x\n")]
    assert None not in store.conditions and store.plain == 0


async def test_without_an_election_the_gate_writes_plainly_even_the_same_bytes(folder: tuple[Recording, Path]) -> None:
    # Not rewriting unchanged bytes is then the output writer's business (its digests), as before.
    store, path = folder
    path.write_bytes(b"same\n")
    assert await WriteGate(store).write(KEY, b"same\n") is True
    assert store.plain == 1 and store.looks == [] and store.conditions == []


async def test_a_replica_that_may_not_write_does_not_even_look(folder: tuple[Recording, Path]) -> None:
    store, path = folder
    for gate in (WriteGate(store, lambda: False, conditional=True), WriteGate(store, read_only=True)):
        with pytest.raises(NotWriting):
            await gate.write(KEY, b"ours\n")
    assert store.looks == [] and store.conditions == [] and store.plain == 0 and not path.exists()


async def test_an_output_writer_taking_over_unchanged_data_writes_nothing_and_a_change_conditionally(
    folder: tuple[Recording, Path],
) -> None:
    store, path = folder
    index = UserIndex()
    index.apply([UserRecord("1", "Ann", "Lee", 0, None)])
    assert await OutputWriter(store.store, index, KEY).flush()  # the predecessor's
    before = path.read_bytes()
    successor = OutputWriter(store, index, KEY)
    successor.gate = WriteGate(store, conditional=True)
    successor.rewrite()  # won
    assert successor.dirty
    assert await successor.flush() and successor.writes == 0 and not successor.dirty
    assert store.looks == [KEY] and store.conditions == [] and store.plain == 0
    index.apply([UserRecord("2", "Bob", "Ng", 0, None)])
    assert await successor.flush() and successor.writes == 1
    assert store.conditions == [content_etag(before)] and store.looks == [KEY]
    assert [r.user_id for r in parse_output(path.read_bytes())] == ["1", "2"]


async def test_an_output_writer_refused_tries_again_after_its_backoff_and_then_lands(
    folder: tuple[Recording, Path],
) -> None:
    # A refusal asks for everything to be compared with the store again (rewrite()), which must
    # not mean at once: a conflict that lasts would be tried again every settle delay, for good.
    store, path = folder
    path.write_bytes(b"old\n")
    store.meanwhile = lambda: path.write_bytes(b"someone else's\n")  # lands after the look
    index = UserIndex()
    writer = OutputWriter(store, index, KEY, settle=0.01, max_delay=0.05, retry_delays=(0.2,))
    writer.gate = WriteGate(store, conditional=True)
    task = asyncio.create_task(writer.run())
    try:
        writer.notify(index.apply([UserRecord("1", "Ann", "Lee", 0, None)]))
        await wait_until(lambda: writer.writes == 1, message="for the write after the refusal")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert store.conditions == [content_etag(b"old\n"), content_etag(b"someone else's\n")]
    assert writer.failures == 1
    first, second = store.tried_at
    assert second - first >= 0.2 - 0.02  # the backoff waited for
