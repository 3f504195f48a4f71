"""One rendering of the index as output.csv, and of the catalog as its hint, in slices on the loop."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..catalog import Catalog
from ..index import UserIndex
from ..records import UserRecord
from . import catalog_hint
from .spool import Spool

__all__ = ("HEADER", "Snapshot", "digest", "encode", "render", "rows_of")

HEADER = ("user_id", "first_name", "last_name", "birthts", "img_path")

#: Rows in the first slice of render; the next ones are sized to take about _SLICE_SECONDS of
#: the event loop on this machine, within _SLICE_BOUNDS rows.
_SLICE = 1000
_SLICE_SECONDS = 0.001
_SLICE_BOUNDS = (50, 50_000)
_DIGEST_SIZE = 16


def rows_of(records: Iterable[UserRecord]) -> Iterable[tuple[object, ...]]:
    """output.csv's rows of ``records``."""
    return ((r.user_id, r.first_name, r.last_name, r.birthts, r.img_path or "") for r in records)


def encode(rows: Iterable[Iterable[object]]) -> bytes:
    """CSV lines of ``rows``, UTF-8; the writer keeps no state between rows, so the lines of a
    whole file are the lines of its parts, one after the other."""
    rows = rows if isinstance(rows, list) else list(rows)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    text = buf.getvalue()
    if "\r" in text:
        # With "\n" as line end, csv quotes no bare CR, which a reader then takes for a line
        # end: rows holding one are written again, each of their fields quoted.
        buf = io.StringIO()
        plain, quoted = (
            csv.writer(buf, lineterminator="\n"),
            csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL),
        )
        for row in rows:
            fields = list(row)
            (quoted if any("\r" in str(f) for f in fields) else plain).writerow(fields)
        text = buf.getvalue()
    return text.encode()


def digest(data: bytes) -> bytes:
    """The digest render gives of these bytes."""
    return hashlib.blake2b(data, digest_size=_DIGEST_SIZE).digest()


HEADER_LINE = encode((HEADER,))


@dataclass(slots=True)
class Snapshot:
    """What render made: output.csv spooled, its digest and rows; the hint, when a catalog was given.

    :meth:`close` frees both spools (again: a no-op).
    """

    output: Spool
    output_digest: bytes
    rows: int
    hint: Spool | None = None
    hint_digest: bytes | None = None

    def close(self) -> None:
        self.output.close()
        if self.hint is not None:
            self.hint.close()


class _Part:
    """A spool and its running digest."""

    def __init__(self, head: bytes) -> None:
        self.spool = Spool()
        self.digest = hashlib.blake2b(digest_size=_DIGEST_SIZE)
        self.add(head)

    def add(self, data: bytes) -> None:
        self.digest.update(data)
        self.spool.write(data)


class _Hint(_Part):
    """The hint's part: entries added batch by batch, then the tail."""

    def __init__(self) -> None:
        super().__init__(catalog_hint.HEAD)
        self.empty = True
        self.rejected: dict[str, str] = {}

    def add_entries(self, catalog: Catalog, user_ids: Iterable[str]) -> None:
        entries = catalog_hint.entries(catalog, user_ids, self.rejected)
        if entries:
            self.add(catalog_hint.encode_entries(entries, first=self.empty))
            self.empty = False


async def render(
    index: UserIndex, catalog: Callable[[], Catalog] | None = None, where: dict[str, object] | None = None
) -> Snapshot:
    """``render_output(index.records())`` spooled, with its digest and row count; and, if
    ``catalog`` is given, the hint of those rows and ``catalog()`` (see :mod:`.catalog_hint`).

    Rendered on the event loop, a slice of rows at a time with a yield in between, so the loop
    never waits longer than one slice (about a millisecond, however fast the machine is). Not
    in a thread: one rendering the whole file holds the GIL while the loop, after each of its
    socket operations, waits up to the 5 ms switch interval to get it back (a convoy of long
    stalls with many users). Nothing is done to the whole file at once on the loop either
    (hashing it, joining its parts or copying the sorted ids would each stall the loop): each
    slice is hashed and spooled as it comes.

    Consistency: the index and the catalog are only changed by the event loop, never while a
    slice renders, so each user's row and its hint entries agree. They may change between
    slices, so the output can mix records from before and after a change (a user removed
    before its slice is rendered is missing, one added behind it is not there yet). That is
    acceptable because such a change bumped ``index.version`` past the version the writer
    records as written, and told the writer: it renders again and writes the settled state.
    """
    output = _Part(b"")
    hint = _Hint() if catalog is not None else None
    try:
        chunk = HEADER_LINE
        rows = 0
        last: str | None = None
        get = index.get
        size = _SLICE
        while True:
            started = time.perf_counter()
            output.add(chunk)
            # A slice of the index's ids, not a copy of them all (a stall with many users); it
            # starts after the last id written, so however the index changed meanwhile, every
            # user comes at most once, in order.
            batch = index.ids_after(last, size)
            if not batch:
                break
            last = batch[-1]
            records = [r for user_id in batch if (r := get(user_id)) is not None]
            rows += len(records)
            chunk = encode(rows_of(records))
            if hint is not None and catalog is not None:
                hint.add_entries(catalog(), (r.user_id for r in records))
            size = _next_slice(size, time.perf_counter() - started)
            await asyncio.sleep(0)
        snapshot = Snapshot(output.spool, output.digest.digest(), rows)
        if hint is not None and catalog is not None:
            held = catalog()
            # The rejected CSVs of users the index does not hold (never valid, or in a conflict
            # with no last good record): few, in one step.
            hint.add_entries(held, sorted({u for key in held.rejected if (u := held.owner(key)[1]) not in index}))
            hint.add(catalog_hint.encode_tail(hint.rejected, where or {}, output_digest=snapshot.output_digest))
            snapshot.hint, snapshot.hint_digest = hint.spool, hint.digest.digest()
        return snapshot
    except BaseException:
        output.spool.close()
        if hint is not None:
            hint.spool.close()
        raise


def _next_slice(rows: int, seconds: float) -> int:
    """Rows for the next slice, after one of ``rows`` took ``seconds``: as many as fit in
    _SLICE_SECONDS at that pace, but at most twice as many (one quick slice may be luck), and
    within _SLICE_BOUNDS."""
    low, high = _SLICE_BOUNDS
    wanted = int(rows * _SLICE_SECONDS / seconds) if seconds > 0 else high
    return max(low, min(high, 2 * rows, wanted))
