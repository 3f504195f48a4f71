"""Health: the problems each part reports of itself, composed into one answer (``GET /health``),
and the checks orchestrators ask: liveness, readiness, the whole list of rejected files."""

from __future__ import annotations

import heapq
from typing import Any

from aiohttp import web

from .keys import CHANGES, INDEX, MIRROR, OUTPUT, PIPELINE, STORE, WATCHER, Part
from .live import utc_text

__all__ = ("REJECTED_SHOWN", "check_health", "health_status", "rejected_page")

#: Rejected files /health lists at most (the first by key); ``GET /rejected`` pages through all.
REJECTED_SHOWN = 100


def health_status(app: web.Application) -> tuple[str, str | None]:
    """The status of /health (``starting``, ``ok`` or ``degraded``) and every cause (None if none):
    a few attributes of each part, cheap enough to ask often (GET /updates does)."""
    parts: list[Part | None] = [app[PIPELINE], app[OUTPUT], app.get(WATCHER), app.get(MIRROR)]
    cause = "; ".join(problem for part in parts if part is not None and (problem := part.problem()) is not None)
    if cause:
        return "degraded", cause
    return ("ok" if app[PIPELINE].loaded.is_set() else "starting"), None


def check_health(app: web.Application) -> tuple[int, dict[str, Any]]:
    """(status, body) of /health: 503 until the first load is done, then 200, degraded naming
    every cause while the last index is still served."""
    pipeline, mirror = app[PIPELINE], app.get(MIRROR)
    status, cause = health_status(app)
    if not pipeline.loaded.is_set():
        return 503, {"status": status, "cause": cause} if cause else {"status": status}
    body: dict[str, Any] = {"status": status}
    if cause:
        body["cause"] = cause
    body["users"] = len(app[INDEX])
    changes = app.get(CHANGES)
    body["changed_at"] = None if changes is None else utc_text(changes.changed_at())
    rejected = pipeline.rejected
    body["rejected"] = [{"key": k, "reason": rejected[k]} for k in heapq.nsmallest(REJECTED_SHOWN, rejected)]
    body["rejected_count"] = len(rejected)
    body["store"] = app[STORE].describe()
    if mirror is not None:
        body["mirror"] = mirror.summary()
    return 200, body


def rejected_page(app: web.Application, limit: int, after: str | None) -> tuple[dict[str, Any], str | None]:
    """Up to ``limit`` rejected files with keys after ``after``, in key order, with the total;
    and the last key when more follow (None on the last page)."""
    rejected = app[PIPELINE].rejected
    keys = heapq.nsmallest(limit + 1, (key for key in rejected if after is None or key > after))
    page = keys[:limit]
    body = {"rejected": [{"key": k, "reason": rejected[k]} for k in page], "count": len(rejected)}
    return body, page[-1] if len(keys) > limit else None
