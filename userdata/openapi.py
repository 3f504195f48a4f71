"""The service's OpenAPI 3.1 description, as data: every route, parameter, answer and error shape.

The named schemas, parameters and answers are in :mod:`userdata.openapi_schemas`.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .openapi_schemas import FILTERS as _FILTERS
from .openapi_schemas import LINK as _LINK
from .openapi_schemas import PARAMETERS, RESPONSES, SCHEMAS, WHITE_SPACE
from .openapi_schemas import header as _header
from .openapi_schemas import json_answer as _json
from .openapi_schemas import operation as _op
from .openapi_schemas import ref as _ref
from .openapi_schemas import string as _string
from .openapi_schemas import text_answer as _text

__all__ = ("DOCUMENT", "PATHS", "WHITE_SPACE")

_DATA = {
    "description": "The matching records, sorted by user_id as strings. Compressed with gzip when the client "
    "accepts it (Accept-Encoding: gzip) and the answer is large enough to gain.",
    "headers": _LINK | {"Content-Encoding": _header("`gzip` when compressed.")},
    "content": {
        "application/json": {"schema": {"type": "array", "items": _ref("Record")}},
        "text/csv": {"schema": _string("output.csv's shape: `user_id,first_name,last_name,birthts,img_path`, rows.")},
    },
}

_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_BAD = {"400": _ref("BadRequest", "responses")}
#: Answers from the index: a replica fed by JetStream gives none before its first load is done.
_INDEXED = _BAD | {"503": _ref("NotLoaded", "responses")}
_HTML = _text("The page.", "text/html")
_NO_CACHE = {"Cache-Control": _header("`no-cache`: ask again each time (with If-None-Match where there is an ETag).")}
_FILE_ETAG = {"ETag": _header("A hash of the file's bytes, quoted: sent back in If-None-Match, it gets a 304.")}


def _page_file(what: str, media_type: str) -> dict[str, Any]:
    """The answers for one of the dashboard's files, shipped in the package."""
    return {
        "200": _text(what, media_type) | {"headers": _FILE_ETAG | _NO_CACHE},
        "304": {"description": "If-None-Match named the file's ETag: it is unchanged.", "headers": _FILE_ETAG},
    }


_ETAG = {"ETag": _header("A strong hash of the image's bytes, quoted: sent back in If-None-Match, it gets a 304.")}
_IMAGE = {
    "description": "The image, as the store holds it.",
    "headers": _ETAG | _NO_CACHE,
    "content": {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}},
}
_NOT_MODIFIED = {"description": "If-None-Match named the image's ETag (or `*`): it is unchanged.", "headers": _ETAG}
_NO_IMAGE = _json(_ref("Error"), "No such user, no image, or an image gone from the store or that cannot be served "
                  "(unreadable, or larger than --max-object-size).")  # fmt: skip
_OUTPUT_CSV = {
    "description": "output.csv, byte for byte as written in the store.",
    "headers": {"Content-Disposition": _header('`attachment; filename="output.csv"`.')} | _NO_CACHE,
    "content": {"text/csv": {"schema": _string("`user_id,first_name,last_name,birthts,img_path`, then the rows.")}},
}
_EVENTS = {
    "description": "An endless stream of Server-Sent Events: one `state` event at once, then one whenever the "
    "index's version or the health status changes (a burst gives one every 250 ms at most), and a `: keepalive` "
    "comment after 15 s without one. Each event is `event: state`, `id: <version>` and `data:` a State in one line "
    "of JSON. It ends when the service stops.",
    "headers": _NO_CACHE,
    "content": {"text/event-stream": {"schema": _string("Events, each `event: state`, `id:`, `data: <State>`.")}},
}

