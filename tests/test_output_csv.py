import asyncio
import contextlib
import csv
import io
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from helpers import fast_settings, wait_until

from userdata.index import UserIndex
from userdata.records import InvalidRecord, UserRecord
from userdata.sinks import output_csv, snapshot
from userdata.sinks.output_csv import OutputWriter, parse_output, render_output
from userdata.sinks.spool import Spool
from userdata.stores.folder import FolderStore

RECORDS = [
    UserRecord("0001", "Zoë", "O'Brien", -5, "src-data/0001.png"),
    UserRecord("10", 'Quote "Q"', "Smith, Jr", 0, None),
    UserRecord("9", "Line\nBreak", "Lee", 1_700_000_000_000, None),
]


def test_render_writes_the_header_and_standard_quoting_without_bom():
    data = render_output(RECORDS)
    assert data.startswith(b"user_id,first_name,last_name,birthts,img_path\n")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[1:] == [
        ["0001", "Zoë", "O'Brien", "-5", "src-data/0001.png"],
        ["10", 'Quote "Q"', "Smith, Jr", "0", ""],
        ["9", "Line\nBreak", "Lee", "1700000000000", ""],
    ]


def test_parse_reads_back_what_render_wrote():
    assert parse_output(render_output(RECORDS)) == RECORDS
    assert parse_output(b"") == []


@pytest.mark.parametrize(
    "data",
    [
        b"id,name\n1,a\n",
        b"user_id,first_name,last_name,birthts,img_path\n1,A,B,notanumber,\n",
        b"user_id,first_name,last_name,birthts,img_path\n1,A,B\n",
        b"user_id,first_name,last_name,birthts,img_path\n1,,B,5,\n",
        b"\xff\xfe",
    ],
    ids=["other-header", "bad-birthts", "short-row", "empty-name", "not-utf8"],
)
def test_parse_rejects_what_this_service_did_not_write(data):
    with pytest.raises(InvalidRecord):
        parse_output(data)


async def test_a_corrupt_output_csv_is_ignored_on_start_and_replaced(start_service, data_dir, write_user, output_path):
    output_path.parent.mkdir(parents=True)
    output_path.write_bytes(b"garbage,that,is\nnot,ours,\n")
    write_user("7")
    service = await start_service(fast_settings(data_dir))
    assert await service.user_ids() == ["7"]
    await wait_until(lambda: output_path.read_bytes().startswith(b"user_id,"))


async def test_a_failing_write_degrades_health_and_is_retried(start_service, data_dir, write_user, output_path):
    output_path.parent.parent.mkdir(parents=True, exist_ok=True)
    output_path.parent.write_text("a file where the output folder should be")
    write_user("7")
    service = await start_service(fast_settings(data_dir))
    await wait_until(lambda: service.output.problem() is not None)
    health = await service.get("/health")
    assert health["status"] == "degraded" and "output.csv" in health["cause"], health
    assert await service.user_ids() == ["7"]  # queries are unaffected
    output_path.parent.unlink()
    await wait_until(lambda: output_path.exists())
    assert (await service.get("/health"))["status"] == "ok"


async def test_nothing_is_written_before_anything_changed(tmp_path):
    store = FolderStore(tmp_path, "b", "src/")
    writer = OutputWriter(store, UserIndex(), "out/output.csv")
    assert await writer.restore() == ([], None)
    index_version_written = await writer.flush()
    assert index_version_written and writer.writes == 1  # an empty index is still an output
    assert await writer.flush() and writer.writes == 1


