"""GET /updates (Server-Sent Events) and /health's changed_at: the state at connect and after each
change, bursts coalesced, the health status followed, bounded clients, prompt ends on shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from dates import ms
from helpers import Service, SpyStore, fast_settings, wait_until
from served import free_port

from userdata.index import Diff
from userdata.keys import UPDATES
from userdata.live import Broadcaster, sse_event, utc_text
from userdata.stores import StoreUnavailable
from userdata.stores.folder import FolderStore

CSV = "first_name, last_name, birthts\nAnn, Lee, 0\n"
#: changed_at's shape: UTC to the millisecond
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Events:
    """A client of /updates: each event as it comes (with when it came), and the comments."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.comments: list[str] = []

    async def _event(self) -> dict[str, str] | None:
        """The next event's fields; None at the end of the stream. Comments are kept aside."""
        fields: dict[str, str] = {}
        while True:
            line = await self.response.content.readline()
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if not text:
                if fields:
                    return fields
            elif text.startswith(":"):
                self.comments.append(text)
            else:
                name, _, value = text.partition(": ")
                assert name not in fields, text
                fields[name] = value

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event's state (its data), checked for shape; fails after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            fields = await self._event()
        assert fields is not None, "the stream ended"
        assert set(fields) == {"event", "id", "data"} and fields["event"] == "state", fields
        state: dict[str, Any] = orjson.loads(fields["data"])
        assert fields["id"] == str(state["version"]), fields
        self.received.append((time.monotonic(), state))
        return state

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """The first event whose state meets ``predicate``, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(state := await self.next(max(0.0, deadline - time.monotonic()))):
            pass
        return state

    async def comment(self, timeout: float = 5.0) -> str:
        """The next comment line, within ``timeout`` seconds (what comes before it is skipped)."""
        async with asyncio.timeout(timeout):
            while not (line := await self.response.content.readline()).startswith(b":"):
                assert line, "the stream ended"
        return line.decode().rstrip("\n")

    async def ended(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            while await self._event() is not None:
                pass
        return True


async def _connect(service: Service) -> Events:
    r = await service.client.get("/updates")
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"] == "text/event-stream" and r.headers["Cache-Control"] == "no-cache"
    return Events(r)


def _state_of(service: Service) -> dict[str, Any]:
    index = service.index
    return {
        "version": index.version,
        "users": len(index),
        "with_image": sum(r.img_path is not None for r in index.records()),
        "rejected": len(service.pipeline.rejected),
    }


async def test_the_state_comes_at_connect(service: Service, write_user, source_dir: Path) -> None:
    write_user("1", png=True)
    write_user("2")
    (source_dir / "bad.csv").write_text("first_name\nAnn\n")
    await service.post("/data")
    events = await _connect(service)
    state = await events.next()
    assert state == _state_of(service) | {"status": "ok", "cause": None, "changed_at": state["changed_at"]}
    assert state["users"] == 2 and state["with_image"] == 1 and state["rejected"] == 1
    assert INSTANT.fullmatch(state["changed_at"]), state
    assert state["changed_at"] == (await service.get("/health"))["changed_at"]


async def test_events_follow_a_file_added_and_removed(service: Service, write_user, source_dir: Path) -> None:
    events = await _connect(service)
    first = await events.next()
    assert (first["users"], first["changed_at"]) == (0, None)  # an empty first load changed nothing
    write_user("7", png=True)
    added = await events.until(lambda s: s["users"] == 1 and s["with_image"] == 1)
    assert added["version"] > first["version"] and INSTANT.fullmatch(added["changed_at"])
    (source_dir / "7.csv").unlink()
    removed = await events.until(lambda s: s["users"] == 0)
    assert removed["version"] > added["version"] and removed["changed_at"] >= added["changed_at"]
    assert removed == _state_of(service) | {"status": "ok", "cause": None, "changed_at": removed["changed_at"]}


async def test_a_burst_of_changes_gives_a_few_events_the_last_one_final(service: Service, write_user) -> None:
    events = await _connect(service)
    await events.next()
    started = time.monotonic()
    for n in range(50):
        write_user(str(n))
    last = await events.until(lambda s: s["users"] == 50, timeout=10)
    elapsed = time.monotonic() - started
    burst = events.received[1:]
    assert len(burst) <= elapsed / 0.25 + 2 and len(burst) < 10, [s["users"] for _, s in burst]
    assert last["version"] == service.index.version  # nothing newer is left unsent
    assert [s["users"] for _, s in burst] == sorted(s["users"] for _, s in burst)


async def test_the_status_follows_the_store(start_service, data_dir: Path, write_user) -> None:
    write_user("1")
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    service = await start_service(fast_settings(data_dir, watch=False), store=store)
    events = await _connect(service)
    assert (await events.next())["status"] == "ok"
    store.fail = StoreUnavailable("the store is down")
    assert (await service.client.post("/data")).status == 503
    degraded = await events.until(lambda s: s["status"] == "degraded")
    assert "the store is down" in degraded["cause"] and degraded["users"] == 1
    store.fail = None
    await service.post("/data")
    back = await events.until(lambda s: s["status"] == "ok")
    assert back["cause"] is None and back["users"] == 1


async def test_a_service_still_loading_says_so(start_service, data_dir: Path, source_dir: Path) -> None:
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    store.fail = StoreUnavailable("not yet")
    service = await start_service(fast_settings(data_dir, watch=False), store=store, loaded=False)
    events = await _connect(service)
    state = await events.until(lambda s: s["status"] == "degraded")
    assert "not yet" in state["cause"] and (state["version"], state["users"], state["changed_at"]) == (0, 0, None)
    store.fail = None
    assert (await events.until(lambda s: s["status"] == "ok"))["users"] == 0


async def test_a_quiet_stream_gets_keepalive_comments(service: Service) -> None:
    service.app[UPDATES].keepalive = 0.05
    events = await _connect(service)
    await events.next()
    assert [await events.comment(), await events.comment()] == [": keepalive"] * 2


async def test_head_answers_the_headers_only(service: Service) -> None:
    r = await service.client.head("/updates")
    assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream" and await r.read() == b""
    assert len(service.app[UPDATES]) == 0


async def test_clients_are_bounded_and_their_places_freed(service: Service) -> None:
    broadcaster = service.app[UPDATES]
    broadcaster.max_clients = 2
    first, _second = await _connect(service), await _connect(service)
    refused = await service.client.get("/updates")
    assert refused.status == 503 and refused.headers["Retry-After"] == "5"
    assert "no more clients" in (await refused.json())["error"]
    first.response.close()
    await wait_until(lambda: len(broadcaster) == 1, message="for the place to be freed")
    third = await _connect(service)
    assert (await third.next())["status"] == "ok"


async def test_a_slow_client_is_given_the_latest_state_only() -> None:
    state = {"version": 0}
    broadcaster = Broadcaster(lambda: dict(state), every=0.01, spacing=0)
    queue = broadcaster.subscribe()
    assert queue is not None
    task = asyncio.create_task(broadcaster.run())
    try:
        for version in range(1, 20):  # the client takes none of them
            state["version"] = version
            broadcaster.notify(Diff())
            await wait_until(lambda: broadcaster.sent == sse_event(state), message="for the state to be sent")
            assert queue.qsize() == 1
        assert queue.qsize() == 1 and queue.get_nowait() == sse_event({"version": 19})
        broadcaster.close()
        assert queue.get_nowait() is None and broadcaster.subscribe() is None
    finally:
        task.cancel()


async def test_streams_end_at_once_when_the_server_stops(service: Service) -> None:
    async with aiohttp.ClientSession() as session:  # not the test client's: it would close the stream itself
        r = await session.get(service.client.make_url("/updates"))
        events = Events(r)
        await events.next()
        started = time.monotonic()
        await service.client.server.close()  # waits up to 60 s for handlers still running
        assert time.monotonic() - started < 2
        assert await events.ended(timeout=1)


async def test_serve_stops_promptly_with_a_client_connected(serve, data_dir: Path, source_dir: Path) -> None:
    (source_dir / "1.csv").write_text(CSV)
    served = await serve("--data-dir", str(data_dir), "--rescan-interval", "0", port=free_port())
    await served.wait_healthy()
    async with aiohttp.ClientSession() as session:
        r = await session.get(served.url + "/updates")
        events = Events(r)
        assert (await events.next())["users"] == 1
        started = time.monotonic()
        assert await served.stop(signal.SIGTERM) == 0, served.output()
        # Within the 3 s serve would wait for a handler still running: the stream was ended.
        assert time.monotonic() - started < 2.5, served.output()
        assert await events.ended(timeout=1)


# /health's changed_at


async def test_health_tells_when_the_index_last_changed(service: Service, write_user) -> None:
    assert (await service.get("/health"))["changed_at"] is None  # an empty first load changed nothing
    before = time.time()
    write_user("1")
    await wait_until(lambda: "1" in service.index, message="for the user")
    changed = (await service.get("/health"))["changed_at"]
    assert INSTANT.fullmatch(changed), changed
    assert before - 0.001 <= _seconds(changed) <= time.time()
    await service.post("/data")  # nothing changed
    assert (await service.get("/health"))["changed_at"] == changed


async def test_a_first_load_that_finds_users_is_a_change(start_service, data_dir: Path, write_user) -> None:
    write_user("1")
    first = await start_service(fast_settings(data_dir, watch=False))
    assert INSTANT.fullmatch((await first.get("/health"))["changed_at"])
    await first.stop()  # output.csv flushed: the next start restores from it, and reads nothing
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    started = time.time()
    again = await start_service(fast_settings(data_dir, watch=False), store=store)
    loaded = time.time()
    assert store.reads == [], "the users came from output.csv, which no listener hears of"
    await asyncio.sleep(0.2)  # the time of the change is the load's, not the time it is asked for
    assert started - 0.001 <= _seconds((await again.get("/health"))["changed_at"]) <= loaded + 0.05


def _seconds(instant: str) -> float:
    """Seconds since the epoch of a changed_at."""
    return dt.datetime.fromisoformat(instant).timestamp()


@pytest.mark.parametrize(
    ("instant", "text"),
    [(0, "1970-01-01T00:00:00.000Z"), (ms(2026, 12, 1, 17, 0, 0, 123), "2026-12-01T17:00:00.123Z"),
     (-1, "1969-12-31T23:59:59.999Z"), (None, None)],
)  # fmt: skip
def test_instants_are_written_in_utc_to_the_millisecond(instant: int | None, text: str | None) -> None:
    assert utc_text(instant) == text