PATHS: dict[str, dict[str, Any]] = {
    "/data": {
        "get": _op("getData", "The users matching the filters, whole or a page at a time", {"200": _DATA} | _INDEXED,
                   *_FILTERS, "limit", "after", "format"),
        "post": _op("rescan", "A full forced rescan; answers when it is done (concurrent calls share one)",
                    {"200": _json(_ref("RescanReport"), "What it found."), "503": _ref("Unavailable", "responses")}),
    },
    "/stats": {
        "get": _op("getStats", "Count and average age of the users matching the filters",
                   {"200": _json(_ref("Stats"), "The figures.")} | _INDEXED, *_FILTERS),
    },
    "/stats/ages": {
        "get": _op("getAgeCounts", "How many of the users matching the filters are of each age, youngest to oldest",
                   {"200": _json(_ref("AgeCounts"), "The counts.")} | _INDEXED, *_FILTERS),
    },
    "/health": {
        "get": _op("getHealth", "Whether the index is loaded and current, and every cause when it is not", {
            "200": _json(_ref("Health"), "The first load is done (status ok or degraded)."),
            "503": _json(_ref("Starting"), "The first load is not done yet."),
        }),
    },
    "/livez": {
        "get": _op("getLivez", "Liveness: the process serves and none of its background tasks has died",
                   {"200": _json(_ref("Alive"), "Alive."), "503": _json(_ref("Stopped"), "Restart it.")}),
    },
    "/readyz": {
        "get": _op("getReadyz", "Readiness: the first load is done (degraded or not)",
                   {"200": _json(_ref("Ready"), "Ready."), "503": _json(_ref("NotReady"), "Still loading.")}),
    },
    "/rejected": {
        "get": _op("getRejected", "Every rejected file, a page at a time, in key order",
                   {"200": _json(_ref("RejectedPage"), "A page.", _LINK)} | _BAD, "rejected_limit", "rejected_after"),
    },
    "/events": {
        "post": _op("postEvents", "MinIO bucket notifications: the keys they name are read again", {
            "200": _json(_ref("EventsAnswer"), "Taken."),
            "400": _json(_ref("Error"), "The body is not an S3 event."),
            "401": _json(_ref("Error"), "No valid `Authorization: Bearer <token>` header.",
                         {"WWW-Authenticate": {"required": True, "schema": {"const": "Bearer"}}}),
            "404": _ref("NotFound", "responses"),
        }, description="Off (404) unless the service has a webhook token.", security=[{"webhookToken": []}],
            requestBody={"required": True, "content": {"application/json": {"schema": _ref("S3Event")}}}),
    },
    "/": {"get": _op("getPage", "The dashboard: counts, filters, the age chart, the users a page at a time, live",
                     _page_file("The page.", "text/html"))},
    "/static/page.css": {
        "get": _op("getPageCss", "The dashboard's style sheet", _page_file("The style sheet.", "text/css")),
    },
    "/static/page.js": {
        "get": _op("getPageJs", "The dashboard's script (a JS module)", _page_file("The script.", "text/javascript")),
    },
    "/images/{user_id}": {
        "get": _op("getImage", "A user's image (PNG), read from the store at the key the index holds for the user", {
            "200": _IMAGE, "304": _NOT_MODIFIED, "404": _NO_IMAGE, "503": _ref("Unavailable", "responses"),
        }, "user_id", description="Send its ETag back in `If-None-Match` to get a 304 while the image is unchanged."),
    },
    "/output.csv": {
        "get": _op("getOutputCsv", "output.csv as the store holds it (a download)", {
            "200": _OUTPUT_CSV, "404": _json(_ref("Error"), "output.csv is not written yet."),
            "503": _ref("Unavailable", "responses"),
        }),
    },
    "/updates": {
        "get": _op("getUpdates", "The index's version, figures and health, live (Server-Sent Events)", {
            "200": _EVENTS,
            "503": _json(_ref("Error"), "No more clients taken (100 at once at most), or the service is stopping.",
                         {"Retry-After": _header("Seconds to wait before trying again.")}),
        }),
    },
    "/metrics": {
        "get": _op("getMetrics", "Metrics in the Prometheus text exposition format",
                   {"200": _text("The metrics; OpenMetrics if Accept asks for it.", _PROMETHEUS, _OPENMETRICS)}),
    },
    "/openapi.json": {
        "get": _op("getOpenapi", "This description (OpenAPI 3.1)",
                   {"200": _json({"type": "object"}, "The document.")}),
    },
    "/docs": {"get": _op("getDocs", "This description, as a page for people", {"200": _HTML})},
}  # fmt: skip

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "userdata",
        "version": __version__,
        "summary": "An in-memory index of per-user CSV and PNG objects, served over HTTP.",
        "description": 'Every GET also answers HEAD (its headers, no body). Errors are JSON `{"error": "..."}`: '
        "400 for a bad parameter, 404 for an unknown path, 405 (with `Allow`) for a method a path does not take.",
        "license": {"name": "MIT", "identifier": "MIT"},
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "parameters": PARAMETERS,
        "responses": RESPONSES,
        "securitySchemes": {"webhookToken": {"type": "http", "scheme": "bearer", "description": "--webhook-token"}},
    },
}
