"""MinIO's bucket notifications from a NATS JetStream stream: the keys they name are read again.

MinIO's ``nats`` target with ``jetstream=on`` publishes each event (the webhook's JSON) to a
subject that a stream holds. A replica records the stream's last sequence before its first load
(:meth:`JetStreamEvents.start_position`), and after the load consumes from the next one
(:meth:`JetStreamEvents.run`), so no change made while it loaded is missed. Each message names
keys for the pipeline to read again: duplicates and reordering are harmless. Where events may
have been lost (NATS unreachable at start, the position aged out of the stream, the stream made
anew), it asks for an incremental rescan and consumes from what the stream holds.

Consumers are ephemeral pull consumers of the replica's own (no acks), made anew from the last
sequence taken after any failure; the part reconnects itself with backoff, degraded meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoServersError
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, BadRequestError, NotFoundError

from .backoff import DEFAULT_DELAYS, Backoff
from .events import objects_from_event
from .objects import SourceObject
from .redact import redacted_url

__all__ = ("DEFAULT_MAX_AGE", "JetStreamEvents")

logger = logging.getLogger("userdata.jetstream")

#: Seconds a stream made by the service keeps an event: a replica down for longer rescans.
DEFAULT_MAX_AGE = 24 * 3600.0
_INFO_EVERY = 1.0  # seconds between looks at the stream and the consumer while consuming (the lag)
_INACTIVE = 60.0  # seconds the server keeps an idle consumer once its replica went away


class JetStreamEvents:
    """Takes MinIO's events for ``bucket``/``prefix`` from ``subject`` in stream ``stream``.

    :meth:`start_position` before the first load, :meth:`run` (a task) after it, :meth:`close`.

    :param url: the NATS server, ``nats://host:4222`` (user and password in it are never shown)
    :param stream: the stream; made when missing (limits retention, ``max_age``), else used as it is
    :param subject: the subject MinIO publishes to
    :param bucket: the bucket of the source objects (events of other buckets are ignored)
    :param prefix: the source prefix (keys outside it are ignored)
    :param submit: takes the source objects of each batch of events (``Pipeline.submit``)
    :param rescan: asks for an incremental rescan, not waited for (``Pipeline.rescan_soon``)
    :param max_age: seconds a stream made here keeps each event
    :param retry_delays: the backoff while NATS cannot be used
    :param connect_timeout: seconds for a connection and for each JetStream request
    :param fetch_timeout: seconds a pull waits for events before it is made again
    :param batch: events pulled at most at once
    """

    def __init__(
        self,
        url: str,
        stream: str,
        subject: str,
        bucket: str,
        prefix: str,
        submit: Callable[[Iterable[SourceObject]], None],
        rescan: Callable[[], object],
        *,
        max_age: float = DEFAULT_MAX_AGE,
        retry_delays: tuple[float, ...] = DEFAULT_DELAYS,
        connect_timeout: float = 2.0,
        fetch_timeout: float = 1.0,
        batch: int = 256,
    ) -> None:
        self.url, self.stream, self.subject = url, stream, subject
        self.bucket, self.prefix = bucket, prefix
        self.submit, self.rescan = submit, rescan
        self.max_age, self.connect_timeout = max_age, connect_timeout
        self.fetch_timeout, self.batch = fetch_timeout, batch
        #: the last sequence dealt with (loaded or consumed); None until one is known
        self.position: int | None = None
        #: the stream's last sequence when last looked at
        self.stream_last: int | None = None
        #: why events cannot be taken now, None while they can
        self.error: str | None = None
        self._backoff = Backoff(retry_delays)
        self._nc: Client | None = None
        self._cause: Exception | None = None  # the connection's last error, more telling than its end
        self._info_at = 0.0
        self._pending: int | None = None  # the consumer's count of events still to deliver
        self._closed = False
        self._stop = asyncio.Event()

    def problem(self) -> str | None:
        """For /health: why events are not being taken, None while they are."""
        return self.error

    def summary(self) -> dict[str, Any]:
        """Its state for /health: where it is in the stream and how far behind."""
        position, last, lag = self.position, self.stream_last, self._pending
        if lag is None and position is not None and last is not None:
            lag = last - position  # until the consumer counts the events of the subject still to take
        return {
            "stream": self.stream,
            "subject": self.subject,
            "position": position,
            "stream_last": last,
            "lag": lag,
            "connected": self._nc is not None and self._nc.is_connected,
        }

    async def start_position(self) -> None:
        """Before the first load: the stream's last sequence, from which :meth:`run` goes on.

        If NATS cannot be used now, there is no position: /health is degraded, and once NATS
        is back :meth:`run` asks for a rescan."""
        try:
            js = await self._connect()
            self.position = await self._last_seq(js)
            logger.info("events from stream %s: the first load covers those up to %d", self.stream, self.position)
        except Exception as e:
            self._failed(e)
            await self._disconnect()

    async def run(self) -> None:
        """After the first load: take events until :meth:`close` (or cancelled); NATS failures
        are retried with backoff, from the last sequence consumed."""
        while not self._closed:
            try:
                js = await self._connect()
                sub = await self._subscribe(js)
                if self.error is not None:
                    logger.info("taking events from stream %s again, after sequence %s", self.stream, self.position)
                self.error, self._cause = None, None
                self._backoff.succeeded()
                await self._consume(js, sub)
            except Exception as e:
                if self._closed:
                    return
                delay = self._failed(e)
                await self._disconnect()
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)

    async def close(self) -> None:
        """Stop taking events and close the connection."""
        self._closed = True
        self._stop.set()
        await self._disconnect()

    async def _connect(self) -> JetStreamContext:
        """The connection (made when there is none) and its stream (made when missing)."""
        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(
                self.url,
                name="userdata",
                connect_timeout=self.connect_timeout,
                allow_reconnect=False,  # this part reconnects, and makes its consumer again
                max_reconnect_attempts=1,  # the initial connection: two tries, not sixty
                reconnect_time_wait=0.1,
                ping_interval=10,
                max_outstanding_pings=2,
                error_cb=self._on_error,
                closed_cb=self._on_closed,
            )
        js = self._nc.jetstream(timeout=self.connect_timeout)
        await _ensure_stream(js, self.stream, self.subject, self.max_age)
        return js

    async def _last_seq(self, js: JetStreamContext) -> int:
        info = await js.stream_info(self.stream)
        self.stream_last, self._info_at = info.state.last_seq, time.monotonic()
        return info.state.last_seq

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        """A consumer from the sequence after :attr:`position`; where the stream no longer holds
        that one (aged out, or the stream made anew), a rescan covers what was lost."""
        if self.position is None:  # NATS could not be used at start
            self.position = await self._last_seq(js)
            self.rescan()
            logger.info("NATS reachable at last: a rescan covers the events up to sequence %d", self.position)
        wanted = self.position + 1
        info = await js.add_consumer(self.stream, _consumer_config(self.subject, wanted))
        start = (info.delivered.stream_seq if info.delivered is not None else self.position) + 1
        if start != wanted:  # the server starts at the first it holds, or after its last
            logger.warning(
                "stream %s no longer holds sequence %d (it starts at %d now): asking for a rescan",
                self.stream,
                wanted,
                start,
            )
            self.position = start - 1
            self.rescan()
        self._pending = info.num_pending
        return await js.pull_subscribe_bind(info.name, self.stream)

    async def _consume(self, js: JetStreamContext, sub: JetStreamContext.PullSubscription) -> None:
        while not self._closed:
            if time.monotonic() - self._info_at >= _INFO_EVERY:
                await self._last_seq(js)
                try:
                    self._pending = (await sub.consumer_info()).num_pending
                except NotFoundError:  # the server dropped it (idle too long): made again
                    logger.warning("the consumer of stream %s is gone: making it again", self.stream)
                    with suppress(Exception):  # its subscription would stay on the connection
                        await sub.unsubscribe()
                    return
            try:
                messages = await sub.fetch(self.batch, timeout=self.fetch_timeout)
            except TimeoutError:  # nats.errors.TimeoutError, or from deeper in fetch a plain one
                continue  # no events (a lost connection raises, or is found by its pings)
            self._take(messages)

    def _take(self, messages: list[Msg]) -> None:
        if not messages:
            return
        if objects := _objects_of(messages, self.bucket, self.prefix, self.stream):
            logger.debug("events name %s", sorted(obj.key for obj in objects))
            self.submit(objects)
        last = messages[-1].metadata.sequence.stream
        self.position = last
        self._pending = messages[-1].metadata.num_pending
        self.stream_last = max(self.stream_last or 0, last)

    def _failed(self, error: Exception) -> float:
        """Record a failure; returns how long to wait before trying again."""
        cause = (self._cause if isinstance(error, NoServersError | ConnectionClosedError) else None) or error
        shown = str(cause) or ("no answer in time" if isinstance(cause, TimeoutError) else type(cause).__name__)
        self.error = (
            f"NATS stream {self.stream}: {shown}" if isinstance(error, APIError) else f"NATS unreachable: {shown}"
        )
        delay = self._backoff.failed()
        logger.warning("%s (at %s); trying again in %.1f s", self.error, redacted_url(self.url), delay)
        return delay

    async def _disconnect(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with suppress(Exception):
                await nc.close()

    async def _on_error(self, error: Exception) -> None:
        self._cause = error
        logger.debug("NATS: %r", error)

    async def _on_closed(self) -> None:
        if not self._closed and self.error is None:
            self.error = f"NATS unreachable: connection lost ({self._cause or 'closed'})"
            logger.warning("%s (at %s)", self.error, redacted_url(self.url))


async def _ensure_stream(js: JetStreamContext, stream: str, subject: str, max_age: float) -> None:
    """Make ``stream`` for ``subject`` if it is missing; one that exists is used as it is."""
    try:
        await js.stream_info(stream)
        return
    except NotFoundError:
        pass
    config = api.StreamConfig(name=stream, subjects=[subject], retention=api.RetentionPolicy.LIMITS, max_age=max_age)
    try:
        await js.add_stream(config)
    except BadRequestError:  # made meanwhile (another replica) with another config: used as it is
        await js.stream_info(stream)
    else:
        logger.info("made stream %s for subject %s (events kept %g s)", stream, subject, max_age)


def _consumer_config(subject: str, start: int) -> api.ConsumerConfig:
    """An ephemeral pull consumer of ``subject`` from sequence ``start``: no acks, kept in memory."""
    return api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        ack_policy=api.AckPolicy.NONE,
        filter_subject=subject,
        inactive_threshold=_INACTIVE,
        mem_storage=True,
        num_replicas=1,
    )


def _objects_of(messages: list[Msg], bucket: str, prefix: str, stream: str) -> set[SourceObject]:
    """The source objects a batch of messages names; a message that is no S3 event is skipped
    (logged), never tried again."""
    objects: set[SourceObject] = set()
    for msg in messages:
        try:
            objects |= objects_from_event(orjson.loads(msg.data), bucket, prefix)
        except Exception as e:
            seq = msg.metadata.sequence.stream
            logger.warning("skipping message %d of stream %s: %s: %s", seq, stream, type(e).__name__, e)
    return objects
