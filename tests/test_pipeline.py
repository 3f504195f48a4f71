"""The pipeline's two ways of following the store agree: a forced scan (the load) builds the
same catalog and index as the incremental path that applied every change as it came."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from pathlib import Path

import pytest
from helpers import RandomFolder, SpyStore, catalog_state, running, wait_until

from userdata import reconcile
from userdata.index import Diff, UserIndex
from userdata.objects import classify
from userdata.pipeline import Pipeline
from userdata.stores.folder import FolderStore

PREFIX = "src/"
USERS = [str(i) for i in range(12)]


def _users(tmp_path: Path, users: int) -> tuple[SpyStore, Pipeline, Path]:
    """A folder of ``users`` valid users, each with an image, and a pipeline for it."""
    source = tmp_path / "bucket" / PREFIX
    source.mkdir(parents=True)
    for i in range(users):
        (source / f"{i}.csv").write_text(f"first_name, last_name, birthts\nAnn{i}, Lee, {i * 10**10}\n")
        (source / f"{i}.png").write_bytes(b"\x89PNG")
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    return store, Pipeline(store, UserIndex(), PREFIX), source


@pytest.mark.parametrize("seed", range(6))
async def test_a_forced_scan_agrees_with_the_changes_applied_one_by_one(tmp_path: Path, seed: int) -> None:
    folder = RandomFolder(tmp_path, random.Random(seed))
    store = FolderStore(tmp_path, "bucket", PREFIX)
    following = Pipeline(store, UserIndex(), PREFIX)
    await following.load()
    task = asyncio.create_task(following.run())
    try:
        for _ in range(40):
            for _ in range(folder.rng.randint(1, 4)):
                folder.change()
            await following.rescan(force=False)  # reads only what changed
            fresh = Pipeline(store, UserIndex(), PREFIX)
            await fresh.load()
            assert catalog_state(fresh) == catalog_state(following)
            rejected = {key.split("/")[-1][:-4] for key in following.rejected}
            # A user whose CSV turned bad keeps its last good record; a fresh load never saw one.
            assert {r for r in following.index.records() if r.user_id not in rejected} == set(fresh.index.records())
            before = following.index.records()
            await following.rescan(force=True)
            assert catalog_state(fresh) == catalog_state(following)
            assert following.index.records() == before
    finally:
        task.cancel()


async def test_after_a_restart_the_index_and_the_catalog_share_one_copy_of_each_string(tmp_path: Path) -> None:
    import sys

    from userdata.sinks.output_csv import OutputWriter

    store, first, _ = _users(tmp_path, 5)
    await first.load()
    assert await OutputWriter(store, first.index, "out/output.csv").flush()

    restored = UserIndex()
    again = Pipeline(store, restored, PREFIX)
    report = await again.load(restore=OutputWriter(store, restored, "out/output.csv").restore)
    assert (report.added, report.updated, report.removed) == (0, 0, 0)  # the same users as restored
    assert restored.records() == first.index.records()
    catalog = again.reconciler.catalog
    catalog_ids = {id(user_id) for user_id in catalog.csv_keys}
    for record in restored.records():  # one copy of each string, whichever read it first
        assert id(record.user_id) in catalog_ids
        assert record.img_path is catalog.png_keys[record.user_id]
        assert record.first_name is sys.intern(record.first_name)


@pytest.mark.parametrize("force", [True, False], ids=["forced", "incremental"])
async def test_csvs_deleted_between_the_listing_and_the_read_are_gone(tmp_path: Path, force: bool) -> None:
    source = tmp_path / "bucket" / PREFIX
    source.mkdir(parents=True)

    def user(name: str, first: str) -> None:
        (source / name).write_text(f"first_name, last_name, birthts\n{first}, Lee, 0\n")

    user("1.csv", "One")
    user("2.csv", "Two")
    user("2.CSV", "Also Two")  # a conflict, until one of them goes
    user("3.csv", "Three")
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    pipeline = Pipeline(store, UserIndex(), PREFIX)
    if not force:
        await pipeline.load()
        assert [r.user_id for r in pipeline.index.records()] == ["1", "3"]  # 2 is a conflict
        user("1.csv", "Uno")  # changed, so an incremental rescan reads it
        user("2.csv", "Dos")
        user("2.CSV", "Dos too")

    def delete() -> None:
        (source / "1.csv").unlink(missing_ok=True)
        (source / "2.CSV").unlink(missing_ok=True)

    store.before_read = delete
    if force:
        await pipeline.load()
    else:
        task = asyncio.create_task(pipeline.run())  # rescans are run by the pipeline's task
        try:
            await pipeline.rescan(force=False)
        finally:
            task.cancel()
    store.before_read = None
    first = {r.user_id: r.first_name for r in pipeline.index.records()}
    assert first == {"2": "Two" if force else "Dos", "3": "Three"}
    assert not pipeline.rejected and not pipeline.reconciler.catalog.conflicts
    fresh = Pipeline(store, UserIndex(), PREFIX)
    await fresh.load()
    assert catalog_state(fresh) == catalog_state(pipeline)


async def test_an_incremental_rescan_costs_what_changed(tmp_path: Path) -> None:
    import threading

    store, pipeline, source = _users(tmp_path, 50)
    diffs: list[Diff] = []
    async with running(pipeline):
        pipeline.listeners.append(diffs.append)
        store.reads.clear()
        store.listing_threads.clear()
        version = pipeline.index.version
        report = await pipeline.rescan(force=False)
        assert (report.added, report.updated, report.removed) == (0, 0, 0)
        assert (store.reads, diffs, pipeline.index.version) == ([], [], version), "nothing changed, nothing read"
        threads = store.listing_threads
        assert threads and threading.main_thread() not in threads, "the comparison runs off the event loop"

        (source / "7.csv").write_text("first_name, last_name, birthts\nBob, Lee, 0\n")
        os.utime(source / "7.csv", ns=(1, 1))  # another version, whatever the clock's resolution
        (source / "8.png").unlink()
        (source / "9.csv").unlink()
        report = await pipeline.rescan(force=False)
    assert (report.added, report.updated, report.removed) == (0, 2, 1)
    assert store.reads == [PREFIX + "7.csv"]
    [diff] = diffs
    assert (sorted(r.user_id for r in diff.updated), diff.removed) == (["7", "8"], ["9"])
    assert pipeline.index.get("7").first_name == "Bob"  # type: ignore[union-attr]
    assert pipeline.index.get("8").img_path is None  # type: ignore[union-attr]
    assert "9" not in pipeline.index


async def test_a_forced_rescan_applies_what_changed_and_keeps_one_copy_of_each_string(tmp_path: Path) -> None:
    _, pipeline, source = _users(tmp_path, 20)
    diffs: list[Diff] = []
    async with running(pipeline):
        before = {record.user_id: record for record in pipeline.index.records()}
        pipeline.listeners.append(diffs.append)
        (source / "3.csv").write_text("first_name, last_name, birthts\nBob, Lee, 0\n")
        (source / "4.png").unlink()
        (source / "5.csv").unlink()
        (source / "20.csv").write_text("first_name, last_name, birthts\nNew, Comer, 0\n")
        report = await pipeline.rescan(force=True)
    assert (report.added, report.updated, report.removed) == (1, 2, 1)
    [diff] = diffs
    assert [r.user_id for r in diff.added] == ["20"]
    assert (sorted(r.user_id for r in diff.updated), diff.removed) == (["3", "4"], ["5"])
    records = pipeline.index.records()
    for record in records:
        if record.user_id not in ("3", "4", "20"):
            assert record is before[record.user_id], "an unchanged user keeps its record"
    # The new catalog holds the index's strings, not equal copies of its own.
    catalog = pipeline.reconciler.catalog
    catalog_ids = {id(user_id) for user_id in catalog.csv_keys}
    assert all(id(record.user_id) in catalog_ids for record in records)
    assert all(catalog.png_keys[r.user_id] is r.img_path for r in records if r.img_path is not None)
    fresh = Pipeline(FolderStore(tmp_path, "bucket", PREFIX), UserIndex(), PREFIX)
    await fresh.load()
    assert fresh.index.records() == records and catalog_state(fresh) == catalog_state(pipeline)


@pytest.mark.parametrize("force", [False, True], ids=["incremental", "forced"])
async def test_a_change_named_during_a_scan_shows_at_once_and_the_scan_keeps_it(tmp_path: Path, force: bool) -> None:
    store, pipeline, source = _users(tmp_path, 30)
    csv = source / "7.csv"

    def write(first: str, mtime_ns: int) -> None:
        csv.write_text(f"first_name, last_name, birthts\n{first}, Lee, 0\n")
        os.utime(csv, ns=(mtime_ns, mtime_ns))  # a version of its own, whatever the clock's resolution

    async with running(pipeline):
        write("Old", 10**18)  # what the scan reads
        scanned, release = asyncio.Event(), asyncio.Event()

        async def hold_the_scan(keys: object) -> None:
            if not scanned.is_set():  # the first read from here on is the scan's
                scanned.set()
                await release.wait()

        store.after_read = hold_the_scan
        rescan = pipeline.rescan(force=force)
        await asyncio.wait_for(scanned.wait(), 5)
        write("New", 2 * 10**18)  # changed after the scan read it, and named
        pipeline.submit([classify(PREFIX + "7.csv", PREFIX)])  # type: ignore[list-item]
        await wait_until(lambda: pipeline.index.get("7").first_name == "New", timeout=2)  # type: ignore[union-attr]
        assert not rescan.done(), "the change did not wait for the scan"
        release.set()
        await rescan
    assert pipeline.index.get("7").first_name == "New"  # type: ignore[union-attr]
    fresh = Pipeline(FolderStore(tmp_path, "bucket", PREFIX), UserIndex(), PREFIX)
    await fresh.load()
    assert catalog_state(fresh) == catalog_state(pipeline) and fresh.index.records() == pipeline.index.records()


async def test_rejections_are_logged_once_each_and_conflicts_not_as_rejections(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, pipeline, source = _users(tmp_path, 3)
    (source / "1.csv").write_text("first_name, last_name, birthts\nAnn, Lee, x\n")
    (source / "2.CSV").write_text("first_name, last_name, birthts\nTwo, Lee, 0\n")
    with caplog.at_level("WARNING", logger="userdata.reconcile"):
        await pipeline.load()
    warnings = [r.getMessage() for r in caplog.records if r.name == "userdata.reconcile"]
    assert warnings == ["rejected src/1.csv: birthts is not an integer: 'x'"]
    assert set(pipeline.rejected) == {"src/1.csv", "src/2.CSV", "src/2.csv"}


async def test_a_failing_listener_stops_neither_the_others_nor_the_pipeline(tmp_path: Path) -> None:
    _, pipeline, source = _users(tmp_path, 2)
    heard: list[Diff] = []

    def broken(diff: Diff) -> None:
        raise RuntimeError("a sink's bug")

    pipeline.listeners += [broken, heard.append]
    async with running(pipeline):
        for first in ("Bob", "Cy"):
            (source / "0.csv").write_text(f"first_name, last_name, birthts\n{first}, Lee, 0\n")
            pipeline.submit([classify(PREFIX + "0.csv", PREFIX)])  # type: ignore[list-item]
            await wait_until(lambda f=first: pipeline.index.get("0").first_name == f)  # type: ignore[union-attr,misc]
    assert len(heard) >= 3  # the load's, then each change's


async def test_a_long_load_tells_its_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    source = tmp_path / "bucket" / "src"
    source.mkdir(parents=True)
    for i in range(500):
        (source / f"{i}.csv").write_text(f"first_name, last_name, birthts\nAnn, Lee, {i}\n")
    monkeypatch.setattr(reconcile, "PROGRESS_EVERY", 0.05)
    store = SpyStore(FolderStore(tmp_path, "bucket", "src/"))
    told = asyncio.Event()

    async def hold(keys: object) -> None:  # the reads done, the load held until progress is told
        await told.wait()

    store.after_read = hold
    pipeline = Pipeline(store, UserIndex(), "src/")
    with caplog.at_level(logging.INFO, logger="userdata.reconcile"):
        load = asyncio.create_task(pipeline.load())
        await wait_until(lambda: "read 500 of 500 objects" in caplog.text, message="a progress line")
        told.set()
        await load
    line = next(r.getMessage() for r in caplog.records if "of 500 objects" in r.getMessage())
    assert "/s, about 0 s left)" in line, line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="userdata.reconcile"):
        await asyncio.sleep(0.2)
    assert "objects (" not in caplog.text, "no progress once the reads are done"
