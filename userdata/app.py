"""The aiohttp application: long-lived parts as cleanup contexts, in dependency order.

aiohttp runs the contexts' setup in order and their cleanup in reverse, so producers of changes
stop first and sinks last: output.csv is flushed, and the database mirror catches up, after the
last change has been applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import suppress
from typing import Any

from aiohttp import web

from . import dashboard_api
from .cache import ResponseCache
from .docs import routes as docs_routes
from .index import UserIndex
from .keys import (
    ANSWER_CACHE,
    DATA_CACHE,
    ELECTION,
    EVENTS,
    INDEX,
    METRICS,
    MIRROR,
    OUTPUT,
    PAGE_CACHE,
    PIPELINE,
    SETTINGS,
    STATS_CACHE,
    STORE,
    TASKS,
    WATCHER,
)
from .metrics import Metrics, metrics_ctx
from .metrics import routes as metrics_routes
from .middleware import answer_errors
from .objects import SourceObject
from .page_files import routes as page_routes
from .pipeline import Pipeline
from .settings import Settings
from .sinks.output_csv import OutputWriter
from .sinks.postgres import PostgresMirror
from .sinks.write_gate import WriteGate
from .stores import Store
from .stores.folder import FolderStore
from .stores.s3 import S3Store
from .views import routes
from .watcher import Watcher, folder_objects, minio_objects

__all__ = ("create_app",)

#: Seconds the last write of output.csv may take when the service stops.
FLUSH_TIMEOUT = 5.0
#: Seconds a writer that stops talking to the database stays the writer at most.
ELECTION_LEASE = 3.0

logger = logging.getLogger("userdata.app")


def create_app(settings: Settings, *, store: Store | None = None) -> web.Application:
    """The service for ``settings``; nothing starts until the app is run.

    :param settings: how it runs
    :param store: the store to use instead of the one ``settings`` name (tests wrap one)
    """
    metrics = Metrics()
    app = answer_errors(web.Application(), metrics.requests.observe)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[STORE] = create_store(settings) if store is None else store
    app[DATA_CACHE], app[PAGE_CACHE], app[ANSWER_CACHE] = ResponseCache(), ResponseCache(), ResponseCache(64)
    app[STATS_CACHE] = ResponseCache(8)
    app.cleanup_ctx.extend(
        [_store_ctx, _election_ctx, _output_ctx, _mirror_ctx, _pipeline_ctx, _rescan_ctx, metrics_ctx]
    )
    app.router.add_routes(routes)
    app.router.add_routes(metrics_routes)
    app.router.add_routes(docs_routes)
    app.router.add_routes(page_routes)  # the dashboard's CSS and script
    dashboard_api.setup(app)  # its routes, and /updates' part: after the pipeline's
    return app


def create_store(settings: Settings) -> Store:
    """The store ``settings`` name (not opened yet)."""
    if settings.s3_endpoint:
        return S3Store(settings.s3_endpoint, settings.bucket, settings.prefix, max_object_size=settings.max_object_size)
    assert settings.data_dir is not None
    return FolderStore(settings.data_dir, settings.bucket, settings.prefix, max_object_size=settings.max_object_size)


def gate_output(output: OutputWriter, app: web.Application) -> None:
    """A --read-only replica never writes output.csv; with an election, only the writer does,
    conditionally on the ETag it last saw, and on each win writes what the store does not hold."""
    if app[SETTINGS].read_only:
        output.gate = WriteGate(output.store, read_only=True)
    elif ELECTION in app:
        election = app[ELECTION]
        output.gate = WriteGate(output.store, lambda: election.is_writer, conditional=True)
        election.on_change.append(lambda writer: output.rewrite() if writer else None)


def follow_catalog(output: OutputWriter, pipeline: Pipeline, settings: Settings) -> None:
    """Have ``output`` persist ``pipeline``'s catalog beside output.csv (see OutputWriter.follow)."""
    output.follow(
        lambda: pipeline.reconciler.catalog,
        pipeline.loaded,
        bucket=settings.bucket,
        prefix=settings.prefix,
        max_object_size=settings.max_object_size,
    )


def create_watcher(
    settings: Settings, store: Store, submit: Callable[[Iterable[SourceObject]], None]
) -> Watcher | None:
    """The folder store's watcher, or in S3 mode one for MinIO's data directory when given."""
    if not settings.watch or settings.data_dir is None:
        return None
    options: dict[str, Any] = {
        "debounce_ms": settings.watch_debounce_ms,
        "step_ms": settings.watch_step_ms,
        "retry_delays": settings.retry_delays,
    }
    if isinstance(store, FolderStore):
        return Watcher(store.source_dir, folder_objects(store.source_dir, settings.prefix), submit, **options)
    bucket_dir = settings.data_dir / settings.bucket
    return Watcher(bucket_dir, minio_objects(bucket_dir, settings.prefix), submit, recursive=True, **options)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    yield
    await store.close()


async def _election_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # Replicas (fed by JetStream) elect their writer; one service alone writes whatever the
    # database does (an outage of it must never stop output.csv).
    if not (settings.database_url and settings.nats_url) or settings.read_only:
        yield
        return
    from .election import Election  # asyncpg only where it is used
    from .sinks.postgres_table import init_connection

    # The mirror writes on its session: it is set up for the mirror's statements.
    election = app[ELECTION] = Election(settings.database_url, lease=ELECTION_LEASE, init=init_connection)
    election.start()
    yield  # closed after the output and the mirror: their last writes are the writer's
    await election.close()


