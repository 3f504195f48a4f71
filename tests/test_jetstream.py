"""Events from JetStream, against a NATS server of the tests' own (Debian's nats-server).

Tests skip with the reason where nats-server is missing, unless TESTS_REQUIRE_NATS is set: then
they fail.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import nats
import orjson
import pytest
from helpers import wait_until
from nats.js import api
from natsserver import NatsServer, nats_binary

from userdata.jetstream import JetStreamEvents
from userdata.objects import SourceObject

BUCKET, PREFIX = "lake", "src-data/"
FAST: dict[str, Any] = {"retry_delays": (0.05, 0.1, 0.2), "connect_timeout": 1.0, "fetch_timeout": 0.2}


@pytest.fixture(scope="module")
def shared_server(module_nats: NatsServer) -> NatsServer:
    return module_nats


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of the test's own, to stop and start; not started yet."""
    server = NatsServer(nats_binary(), tmp_path)
    yield server
    server.stop()


class Recorder:
    """The seams the app gives: the pipeline's submit, and its rescan_soon."""

    def __init__(self) -> None:
        self.batches: list[set[SourceObject]] = []
        self.rescans = 0

    def submit(self, objects: Any) -> None:
        self.batches.append(set(objects))

    def rescan(self) -> None:
        self.rescans += 1

    @property
    def keys(self) -> set[str]:
        return {obj.key for batch in self.batches for obj in batch}

    def times(self, key: str) -> int:
        return sum(1 for batch in self.batches for obj in batch if obj.key == key)


def event(key: str, *, bucket: str = BUCKET, name: str = "s3:ObjectCreated:Put") -> bytes:
    """A MinIO bucket notification, as its nats target publishes it: the key URL-escaped."""
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventName": name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key), "size": 42}},
    }
    return orjson.dumps({"EventName": name, "Key": f"{bucket}/{key}", "Records": [record]})


def deleted(key: str) -> bytes:
    return event(key, name="s3:ObjectRemoved:Delete")


