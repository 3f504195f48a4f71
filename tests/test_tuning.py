"""Each tuning step of userdata.tuning still does what it is there for, in the pipeline's use."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SpyStore, running

from userdata import tuning
from userdata.index import UserIndex
from userdata.pipeline import Pipeline
from userdata.stores import StoreUnavailable
from userdata.stores.folder import FolderStore

PREFIX = "src/"


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen and the collector on."""
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def _users(tmp_path: Path, users: int) -> tuple[SpyStore, Path]:
    source = tmp_path / "bucket" / PREFIX
    source.mkdir(parents=True)
    for i in range(users):
        (source / f"{i}.csv").write_text(f"first_name, last_name, birthts\nAnn{i}, Lee, {i * 10**9}\n")
    return SpyStore(FolderStore(tmp_path, "bucket", PREFIX)), source


async def test_a_load_runs_without_the_collector_and_freezes_what_it_built(tmp_path: Path) -> None:
    store, _ = _users(tmp_path, 200)
    pipeline = Pipeline(store, UserIndex(), PREFIX)
    await pipeline.load()
    assert store.collector == [False], "the collector is off while the load runs"
    assert gc.isenabled()
    # Out of the collector's way: in the permanent generation, which no collection looks at (and
    # so never untracks either, as a collection would these tuples of strings and ints).
    records = pipeline.index.records()
    assert len(records) == 200 and all(gc.is_tracked(r) for r in records)
    collected = {id(o) for o in gc.get_objects()}
    assert not any(id(r) in collected for r in records)


async def test_a_failed_load_freezes_nothing_and_turns_the_collector_on(tmp_path: Path) -> None:
    store, _ = _users(tmp_path, 5)
    store.fail = StoreUnavailable("down")
    with pytest.raises(StoreUnavailable):
        await Pipeline(store, UserIndex(), PREFIX).load()
    assert store.collector == [False]
    assert gc.isenabled() and gc.get_freeze_count() == 0


async def test_the_collector_is_paused_only_while_a_rescan_runs(tmp_path: Path) -> None:
    store, _ = _users(tmp_path, 3)
    pipeline = Pipeline(store, UserIndex(), PREFIX)
    async with running(pipeline):
        await pipeline.rescan(force=True)
        assert gc.isenabled()
        store.fail = StoreUnavailable("down")
        with pytest.raises(StoreUnavailable):
            await pipeline.rescan(force=False)
        assert gc.isenabled(), "enabled again after a failure too"
        assert store.collector == [False, False, False]


@pytest.mark.parametrize("force", [False, True], ids=["incremental", "forced"])
async def test_the_passes_over_a_listing_run_off_the_event_loop(tmp_path: Path, force: bool) -> None:
    store, _ = _users(tmp_path, 3)
    pipeline = Pipeline(store, UserIndex(), PREFIX)
    async with running(pipeline):
        store.listing_threads.clear()
        await pipeline.rescan(force=force)
    assert store.listing_threads and threading.main_thread() not in store.listing_threads


async def test_a_forced_rescan_frees_the_old_catalog(tmp_path: Path) -> None:
    store, _ = _users(tmp_path, 30)
    pipeline = Pipeline(store, UserIndex(), PREFIX)
    async with running(pipeline):
        old = pipeline.reconciler.catalog
        assert old.csv_keys
        await pipeline.rescan(force=True)
    assert pipeline.reconciler.catalog is not old and len(pipeline.reconciler.catalog.csv_keys) == 30
    assert not old.csv_keys and not old.versions and not old.png_keys


class _Recording(dict[str, int]):
    def __init__(self, items: dict[str, int], threads: list[threading.Thread]) -> None:
        super().__init__(items)
        self.threads = threads

    def popitem(self) -> tuple[str, int]:
        self.threads.append(threading.current_thread())
        return super().popitem()


async def test_large_dicts_are_emptied_item_by_item_off_the_event_loop() -> None:
    threads: list[threading.Thread] = []
    dicts = [_Recording({str(i): i for i in range(n)}, threads) for n in (3, 5)]
    await tuning.free_off_loop(*dicts)
    assert all(not d for d in dicts)
    assert len(threads) == 8 and threading.main_thread() not in threads


def test_a_paused_collector_stays_off_when_it_was_off_before() -> None:
    gc.disable()
    with tuning.collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(ValueError), tuning.frozen_when_done():  # noqa: PT011  # raised right here
        raise ValueError
    assert gc.isenabled() and gc.get_freeze_count() == 0


async def test_off_loop_runs_the_work_on_a_worker_thread() -> None:
    def where(*args: Any) -> tuple[threading.Thread, tuple[Any, ...]]:
        return threading.current_thread(), args

    thread, args = await tuning.off_loop(where, 1, "a")
    assert thread is not threading.main_thread() and args == (1, "a")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists() or tuning.trim_heap() is False, reason="glibc on Linux")
def test_trimming_the_heap_gives_freed_memory_back() -> None:
    # Blocks of 1 KiB come from the C heap (past pymalloc's 512 B, below mmap's threshold):
    # freed, their pages stay the process's until trimmed.
    kept = [bytearray(1000) for _ in range(60_000)]
    del kept[:-1]  # all but the last, which keeps the heap's top from shrinking by itself
    before = _rss_kib()
    assert tuning.trim_heap()
    assert before - _rss_kib() > 20_000  # most of the 58 MiB freed


async def test_worker_threads_hand_the_gil_back_sooner_while_the_pipeline_runs(tmp_path: Path) -> None:
    store, _ = _users(tmp_path, 5)
    async with running(Pipeline(store, UserIndex(), PREFIX)):
        assert sys.getswitchinterval() <= tuning.SWITCH_INTERVAL


def test_the_switch_interval_is_as_before_once_the_last_of_overlapping_blocks_ends() -> None:
    # In a fresh interpreter: pipelines of other tests may still be running in this one.
    code = """
import sys
from userdata import tuning
before = sys.getswitchinterval()
first, second = tuning.loop_first(), tuning.loop_first()
first.__enter__(); second.__enter__()
assert sys.getswitchinterval() == tuning.SWITCH_INTERVAL < before
first.__exit__(None, None, None)  # the first ends while the second runs: still lowered
assert sys.getswitchinterval() == tuning.SWITCH_INTERVAL
second.__exit__(None, None, None)
assert sys.getswitchinterval() == before, sys.getswitchinterval()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