async def _output_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    index = app[INDEX] = UserIndex()
    output = app[OUTPUT] = OutputWriter(
        app[STORE],
        index,
        settings.output_key,
        settle=settings.output_settle,
        max_delay=settings.output_max_delay,
        retry_delays=settings.retry_delays,
    )
    gate_output(output, app)
    yield  # _pipeline_ctx starts it, and stops it
    if app[PIPELINE].loaded.is_set():  # before the first load, the index is not the source's
        try:
            # Bounded: a store that does not answer must not keep the service from stopping
            # within a few seconds (the write is whole or not at all either way).
            await asyncio.wait_for(output.flush(), FLUSH_TIMEOUT)
        except TimeoutError:
            logger.warning("output.csv not flushed: the store did not answer within %g s", FLUSH_TIMEOUT)


async def _mirror_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.database_url or settings.read_only:
        yield
        return
    options: dict[str, Any] = {"retry_delays": settings.retry_delays, "lag_limit": settings.mirror_lag_limit}
    if ELECTION in app:
        from .sinks.elected_mirror import ElectedMirror

        mirror: PostgresMirror = ElectedMirror(app[ELECTION], settings.database_url, app[INDEX], **options)
    else:
        mirror = PostgresMirror(settings.database_url, app[INDEX], **options)
    app[MIRROR] = mirror
    yield  # _pipeline_ctx feeds it and starts it
    await mirror.close(grace=2.0)  # writes what it can in that time; never waits for a database that is down


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, store = app[SETTINGS], app[STORE]
    pipeline = app[PIPELINE] = Pipeline(store, app[INDEX], settings.prefix, retry_delays=settings.retry_delays)
    app[METRICS].follow(pipeline)
    output = app[OUTPUT]
    pipeline.listeners.append(output.notify)
    # The catalog, persisted beside output.csv, lets the next start read only what changed.
    follow_catalog(output, pipeline, settings)
    output_task = _start(output.run(), "output")
    if MIRROR in app:  # its first sync waits for the first load: a partial index would delete rows
        pipeline.listeners.append(app[MIRROR].notify)
        app[MIRROR].start(pipeline.loaded)
    watcher = create_watcher(settings, store, pipeline.submit)
    if watcher is not None:
        app[WATCHER] = watcher
        watcher.on_rescan = pipeline.rescan_soon
        watch_task = _start(watcher.run(), "watcher")
        # awatch sets up its watches synchronously in its first step: let it take that step
        # before the first listing, so no change falls between the two.
        await asyncio.sleep(0)
    events_task = await _start_events(app, pipeline)
    # The last good records come from output.csv: a user whose CSV is invalid at start-up keeps
    # the record it had.
    pipeline_task = _start(pipeline.run(restore=output.restore), "pipeline")
    app[TASKS] = [pipeline_task, output_task] + ([watch_task] if watcher is not None else [])
    app[TASKS] += [events_task] if events_task is not None else []
    yield
    if watcher is not None:
        watcher.stop_event.set()
        await _stop(watch_task, grace=2.0)
    if events_task is not None:
        await app[EVENTS].close()  # run() returns
        # Waiting for the first load, it has nothing to finish.
        await _stop(events_task, grace=2.0 if pipeline.loaded.is_set() else 0.0)
    await _stop(pipeline_task)
    await _stop(output_task)  # _output_ctx flushes what is left


async def _start_events(app: web.Application, pipeline: Pipeline) -> asyncio.Task[None] | None:
    """With a NATS URL: the stream's position recorded before the first load, so that the events
    of changes made during it are taken after it (none missed); the task that takes them."""
    settings = app[SETTINGS]
    if settings.nats_url is None:
        return None
    from .jetstream import JetStreamEvents  # nats only where it is used

    events = JetStreamEvents(
        settings.nats_url,
        settings.nats_stream,
        settings.nats_subject,
        settings.bucket,
        settings.prefix,
        pipeline.submit,
        pipeline.rescan_soon,
        retry_delays=settings.retry_delays,
    )
    app[EVENTS] = events
    await events.start_position()  # never raises: without NATS it degrades, and rescans when back

    async def follow() -> None:
        await pipeline.loaded.wait()
        await events.run()

    return _start(follow(), "jetstream")


async def _rescan_ctx(app: web.Application) -> AsyncIterator[None]:
    interval = app[SETTINGS].rescan_interval
    task = _start(_rescan_periodically(app[PIPELINE], interval), "rescan") if interval else None
    yield
    if task is not None:
        await _stop(task)


async def _rescan_periodically(pipeline: Pipeline, interval: float) -> None:
    await pipeline.loaded.wait()
    while True:
        await asyncio.sleep(interval)
        with suppress(Exception):  # logged by the pipeline, which keeps trying
            await pipeline.rescan(force=False)


def _start(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coro, name=f"userdata.{name}")
    task.add_done_callback(_report_crash)
    return task


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task %s stopped", task.get_name(), exc_info=task.exception())


async def _stop(task: asyncio.Task[None], grace: float = 0.0) -> None:
    """Let ``task`` finish within ``grace`` seconds, then cancel it and wait for it."""
    if grace:
        with suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), grace)
    task.cancel()
    with suppress(asyncio.CancelledError, Exception):  # a crash was logged when it happened
        await task
