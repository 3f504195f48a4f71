"""output.csv: the index as one CSV object, written after changes settle, never half-written.

With it, the catalog's hint (:mod:`.catalog_hint`), from the same rendering.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections.abc import Callable, Iterable
from itertools import chain
from sys import intern

from ..backoff import DEFAULT_DELAYS, Backoff
from ..catalog import Catalog, Hint
from ..index import Diff, UserIndex
from ..records import RULES, InvalidRecord, UserRecord
from ..reports import Restored
from ..stores import MAX_OBJECT_SIZE, ObjectError, PreconditionFailed, Store, StoreUnavailable
from . import catalog_hint
from .snapshot import HEADER, digest, encode, render, rows_of
from .spool import Spool
from .write_gate import NotWriting, WriteGate

__all__ = ("HEADER", "OutputWriter", "Restored", "parse_output", "render_output")

logger = logging.getLogger("userdata.sinks.output_csv")


def render_output(records: Iterable[UserRecord]) -> bytes:
    """UTF-8 without BOM, a header, one row per record in the given order, standard quoting."""
    return encode(chain((HEADER,), rows_of(records)))


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
    """Writes the index to ``key`` in ``store`` once changes have settled, and the catalog's hint
    beside it once :meth:`follow` names the catalog.

    A write waits until no change came for ``settle`` seconds (at most ``max_delay`` after the
    first), renders on the event loop in slices of about a millisecond (:func:`.snapshot.render`),
    and is skipped when the bytes would be the same. A failed write is retried with backoff.
    output.csv is written before its hint: a hint is only trusted beside the output.csv it names.

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
        self.gate = WriteGate(store)  # whether and how it writes: a reader, or --read-only, does not
        self.index = index
        self.key = key
        self.hint_key = catalog_hint.hint_key(key)
        self.settle = settle
        self.max_delay = max_delay
        self._backoff = Backoff(retry_delays)
        #: why the last write failed, None after a good one
        self.error: str | None = None
        #: output.csv objects written (a write skipped for the same bytes is not one)
        self.writes = 0
        #: hint objects written
        self.hint_writes = 0
        #: tries to write output.csv or its hint that failed
        self.failures = 0
        #: when output.csv was last written, or found to hold the index already (time.monotonic())
        self.written_at: float | None = None
        self._changed = asyncio.Event()
        self._written_version = -1
        self._digest: bytes | None = None
        self._hint_digest: bytes | None = None
        self._writing: asyncio.Future[bool] | None = None
        self._catalog: Callable[[], Catalog] | None = None
        self._loaded: asyncio.Event | None = None
        self._where: dict[str, object] = {}

    def follow(
        self,
        catalog: Callable[[], Catalog],
        loaded: asyncio.Event,
        *,
        bucket: str,
        prefix: str,
        max_object_size: int = MAX_OBJECT_SIZE,
    ) -> None:
        """Write the hint of ``catalog()`` beside output.csv once ``loaded`` is set; call it before :meth:`run`."""
        self._catalog, self._loaded = catalog, loaded
        # What the catalog's verdicts depend on: a hint written under others is not trusted.
        self._where = {"bucket": bucket, "prefix": prefix, "max_object_size": max_object_size, "rules": RULES}

    def notify(self, diff: Diff) -> None:
        """A pipeline listener: the index changed."""
        self._changed.set()

    def rewrite(self) -> None:
        """Write on the next round what the store does not hold already: its objects may be anyone's."""
        self.gate.forget()
        self._digest = self._hint_digest = None
        self._written_version = -1
        self._changed.set()

    def problem(self) -> str | None:
        """Why the last write failed, for /health to show as the cause; None after a good one."""
        return self.error

    @property
    def dirty(self) -> bool:
        """Whether the index changed since output.csv was last written (or found to hold it)."""
        return self.index.version != self._written_version

    async def restore(self) -> Restored:
        """The records of the existing output.csv, each user's last good one, and its hint."""
        await self.gate.tidy(self.key, self.hint_key)
        try:
            data = await self.store.read(self.key)
        except ObjectError as e:
            logger.warning("cannot read %s (%s): starting without last good records", self.key, e)
            return Restored([], None)
        if data is None:
            return Restored([], None)
        # In a thread: parsing and hashing a large file would stall the event loop.
        try:
            records = await asyncio.to_thread(parse_output, data)
        except InvalidRecord as e:
            logger.warning("ignoring %s: %s", self.key, e)
            return Restored([], None)
        self._digest = await asyncio.to_thread(digest, data)
        logger.info("restored %d last good records from %s", len(records), self.key)
        return Restored(records, await self._restore_hint())

    async def _restore_hint(self) -> Hint | None:
        try:
            data = await self.store.read(self.hint_key)
            if data is None:
                raise catalog_hint.InvalidHint("none")
            hint = await asyncio.to_thread(catalog_hint.decode, data, self._where, output_digest=self._digest)
        except (ObjectError, catalog_hint.InvalidHint) as e:
            logger.info("no catalog hint to use in %s (%s): every object will be read", self.hint_key, e)
            return None
        self._hint_digest = await asyncio.to_thread(digest, data)
        return hint

    async def run(self) -> None:
        """Write after every settled burst of changes, until cancelled."""
        if self._loaded is not None:
            await self._loaded.wait()
            if self._hint_digest is None:  # none pairs with output.csv: write one, even unchanged
                self._changed.set()
        while True:
            await self._changed.wait()
            deadline = time.monotonic() + self.max_delay
            while (left := deadline - time.monotonic()) > 0:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), min(self.settle, left))
                except TimeoutError:
                    break
            self._changed.clear()
            retry_in = await self._write()
            if retry_in is not None:  # after the backoff, even if a change or a rewrite() came meanwhile:
                self._changed.clear()  # the retry writes the latest; a conflict is not retried at once
                asyncio.get_running_loop().call_later(retry_in, self._changed.set)

    async def flush(self) -> bool:
        """Write now if the index changed since the last write; False if the write failed."""
        return await self._write() is None

    async def _write(self) -> float | None:
        """:meth:`flush`; None if it succeeded, else the seconds to wait before trying again."""
        if self._writing is not None and not self._writing.done():
            await asyncio.wait([self._writing])  # one a cancelled write left running
        version = self.index.version
        hinting = self._loaded is not None and self._loaded.is_set()
        written = version == self._written_version and (self._hint_digest is not None or not hinting)
        if written or not self.gate.may_write():
            return None  # nothing new, or not the writer: stays dirty, all rendered again on a win
        try:
            snapshot = await render(self.index, self._catalog if hinting else None, self._where)
        except OSError as e:
            return self._failed(f"cannot render {self.key}: {e}")
        try:
            if snapshot.output_digest != self._digest:
                if not isinstance(put := await self._put(self.key, snapshot.output), bool):
                    return put
                self._digest = snapshot.output_digest
                self.writes += put  # not when the store held these bytes already
                self.error = None  # output.csv is written: a failing hint's write says so again
                self._hint_digest = None  # the old one no longer pairs with output.csv
            if snapshot.hint is not None and snapshot.hint_digest != self._hint_digest:
                if not isinstance(put := await self._put(self.hint_key, snapshot.hint), bool):
                    return put
                self._hint_digest = snapshot.hint_digest
                self.hint_writes += put
            await asyncio.to_thread(snapshot.close)  # what was not written: freeing it may take a while
        except NotWriting:
            return None  # not the writer: stays dirty, and the next writer writes all
        finally:
            # Closed by now, unless this was cancelled (the service stopping) while the thread
            # to close it still waited for one: its work is then dropped, so close it here.
            snapshot.close()
        self.error = None
        self._backoff.succeeded()
        self._written_version, self.written_at = version, time.monotonic()
        return None

    async def _put(self, key: str, spool: Spool) -> bool | float:
        """Write one spooled object: whether it was (False: the store held it), else seconds to retry in."""
        try:
            data = await asyncio.to_thread(spool.read_and_close)
        except OSError as e:
            return self._failed(f"cannot render {key}: {e}")
        # Shielded, and kept: cancelled (the service stopping), a write in a thread still lands;
        # the next write waits for it, so an older one can never replace a newer one.
        self._writing = asyncio.ensure_future(self.gate.write(key, data))
        try:
            written = await asyncio.shield(self._writing)
        except (OSError, ObjectError, StoreUnavailable, PreconditionFailed) as e:
            if isinstance(e, PreconditionFailed):  # another replica wrote it: all compared with the store again
                self.rewrite()
            return self._failed(f"cannot write {key}: {e}")
        logger.info("wrote %s: %d bytes" if written else "%s holds these %d bytes already", key, len(data))
        return written

    def _failed(self, error: str) -> float:
        self.error = error
        self.failures += 1
        delay = self._backoff.failed()
        logger.warning("%s; trying again in %.1f s", error, delay)
        return delay
