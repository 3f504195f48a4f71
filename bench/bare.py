"""A trivial handler in a plain aiohttp app: no middleware, no index, nothing running beside it.

    python -m bench.bare --port P

The independent probe of benchmark 4 measures the service's answers beside this one's: the
ceiling of aiohttp itself on this machine (the service's own trivial route pays its middleware).
"""

from __future__ import annotations

import argparse

from aiohttp import web

from .server import trivial

__all__ = ("main",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    app = web.Application()
    app.router.add_get("/bench/trivial", trivial)
    web.run_app(app, host="127.0.0.1", port=parser.parse_args().port, access_log=None, print=None)


if __name__ == "__main__":
    main()
