"""HTTP handlers: parse the request, ask the index or the pipeline, answer JSON."""

from __future__ import annotations

import dataclasses
import functools
import hmac
import math
import re
import time
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping

from . import bodies
from .cache import Answer, Body, Page
from .events import InvalidEvent, objects_from_event
from .health import REJECTED_SHOWN, catching_up, check_health, rejected_page
from .index import Filters, birth_days
from .keys import ANSWER_CACHE, DATA_CACHE, INDEX, PAGE_CACHE, PIPELINE, SETTINGS, STATS_CACHE, TASKS
from .middleware import BadRequest, json_error
from .records import DAY_MS, UserRecord
from .stores import StoreUnavailable

__all__ = ("json_answer", "parse_filters", "quoted", "routes")

routes = web.RouteTableDef()
R = TypeVar("R", bound=web.StreamResponse)

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_NUMBER = re.compile(r"\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FILTER_NAMES = ("is_image_exists", "min_age", "max_age")
_PAGE_NAMES = ("limit", "after")
_EVERYONE = Filters(None, None, None)
#: Records (or rejected files) a page holds at most.
MAX_LIMIT = 1000


def parse_filters(query: MultiMapping[str]) -> Filters:
    """Filters from a query string; raises BadRequest naming the parameter at fault."""
    return _filters(_checked(query, _FILTER_NAMES))


def _checked(query: MultiMapping[str], known: tuple[str, ...]) -> dict[str, str]:
    """Each parameter's value, stripped; BadRequest for one unknown, given twice or empty."""
    values: dict[str, str] = {}
    for name, raw in query.items():  # every pair: iterating the keys would hide repeats
        if name not in known:
            raise BadRequest(f"unknown parameter {quoted(name)}; known: {', '.join(known)}")
        if name in values:
            raise BadRequest(f"parameter {name} given more than once")
        value = values[name] = raw.strip()
        if not value:
            raise BadRequest(f"parameter {name} is empty")
    return values


def _page(values: dict[str, str], default: int | None) -> tuple[int, str | None] | None:
    """(limit, after) of a paged request; None for the whole answer (no limit, no ``default``)."""
    text = values.get("limit")
    if text is None:
        if default is None:
            if "after" in values:
                raise BadRequest("parameter after needs limit")
            return None
        text = str(default)
    if not re.fullmatch("[0-9]{1,9}", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {quoted(text)}")
    return int(text), values.get("after")


def _link_next(response: web.Response, path: str, query: list[tuple[str, str]], last: str) -> web.Response:
    """``response`` with the RFC 8288 link to the page after ``last``: the same query otherwise."""
    response.headers["Link"] = _link(path, tuple(query), last)
    return response


@functools.lru_cache(maxsize=256)
def _link(path: str, query: tuple[tuple[str, str], ...], last: str) -> str:
    # Kept: a page asked again and again (a dashboard's) would encode its link again each time.
    pairs = [(k, v) for k, v in query if k != "after"] + [("after", last)]
    return f'<{path}?{urlencode(pairs)}>; rel="next"'


def _filters(values: dict[str, str]) -> Filters:
    has_image = None
    if "is_image_exists" in values:
        has_image = _BOOLEANS.get(values["is_image_exists"].lower())
        if has_image is None:
            raise BadRequest(f"is_image_exists must be true or false, not {quoted(values['is_image_exists'])}")
    min_age, max_age = (_age(name, values.get(name)) for name in ("min_age", "max_age"))
    if min_age is not None and max_age is not None and min_age > max_age:
        raise BadRequest(f"min_age ({values['min_age']}) is greater than max_age ({values['max_age']})")
    return Filters(has_image, min_age, max_age)


def _age(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    if not _NUMBER.fullmatch(text):
        raise BadRequest(f"{name} must be a non-negative number, not {quoted(text)}")
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, not {quoted(text)}")
    return value


def quoted(text: str, limit: int = 40) -> str:
    """``text`` as an error message shows what a client sent: quoted, at most ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def json_answer(body: Any, status: int = 200) -> web.Response:
    """``body`` as a JSON answer."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def unready(app: web.Application) -> web.Response | None:
    """For the index's answers (/data, /stats, /stats/ages): 503 from a replica fed by JetStream
    until its first load is done, None otherwise. Behind a load balancer another replica answers
    them, never one with a partial index (a service alone answers from what it has so far)."""
    if app[SETTINGS].nats_url is not None and not app[PIPELINE].loaded.is_set():
        return json_error(503, "starting: the first load is not done yet", {"Retry-After": "1"})
    return None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@routes.get("/data")
async def get_data(request: web.Request) -> web.StreamResponse:
    app = request.app  # once: each request.app is two property lookups
    index, now = app[INDEX], _now_ms()
    # A request exactly like a recent one (a dashboard's, a client paging again), on the same
    # index and day, is given that answer again without being parsed, checked or rendered.
    answers, version, headers = app[ANSWER_CACHE], index.version, request.headers
    # The query as sent: query_string is half decoded (%252B and %2B alike would be "%2B").
    query = request.rel_url.raw_query_string
    exactly = (query, headers.get("Accept"), headers.get("Accept-Encoding"), now // DAY_MS)
    if (kept := answers.get(version, exactly)) is not None:  # kept once ready, and ready stays
        return web.Response(body=kept.body, headers=kept.headers)
    if (early := unready(app)) is not None:
        return early
    values = _checked(request.query, _FILTER_NAMES + _PAGE_NAMES + ("format",))
    filters, paged = _filters(values), _page(values, None)
    fmt, gzip = bodies.negotiate(values.get("format"), headers)
    cache = app[DATA_CACHE]
    # What decides the answer besides the index: the image filter and the span of birth days
    # the age filters allow today (min_age=30 and min_age=29.5 share a body).
    span = birth_days(filters, now)
    if paged is not None:
        limit, after = paged
        pages, key = app[PAGE_CACHE], (filters.has_image, span, fmt, gzip, limit, after)
        # A kept page without awaiting (shared's own lookup would cost a coroutine each time).
        page = pages.get(version, key) or await pages.shared(
            version, key, lambda: _page_of(*index.page(filters.has_image, span, after, limit), fmt, gzip)
        )
        response = _answer(web.Response(body=page.body), fmt, page.body)
        if page.last is not None:
            _link_next(response, "/data", list(values.items()), page.last)
        answers.put(version, exactly, Answer(page.body, CIMultiDictProxy(response.headers.copy())))
        return response
    body = await cache.shared(
        version,
        (filters.has_image, span, fmt, gzip),
        lambda: bodies.build(index.select(filters.has_image, span), fmt, gzip),
    )
    if isinstance(body, bytes):
        response = _answer(web.Response(body=body), fmt, body)
        answers.put(version, exactly, Answer(body, CIMultiDictProxy(response.headers.copy())))
        return response
    # In parts, each written when the client has taken the last: a slow client holds no copy.
    streamed = _answer(web.StreamResponse(), fmt, body)
    streamed.content_length = sum(map(len, body))
    await streamed.prepare(request)
    if request.method != "HEAD":  # a HEAD answer has the length, and no body
        for part in body:
            await streamed.write(part)
    await streamed.write_eof()
    return streamed


def _page_of(records: list[UserRecord], more: bool, fmt: bodies.Format, gzip: bool) -> Page:
    body = bodies.render_page(records, fmt)
    return Page(bodies.gzip_bytes(body) if gzip else body, records[-1].user_id if more else None)


def _answer(response: R, fmt: bodies.Format, body: Body) -> R:
    """``response`` with the headers of a /data answer of ``body``."""
    response.headers["Content-Type"] = bodies.content_type(fmt)
    response.headers["Vary"] = "Accept, Accept-Encoding"
    if bodies.is_gzip(body):
        response.headers["Content-Encoding"] = "gzip"
    return response


@routes.get("/stats")
async def get_stats(request: web.Request) -> web.Response:
    app = request.app
    if (early := unready(app)) is not None:
        return early
    # Many requests a millisecond (a busy dashboard's) share one answer: same query, same index,
    # same clock.
    index, now, query = app[INDEX], _now_ms(), request.rel_url.raw_query_string  # as sent
    kept, key = app[STATS_CACHE], (query, now)
    body = kept.get(index.version, key)
    if body is None:
        body = orjson.dumps(index.stats(parse_filters(request.query) if query else _EVERYONE, now))
        kept.put(index.version, key, body)
    return web.Response(body=body, content_type="application/json")


@routes.post("/data")
async def rescan(request: web.Request) -> web.Response:
    """A full forced rescan; concurrent calls share one."""
    pipeline = request.app[PIPELINE]
    if not pipeline.loaded.is_set() and pipeline.store_error is not None:
        # The first load is still waiting for the store, and a rescan would only run after it.
        return json_error(503, f"not loaded yet: {pipeline.store_error}")
    try:
        report = await pipeline.rescan(force=True)
    except StoreUnavailable as e:
        return json_error(503, f"store unavailable: {e}")
    return json_answer(dataclasses.asdict(report))


@routes.post("/events")
async def events(request: web.Request) -> web.Response:
    """MinIO bucket notifications: the keys they name are read again. Off without a token."""
    settings = request.app[SETTINGS]
    if not settings.webhook_token:
        raise web.HTTPNotFound()
    expected = f"Bearer {settings.webhook_token}".encode()
    # surrogateescape: a header that is not UTF-8 is a wrong token, not a server error
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected):
        return json_error(
            401, "a valid Authorization: Bearer <token> header is required", {"WWW-Authenticate": "Bearer"}
        )
    try:
        objects = objects_from_event(orjson.loads(await request.read()), settings.bucket, settings.prefix)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not JSON") from None
    except InvalidEvent as e:
        raise BadRequest(str(e)) from None
    request.app[PIPELINE].submit(objects)
    return json_answer({"keys": len(objects)})


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    status, body = check_health(request.app)
    return json_answer(body, status)


@routes.get("/livez")
async def livez(request: web.Request) -> web.Response:
    """Liveness: the process serves (a first load of any length included) and none of its
    background tasks has died (that only a restart mends)."""
    for task in request.app.get(TASKS, ()):
        if task.done() and not task.cancelled():
            # The error's type only: its text may hold anything; the log has it whole.
            cause = f"{task.get_name()} stopped ({type(task.exception()).__name__}); see the log"
            return json_answer({"status": "stopped", "cause": cause}, 503)
    return json_answer({"status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 until the first load is done (and, fed by JetStream, the stream's events
    taken); then 200, degraded or not (the index is served)."""
    if not request.app[PIPELINE].loaded.is_set():
        return json_answer({"status": "starting"}, 503)
    behind = catching_up(request.app)
    return json_answer({"status": "ready"}) if behind is None else json_answer(behind, 503)


@routes.get("/rejected")
async def rejected(request: web.Request) -> web.Response:
    """Every rejected file, a page at a time, in key order."""
    values = _checked(request.query, _PAGE_NAMES)
    paged = _page(values, REJECTED_SHOWN)
    assert paged is not None  # there is a default
    body, last = rejected_page(request.app, *paged)
    return json_answer(body) if last is None else _link_next(json_answer(body), "/rejected", list(values.items()), last)
