"""One JSON error shape for every failure: ``{"error": "..."}`` with the right status."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
from aiohttp import web

__all__ = ("BadRequest", "Observe", "answer_errors", "json_error")

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


def answer_errors(app: web.Application, observe: Observe | None = None) -> web.Application:
    """Every failure of ``app`` answered as JSON, and with ``observe``, every answer's final status
    and time told to it; before the app runs. Returns ``app``.

    One coroutine around aiohttp's own dispatch (which routes, 404 and 405 included), in place of
    a middleware: aiohttp runs each middleware inside one more of its own (two coroutine layers,
    a cache lookup), which cost every request more than the counting itself.
    """
    dispatch = app._handle
    clock = time.perf_counter

    async def handle(request: web.Request) -> web.StreamResponse:
        started = clock()
        try:
            response = await dispatch(request)
        except BadRequest as e:
            response = json_error(400, str(e))
        except web.HTTPException as e:
            if e.status < 400:  # a redirect: aiohttp sends it
                if observe is not None:
                    observe(request, e.status, clock() - started)
                raise
            response = _http_error(request, e)
        except Exception:
            logger.exception("error answering %s %s", request.method, request.path_qs)
            response = json_error(500, "internal error")
        if observe is not None:
            observe(request, response.status, clock() - started)
        return response

    # aiohttp's server calls app._handle for each request (the tests of errors and metrics fail
    # if it ever stops).
    app._handle = handle  # type: ignore[method-assign]
    return app


def _http_error(request: web.Request, e: web.HTTPException) -> web.Response:
    if e.status == 404:
        message = f"not found: {request.path}"
    elif e.status == 405:
        message = f"method {request.method} not allowed on {request.path}"
    else:
        message = e.reason
    headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
    return json_error(e.status, message, headers)
