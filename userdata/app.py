"""The aiohttp application: long-lived parts as cleanup contexts, in dependency order.

aiohttp runs the contexts' setup in order and their cleanup in reverse, so producers of changes
stop first and sinks last: output.csv is flushed after the last change has been applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import suppress
from typing import Any

from aiohttp import web

from .index import UserIndex
from .keys import INDEX, OUTPUT, PIPELINE, SETTINGS, STORE, WATCHER
from .middleware import error_middleware
from .pipeline import Pipeline
from .settings import Settings
from .sinks.output_csv import OutputWriter
from .stores import StoreUnavailable
from .stores.folder import FolderStore
from .views import routes
from .watcher import Watcher

__all__ = ("create_app",)

logger = logging.getLogger("userdata.app")


def create_app(settings: Settings) -> web.Application:
    """The service for ``settings``; nothing starts until the app is run."""
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app.cleanup_ctx.extend([_store_ctx, _output_ctx, _pipeline_ctx, _rescan_ctx])
    app.router.add_routes(routes)
    return app


def create_store(settings: Settings) -> FolderStore:
    if settings.s3_endpoint:
        raise NotImplementedError("S3 mode (--s3-endpoint) is not available in this version")
    store = FolderStore(settings.data_dir, settings.bucket, settings.prefix)
    store.ensure_source_dir()
    return store


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    app[STORE] = store = create_store(app[SETTINGS])
    yield
    await store.close()


async def _output_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    index = app[INDEX] = UserIndex()
    output = app[OUTPUT] = OutputWriter(
        app[STORE], index, settings.output_key, settle=settings.output_settle, max_delay=settings.output_max_delay
    )
    task = _start(output.run(), "output")
    yield
    await _stop(task)
    if app[PIPELINE].loaded.is_set():  # before the first load, the index is not the source's
        await output.flush()


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, store = app[SETTINGS], app[STORE]
    pipeline = app[PIPELINE] = Pipeline(
        store, app[INDEX], settings.prefix, restore=app[OUTPUT].restore, retry_delays=settings.retry_delays
    )
    pipeline.listeners.append(app[OUTPUT].notify)
    watcher = None
    if settings.watch and isinstance(store, FolderStore):
        watcher = app[WATCHER] = Watcher(
            store.source_dir,
            settings.prefix,
            pipeline.submit,
            on_restart=lambda: pipeline.rescan(force=False),
            debounce_ms=settings.watch_debounce_ms,
            step_ms=settings.watch_step_ms,
        )
        watch_task = _start(watcher.run(), "watcher")
        # awatch sets up its watches synchronously in its first step: let it take that step
        # before the first listing, so no change falls between the two.
        await asyncio.sleep(0)
    pipeline_task = _start(pipeline.run(), "pipeline")
    yield
    if watcher is not None:
        watcher.stop_event.set()
        await _stop(watch_task, grace=2.0)
    await _stop(pipeline_task)


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
        with suppress(StoreUnavailable):  # logged by the pipeline, which keeps trying
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
