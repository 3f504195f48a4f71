"""HTTP handlers: parse the request, ask the index or the pipeline, answer JSON."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import math
import re
import time
from collections.abc import Coroutine
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from multidict import MultiMapping

from .cache import Body
from .events import InvalidEvent, objects_from_event
from .health import REJECTED_SHOWN, check_health, rejected_page
from .index import Filters, birth_days
from .keys import DATA_CACHE, INDEX, PIPELINE, SETTINGS, TASKS
from .middleware import BadRequest, json_error
from .records import UserRecord
from .stores import StoreUnavailable

__all__ = ("parse_filters", "routes")

routes = web.RouteTableDef()

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_NUMBER = re.compile(r"\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FILTER_NAMES = ("is_image_exists", "min_age", "max_age")
_PAGE_NAMES = ("limit", "after")
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
            raise BadRequest(f"unknown parameter {_quote(name)}; known: {', '.join(known)}")
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
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {_quote(text)}")
    return int(text), values.get("after")


def _link_next(response: web.Response, path: str, query: list[tuple[str, str]], last: str) -> web.Response:
    """``response`` with the RFC 8288 link to the page after ``last``: the same query otherwise."""
    pairs = [(k, v) for k, v in query if k != "after"] + [("after", last)]
    response.headers["Link"] = f'<{path}?{urlencode(pairs)}>; rel="next"'
    return response


def _filters(values: dict[str, str]) -> Filters:
    has_image = None
    if "is_image_exists" in values:
        has_image = _BOOLEANS.get(values["is_image_exists"].lower())
        if has_image is None:
            raise BadRequest(f"is_image_exists must be true or false, not {_quote(values['is_image_exists'])}")
    min_age, max_age = (_age(name, values.get(name)) for name in ("min_age", "max_age"))
    if min_age is not None and max_age is not None and min_age > max_age:
        raise BadRequest(f"min_age ({values['min_age']}) is greater than max_age ({values['max_age']})")
    return Filters(has_image, min_age, max_age)


def _age(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    if not _NUMBER.fullmatch(text):
        raise BadRequest(f"{name} must be a non-negative number, not {_quote(text)}")
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, not {_quote(text)}")
    return value


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@routes.get("/data")
async def get_data(request: web.Request) -> web.StreamResponse:
    values = _checked(request.query, _FILTER_NAMES + _PAGE_NAMES)
    filters, paged = _filters(values), _page(values, None)
    index, cache = request.app[INDEX], request.app[DATA_CACHE]
    # What decides the answer besides the index: the image filter and the span of birth days
    # the age filters allow today (min_age=30 and min_age=29.5 share a body).
    span = birth_days(filters, _now_ms())
    if paged is not None:
        limit, after = paged
        records, more = index.page(filters.has_image, span, after, limit)
        page = web.Response(body=orjson.dumps(_dicts(records)), content_type="application/json")
        return _link_next(page, "/data", list(values.items()), records[-1].user_id) if more else page
    key = (filters.has_image, span)
    body = await cache.shared(index.version, key, lambda: _render(index.select(filters.has_image, span)))
    if isinstance(body, bytes):
        return web.Response(body=body, content_type="application/json")
    # In parts, each written when the client has taken the last: a slow client holds no copy.
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = sum(map(len, body))
    await response.prepare(request)
    if request.method != "HEAD":  # a HEAD answer has the length, and no body
        for part in body:
            await response.write(part)
    await response.write_eof()
    return response


#: Records per part of a large /data answer: each part is rendered between other requests.
_PART = 1000


def _render(records: list[UserRecord]) -> Body | Coroutine[Any, Any, Body]:
    """The JSON array of ``records``: whole if small, else (to await) in parts rendered a slice
    at a time, other requests served between them."""
    return orjson.dumps(_dicts(records)) if len(records) <= _PART else _parts(records)


async def _parts(records: list[UserRecord]) -> Body:
    parts = [b"["]
    for start in range(0, len(records), _PART):
        part = orjson.dumps(_dicts(records[start : start + _PART]))
        parts.append(part[1:-1] if start == 0 else b"," + part[1:-1])
        await asyncio.sleep(0)
    parts.append(b"]")
    return tuple(parts)


def _dicts(records: list[UserRecord]) -> list[dict[str, object]]:
    # Plain dicts: orjson writes them several times faster than slotted dataclasses.
    return [
        {"user_id": user_id, "first_name": first_name, "last_name": last_name, "birthts": birthts, "img_path": img_path}
        for user_id, first_name, last_name, birthts, img_path in records
    ]


@routes.get("/stats")
async def get_stats(request: web.Request) -> web.Response:
    filters = parse_filters(request.query)
    return _json(request.app[INDEX].stats(filters, _now_ms()))


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
    return _json(dataclasses.asdict(report))


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
    return _json({"keys": len(objects)})


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    status, body = check_health(request.app)
    return _json(body, status)


@routes.get("/livez")
async def livez(request: web.Request) -> web.Response:
    """Liveness: the process serves (a first load of any length included) and none of its
    background tasks has died (that only a restart mends)."""
    for task in request.app.get(TASKS, ()):
        if task.done() and not task.cancelled():
            # The error's type only: its text may hold anything; the log has it whole.
            cause = f"{task.get_name()} stopped ({type(task.exception()).__name__}); see the log"
            return _json({"status": "stopped", "cause": cause}, 503)
    return _json({"status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 until the first load is done; then 200, degraded or not (the index is served)."""
    if not request.app[PIPELINE].loaded.is_set():
        return _json({"status": "starting"}, 503)
    return _json({"status": "ready"})


@routes.get("/rejected")
async def rejected(request: web.Request) -> web.Response:
    """Every rejected file, a page at a time, in key order."""
    values = _checked(request.query, _PAGE_NAMES)
    paged = _page(values, REJECTED_SHOWN)
    assert paged is not None  # there is a default
    body, last = rejected_page(request.app, *paged)
    return _json(body) if last is None else _link_next(_json(body), "/rejected", list(values.items()), last)


@routes.get("/")
async def page(request: web.Request) -> web.Response:
    html = resources.files("userdata").joinpath("page.html").read_bytes()
    return web.Response(body=html, content_type="text/html")
