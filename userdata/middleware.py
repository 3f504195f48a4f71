"""One JSON error shape for every failure: ``{"error": "..."}`` with the right status."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

__all__ = ("BadRequest", "Observe", "json_error", "middleware")

logger = logging.getLogger("userdata.middleware")


class BadRequest(ValueError):
    """The request cannot be answered as asked; the message names the offending parameter."""


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )


#: Told of each answer: the request, its status and the seconds it took.
Observe = Callable[[web.Request, int, float], None]


def middleware(observe: Observe | None = None) -> Middleware:
    """The app's one middleware (each layer costs every request): every failure answered as
    JSON, and with ``observe``, every answer's final status and time told to it."""

    @web.middleware
    async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except BadRequest as e:
            response = json_error(400, str(e))
        except web.HTTPException as e:
            if e.status < 400:  # a redirect: aiohttp sends it
                if observe is not None:
                    observe(request, e.status, time.perf_counter() - started)
                raise
            response = _http_error(request, e)
        except Exception:
            logger.exception("error answering %s %s", request.method, request.path_qs)
            response = json_error(500, "internal error")
        if observe is not None:
            observe(request, response.status, time.perf_counter() - started)
        return response

    return answer


def _http_error(request: web.Request, e: web.HTTPException) -> web.Response:
    if e.status == 404:
        message = f"not found: {request.path}"
    elif e.status == 405:
        message = f"method {request.method} not allowed on {request.path}"
    else:
        message = e.reason
    headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
    return json_error(e.status, message, headers)
