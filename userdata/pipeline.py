"""The change pipeline: the one writer of the index, following the store.

Producers (the watcher, the webhook, the periodic rescan, POST /data) only name source objects
to look at again (:meth:`Pipeline.submit`), or ask for a rescan (:meth:`Pipeline.rescan`). The
pipeline has the :class:`~userdata.reconcile.Reconciler` read the store's truth and apply it,
and tells the listeners (the sinks) what changed.

Concurrency. The pipeline's task refreshes named objects batch by batch; a rescan runs in a task
of its own beside it (one at a time), so a named change never waits for a scan of any size.
Every write to the catalog and the index is one synchronous step on the event loop, so no locks
are needed and a reader never sees half a batch. The rule between the two: a user that a
refresh applied while a scan runs is left by that scan as the refresh left it, since the scan's
read of it may be the older one (and if the refresh's is, the event that follows any later
change refreshes it again; the next rescan is the safety net). Passes of a scan on a worker
thread only read the live catalog and index, each step over their dicts one C call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import suppress

from . import tuning
from .backoff import DEFAULT_DELAYS, Backoff
from .future import FutureBirthts
from .index import Diff, UserIndex
from .objects import SourceObject
from .reconcile import Reconciler
from .reports import Meter, RescanReport, Restore, Restored
from .stores import Store, StoreUnavailable

__all__ = ("Listener", "Pipeline", "RescanReport", "Restore", "Restored")

logger = logging.getLogger("userdata.pipeline")


Listener = Callable[[Diff], None]


class _Rescan:
    def __init__(self, force: bool) -> None:
        self.force = force
        self.future: asyncio.Future[RescanReport] = asyncio.get_running_loop().create_future()


class Pipeline:
    """Keeps ``index`` equal to the source objects of ``store``.

    Start it with :meth:`run` (as a task); feed it with :meth:`submit` and :meth:`rescan`; add
    sinks to :attr:`listeners`.

    :param store: where the source objects are
    :param index: the index it keeps; only the pipeline writes it
    :param prefix: the source prefix (``src-data/``)
    :param retry_delays: the backoff while the store is unavailable (see :class:`~userdata.backoff.Backoff`)
    """

    def __init__(
        self, store: Store, index: UserIndex, prefix: str, *, retry_delays: tuple[float, ...] = DEFAULT_DELAYS
    ) -> None:
        self.store = store
        self.index = index
        #: called with every Diff that changed something, on the pipeline's task
        self.listeners: list[Listener] = []
        #: set once the first load is done
        self.loaded = asyncio.Event()
        #: why the store cannot be used right now, None when it can
        self.store_error: str | None = None
        #: why some changes named could not be applied (they are retried), None when all were
        self.apply_error: str | None = None
        #: told of each scan, store failure and batch of named changes applied (userdata.metrics)
        self.meter = Meter()
        self.reconciler = Reconciler(store, index, prefix)
        self._backoff = Backoff(retry_delays)
        #: source objects named (:meth:`submit`) and not applied yet, by key
        self.named: dict[str, SourceObject] = {}
        self._named_at = 0.0  # when the first of them was named (time.monotonic())
        self._pending: _Rescan | None = None
        self._scanning: asyncio.Task[None] | None = None
        self._rescan_retry: asyncio.TimerHandle | None = None
        self._future = FutureBirthts(self.reconciler, self.submit)
        self._wake = asyncio.Event()

    @property
    def rejected(self) -> dict[str, str]:
        """key -> why that file is rejected (a name no key may have, escaped)."""
        rejected, bad = self.reconciler.catalog.rejected, self.store.bad_names
        return rejected | bad if bad else rejected

    def problem(self) -> str | None:
        """For /health: why the store cannot be used or changes not applied, None when all is well."""
        return f"store unavailable: {self.store_error}" if self.store_error is not None else self.apply_error

    def submit(self, objects: Iterable[SourceObject]) -> None:
        """Look at these source objects again (added, changed or deleted: the store will tell)."""
        before = len(self.named)
        if not before:
            self._named_at = time.monotonic()
        self.named.update((obj.key, obj) for obj in objects)
        if len(self.named) != before:
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
        """An incremental rescan, not waited for: a failure is logged (for the store: retried)."""
        self.rescan(force=False).add_done_callback(_retrieve)

    async def run(self, restore: Restore | None = None) -> None:
        """Load everything (after ``restore``), then apply changes as they are asked for, until cancelled."""
        with tuning.loop_first():
            await self.load(retry=True, restore=restore)
            try:
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    if self._pending is not None and self._scanning is None:
                        request, self._pending = self._pending, None
                        self._scanning = asyncio.create_task(self._run_rescan(request), name="userdata.rescan")
                        self._scanning.add_done_callback(self._scan_ended)
                    if self.named:
                        await self._refresh()
            finally:
                if self._scanning is not None:
                    self._scanning.cancel()
                    with suppress(asyncio.CancelledError):
                        await self._scanning

    async def load(self, *, retry: bool = False, restore: Restore | None = None) -> RescanReport:
        """Put ``restore``'s last good records in the index, then read every source object (with
        its catalog hint, those that differ from it). With ``retry``, keeps trying while the
        store is unavailable; else raises StoreUnavailable."""
        started = time.monotonic()
        resumed = False
        while True:
            try:
                if restore is not None:
                    records, hint = await restore()
                    self.index.apply(records)
                    restore = None
                    resumed = hint is not None and await self.reconciler.resume(hint)
                with tuning.frozen_when_done():
                    report = await self._scan(force=not resumed, started=started)
                break
            except Exception as e:
                if not retry:
                    raise
                if isinstance(e, StoreUnavailable):
                    delay = self._failed(e)
                else:
                    logger.exception("initial load failed")
                    self.store_error, delay = f"initial load failed: {e}", self._backoff.failed()
            await asyncio.sleep(delay)
        _log_loaded(report, self, resumed)
        self.loaded.set()
        return report

    async def _refresh(self) -> None:
        objects, self.named = self.named, {}
        named_at = self._named_at  # kept if they are put back: they wait on since then
        failed: dict[str, SourceObject] | None = {}  # None: the store was lost meanwhile
        try:
            diffs = [await self.reconciler.refresh(objects.values())]
        except Exception as e:
            if isinstance(e, StoreUnavailable):
                return self._requeue(objects, self._failed(e))
            # A bug (or an odd name) in one key must hold up no other: each is tried on its own.
            logger.exception("failed to apply %d changed keys; trying each on its own", len(objects))
            diffs, failed, lost = await self.reconciler.refresh_each(objects)
            if lost is not None:  # those applied already are read again: no harm
                self._requeue(objects, self._failed(lost))
                failed = None
        if failed:  # the store answers; these are retried, with backoff
            self.store_error, self.apply_error = None, f"cannot apply the changes of {len(failed)} keys (retried)"
            self._requeue(failed, self._backoff.failed())
        elif failed is not None:
            self.apply_error = None
            self._succeeded()
            self.meter.visible(time.monotonic() - named_at)
        for diff in diffs:
            self._publish(diff)
        _log_applied(len(objects), diffs)

    def _requeue(self, objects: dict[str, SourceObject], delay: float) -> None:
        self.named = objects | self.named  # what came meanwhile is newer news of the same keys
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _run_rescan(self, request: _Rescan) -> None:
        try:
            with tuning.collector_paused():
                report = await self._scan(force=request.force, started=time.monotonic())
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

    def _scan_ended(self, task: asyncio.Task[None]) -> None:
        self._scanning = None
        if self._pending is not None:
            self._wake.set()

    def _retry_rescan(self) -> None:
        self._rescan_retry = None
        self.rescan_soon()

    async def _scan(self, *, force: bool, started: float) -> RescanReport:
        diff, garbage = await self.reconciler.scan(force=force)
        self._succeeded()
        self._publish(diff)
        if self.loaded.is_set():  # a rescan: requests are being served meanwhile
            await tuning.free_off_loop(*garbage)
        self.meter.scanned(_kind(force, self.loaded), time.monotonic() - started)
        return RescanReport.of(diff, len(self.index), len(self.rejected), started)

    def _failed(self, error: StoreUnavailable) -> float:
        """Record a store failure; returns how long to wait before trying again."""
        self.store_error = str(error)
        self.meter.store_failed()
        delay = self._backoff.failed()
        logger.warning("store unavailable (%s); trying again in %.1f s", error, delay)
        return delay

    def _succeeded(self) -> None:
        if self.store_error is not None:
            logger.info("store reachable again")
        self.store_error = None
        self._backoff.succeeded()

    def _publish(self, diff: Diff) -> None:
        """Tell the listeners what changed, if anything did."""
        self._future.mind()
        if diff:
            _tell(self.listeners, diff)


def _tell(listeners: list[Listener], diff: Diff) -> None:
    for listener in listeners:
        try:
            listener(diff)
        except Exception:  # a sink's bug must not stop the index from following the store
            logger.exception("listener %r failed", listener)


def _log_applied(count: int, diffs: list[Diff]) -> None:
    added, updated, removed = (sum(len(getattr(d, part)) for d in diffs) for part in ("added", "updated", "removed"))
    logger.info("applied %d changed keys: %d added, %d updated, %d removed", count, added, updated, removed)


def _log_loaded(report: RescanReport, pipeline: Pipeline, resumed: bool) -> None:
    how = "only what changed since the catalog hint" if resumed else "every object"
    figures = report.users, pipeline.store.describe(), how, report.duration_ms, report.rejected
    logger.info("loaded %d users from %s (read %s) in %d ms (%d rejected files)", *figures)


def _kind(force: bool, loaded: asyncio.Event) -> str:
    """What a scan is, for its metrics: the first load, or a forced or an incremental rescan."""
    return ("forced" if force else "incremental") if loaded.is_set() else "load"


def _retrieve(future: asyncio.Future[RescanReport]) -> None:
    """Mark a result nobody waits for as seen (failures were logged where they happened)."""
    if not future.cancelled():
        future.exception()
