"""Reconciling: the catalog and the index brought to what the store holds, for some keys or all.

The store is read for its current truth, so a key may be named late, twice or out of order
without harm. Reads go through the store with its bounded concurrency, each CSV parsed as it
arrives (a whole load's bytes are never held at once); what they found is then applied to the
catalog and the index in one synchronous step, so a reader never sees half a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from . import scan, tuning
from .catalog import Catalog, Changes, Hint, Outcome
from .index import Diff, UserIndex
from .names import shown
from .objects import SourceObject
from .records import FUTURE_BIRTHTS, InvalidRecord, parse_user_csv
from .scan import Contents
from .stores import PRESENT, Listing, ObjectError, Store, StoreUnavailable, Version

__all__ = ("Reconciler",)

logger = logging.getLogger("userdata.reconcile")


class Reconciler:
    """Keeps ``index`` and its :class:`~userdata.catalog.Catalog` equal to ``store``'s objects.

    Only the pipeline calls it (its task refreshes, its rescan task scans, see
    :mod:`userdata.pipeline` for the rule between the two); nothing else writes the catalog or
    the index.

    :param store: where the source objects are read
    :param index: the index it writes
    :param prefix: the source prefix of the objects' keys
    """

    def __init__(self, store: Store, index: UserIndex, prefix: str) -> None:
        self.store = store
        self.index = index
        self.prefix = prefix
        self.catalog = Catalog(prefix, index.get)
        #: While a scan runs: the users a refresh applied meanwhile, which the scan leaves alone.
        self._fresher: set[str] | None = None
        #: CSVs rejected for a birthts in the future: key -> that birthts (ms), when to read it again
        self.future: dict[str, int] = {}
        #: reads that found an object that exists but cannot be read (an ObjectError), so far
        self.unreadable = 0

    async def refresh(self, objects: Collection[SourceObject]) -> Diff:
        """Look at these objects again: their CSVs are read, their images' versions asked for."""
        csvs = [obj.key for obj in objects if obj.kind == "csv"]
        pngs = [obj.key for obj in objects if obj.kind == "png"]
        found: dict[str, Version | None] = {}
        for key, version in (await self.store.stat_many(pngs)).items() if pngs else ():
            if isinstance(version, ObjectError):  # the image's state is unknown: keep what is known
                logger.warning("cannot look at %s: %s", key, version)
                self.unreadable += 1
            else:  # present or not: an image's version is no news (listings give PRESENT)
                found[key] = None if version is None else PRESENT
        return await self._update(found, csvs, refresh=True)

    async def resume(self, hint: Hint) -> bool:
        """Take the catalog a start-up hint describes, if it covers every user the index holds
        (the last good records restored); False, the catalog untouched, if it does not.

        The scan that follows (an incremental one) then reads only what differs from it.
        """
        catalog, held = await tuning.off_loop(scan.hinted_catalog, hint, self.prefix, self.index.get)
        if held != len(self.index):
            logger.warning("the catalog hint does not cover the %d users restored: reading all", len(self.index))
            return False
        self.catalog = catalog
        return True

    async def refresh_each(
        self, objects: Mapping[str, SourceObject]
    ) -> tuple[list[Diff], dict[str, SourceObject], StoreUnavailable | None]:
        """Each object refreshed on its own, so that one that fails holds up no other: what
        changed, the objects that failed still (logged), and the store's error if it became
        unavailable meanwhile (the objects after it were not tried)."""
        diffs: list[Diff] = []
        failed: dict[str, SourceObject] = {}
        for key, obj in objects.items():
            try:
                diffs.append(await self.refresh([obj]))
            except StoreUnavailable as e:
                return diffs, failed, e
            except Exception:
                logger.exception("failed to apply %s", shown(key))
                failed[key] = obj
        return diffs, failed, None

    async def scan(self, *, force: bool) -> tuple[Diff, list[dict[Any, Any]]]:
        """List the store, then :meth:`scan_all` (``force``) or :meth:`scan_changed` what it holds.

        Returns what changed, and the large dicts the scan leaves behind (the listing, a forced
        scan's old catalog and reads): the caller frees them once it has told the sinks.
        """
        listing = await self.store.list_objects(versions=not force)  # a forced scan reads every CSV
        if not force:
            return await self.scan_changed(listing), [listing]
        diff, garbage = await self.scan_all(listing)
        return diff, [listing, *garbage]

    async def scan_changed(self, listing: Listing) -> Diff:
        """Read the CSVs whose versions changed, and apply what was added or removed.

        Its cost follows what changed; comparing the listing with the catalog runs off the loop.
        """
        with self._scanning():
            found, read = await tuning.off_loop(scan.changed, listing, self.catalog)
            return await self._update(found, read)

    async def scan_all(self, listing: Listing) -> tuple[Diff, list[dict[Any, Any]]]:
        """Read every CSV listed and build the catalog afresh (a load, or a forced rescan).

        The whole-listing passes of :mod:`userdata.scan` build it, off the loop. On a rescan,
        what differs from the index is found off the loop too, and the loop applies just that.
        Returns what changed, and the dicts left to free (none after a first load: the index
        holds what it read).
        """
        index = self.index
        rescan = len(index) > 0
        # A rescan reuses the strings the index holds (one copy of each): see scan.fresh_catalog.
        held = index.get if rescan else None
        with self._scanning() as fresher:
            catalog, read = await tuning.off_loop(scan.fresh_catalog, listing, self.prefix, index.get, held)
            contents = await self._read(read)
            users = await tuning.off_loop(functools.partial(scan.records, rekey=not rescan), catalog, contents)
            self.unreadable += _log_rejected(catalog, contents)
            future = _future_of(catalog)
            if not rescan and not fresher:
                self.catalog, self.future = catalog, future
                return index.assign(users), []
            upserts, removals = await tuning.off_loop(index.differences, users)
            # From here to the index's apply, one synchronous step: what refreshes applied while
            # the scan read stays as they left it, in the new catalog and in the index.
            old, self.catalog = self.catalog, catalog
            for user_id in fresher:
                catalog.adopt(old, user_id)
            self.future = _future_of(catalog)
            if fresher:
                upserts = [record for record in upserts if record.user_id not in fresher]
                removals = [user_id for user_id in removals if user_id not in fresher]
            diff = index.apply(upserts, removals)
        return diff, [old.versions, old.csv_keys, old.png_keys, contents, users]

    async def _update(self, found: dict[str, Version | None], read: Collection[str], *, refresh: bool = False) -> Diff:
        """Read ``read``, then apply it and ``found`` (key -> version, None when gone).

        A refresh marks the users it applied as fresher for a scan running meanwhile; a scan
        leaves the users so marked as they are.
        """
        outcomes = scan.split(await self._read(read), found)
        again = self.catalog.unread_csvs(found, outcomes)
        if again:
            outcomes.update(scan.split(await self._read(again), found))
        catalog, fresher = self.catalog, self._fresher
        if fresher is not None and refresh:
            fresher.update(catalog.owner(key)[1] for key in found)
        elif fresher:
            found = {key: v for key, v in found.items() if catalog.owner(key)[1] not in fresher}
            outcomes = {key: o for key, o in outcomes.items() if key in found}
        changes: Changes = catalog.apply(found, outcomes)
        self.unreadable += _log_rejected(catalog, outcomes)
        _note_future(self.future, outcomes, found)
        return self.index.apply(*changes)

    @contextlib.contextmanager
    def _scanning(self) -> Iterator[set[str]]:
        fresher: set[str] = set()
        self._fresher = fresher
        try:
            yield fresher
        finally:
            self._fresher = None

    async def _read(self, keys: Collection[str]) -> Contents:
        if not keys:
            return {}
        parse, done = _counted(_parser(time.time_ns() // 1_000_000))
        told = asyncio.create_task(_tell_progress(done, len(keys)))
        try:
            return await self.store.read_many(keys, parse)
        finally:
            told.cancel()


#: Seconds between progress lines while many objects are read (a load, a forced rescan).
PROGRESS_EVERY = 5.0


def _counted(parse: Callable[[bytes], Outcome]) -> tuple[Callable[[bytes], Outcome], Callable[[], int]]:
    """``parse``, counting its calls (from any thread: ``next`` on a count is one step), and how
    many there were so far."""
    calls = itertools.count()
    seen = [0]

    def counted(data: bytes) -> Outcome:
        seen[0] = next(calls) + 1
        return parse(data)

    return counted, lambda: seen[0]


async def _tell_progress(done: Callable[[], int], total: int) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        count, seconds = done(), time.monotonic() - started
        rate = count / seconds
        left = f"about {(total - count) / rate:.0f} s left" if rate > 0 else "no object read yet"
        logger.info("read %d of %d objects (%.0f/s, %s)", count, total, rate, left)


def _parser(now_ms: int) -> Callable[[bytes], Outcome]:
    """parse_user_csv at ``now_ms``, a rejection as its reason (one call: it runs once per file)."""

    def parse(data: bytes) -> Outcome:
        try:
            return parse_user_csv(data, now_ms=now_ms)
        except InvalidRecord as e:
            return str(e)

    return parse


def _log_rejected(catalog: Catalog, read: Mapping[str, object]) -> int:
    """A warning for each file just read and rejected (a conflict is no news of the file's); how
    many of those could not be read."""
    rejected = catalog.rejected
    unreadable = 0
    for key in rejected if len(rejected) < len(read) else read:
        if key in read and key in rejected and key not in catalog.conflicts:
            logger.warning("rejected %s: %s", key, rejected[key])
            unreadable += rejected[key].startswith(scan.UNREADABLE)
    return unreadable


def _birthts_due(reason: str) -> int | None:
    """The birthts a rejection for one in the future names, None for any other rejection."""
    if not reason.startswith(FUTURE_BIRTHTS):
        return None
    with contextlib.suppress(ValueError):
        return int(reason[len(FUTURE_BIRTHTS) + 1 :])
    return None


def _future_of(catalog: Catalog) -> dict[str, int]:
    """The CSVs of ``catalog`` rejected for a birthts in the future, and when it comes."""
    return {key: due for key, reason in catalog.rejected.items() if (due := _birthts_due(reason)) is not None}


def _note_future(future: dict[str, int], outcomes: Mapping[str, Outcome], found: Mapping[str, object]) -> None:
    """Keep ``future`` up to date with what was just read (or found gone)."""
    for key, outcome in outcomes.items():
        due = _birthts_due(outcome) if isinstance(outcome, str) else None
        if due is None:
            future.pop(key, None)
        else:
            future[key] = due
    for key, version in found.items():
        if version is None:
            future.pop(key, None)
