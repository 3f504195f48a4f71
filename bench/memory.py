"""Index memory per user (benchmark 5), beside the floor of the same records in a plain dict.

Records are generated inside the measured span and only what the holder keeps survives it, so
the figure counts the records and their strings as well as the index's own structures.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from userdata.index import UserIndex
from userdata.records import UserRecord

from .datagen import iter_records
from .procs import memory_kib

__all__ = ("measure_memory",)


def _build(holder: str, users: int) -> object:
    if holder == "index":
        index = UserIndex()
        index.apply(iter_records(users))
        index.records()  # the sorted user ids, as the first GET /data or output.csv builds them
        return index
    plain: dict[str, UserRecord] = {r.user_id: r for r in iter_records(users)}
    return plain


def measure_memory(users: int, holder: str, how: str) -> dict[str, Any]:
    """Bytes per user that ``holder`` ("index" or "dict") keeps, by "tracemalloc" or "rss"."""
    gc.collect()
    if how == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = _build(holder, users)
        gc.collect()
        size = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    else:
        before = memory_kib("VmRSS") * 1024
        kept = _build(holder, users)
        gc.collect()
        size = memory_kib("VmRSS") * 1024 - before
    assert kept is not None
    return {"bytes_per_user": size / users}