@contextlib.asynccontextmanager
async def running(writer: OutputWriter) -> AsyncIterator[None]:
    task = asyncio.create_task(writer.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_run_retries_a_failed_write_no_sooner_than_the_delay_it_logs(tmp_path, caplog):
    blocked = tmp_path / "b" / "out"
    blocked.parent.mkdir()
    blocked.write_text("a file where the output folder should be")
    index = UserIndex()
    store = FolderStore(tmp_path, "b", "src/")
    writer = OutputWriter(store, index, "out/output.csv", settle=0.01, max_delay=0.05, retry_delays=(0.2,))
    caplog.set_level(logging.INFO, "userdata.sinks.output_csv")
    async with running(writer):
        writer.notify(index.apply(RECORDS))
        await wait_until(lambda: writer.problem() is not None)
        assert "cannot write out/output.csv" in str(writer.problem())
        blocked.unlink()
        await wait_until(lambda: writer.writes == 1)
        assert writer.problem() is None
    assert (tmp_path / "b" / "out" / "output.csv").read_bytes() == render_output(RECORDS)
    failed = [r for r in caplog.records if "trying again in" in r.getMessage()][-1]
    wrote = next(r for r in caplog.records if r.getMessage().startswith("wrote "))
    delay = failed.args[-1]
    assert 0.2 * 0.9 <= delay <= 0.2 * 1.1, failed.getMessage()  # spread by the jitter
    assert wrote.created - failed.created >= delay - 0.02  # the delay logged is the one waited


#: Values csv must quote (delimiter, quote, LF), keep as they are (spaces, non-ASCII) or both.
AWKWARD = ["Smith, Jr", 'Quote "Q"', "Line\nBreak", "CRLF\r\n", " padded ", "Zoë", "李", '🙂,"', "'", "x"]


def many_records(n: int, values: list[str] = AWKWARD) -> list[UserRecord]:
    rng = random.Random(7)
    return [
        UserRecord(
            str(rng.randrange(10**6)) + rng.choice(["", "a", "-b", ".c"]),
            rng.choice(values) + str(i),
            rng.choice(values),
            rng.randrange(-(10**13), 10**12),
            rng.choice([None, f"src-data/{i}.png", f"src-data/{i}, x.png"]),
        )
        for i in range(n)
    ]


def set_slices(monkeypatch: pytest.MonkeyPatch, rows: int | None) -> None:
    """Slices of ``rows`` rows however long they take; None: sized by time from one of 100 rows."""
    monkeypatch.setattr(snapshot, "_SLICE", 100 if rows is None else rows)
    if rows is not None:
        monkeypatch.setattr(snapshot, "_SLICE_BOUNDS", (rows, rows))


SLICES = pytest.mark.parametrize("slice_rows", [None, 7, 1], ids=["timed", "7", "1"])


@SLICES
async def test_a_flush_writes_exactly_what_render_output_gives(tmp_path, monkeypatch, slice_rows):
    # flush() renders in slices on the event loop, spooling as it goes; the bytes must be those
    # of render_output over the whole index.
    set_slices(monkeypatch, slice_rows)
    index = UserIndex()
    # a bare CR makes its row quoted whole: the bytes must still be those of render_output
    index.apply(many_records(300 if slice_rows == 1 else 3000, [*AWKWARD, "Car\rriage"]))
    store = FolderStore(tmp_path, "b", "src/")
    writer = OutputWriter(store, index, "out/output.csv")
    assert await writer.flush() and writer.writes == 1
    expected = render_output(index.records())
    assert (tmp_path / "b" / "out" / "output.csv").read_bytes() == expected
    assert await writer.flush() and writer.writes == 1  # nothing changed


@SLICES
async def test_a_restored_output_csv_is_not_written_again_when_the_index_renders_the_same(
    tmp_path, monkeypatch, slice_rows
):
    # restore() digests the file whole, flush() slice by slice: the digests must agree
    set_slices(monkeypatch, slice_rows)
    index = UserIndex()
    index.apply(many_records(300 if slice_rows == 1 else 3000))
    store = FolderStore(tmp_path, "b", "src/")
    assert await OutputWriter(store, index, "out/output.csv").flush()
    again = OutputWriter(store, index, "out/output.csv")
    assert (await again.restore()).records == index.records()
    assert await again.flush() and again.writes == 0


async def test_a_flush_of_an_empty_index_writes_the_header_only(tmp_path):
    writer = OutputWriter(FolderStore(tmp_path, "b", "src/"), UserIndex(), "out/output.csv")
    assert await writer.flush()
    assert (
        (tmp_path / "b" / "out" / "output.csv").read_bytes()
        == render_output([])
        == b",".join(s.encode() for s in output_csv.HEADER) + b"\n"
    )


@pytest.mark.parametrize(
    ("rows", "seconds", "expected"),
    [
        pytest.param(1000, 0.002, 500, id="slow-halves"),
        pytest.param(1000, 0.0001, 2000, id="fast-at-most-doubles"),
        pytest.param(1000, 0.0008, 1250, id="a-little-fast"),
        pytest.param(1000, 0.0, 2000, id="no-time-measured"),
        pytest.param(100, 1.0, 50, id="very-slow-keeps-the-least"),
        pytest.param(40_000, 0.0001, 50_000, id="very-fast-keeps-the-most"),
    ],
)
def test_slices_are_sized_to_take_about_a_millisecond(rows: int, seconds: float, expected: int) -> None:
    assert snapshot._SLICE_SECONDS == 0.001 and snapshot._SLICE_BOUNDS == (50, 50_000)
    assert snapshot._next_slice(rows, seconds) == expected


async def test_a_change_during_a_flush_is_written_by_the_next_one(tmp_path, monkeypatch):
    set_slices(monkeypatch, 10)
    index = UserIndex()
    before = {r.user_id: r for r in many_records(2000)}
    index.apply(before.values())
    writer = OutputWriter(FolderStore(tmp_path, "b", "src/"), index, "out/output.csv", settle=0.01, max_delay=0.05)
    path = tmp_path / "b" / "out" / "output.csv"
    ids = sorted(before)
    removed = ids[::7]
    updated = [UserRecord(i, "New", "Name", 1, None) for i in ids[3::11]]
    added = [UserRecord(f"{i}~new", "Added", "Later", 2, None) for i in ids[5::13]]

    async def change_while_rendering() -> None:
        for _ in range(50):  # some slices into the render
            await asyncio.sleep(0)
        writer.notify(index.apply(updated[: len(updated) // 2], removed[: len(removed) // 2]))
        for _ in range(50):
            await asyncio.sleep(0)
        # a bulk change: the index replaces its sorted list of ids
        sorted_ids = index._sorted_ids
        writer.notify(index.apply([*updated[len(updated) // 2 :], *added], removed[len(removed) // 2 :]))
        assert index._sorted_ids is not sorted_ids

    changer = asyncio.create_task(change_while_rendering())
    assert await writer.flush()
    await changer
    # The file mixes old and new records, but every user is there at most once, in order, with
    # one of its records; and every user present throughout is there.
    after = {r.user_id: r for r in index.records()}
    written = parse_output(path.read_bytes())
    written_ids = [r.user_id for r in written]
    assert written_ids == sorted(set(written_ids))
    assert all(r in (before.get(r.user_id), after.get(r.user_id)) for r in written)
    assert set(before) & set(after) <= set(written_ids)
    assert written != index.records()
    # the changes notified during that flush make run() write the index as it is now
    async with running(writer):
        await wait_until(lambda: writer.writes == 2)
    assert path.read_bytes() == render_output(index.records())


class CountingExecutor(ThreadPoolExecutor):
    submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize("unchanged", [False, True], ids=["new-bytes", "same-bytes"])
def test_a_flush_cancelled_before_its_thread_runs_leaves_no_file_open(tmp_path, monkeypatch, unchanged):
    # Cancelling a task that awaits asyncio.to_thread drops the thread's work if it has not
    # started (every worker busy): the spool it was to close must be closed all the same.
    spools: list[Spool] = []

    class KeptSpool(Spool):
        def __init__(self) -> None:
            super().__init__()
            spools.append(self)

    monkeypatch.setattr(snapshot, "Spool", KeptSpool)

    async def flush_cancelled_while_the_worker_is_busy() -> None:
        loop = asyncio.get_running_loop()
        worker = CountingExecutor(max_workers=1)
        loop.set_default_executor(worker)  # this loop's own: asyncio.run shuts it down
        index = UserIndex()
        index.apply(RECORDS)
        store = FolderStore(tmp_path, "b", "src/")
        writer = OutputWriter(store, index, "out/output.csv")
        if unchanged:
            await store.write("out/output.csv", render_output(index.records()))
            assert (await writer.restore()).records == index.records()
        release = threading.Event()
        blocker = loop.run_in_executor(None, release.wait)
        try:
            queued = worker.submitted
            task = asyncio.create_task(writer.flush())
            await wait_until(lambda: worker.submitted > queued, message="flush never queued its thread")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled()
            # the worker is still blocked: only the cancelled flush can have closed it
            assert len(spools) == 1 and spools[0].closed
        finally:
            release.set()
            await blocker

    asyncio.run(flush_cancelled_while_the_worker_is_busy())


async def test_a_write_left_running_by_a_cancelled_run_lands_before_the_next_one(tmp_path):
    # The service stopping cancels run() while a write may be under way in a thread; the final
    # flush must not race it, or the older file could replace the newer one.
    store = FolderStore(tmp_path, "b", "src/")
    started, release = asyncio.Event(), asyncio.Event()
    order: list[bytes] = []

    class Slow:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        async def write(self, key: str, data: bytes) -> None:
            if not started.is_set():  # the first write is held until released
                started.set()
                await release.wait()
            await store.write(key, data)
            order.append(data)

    index = UserIndex()
    writer = OutputWriter(Slow(), index, "out/output.csv", settle=0.01, max_delay=0.05)
    task = asyncio.create_task(writer.run())
    writer.notify(index.apply(RECORDS[:1]))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    writer.notify(index.apply(RECORDS[1:]))
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0)
    assert not flushing.done() and order == []  # the flush waits for the write under way
    release.set()
    assert await flushing
    assert order == [render_output(RECORDS[:1]), render_output(RECORDS)]
    assert (tmp_path / "b" / "out" / "output.csv").read_bytes() == render_output(RECORDS)
