"""What the dashboard page asks besides /data and /stats: the ages of a selection, a user's image,
output.csv as written, and the live state (``GET /updates``, Server-Sent Events).

:func:`setup` adds the routes, and the part that feeds ``/updates``, to the app.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from aiohttp import web

from . import bodies
from .ages import age_counts
from .health import health_status
from .index import Filters, birth_days
from .keys import CHANGES, INDEX, PIPELINE, SETTINGS, STORE, TASKS, UPDATES
from .live import Broadcaster, ChangeClock, utc_text
from .middleware import json_error
from .records import DAY_MS
from .stores import ObjectError, StoreUnavailable
from .views import json_answer, parse_filters, quoted, unready

__all__ = ("live_state", "routes", "setup")

routes = web.RouteTableDef()

#: Seconds between two looks at whether a quiet client of /updates is still connected.
_CONNECTED_EVERY = 1.0
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_CSV_HEADERS = {
    "Content-Type": bodies.content_type("csv"),  # as /data?format=csv: the same shape
    "Content-Disposition": 'attachment; filename="output.csv"',
    "Cache-Control": "no-cache",
}
#: Images at least this large are hashed for their ETag off the event loop.
_HASH_OFF_LOOP = 256 * 1024


def setup(app: web.Application) -> None:
    """Add the routes to ``app``, and the broadcaster of /updates (set up after the pipeline)."""
    app.router.add_routes(routes)
    app.cleanup_ctx.append(_live_ctx)
    app.on_shutdown.append(_end_streams)


def live_state(app: web.Application) -> dict[str, Any]:
    """What /updates sends: the index's version and figures, the health status and its cause."""
    index, pipeline = app[INDEX], app[PIPELINE]
    status, cause = health_status(app)
    return {
        "version": index.version,
        "users": len(index),
        "with_image": index.stats(Filters(has_image=True), _now_ms()).count,
        "rejected": len(pipeline.rejected),
        "status": status,
        "cause": cause,
        "changed_at": utc_text(app[CHANGES].changed_at()),
    }


async def _live_ctx(app: web.Application) -> AsyncIterator[None]:
    clock = app[CHANGES] = ChangeClock(app[INDEX])
    broadcaster = app[UPDATES] = Broadcaster(lambda: live_state(app))
    app[PIPELINE].listeners.extend([clock.notify, broadcaster.notify])
    task = asyncio.create_task(broadcaster.run(), name="userdata.updates")
    if TASKS in app:
        app[TASKS].append(task)  # /livez tells if it dies
    loaded = asyncio.create_task(_first_load_done(app, clock), name="userdata.first_load_dated")
    yield
    broadcaster.close()
    for each in (task, loaded):
        each.cancel()
        with suppress(asyncio.CancelledError):
            await each


async def _first_load_done(app: web.Application, clock: ChangeClock) -> None:
    """Date a change of the first load that no listener heard of (a restore) when the load ends."""
    await app[PIPELINE].loaded.wait()
    clock.changed_at()


async def _end_streams(app: web.Application) -> None:
    """On shutdown, before the server waits for its handlers: every /updates stream ends now."""
    if UPDATES in app:
        app[UPDATES].close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _reason(error: Exception) -> str:
    return str(error) or type(error).__name__


@routes.get("/stats/ages")
async def get_ages(request: web.Request) -> web.Response:
    """How many of the matching users are of each age, youngest to oldest, zeros included."""
    if (early := unready(request.app)) is not None:
        return early
    filters = parse_filters(request.query)
    now = _now_ms()
    groups = request.app[INDEX].groups(filters.has_image)
    counts = age_counts(groups, birth_days(filters, now), now // DAY_MS)
    return json_answer({"ages": [{"age": age, "count": count} for age, count in counts]})


@routes.get("/images/{user_id}")
async def get_image(request: web.Request) -> web.Response:
    """The user's image, read from the store at the key the index holds (the id is only looked
    up, never made into a key), with a strong ETag of its bytes."""
    user_id = request.match_info["user_id"]
    record = request.app[INDEX].get(user_id)
    if record is None:
        return json_error(404, f"no user {quoted(user_id)}")
    key = record.img_path
    if key is None:
        return json_error(404, f"user {quoted(user_id)} has no image")
    try:
        # read_many, not read: it refuses an object past --max-object-size, as for every source object.
        found = (await request.app[STORE].read_many((key,), bytes))[key]
    except StoreUnavailable as e:
        return json_error(503, f"store unavailable: {e}")
    if found is None:
        return json_error(404, f"the image of user {quoted(user_id)} is gone from the store")
    if isinstance(found, ObjectError):
        return json_error(404, f"the image of user {quoted(user_id)} cannot be served: {_reason(found)}")
    data = found[1]
    digest = await asyncio.to_thread(_digest, data) if len(data) >= _HASH_OFF_LOOP else _digest(data)
    headers = {"ETag": f'"{digest}"', "Cache-Control": "no-cache"}
    given = request.if_none_match
    if given is not None and any(tag.value in (digest, "*") for tag in given):
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, headers=headers | {"Content-Type": "image/png", "X-Content-Type-Options": "nosniff"})


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@routes.get("/output.csv")
async def get_output_csv(request: web.Request) -> web.Response:
    """output.csv as the store holds it."""
    key = request.app[SETTINGS].output_key
    try:
        data = await request.app[STORE].read(key)
    except StoreUnavailable as e:
        return json_error(503, f"store unavailable: {e}")
    except ObjectError as e:
        return json_error(503, f"{key} cannot be read: {_reason(e)}")
    if data is None:
        return json_error(404, f"{key} is not written yet")
    return web.Response(body=data, headers=_CSV_HEADERS)


@routes.get("/updates")
async def get_updates(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the state at once, then each new one; a comment now and then."""
    broadcaster = request.app[UPDATES]
    response = web.StreamResponse(headers=_SSE_HEADERS)
    if request.method == "HEAD":
        await response.prepare(request)
        return response
    queue = broadcaster.subscribe()
    if queue is None:
        why = "the service is stopping" if broadcaster.closed else f"{broadcaster.max_clients} clients already"
        return json_error(503, f"/updates takes no more clients: {why}", {"Retry-After": "5"})
    loop = asyncio.get_running_loop()
    try:
        await response.prepare(request)
        sent = broadcaster.event()
        await response.write(sent)
        written = loop.time()
        while True:
            try:
                async with asyncio.timeout(min(_CONNECTED_EVERY, broadcaster.keepalive)):
                    item = await queue.get()
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break  # gone: its place is free again
                if loop.time() - written >= broadcaster.keepalive:
                    await response.write(b": keepalive\n\n")
                    written = loop.time()
                continue
            if item is None:  # the app shuts down
                break
            if item != sent:
                await response.write(item)
                sent, written = item, loop.time()
    except ConnectionError:  # the client went away while written to
        pass
    finally:
        broadcaster.unsubscribe(queue)
    return response
