"""output.csv: the index as one CSV object, written after changes settle, never half-written."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from itertools import chain
from sys import intern
from typing import BinaryIO

from ..index import Diff, UserIndex
from ..records import InvalidRecord, UserRecord
from ..stores import ObjectError, Store, StoreUnavailable

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
    bytes would be the same.
    """

    def __init__(
        self,
        store: Store,
        index: UserIndex,
        key: str,
        *,
        settle: float = 0.3,
        max_delay: float = 3.0,
        retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
    ) -> None:
        self.store = store
        self.index = index
        self.key = key
        self.settle = settle
        self.max_delay = max_delay
        self.retry_delays = retry_delays or (5.0,)
        self._failures = 0
        #: why the last write failed, None after a good one
        self.error: str | None = None
        self.writes = 0
        self._changed = asyncio.Event()
        self._written_version = -1
        self._digest: bytes | None = None

    def notify(self, diff: Diff) -> None:
        """A pipeline listener: the index changed."""
        self._changed.set()

    async def restore(self) -> list[UserRecord]:
        """The records of the existing output.csv: each user's last good record."""
        try:
            data = await self.store.read(self.key)
        except ObjectError as e:
            logger.warning("cannot read %s (%s): starting without last good records", self.key, e)
            return []
        if data is None:
            return []
        # In a thread: at a million users parsing takes seconds, hashing tens of milliseconds.
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
            if not await self.flush():
                asyncio.get_running_loop().call_later(self._next_delay(), self._changed.set)

    async def flush(self) -> bool:
        """Write now if the index changed since the last write; False if the write failed."""
        version = self.index.version
        if version == self._written_version:
            return True
        try:
            spool, digest, rows = await self._render()
        except OSError as e:
            return self._failed(f"cannot render {self.key}: {e}")
        try:
            if digest == self._digest:
                await asyncio.to_thread(spool.close)
                self._written_version = version
                return True
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
        self._failures = 0
        self._digest = digest
        self._written_version = version
        self.writes += 1
        logger.info("wrote %s: %d users, %d bytes", self.key, rows, len(data))
        return True

    def _failed(self, error: str) -> bool:
        self.error = error
        logger.warning("%s; trying again in %g s", error, self._next_delay(peek=True))
        return False

    async def _render(self) -> tuple[_Spool, bytes, int]:
        """What ``render_output(self.index.records())`` gives (spooled), its digest and row count.

        Rendered on the event loop, a slice of rows at a time with a yield in between, so the loop
        never waits longer than one slice (about a millisecond, however fast the machine is). Not
        in a thread: one rendering the whole file holds the GIL while the loop, after each of its
        socket operations, waits up to the 5 ms switch interval to get it back (a convoy: 100+ ms
        stalls at 1M users).
        Nothing is done to the whole file at once on the loop either (at 1M users, 48 MB: hashing
        it takes ~50 ms, joining its parts ~30 ms, copying the sorted ids ~20 ms): each slice is
        hashed and spooled as it comes. The incremental digest equals ``_digest`` of the bytes.

        Consistency: the index is only changed by the event loop, never while a slice renders,
        but it may change between slices, so the output can mix records from before and after a
        change (a user removed before its slice is rendered is missing, one added behind it is
        not there yet). That is acceptable because such a change bumped ``index.version`` past
        the version flush() records as written, and the pipeline's notify() set ``_changed``: run()
        flushes again and writes the settled state (or skips it if the bytes are the same).
        """
        spool = _Spool()
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
                # A slice of the index's ids, not a copy of them all (copying 1M ids stalls the
                # loop ~20 ms); it starts after the last id written, so however the index changed
                # meanwhile, every user comes at most once, in order.
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

    def _next_delay(self, *, peek: bool = False) -> float:
        """Backoff after failed writes: the next delay of ``retry_delays``, then its last."""
        delay = self.retry_delays[min(self._failures, len(self.retry_delays) - 1)]
        if not peek:
            self._failures += 1
        return delay


def _next_slice(rows: int, seconds: float) -> int:
    """Rows for the next slice, after one of ``rows`` took ``seconds``: as many as fit in
    _SLICE_SECONDS at that pace, but at most twice as many (one quick slice may be luck), and
    within _SLICE_BOUNDS."""
    low, high = _SLICE_BOUNDS
    wanted = int(rows * _SLICE_SECONDS / seconds) if seconds > 0 else high
    return max(low, min(high, 2 * rows, wanted))


_DIGEST_SIZE = 16


class _Spool:
    """Bytes appended piece by piece to an anonymous file, then read back whole in one read.

    Joining the pieces of a large output.csv holds the GIL while it copies (``b"".join`` of 48 MB:
    ~30 ms; a growing BytesIO or bytearray copies too, once glibc has raised its mmap threshold),
    which stalls the event loop even when done in a thread. A read into a new bytes object copies
    in the kernel with the GIL released, so the loop runs on meanwhile. Appending a slice is a
    write of some 50 KB: a few microseconds.
    """

    def __init__(self) -> None:
        # read_and_close() runs in a thread, close() may come from the loop: never both at once.
        self._lock = threading.Lock()
        self._file: BinaryIO
        if hasattr(os, "memfd_create"):  # Linux: in memory, never on a disk
            self._file = open(os.memfd_create("userdata-output", os.MFD_CLOEXEC), "w+b", buffering=0)  # noqa: SIM115
        else:
            self._file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115
        self._size = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]
        self._size += len(data)

    def read_and_close(self) -> bytes:
        """Everything written, as one bytes object (call in a thread: it takes ~30 ms for 48 MB)."""
        with self._lock:
            return self._read_and_close()

    def _read_and_close(self) -> bytes:
        try:
            self._file.seek(0)
            parts = []
            left = self._size
            while left:
                part = self._file.read(left)
                if not part:
                    raise OSError(f"spool ended {left} bytes early")
                parts.append(part)
                left -= len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        finally:
            self._file.close()

    def close(self) -> None:
        """Close (again: a no-op)."""
        with self._lock:
            self._file.close()


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_SIZE).digest()
