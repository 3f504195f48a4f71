"""What the dashboard follows live: when the index last changed, and the state pushed to every
client of ``GET /updates`` (Server-Sent Events) when it changes.

One :class:`Broadcaster` per app. The pipeline's listeners wake it after each applied change; it
also looks at the state every ``every`` seconds (the health status changes without a change of
the index). It sends a state only when it differs from the last one sent, and at most one every
``spacing`` seconds: a burst of changes costs each client a few events, the last one the final
state. Each client has a queue of one that holds the latest state: a slow client is sent what
is current when it takes the next, never a backlog.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import orjson

from .index import Diff, UserIndex

__all__ = ("Broadcaster", "ChangeClock", "sse_event", "utc_text")

#: What a client's queue holds: an event's bytes, or None when the stream is to end.
Item = bytes | None


def utc_text(ms: int | None) -> str | None:
    """``2026-12-01T17:00:00.123Z`` for a time in ms since the epoch; None for None."""
    if ms is None:
        return None
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ChangeClock:
    """When ``index`` last changed: a pipeline listener, told of every applied change.

    A change no listener hears of (the last good records restored from output.csv at start)
    is dated when it is noticed: the next time :meth:`changed_at` is asked (at the end of the
    first load, see :mod:`userdata.dashboard_api`).
    """

    def __init__(self, index: UserIndex) -> None:
        self.index = index
        self._version = index.version
        self._at: int | None = None if index.version == 0 else _now_ms()

    def notify(self, diff: Diff) -> None:
        self._version, self._at = self.index.version, _now_ms()

    def changed_at(self) -> int | None:
        """When the index last changed (ms since the epoch), None if it has not since the start."""
        if self.index.version != self._version:
            self._version, self._at = self.index.version, _now_ms()
        return self._at


def sse_event(state: dict[str, Any]) -> bytes:
    """``state`` as one Server-Sent Event: ``event: state``, its id the index version, one line of JSON."""
    return b"event: state\nid: %d\ndata: %s\n\n" % (state["version"], orjson.dumps(state))


class Broadcaster:
    """The state ``state()`` gives, pushed to every subscribed queue when it changes.

    :param state: the current state (with a ``version``); cheap, as it is asked often
    :param every: seconds between two looks at the state when nothing wakes it
    :param spacing: seconds at least between two states sent
    :param max_clients: queues subscribed at most
    :param keepalive: seconds without an event after which a client is sent a comment
    """

    def __init__(
        self,
        state: Callable[[], dict[str, Any]],
        *,
        every: float = 0.5,
        spacing: float = 0.25,
        max_clients: int = 100,
        keepalive: float = 15.0,
    ) -> None:
        self.state = state
        self.every = every
        self.spacing = spacing
        self.max_clients = max_clients
        self.keepalive = keepalive
        #: set by :meth:`close`: no client is taken any more
        self.closed = False
        self._clients: set[asyncio.Queue[Item]] = set()
        self._wake = asyncio.Event()
        #: the last event sent to the clients
        self.sent: bytes | None = None

    def __len__(self) -> int:
        return len(self._clients)

    def event(self) -> bytes:
        """The current state, as an event."""
        return sse_event(self.state())

    def notify(self, diff: Diff) -> None:
        """A pipeline listener: the index changed."""
        self._wake.set()

    def subscribe(self) -> asyncio.Queue[Item] | None:
        """A new client's queue; None when closed or when there are ``max_clients`` already."""
        if self.closed or len(self._clients) >= self.max_clients:
            return None
        queue: asyncio.Queue[Item] = asyncio.Queue(1)
        self._clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Item]) -> None:
        self._clients.discard(queue)

    def close(self) -> None:
        """End every client's stream (the app shuts down), and take no new client."""
        self.closed = True
        for queue in self._clients:
            _offer(queue, None)
        self._wake.set()

    async def run(self) -> None:
        """Push each new state to the clients, until cancelled (closed, it has none)."""
        while True:
            with suppress(asyncio.TimeoutError):
                async with asyncio.timeout(self.every):
                    await self._wake.wait()
            self._wake.clear()
            if self.closed or not self._clients:
                continue  # with nobody to tell, nothing is worked out
            event = self.event()
            if event == self.sent:
                continue
            self.sent = event
            for queue in self._clients:
                _offer(queue, event)
            await asyncio.sleep(self.spacing)  # changes meanwhile wait, and go as one


def _offer(queue: asyncio.Queue[Item], item: Item) -> None:
    """Put ``item`` in ``queue`` (of one) in place of what it holds, if anything: the latest wins."""
    with suppress(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(item)
