"""The change pipeline: the one task that reads changed objects and writes the index.

Producers (the watcher, the periodic rescan, POST /data) only say which keys to look at again,
or ask for a rescan; the pipeline reads the store's current truth for those keys, so events may
come late, twice or out of order without harm. Each batch is read with bounded concurrency, the
files parsed as they arrive, then applied to the catalog and the index in one synchronous step:
nothing else writes them, so no locks are needed and a reader never sees half a batch.

Passes over every object of a scan run on a worker thread while this task waits (they only
read the catalog and the index, or build new ones): the event loop then waits for the GIL at
most a switch interval (5 ms) at a time, not for a whole pass (seconds at a million objects;
benchmark 7 measures the waits). The output.csv writer takes the other way, short slices on the
loop, for the reasons its ``_render`` gives.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from .index import Diff, UserIndex
from .objects import SourceObject, classify
from .records import InvalidRecord, UserFields, UserRecord, parse_user_csv
from .stores import Listing, ObjectError, Store, StoreUnavailable, Version

__all__ = ("Pipeline", "RescanReport")

logger = logging.getLogger("userdata.pipeline")

Outcome = UserFields | str  # parsed fields, or why the file was rejected
#: what the store read: each key's version and outcome, or why it could not be read, or None: gone
Contents = dict[str, tuple[Version, Outcome] | ObjectError | None]
Restore = Callable[[], Awaitable[list[UserRecord]]]
Listener = Callable[[Diff], None]
#: The version of an object that could not be read: it never equals a listed one, so the next
#: rescan tries again.
_UNREAD = ("unread",)


@dataclass(frozen=True, slots=True)
class RescanReport:
    """What one rescan found; the body of POST /data."""

    users: int
    added: int
    updated: int
    removed: int
    rejected: int
    duration_ms: int


class _Rescan:
    def __init__(self, force: bool) -> None:
        self.force = force
        self.future: asyncio.Future[RescanReport] = asyncio.get_running_loop().create_future()


class Pipeline:
    """Keeps ``index`` equal to the source objects of ``store``.

    Start it with :meth:`run` (as a task); feed it with :meth:`submit` and :meth:`rescan`.
    """

    def __init__(
        self,
        store: Store,
        index: UserIndex,
        prefix: str,
        *,
        restore: Restore | None = None,
        retry_delays: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30),
    ) -> None:
        self.store = store
        self.index = index
        self.prefix = prefix
        self.listeners: list[Listener] = []
        #: key -> version of every source object the index reflects
        self.versions: dict[str, Version] = {}
        #: user_id -> keys of its CSVs (more than one is a conflict) and of its images
        self.csv_keys: dict[str, Keys] = {}
        self.png_keys: dict[str, Keys] = {}
        #: key -> why that CSV is rejected; _conflicts holds those rejected for a conflict
        self.rejected: dict[str, str] = {}
        self._conflicts: set[str] = set()
        self.loaded = asyncio.Event()
        #: why the store cannot be used right now, None when it can
        self.store_error: str | None = None
        self._restore = restore
        self._retry_delays = retry_delays or (1.0,)
        self._failures = 0
        self._dirty: set[str] = set()
        self._pending: _Rescan | None = None
        self._rescan_retry: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()

    # Producers' side.

    def submit(self, keys: Iterable[str]) -> None:
        """Look at these keys again (added, changed or deleted: the store will tell)."""
        before = len(self._dirty)
        self._dirty.update(k for k in keys if classify(k, self.prefix))
        if len(self._dirty) != before:
            self._wake.set()

    def rescan(self, *, force: bool) -> asyncio.Future[RescanReport]:
        """Ask for a rescan: a forced one re-reads every CSV, else only changed ones are read.

        Calls made before the pending rescan starts share it.
        """
        if self._pending is None:
            self._pending = _Rescan(force)
            self._wake.set()
        else:
            self._pending.force |= force
        return asyncio.shield(self._pending.future)

    def rescan_soon(self) -> None:
        """Ask for an incremental rescan without waiting for it: its failure is logged, and one
        that failed for the store is tried again when the store may be back."""
        self.rescan(force=False).add_done_callback(_retrieve)

    # The consumer.

    async def run(self) -> None:
        """Load everything, then apply changes as they are asked for, until cancelled."""
        await self.load(retry=True)
        while True:
            await self._wake.wait()
            self._wake.clear()
            request, self._pending = self._pending, None
            if request is not None:
                await self._run_rescan(request)
            if self._dirty:
                keys, self._dirty = self._dirty, set()
                try:
                    diff = await self._refresh(keys)
                except StoreUnavailable as e:
                    self._dirty |= keys
                    self._retry_later(e)
                except Exception:
                    # A bug must not stop the index from following the store: try again later.
                    logger.exception("failed to apply %d changed keys", len(keys))
                    self._dirty |= keys
                    self._retry_later(None)
                else:
                    logger.info("applied %d changed keys: %s", len(keys), _summary(diff))

    async def load(self, *, retry: bool = False) -> RescanReport:
        """Restore the last good records, then read every source object.

        With ``retry``, keeps trying while the store is unavailable; else raises StoreUnavailable.
        """
        started = time.monotonic()
        restored = self._restore is None
        while True:
            try:
                if not restored:
                    assert self._restore is not None
                    self.index.apply(await self._restore())
                    restored = True
                # Nearly everything a load allocates is kept: the collector, run again and
                # again over a growing heap, would add a third to the load's time.
                gc.disable()
                try:
                    report = await self._scan(force=True, started=started)
                except BaseException:
                    gc.enable()
                    raise
                # What the load built is kept for good: frozen, it is out of the collector's way
                # for good too (a full collection over a million records would stall the event
                # loop for a quarter of a second each time it came).
                gc.freeze()
                gc.enable()
                break
            except StoreUnavailable as e:
                if not retry:
                    raise
                delay = self._failed(e)
            except Exception as e:
                if not retry:
                    raise
                logger.exception("initial load failed")
                self.store_error = f"initial load failed: {e}"
                delay = self._retry_delays[-1]
            await asyncio.sleep(delay)
        logger.info(
            "loaded %d users from %s in %d ms (%d rejected files)",
            report.users,
            self.store.describe(),
            report.duration_ms,
            report.rejected,
        )
        self.loaded.set()
        return report

    async def _run_rescan(self, request: _Rescan) -> None:
        try:
            # What a rescan allocates is kept (a new catalog) or freed by reference counting (a
            # listing): full collections while it runs, each over all of it, would only hold up
            # the event loop (tens of ms at 100k objects, growing with them). Requests' own
            # garbage waits for the collector until the rescan is done.
            gc.disable()
            try:
                report = await self._scan(force=request.force, started=time.monotonic())
            finally:
                gc.enable()
        except Exception as e:
            if isinstance(e, StoreUnavailable):
                # What asked for it (a folder that appeared, a watch that restarted, a webhook
                # during an outage) must not be lost with it: once, whoever many asked.
                delay = self._failed(e)
                if self._rescan_retry is None:
                    self._rescan_retry = asyncio.get_running_loop().call_later(delay, self._retry_rescan)
            else:
                logger.exception("rescan failed")
            request.future.set_exception(e)
            request.future.exception()  # retrieved here: a caller may have gone away
        else:
            if report.added or report.updated or report.removed:
                logger.info("rescan: %s", report)
            request.future.set_result(report)

    def _retry_rescan(self) -> None:
        self._rescan_retry = None
        self.rescan_soon()

    def _failed(self, error: StoreUnavailable) -> float:
        """Record a store failure; returns how long to wait before trying again."""
        self.store_error = str(error)
        delays = self._retry_delays
        delay = delays[min(self._failures, len(delays) - 1)]
        self._failures += 1
        logger.warning("store unavailable (%s); trying again in %g s", error, delay)
        return delay

    def _retry_later(self, error: StoreUnavailable | None) -> None:
        delay = self._retry_delays[-1] if error is None else self._failed(error)
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    def _succeeded(self) -> None:
        if self.store_error is not None:
            logger.info("store reachable again")
        self.store_error = None
        self._failures = 0

    async def _scan(self, *, force: bool, started: float) -> RescanReport:
        listing = await self.store.list_objects(versions=not force)  # a forced scan reads every CSV
        diff = await (self._scan_all(listing) if force else self._scan_changed(listing))
        if self.loaded.is_set():  # a rescan: requests are being served from the index (see _clear)
            await asyncio.to_thread(_clear, (listing,))
        return RescanReport(
            users=len(self.index),
            added=len(diff.added),
            updated=len(diff.updated),
            removed=len(diff.removed),
            rejected=len(self.rejected),
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    async def _scan_changed(self, listing: Listing) -> Diff:
        """Read the CSVs whose versions changed, and apply what was added or removed.

        Its cost follows what changed: an object listed with the version it had is passed over.
        Comparing the listing with the catalog runs on a worker thread (at a million objects it
        would hold up the event loop for most of a second); nothing else writes the catalog.
        """
        found, owners, read = await asyncio.to_thread(_changes, listing, self.versions, self.prefix)
        return await self._update(found, owners, read)

    async def _scan_all(self, listing: Listing) -> Diff:
        """Read every CSV listed and build the catalog afresh (a load, or a forced rescan).

        The outcome is what :meth:`_apply` would make of every key, at a fraction of its cost:
        one pass over the listing, then one over the users, where nearly every user (one CSV, read
        and valid) becomes its record at once; the few others go through :meth:`_resolve`. Both
        passes run on a worker thread: the event loop only waits, and then updates the index.
        """
        prefix, index = self.prefix, self.index
        # A rescan reuses the strings the index holds (one copy of each): see _catalog.
        held = index.get if len(index) else None
        versions, csv_keys, png_keys, read = await asyncio.to_thread(_catalog, listing, prefix, held)
        contents = await self._read_parsed(read)
        self._succeeded()
        users, others = await asyncio.to_thread(_records, contents, versions, csv_keys, png_keys)
        old = self.versions, self.csv_keys, self.png_keys
        self.versions, self.csv_keys, self.png_keys = versions, csv_keys, png_keys
        self.rejected, self._conflicts = {}, set()  # every CSV is read: _resolve says again what is wrong
        if others:
            start = len(prefix)
            found: dict[str, Version | None] = {}
            outcomes = _split({key: contents[key] for user_id in others for key in _each(csv_keys[user_id])}, found)
            for key, version in found.items():
                if version is not None:
                    versions[key] = version
                    continue
                user_id = key[start:-4]  # gone since listed
                rest = _without(csv_keys[user_id], key)
                if rest is None:
                    del csv_keys[user_id]
                else:
                    csv_keys[user_id] = rest
            for user_id in others:
                if (record := self._resolve(user_id, outcomes)) is not None:
                    users[user_id] = record
        if held is None:
            return self._publish(index.assign(users))
        # What differs from the index is found on a worker thread (only this task writes the
        # index, and it waits): the event loop applies just that. The old catalog and what was
        # read are freed there too (a million entries take a while).
        upserts, removals = await asyncio.to_thread(index.differences, users)
        diff = self._publish(index.apply(upserts, removals))
        await asyncio.to_thread(_clear, (*old, contents, users))
        return diff

    async def _refresh(self, keys: Collection[str]) -> Diff:
        owners: dict[str, SourceObject] = {}
        csvs: list[str] = []
        pngs: list[str] = []
        for key in keys:
            obj = classify(key, self.prefix)
            if obj is not None:
                owners[key] = obj
                (csvs if obj.kind == "csv" else pngs).append(key)
        found: dict[str, Version | None] = {}
        for key, version in (await self.store.stat_many(pngs)).items() if pngs else ():
            if isinstance(version, ObjectError):  # the image's state is unknown: keep what is known
                logger.warning("cannot look at %s: %s", key, version)
            else:
                found[key] = version
        return await self._update(found, owners, csvs)

    async def _update(
        self,
        found: dict[str, Version | None],
        owners: dict[str, SourceObject],
        read: Collection[str],
    ) -> Diff:
        """Read ``read``, then apply it and ``found`` (key -> version, None when gone).

        ``owners`` classifies every key of both.
        """
        outcomes = await self._read(read, found)
        # A user left with one CSV after a conflict, or whose only CSV has no known content,
        # needs that CSV read now.
        again = self._unknown_csvs(found, owners, outcomes)
        if again:
            for key in again:
                owners[key] = classify(key, self.prefix)  # type: ignore[assignment]  # a known CSV
            outcomes.update(await self._read(again, found))
        self._succeeded()
        return self._apply(found, owners, outcomes)

    async def _read(self, keys: Collection[str], found: dict[str, Version | None]) -> dict[str, Outcome]:
        """Read and parse ``keys``, recording their versions in ``found``."""
        return _split(await self._read_parsed(keys), found)

    async def _read_parsed(self, keys: Collection[str]) -> Contents:
        """What the store has for ``keys``, each CSV parsed (or why it is rejected)."""
        if not keys:
            return {}
        # Parsed as they arrive: a whole load's bytes are never held at once.
        return await self.store.read_many(keys, _parser(time.time_ns() // 1_000_000))

    def _unknown_csvs(
        self, found: dict[str, Version | None], owners: dict[str, SourceObject], outcomes: dict[str, Outcome]
    ) -> list[str]:
        keys_after: dict[str, set[str]] = {}
        for key, version in found.items():
            kind, user_id = owners[key]
            if kind != "csv":
                continue
            keys = keys_after.get(user_id)
            if keys is None:
                keys = keys_after[user_id] = set(_each(self.csv_keys.get(user_id)))
            if version is None:
                keys.discard(key)
            else:
                keys.add(key)
        return [
            key
            for user_id, keys in keys_after.items()
            if len(keys) == 1
            and (key := next(iter(keys))) not in outcomes
            and (key in self._conflicts or (key not in self.rejected and user_id not in self.index))
        ]

    def _apply(
        self,
        found: dict[str, Version | None],
        owners: dict[str, SourceObject],
        outcomes: dict[str, Outcome],
    ) -> Diff:
        """Update the catalog and the index in one synchronous step."""
        touched: set[str] = set()
        # Names bound locally: this loop runs once per key of a batch, which may be large.
        versions, csv_keys, png_keys, rejected, conflicts = (
            self.versions,
            self.csv_keys,
            self.png_keys,
            self.rejected,
            self._conflicts,
        )
        for key, version in found.items():
            kind, user_id = owners[key]
            touched.add(user_id)
            keys_of = csv_keys if kind == "csv" else png_keys
            keys = keys_of.get(user_id)
            if version is None:
                versions.pop(key, None)
                if rejected:
                    rejected.pop(key, None)
                if conflicts:
                    conflicts.discard(key)
                if keys is not None:
                    keys = _without(keys, key)
                    if keys is None:
                        del keys_of[user_id]
                    else:
                        keys_of[user_id] = keys
            else:
                versions[key] = version
                if keys is None:
                    keys_of[user_id] = key
                elif keys != key:
                    keys_of[user_id] = _with(keys, key)
        upserts: list[UserRecord] = []
        removals: list[str] = []
        resolve = self._resolve
        for user_id in touched:
            record = resolve(user_id, outcomes)
            if record is None:
                removals.append(user_id)
            else:
                upserts.append(record)
        return self._publish(self.index.apply(upserts, removals))

    def _publish(self, diff: Diff) -> Diff:
        """Tell the listeners what changed, if anything did."""
        if diff:
            for listener in self.listeners:
                listener(diff)
        return diff

    def _resolve(self, user_id: str, outcomes: dict[str, Outcome]) -> UserRecord | None:
        """The record ``user_id`` should have now, None if it is not a user."""
        csvs = self.csv_keys.get(user_id)
        if csvs is None:
            return None
        current = self.index.get(user_id)
        pngs = self.png_keys.get(user_id)
        img_path = pngs if pngs is None or type(pngs) is str else pngs[0]
        if type(csvs) is not str:
            reason = f"conflict: {' and '.join(csvs)} name the same user {user_id!r}"
            for key in csvs:
                self.rejected[key] = reason
                self._conflicts.add(key)
            record = current
        else:
            key = csvs
            outcome = outcomes.get(key)
            if self._conflicts and key in self._conflicts and outcome is not None:
                self._conflicts.discard(key)
                self.rejected.pop(key, None)
            if type(outcome) is UserFields:
                if self.rejected:
                    self.rejected.pop(key, None)
                record = _new(UserRecord, (user_id, *outcome, img_path))
            else:
                if isinstance(outcome, str):
                    self.rejected[key] = outcome
                    logger.warning("rejected %s: %s", key, outcome)
                record = current  # a rejected file never removes or changes the last good record
        if record is None:
            return None
        return record if record.img_path == img_path else record._replace(img_path=img_path)


#: The keys of one user's CSVs, or of its images: the key itself when there is one (nearly
#: always), else a sorted list.
Keys = str | list[str]


def _each(keys: Keys | None) -> Collection[str]:
    return () if keys is None else (keys,) if type(keys) is str else keys


def _with(keys: Keys, key: str) -> Keys:
    every = _each(keys)
    return keys if key in every else sorted([*every, key])


def _without(keys: Keys, key: str) -> Keys | None:
    rest = [k for k in _each(keys) if k != key]
    return None if not rest else rest[0] if len(rest) == 1 else rest


#: A record made in C (a NamedTuple's own constructor is a Python function).
_new = tuple.__new__


def _changes(
    listing: Listing, versions: dict[str, Version], prefix: str
) -> tuple[dict[str, Version | None], dict[str, SourceObject], list[str]]:
    """What an incremental scan must look at: (found, owners, read) for :meth:`Pipeline._update`.

    ``found`` has the images new or changed (by version) and every object gone (None), ``read``
    the CSVs new or changed, ``owners`` classifies them all.
    """
    found: dict[str, Version | None] = {}
    owners: dict[str, SourceObject] = {}
    read: list[str] = []
    known = 0  # objects of the catalog that are listed
    for key, version in listing.items():
        seen = versions.get(key)
        if seen is not None:
            known += 1
            if seen == version:
                continue
        obj = classify(key, prefix)
        if obj is None:
            continue
        owners[key] = obj
        if obj.kind == "csv":
            read.append(key)
        else:
            found[key] = version
    if known != len(versions):  # some are gone
        for key in versions.keys() - listing.keys():
            found[key] = None
            owners[key] = classify(key, prefix)  # type: ignore[assignment]  # known, so a source object
    return found, owners, read


def _clear(dicts: Iterable[dict[str, Any]]) -> None:
    """Empty ``dicts`` one item at a time, on a worker thread: ``dict.clear()`` of a million
    entries is one call that holds the GIL, and so the event loop, until all are freed."""
    for each in dicts:
        while each:
            each.popitem()


def _catalog(
    listing: Listing, prefix: str, held: Callable[[str], UserRecord | None] | None = None
) -> tuple[dict[str, Version], dict[str, Keys], dict[str, Keys], list[str]]:
    """A fresh catalog of ``listing``: (versions of the images, csv_keys, png_keys, CSVs to read).

    ``held`` gives the index's record of a user_id: its user_id and img_path strings are used
    in place of the listing's equal ones, so the records built again equal the index's in every
    string, and the index keeps its own.
    """
    start = len(prefix)
    versions: dict[str, Version] = {}
    csv_keys: dict[str, Keys] = {}
    png_keys: dict[str, Keys] = {}
    read: list[str] = []
    for key, version in listing.items():
        # classify(), inline: this runs once for every object in the store.
        suffix = key[-4:].lower()
        if suffix == ".csv":
            keys_of = csv_keys
        elif suffix == ".png":
            keys_of = png_keys
        else:
            continue
        user_id = key[start:-4]
        if not user_id or user_id[0] == "." or "/" in user_id or not key.startswith(prefix):
            continue
        if held is not None and (record := held(user_id)) is not None:
            user_id = record.user_id
            if record.img_path == key:
                key = record.img_path
        if keys_of is csv_keys:
            read.append(key)
        else:
            versions[key] = version
        if keys_of.setdefault(user_id, key) is not key:  # a second CSV or image of the user
            keys_of[user_id] = _with(keys_of[user_id], key)
    return versions, csv_keys, png_keys, read


def _records(
    contents: Contents, versions: dict[str, Version], csv_keys: dict[str, Keys], png_keys: dict[str, Keys]
) -> tuple[dict[str, UserRecord], list[str]]:
    """The record of every usual user (its only CSV, read and valid), its version put in
    ``versions``; and the users that need :meth:`Pipeline._resolve` (several CSVs, or one that is
    gone, unreadable or invalid)."""
    users: dict[str, UserRecord] = {}
    others: list[str] = []
    for user_id, csvs in csv_keys.items():
        content = contents.get(csvs) if type(csvs) is str else None
        if type(content) is tuple and type(fields := content[1]) is UserFields:
            versions[csvs] = content[0]  # type: ignore[index]  # a str, as content is not None
            pngs = png_keys.get(user_id)
            img_path = pngs if pngs is None or type(pngs) is str else pngs[0]
            users[user_id] = _new(UserRecord, (user_id, *fields, img_path))
        else:
            others.append(user_id)
    return users, others


def _parser(now_ms: int) -> Callable[[bytes], Outcome]:
    """parse_user_csv at ``now_ms``, a rejection as its reason (one call: it runs once per file)."""

    def parse(data: bytes) -> Outcome:
        try:
            return parse_user_csv(data, now_ms=now_ms)
        except InvalidRecord as e:
            return str(e)

    return parse


def _split(contents: Contents, found: dict[str, Version | None]) -> dict[str, Outcome]:
    """The outcome of every key read, its version put in ``found`` (None: gone, _UNREAD: unreadable)."""
    outcomes: dict[str, Outcome] = {}
    for key, content in contents.items():
        if content is None:
            found[key] = None
        elif isinstance(content, ObjectError):
            found[key] = _UNREAD
            outcomes[key] = f"cannot read: {content}"
        else:
            found[key], outcomes[key] = content
    return outcomes


def _retrieve(future: asyncio.Future[RescanReport]) -> None:
    """Mark a result nobody waits for as seen (failures were logged where they happened)."""
    if not future.cancelled():
        future.exception()


def _summary(diff: Diff) -> str:
    return f"{len(diff.added)} added, {len(diff.updated)} updated, {len(diff.removed)} removed"
