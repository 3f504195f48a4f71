"""Reconciling: the catalog and the index brought to what the store holds, for some keys or all.

The store is read for its current truth, so a key may be named late, twice or out of order
without harm. Reads go through the store with its bounded concurrency, each CSV parsed as it
arrives (a whole load's bytes are never held at once); what they found is then applied to the
catalog and the index in one synchronous step, so a reader never sees half a batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping

from . import scan, tuning
from .catalog import Catalog, Changes, Outcome
from .index import Diff, UserIndex
from .objects import SourceObject
from .records import InvalidRecord, parse_user_csv
from .stores import Listing, ObjectError, Store, Version

__all__ = ("Reconciler",)

logger = logging.getLogger("userdata.pipeline")


class Reconciler:
    """Keeps ``index`` and its :class:`~userdata.catalog.Catalog` equal to ``store``'s objects.

    Only the pipeline's task calls it; nothing else writes the catalog or the index.

    :param store: where the source objects are read
    :param index: the index it writes
    :param prefix: the source prefix of the objects' keys
    """

    def __init__(self, store: Store, index: UserIndex, prefix: str) -> None:
        self.store = store
        self.index = index
        self.prefix = prefix
        self.catalog = Catalog(prefix, index.get)

    async def refresh(self, objects: Collection[SourceObject]) -> Diff:
        """Look at these objects again: their CSVs are read, their images' versions asked for."""
        csvs = [obj.key for obj in objects if obj.kind == "csv"]
        pngs = [obj.key for obj in objects if obj.kind == "png"]
        found: dict[str, Version | None] = {}
        for key, version in (await self.store.stat_many(pngs)).items() if pngs else ():
            if isinstance(version, ObjectError):  # the image's state is unknown: keep what is known
                logger.warning("cannot look at %s: %s", key, version)
            else:
                found[key] = version
        return await self._update(found, csvs)

    async def scan_changed(self, listing: Listing) -> Diff:
        """Read the CSVs whose versions changed, and apply what was added or removed.

        Its cost follows what changed; comparing the listing with the catalog runs off the loop.
        """
        found, read = await tuning.off_loop(scan.changed, listing, self.catalog)
        return await self._update(found, read)

    async def scan_all(self, listing: Listing) -> Diff:
        """Read every CSV listed and build the catalog afresh (a load, or a forced rescan).

        The whole-listing passes of :mod:`userdata.scan` build it, off the loop. On a rescan,
        what differs from the index is found off the loop too, and the loop applies just that.
        """
        index = self.index
        rescan = len(index) > 0
        # A rescan reuses the strings the index holds (one copy of each): see scan.fresh_catalog.
        held = index.get if rescan else None
        catalog, read = await tuning.off_loop(scan.fresh_catalog, listing, self.prefix, index.get, held)
        contents = await self._read(read)
        users = await tuning.off_loop(scan.records, catalog, contents)
        old, self.catalog = self.catalog, catalog
        _log_rejected(catalog, contents)
        if not rescan:
            return index.assign(users)
        upserts, removals = await tuning.off_loop(index.differences, users)
        diff = index.apply(upserts, removals)
        await tuning.free_off_loop(old.versions, old.csv_keys, old.png_keys, contents, users)
        return diff

    async def _update(self, found: dict[str, Version | None], read: Collection[str]) -> Diff:
        """Read ``read``, then apply it and ``found`` (key -> version, None when gone)."""
        outcomes = scan.split(await self._read(read), found)
        again = self.catalog.unread_csvs(found, outcomes)
        if again:
            outcomes.update(scan.split(await self._read(again), found))
        changes: Changes = self.catalog.apply(found, outcomes)
        _log_rejected(self.catalog, outcomes)
        return self.index.apply(*changes)

    async def _read(self, keys: Collection[str]) -> scan.Contents:
        if not keys:
            return {}
        return await self.store.read_many(keys, _parser(time.time_ns() // 1_000_000))


def _parser(now_ms: int) -> Callable[[bytes], Outcome]:
    """parse_user_csv at ``now_ms``, a rejection as its reason (one call: it runs once per file)."""

    def parse(data: bytes) -> Outcome:
        try:
            return parse_user_csv(data, now_ms=now_ms)
        except InvalidRecord as e:
            return str(e)

    return parse


def _log_rejected(catalog: Catalog, read: Mapping[str, object]) -> None:
    """A warning for each file just read and rejected (a conflict is no news of the file's)."""
    rejected = catalog.rejected
    for key in rejected if len(rejected) < len(read) else read:
        if key in read and key in rejected and key not in catalog.conflicts:
            logger.warning("rejected %s: %s", key, rejected[key])