@asynccontextmanager
async def publisher(url: str) -> AsyncIterator[nats.js.JetStreamContext]:
    nc = await nats.connect(url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@asynccontextmanager
async def running(events: JetStreamEvents) -> AsyncIterator[asyncio.Task[None]]:
    """``events.run()`` as a task (the first load being done); closed at the end, and then it ends."""
    task = asyncio.create_task(events.run())
    try:
        yield task
    finally:
        await events.close()
        await asyncio.wait_for(task, 5)


def make(url: str, recorder: Recorder, **changes: Any) -> tuple[JetStreamEvents, str, str]:
    stream, subject = f"s{uuid.uuid4().hex[:10]}", f"minio.{uuid.uuid4().hex[:10]}"
    options = FAST | changes
    return (
        JetStreamEvents(url, stream, subject, BUCKET, PREFIX, recorder.submit, recorder.rescan, **options),
        stream,
        subject,
    )


async def test_the_stream_is_made_when_missing_with_limits_and_a_maximum_age(shared_server: NatsServer) -> None:
    recorder = Recorder()
    events, stream, subject = make(shared_server.url, recorder, max_age=3600.0)
    try:
        await events.start_position()
        assert events.problem() is None
        async with publisher(shared_server.url) as js:
            info = await js.stream_info(stream)
        assert info.config.subjects == [subject]
        assert info.config.retention == api.RetentionPolicy.LIMITS
        assert info.config.max_age == 3600.0
        summary = {"stream": stream, "subject": subject, "position": 0, "stream_last": 0, "lag": 0, "connected": True}
        assert events.summary() == summary
    finally:
        await events.close()
    assert not events.summary()["connected"]


async def test_events_of_the_load_and_after_become_the_objects_they_name(
    shared_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    events, stream, subject = make(shared_server.url, recorder)
    async with publisher(shared_server.url) as js:
        await js.add_stream(name=stream, subjects=[subject])
        await js.publish(subject, event("src-data/0.csv"))  # before the position: the load has it
        await events.start_position()
        assert events.position == 1
        during_load = [
            event("src-data/1.csv"),
            deleted("src-data/2.png"),
            event("src-data/a b+c.csv"),  # escaped as src-data%2Fa+b%2Bc.csv
            event("src-data/1.csv", bucket="other"),
            event("elsewhere/3.csv"),
            event("src-data/sub/4.csv"),
            b"not json",
            b'{"Records": "no list"}',
            deleted("src-data/5.csv"),  # out of order: the delete before the put
            event("src-data/5.csv"),
            event("src-data/1.csv"),  # a duplicate
        ]
        for payload in during_load:
            await js.publish(subject, payload)
        with caplog.at_level(logging.WARNING, "userdata.jetstream"):
            async with running(events):
                await wait_until(lambda: events.position == 12, message=lambda: f"at {events.summary()}")
                assert recorder.keys == {"src-data/1.csv", "src-data/2.png", "src-data/a b+c.csv", "src-data/5.csv"}
                assert SourceObject("src-data/a b+c.csv", "csv", "a b+c") in set().union(*recorder.batches)
                await js.publish(subject, deleted("src-data/6.PNG"))
                await wait_until(lambda: "src-data/6.PNG" in recorder.keys)
                assert events.summary()["position"] == 13
                assert events.problem() is None
    assert recorder.rescans == 0
    assert "src-data/0.csv" not in recorder.keys
    skipped = [r.getMessage() for r in caplog.records if "skipping message" in r.getMessage()]
    assert len(skipped) == 2, skipped
    assert "skipping message 8 " in skipped[0] and "JSONDecodeError" in skipped[0]
    assert "skipping message 9 " in skipped[1] and "InvalidEvent" in skipped[1]


async def test_a_position_aged_out_asks_for_a_rescan_and_goes_on_from_the_stream_start(
    shared_server: NatsServer,
) -> None:
    recorder = Recorder()
    events, stream, subject = make(shared_server.url, recorder)
    async with publisher(shared_server.url) as js:
        await js.add_stream(name=stream, subjects=[subject], max_msgs=3)  # used as it is, not made again
        await events.start_position()
        for i in range(6):  # sequences 1-6: the stream keeps 4-6 only
            await js.publish(subject, event(f"src-data/{i}.csv"))
        async with running(events):
            await wait_until(lambda: events.position == 6, message=lambda: f"at {events.summary()}")
            assert recorder.rescans == 1
            assert recorder.keys == {"src-data/3.csv", "src-data/4.csv", "src-data/5.csv"}
            await js.publish(subject, event("src-data/7.csv"))
            await wait_until(lambda: "src-data/7.csv" in recorder.keys)
        info = await js.stream_info(stream)
    assert (info.config.max_msgs, info.config.max_age) == (3, 0)
    assert recorder.rescans == 1


async def test_a_consumer_the_server_dropped_is_made_again_from_the_last_consumed(shared_server: NatsServer) -> None:
    recorder = Recorder()
    events, stream, subject = make(shared_server.url, recorder)
    await events.start_position()
    async with running(events), publisher(shared_server.url) as js:
        await js.publish(subject, event("src-data/1.csv"))
        await wait_until(lambda: events.position == 1)
        for consumer in await js.consumers_info(stream):  # as the server does with one idle too long
            await js.delete_consumer(stream, consumer.name)
        await js.publish(subject, event("src-data/2.csv"))
        await wait_until(lambda: "src-data/2.csv" in recorder.keys, message=lambda: f"at {events.summary()}")
        assert len(await js.consumers_info(stream)) == 1
    assert [recorder.times(f"src-data/{i}.csv") for i in (1, 2)] == [1, 1]
    assert recorder.rescans == 0 and events.problem() is None


async def test_a_nats_outage_degrades_and_it_resumes_after_the_last_consumed(own_server: NatsServer) -> None:
    own_server.start()
    recorder = Recorder()
    events, stream, subject = make(own_server.url, recorder)
    await events.start_position()
    async with running(events):
        async with publisher(own_server.url) as js:
            await js.publish(subject, event("src-data/1.csv"))
        await wait_until(lambda: events.position == 1)
        own_server.stop()
        await wait_until(lambda: events.problem() is not None, message="for the outage to show")
        assert str(events.problem()).startswith("NATS unreachable: ")
        assert not events.summary()["connected"]
        own_server.start()  # the same port and store: the stream and its sequences are kept
        async with publisher(own_server.url) as js:
            await js.publish(subject, event("src-data/2.csv"))
            await wait_until(lambda: "src-data/2.csv" in recorder.keys, message=lambda: f"at {events.summary()}")
            assert events.problem() is None
            await js.publish(subject, event("src-data/3.csv"))
            await wait_until(lambda: "src-data/3.csv" in recorder.keys)
        assert events.summary() == {
            "stream": stream,
            "subject": subject,
            "position": 3,
            "stream_last": 3,
            "lag": 0,
            "connected": True,
        }
    assert [recorder.times(f"src-data/{i}.csv") for i in (1, 2, 3)] == [1, 1, 1]
    assert recorder.rescans == 0


async def test_nats_unreachable_at_start_degrades_then_a_rescan_covers_what_was_missed(
    own_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "userdata.jetstream")
    recorder = Recorder()
    events, _, subject = make(own_server.url, recorder)
    await events.start_position()
    assert str(events.problem()).startswith("NATS unreachable: ")
    assert "Connect call failed" in str(events.problem())
    assert events.summary()["position"] is None and events.summary()["lag"] is None
    async with running(events):
        tries = lambda: sum("trying again" in r.getMessage() for r in caplog.records) >= 3  # noqa: E731
        await wait_until(tries, message="for tries while NATS is down")
        assert events.problem() is not None and recorder.rescans == 0
        own_server.start()
        await wait_until(lambda: events.problem() is None, message=lambda: f"{events.problem()}")
        assert recorder.rescans == 1
        assert events.position == 0
        async with publisher(own_server.url) as js:
            await js.publish(subject, event("src-data/1.csv"))
            await wait_until(lambda: "src-data/1.csv" in recorder.keys)
    assert events.position == 1 and recorder.rescans == 1
