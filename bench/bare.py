"""A trivial handler in a plain aiohttp app: no middleware, no index, nothing running beside it.

    python -m bench.bare --port P

The independent probe of benchmark 4 measures the service's answers beside this one's: the
ceiling of aiohttp itself on this machine (the service's own trivial route pays its request wrapper).
``GET /bench/bytes?n=N`` answers N bytes of JSON, a constant made once per size: the same
ceiling for an answer as large as a page of /data (its bytes cost the socket and the client too).
"""

from __future__ import annotations

import argparse
import functools

from aiohttp import web

from .server import trivial

__all__ = ("main",)


@functools.cache
def _body(size: int) -> bytes:
    return b'"' + b"x" * max(0, size - 2) + b'"'


async def sized(request: web.Request) -> web.Response:
    return web.Response(body=_body(int(request.query["n"])), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    app = web.Application()
    app.router.add_get("/bench/trivial", trivial)
    app.router.add_get("/bench/bytes", sized)
    web.run_app(app, host="127.0.0.1", port=parser.parse_args().port, access_log=None, print=None)


if __name__ == "__main__":
    main()
