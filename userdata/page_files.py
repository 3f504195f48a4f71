"""The dashboard's own files: ``GET /`` (``page.html``), ``GET /static/page.css`` and
``GET /static/page.js``, shipped in the package (``userdata/static/``). Plain HTML, CSS and one JS
module: no build step, nothing fetched from elsewhere, so the page works offline."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from aiohttp import web

__all__ = ("FILES", "routes")

#: path -> (the file in the package, its content type)
FILES = {
    "/": ("page.html", "text/html"),
    "/static/page.css": ("static/page.css", "text/css"),
    "/static/page.js": ("static/page.js", "text/javascript"),
}


@functools.cache
def _file(name: str) -> tuple[bytes, str]:
    """The bytes of a packaged file and their ETag, read once."""
    body = resources.files("userdata").joinpath(name).read_bytes()
    return body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _route(path: str) -> web.RouteDef:
    name, content_type = FILES[path]

    async def handler(request: web.Request) -> web.Response:
        body, etag = _file(name)
        # Asked again on every use (no-cache) and answered 304 while unchanged: a new version of
        # the service never runs the old script.
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        given = request.headers.get("If-None-Match", "")
        if etag in [tag.strip() for tag in given.split(",")]:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    handler.__name__ = handler.__qualname__ = "file_" + name.rsplit("/", 1)[-1].replace(".", "_")
    return web.get(path, handler)


routes = [_route(path) for path in FILES]
