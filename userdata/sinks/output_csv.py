"""output.csv: the index as one CSV object, written after changes settle, never half-written."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import time
from collections.abc import Iterable
from itertools import chain
from sys import intern

from ..backoff import DEFAULT_DELAYS, Backoff
from ..index import Diff, UserIndex
from ..records import InvalidRecord, UserRecord
from ..stores import ObjectError, Store, StoreUnavailable
from .spool import Spool

__all__ = ("HEADER", "OutputWriter", "parse_output", "render_output")

logger = logging.getLogger("userdata.sinks.output_csv")

HEADER = ("user_id", "first_name", "last_name", "birthts", "img_path")

#: Rows in the first slice of OutputWriter.flush; the next ones are sized to take about
#: _SLICE_SECONDS of the event loop on this machine, within _SLICE_BOUNDS rows.
_SLICE = 1000
_SLICE_SECONDS = 0.001
_SLICE_BOUNDS = (50, 50_000)


def render_output(records: Iterable[UserRecord]) -> bytes:
    """UTF-8 without BOM, a header, one row per record in the given order, standard quoting."""
    return _encode(chain((HEADER,), _rows(records)))


def _rows(records: Iterable[UserRecord]) -> Iterable[tuple[object, ...]]:
    return ((r.user_id, r.first_name, r.last_name, r.birthts, r.img_path or "") for r in records)


def _encode(rows: Iterable[Iterable[object]]) -> bytes:
    """CSV lines of ``rows``, UTF-8; the writer keeps no state between rows, so the lines of a
    whole file are the lines of its parts, one after the other."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


_HEADER_LINE = _encode((HEADER,))


def parse_output(data: bytes) -> list[UserRecord]:
    """Records of an output.csv this service wrote; raises InvalidRecord if it is not one."""
    try:
        rows = csv.reader(io.StringIO(data.decode(), newline=""))
        header = next(rows, None)
    except (UnicodeDecodeError, csv.Error) as e:
        raise InvalidRecord(f"not an output.csv: {e}") from None
    if header is None:
        return []
    if tuple(header) != HEADER:
        raise InvalidRecord(f"not an output.csv: header {header!r}")
    records = []
    try:
        for row in rows:
            if len(row) != len(HEADER) or not (row[0] and row[1] and row[2]):
                raise InvalidRecord(f"bad row {row!r}")
            user_id, first_name, last_name, birthts, img_path = row
            # Names interned as parse_user_csv does: these records may stay for good.
            records.append(UserRecord(user_id, intern(first_name), intern(last_name), int(birthts), img_path or None))
    except (ValueError, csv.Error) as e:
        raise InvalidRecord(f"not an output.csv: {e}") from None
    return records


