"""Where the pipeline trades plain code for a free event loop: the collector and worker threads.

The only module that touches the garbage collector. Each step here has a test of its own
(``tests/test_tuning.py``) and its effect is measured by benchmarks 1 and 7 (bench/RESULTS.md):

- a load keeps nearly everything it allocates, so the collector is off while it runs (passes
  over a growing heap would only lengthen it), and what it built is frozen afterwards (out of
  every later full collection's way);
- a rescan's allocations are kept (a new catalog) or freed by reference counting (a listing),
  so the collector pauses while it runs too;
- worker threads (reads, passes, renders) hand the GIL back to the event loop within 1 ms
  while the pipeline runs (:func:`loop_first`), not CPython's default 5 ms: with a few of them
  waiting for it in turn, the loop waited several intervals, the longest stalls of a rescan;
- passes over every object run on a worker thread (:func:`off_loop`), and large dicts are
  emptied there item by item (:func:`free_off_loop`): ``dict.clear()`` is one call that holds
  the GIL, and so the event loop, until every entry is freed.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ("collector_paused", "free_off_loop", "frozen_when_done", "loop_first", "off_loop", "trim_heap")

#: Seconds a thread holding the GIL keeps it while another waits, under :func:`loop_first`.
SWITCH_INTERVAL = 0.001
#: Under loop_first: how many blocks run, and the interval from before the first.
_lowered = {"blocks": 0, "before": 0.0}

T = TypeVar("T")


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for the block (a rescan), on again however the block ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def loop_first() -> Iterator[None]:
    """The GIL's switch interval at most SWITCH_INTERVAL while any such block runs (pipelines
    may overlap, in tests), as it was before the first once the last ends."""
    if not _lowered["blocks"]:
        _lowered["before"] = sys.getswitchinterval()
        sys.setswitchinterval(min(_lowered["before"], SWITCH_INTERVAL))
    _lowered["blocks"] += 1
    try:
        yield
    finally:
        _lowered["blocks"] -= 1
        if not _lowered["blocks"]:
            sys.setswitchinterval(_lowered["before"])


@contextmanager
def frozen_when_done() -> Iterator[None]:
    """The collector off for the block (a load); if it succeeds, all that lives then is frozen,
    and the C heap's free pages go back to the system (what the load's passes freed)."""
    with collector_paused():
        yield
        gc.freeze()
        trim_heap()


def trim_heap() -> bool:
    """Give the C allocator's free pages back to the system (glibc's malloc_trim); False where
    there is no such call."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _find_malloc_trim()


async def off_loop(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` on a worker thread; the caller awaits it, and the loop runs on meanwhile."""
    return await asyncio.to_thread(work, *args)


async def free_off_loop(*dicts: dict[Any, Any]) -> None:
    """Empty ``dicts`` one item at a time, on a worker thread."""
    await asyncio.to_thread(_empty, dicts)


def _empty(dicts: tuple[dict[Any, Any], ...]) -> None:
    for each in dicts:
        while each:
            each.popitem()
