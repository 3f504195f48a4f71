"""output.csv: the index as one CSV object, written after changes settle, never half-written."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import time
from collections.abc import Iterable

from ..index import Diff, UserIndex
from ..records import InvalidRecord, UserRecord
from ..stores import ObjectError, Store, StoreUnavailable

__all__ = ("HEADER", "OutputWriter", "parse_output", "render_output")

logger = logging.getLogger("userdata.sinks.output_csv")

HEADER = ("user_id", "first_name", "last_name", "birthts", "img_path")


def render_output(records: Iterable[UserRecord]) -> bytes:
    """UTF-8 without BOM, a header, one row per record in the given order, standard quoting."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows((r.user_id, r.first_name, r.last_name, r.birthts, r.img_path or "") for r in records)
    return buf.getvalue().encode()


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
            records.append(UserRecord(user_id, first_name, last_name, int(birthts), img_path or None))
    except (ValueError, csv.Error) as e:
        raise InvalidRecord(f"not an output.csv: {e}") from None
    return records


class OutputWriter:
    """Writes the index to ``key`` in ``store`` once changes have settled.

    A write waits until no change came for ``settle`` seconds (at most ``max_delay`` after the
    first), renders off the event loop, and is skipped when the bytes would be the same.
    """

    def __init__(
        self,
        store: Store,
        index: UserIndex,
        key: str,
        *,
        settle: float = 0.3,
        max_delay: float = 3.0,
        retry_delay: float = 5.0,
    ) -> None:
        self.store = store
        self.index = index
        self.key = key
        self.settle = settle
        self.max_delay = max_delay
        self.retry_delay = retry_delay
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
        try:
            records = parse_output(data)
        except InvalidRecord as e:
            logger.warning("ignoring %s: %s", self.key, e)
            return []
        self._digest = _digest(data)
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
                asyncio.get_running_loop().call_later(self.retry_delay, self._changed.set)

    async def flush(self) -> bool:
        """Write now if the index changed since the last write; False if the write failed."""
        version = self.index.version
        if version == self._written_version:
            return True
        records = self.index.records()
        data = await asyncio.to_thread(render_output, records)
        digest = _digest(data)
        if digest == self._digest:
            self._written_version = version
            return True
        try:
            await self.store.write(self.key, data)
        except (OSError, StoreUnavailable) as e:
            self.error = f"cannot write {self.key}: {e}"
            logger.warning("%s; trying again in %g s", self.error, self.retry_delay)
            return False
        self.error = None
        self._digest = digest
        self._written_version = version
        self.writes += 1
        logger.info("wrote %s: %d users, %d bytes", self.key, len(records), len(data))
        return True


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()