class OutputWriter:
    """Writes the index to ``key`` in ``store`` once changes have settled.

    A write waits until no change came for ``settle`` seconds (at most ``max_delay`` after the
    first), renders on the event loop in slices of about a millisecond, and is skipped when the
    bytes would be the same. A failed write is retried with backoff.

    :param store: where output.csv is read back from at start and written to
    :param index: the users to write; ``notify`` is to be called with each of its changes
    :param key: the key of output.csv in ``store``
    :param settle: seconds without a change before a write
    :param max_delay: seconds after the first change at most before a write, however many follow
    :param retry_delays: seconds to wait after the first, second, ... failed write in a row
        (the last repeats), each spread a little by jitter
    """

    def __init__(
        self,
        store: Store,
        index: UserIndex,
        key: str,
        *,
        settle: float = 0.3,
        max_delay: float = 3.0,
        retry_delays: tuple[float, ...] = DEFAULT_DELAYS,
    ) -> None:
        self.store = store
        self.index = index
        self.key = key
        self.settle = settle
        self.max_delay = max_delay
        self._backoff = Backoff(retry_delays)
        #: why the last write failed, None after a good one
        self.error: str | None = None
        #: output.csv objects written (a write skipped for the same bytes is not one)
        self.writes = 0
        self._changed = asyncio.Event()
        self._written_version = -1
        self._digest: bytes | None = None

    def notify(self, diff: Diff) -> None:
        """A pipeline listener: the index changed."""
        self._changed.set()

    def problem(self) -> str | None:
        """Why the last write failed, for /health to show as the cause; None after a good one."""
        return self.error

    async def restore(self) -> list[UserRecord]:
        """The records of the existing output.csv: each user's last good record."""
        try:
            data = await self.store.read(self.key)
        except ObjectError as e:
            logger.warning("cannot read %s (%s): starting without last good records", self.key, e)
            return []
        if data is None:
            return []
        # In a thread: parsing and hashing a large file would stall the event loop.
        try:
            records = await asyncio.to_thread(parse_output, data)
        except InvalidRecord as e:
            logger.warning("ignoring %s: %s", self.key, e)
            return []
        self._digest = await asyncio.to_thread(_digest, data)
        logger.info("restored %d last good records from %s", len(records), self.key)
        return records

    async def run(self) -> None:
        """Write after every settled burst of changes, until cancelled."""
        while True:
            await self._changed.wait()
            deadline = time.monotonic() + self.max_delay
            while (left := deadline - time.monotonic()) > 0:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), min(self.settle, left))
                except asyncio.TimeoutError:
                    break
            self._changed.clear()
            retry_in = await self._write()
            if retry_in is not None:
                asyncio.get_running_loop().call_later(retry_in, self._changed.set)

    async def flush(self) -> bool:
        """Write now if the index changed since the last write; False if the write failed."""
        return await self._write() is None

    async def _write(self) -> float | None:
        """:meth:`flush`; None if it succeeded, else the seconds to wait before trying again."""
        version = self.index.version
        if version == self._written_version:
            return None
        try:
            spool, digest, rows = await self._render()
        except OSError as e:
            return self._failed(f"cannot render {self.key}: {e}")
        try:
            if digest == self._digest:
                await asyncio.to_thread(spool.close)
                self._written_version = version
                return None
            try:
                data = await asyncio.to_thread(spool.read_and_close)
            except OSError as e:
                return self._failed(f"cannot render {self.key}: {e}")
        finally:
            # Closed by now, unless this was cancelled (the service stopping) while the thread
            # to close it still waited for one: its work is then dropped, so close it here.
            spool.close()
        try:
            await self.store.write(self.key, data)
        except (OSError, StoreUnavailable) as e:
            return self._failed(f"cannot write {self.key}: {e}")
        self.error = None
        self._backoff.succeeded()
        self._digest = digest
        self._written_version = version
        self.writes += 1
        logger.info("wrote %s: %d users, %d bytes", self.key, rows, len(data))
        return None

    def _failed(self, error: str) -> float:
        self.error = error
        delay = self._backoff.failed()
        logger.warning("%s; trying again in %.1f s", error, delay)
        return delay

    async def _render(self) -> tuple[Spool, bytes, int]:
        """What ``render_output(self.index.records())`` gives (spooled), its digest and row count.

        Rendered on the event loop, a slice of rows at a time with a yield in between, so the loop
        never waits longer than one slice (about a millisecond, however fast the machine is). Not
        in a thread: one rendering the whole file holds the GIL while the loop, after each of its
        socket operations, waits up to the 5 ms switch interval to get it back (a convoy of long
        stalls with many users).
        Nothing is done to the whole file at once on the loop either (hashing it, joining its
        parts or copying the sorted ids would each stall the loop): each slice is hashed and
        spooled as it comes. The incremental digest equals ``_digest`` of the bytes.

        Consistency: the index is only changed by the event loop, never while a slice renders,
        but it may change between slices, so the output can mix records from before and after a
        change (a user removed before its slice is rendered is missing, one added behind it is
        not there yet). That is acceptable because such a change bumped ``index.version`` past
        the version flush() records as written, and the pipeline's notify() set ``_changed``: run()
        flushes again and writes the settled state (or skips it if the bytes are the same).
        """
        spool = Spool()
        try:
            digest = hashlib.blake2b(digest_size=_DIGEST_SIZE)
            chunk = _HEADER_LINE
            rows = 0
            last: str | None = None
            get = self.index.get
            size = _SLICE
            while True:
                started = time.perf_counter()
                digest.update(chunk)
                spool.write(chunk)
                # A slice of the index's ids, not a copy of them all (a stall with many users);
                # it starts after the last id written, so however the index changed meanwhile,
                # every user comes at most once, in order.
                batch = self.index.ids_after(last, size)
                if not batch:
                    return spool, digest.digest(), rows
                last = batch[-1]
                records = [r for user_id in batch if (r := get(user_id)) is not None]
                rows += len(records)
                chunk = _encode(_rows(records))
                size = _next_slice(size, time.perf_counter() - started)
                await asyncio.sleep(0)
        except BaseException:
            spool.close()
            raise


def _next_slice(rows: int, seconds: float) -> int:
    """Rows for the next slice, after one of ``rows`` took ``seconds``: as many as fit in
    _SLICE_SECONDS at that pace, but at most twice as many (one quick slice may be luck), and
    within _SLICE_BOUNDS."""
    low, high = _SLICE_BOUNDS
    wanted = int(rows * _SLICE_SECONDS / seconds) if seconds > 0 else high
    return max(low, min(high, 2 * rows, wanted))


_DIGEST_SIZE = 16


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_SIZE).digest()
