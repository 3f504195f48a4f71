"""Typed keys for what the application holds, and the small Protocols some of them are typed with.

Views and the health module know the watcher and the database mirror only by these Protocols,
so they import neither watchfiles nor asyncpg.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from .cache import Answer, Body, Page, ResponseCache
from .index import Diff, UserIndex
from .live import Broadcaster, ChangeClock
from .pipeline import Pipeline
from .settings import Settings
from .sinks.output_csv import OutputWriter
from .stores import Store

if TYPE_CHECKING:  # it uses these keys
    from .election import Election
    from .metrics import Metrics

__all__ = (
    "ANSWER_CACHE",
    "CHANGES",
    "DATA_CACHE",
    "ELECTION",
    "EVENTS",
    "PAGE_CACHE",
    "INDEX",
    "METRICS",
    "MIRROR",
    "OUTPUT",
    "PIPELINE",
    "SETTINGS",
    "STATS_CACHE",
    "STORE",
    "TASKS",
    "UPDATES",
    "WATCHER",
    "Mirror",
    "Part",
)


class Part(Protocol):
    """A long-lived part that can tell what keeps it from doing its job."""

    def problem(self) -> str | None:
        """Why the part is not doing its job right now (for /health), None while it is."""
        ...


class Events(Part, Protocol):
    """A feed of MinIO's bucket notifications (JetStream), as /health and readiness see it."""

    def summary(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class Mirror(Part, Protocol):
    """The database mirror, as the app and /health see it."""

    def notify(self, diff: Diff) -> None: ...

    def start(self, loaded: asyncio.Event) -> None: ...

    async def close(self, grace: float = 2.0) -> None: ...

    def summary(self) -> dict[str, Any]:
        """Its state for /health: status, lag and pending changes."""
        ...


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
INDEX = web.AppKey("index", UserIndex)
DATA_CACHE = web.AppKey("data_cache", ResponseCache[Body])  # bodies of recent whole GET /data answers
PAGE_CACHE = web.AppKey("page_cache", ResponseCache[Page])  # and of recent pages
#: recent /data answers whole, by what the request said: its query string and Accept headers
ANSWER_CACHE = web.AppKey("answer_cache", ResponseCache[Answer])
#: recent /stats bodies, by query string and millisecond (the average age moves with the clock)
STATS_CACHE = web.AppKey("stats_cache", ResponseCache[bytes])
PIPELINE = web.AppKey("pipeline", Pipeline)
OUTPUT = web.AppKey("output", OutputWriter)
WATCHER = web.AppKey("watcher", Part)  # only set while a folder is watched
MIRROR = web.AppKey("mirror", Mirror)  # only set with a database URL
EVENTS = web.AppKey("events", Events)  # only set with a NATS URL
#: the writer election: only set by serve with a database URL (and not --read-only); typed for mypy only
ELECTION: web.AppKey[Election] = web.AppKey("election")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")  # typed for mypy only: the module imports this one
#: the background tasks the app runs (pipeline, output, watcher): /livez fails if one has died
TASKS = web.AppKey("tasks", list[asyncio.Task[None]])
CHANGES = web.AppKey("changes", ChangeClock)  # when the index last changed (/health, /updates)
UPDATES = web.AppKey("updates", Broadcaster)  # the state GET /updates streams to its clients
