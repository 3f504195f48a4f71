"""Health: the problems each part reports of itself, composed into one answer (``GET /health``),
and the checks orchestrators ask: liveness, readiness, the whole list of rejected files."""

from __future__ import annotations

import heapq
from typing import Any

from aiohttp import web

from .keys import INDEX, MIRROR, OUTPUT, PIPELINE, STORE, WATCHER, Part

__all__ = ("REJECTED_SHOWN", "check_health", "rejected_page")

#: Rejected files /health lists at most (the first by key); ``GET /rejected`` pages through all.
REJECTED_SHOWN = 100


def check_health(app: web.Application) -> tuple[int, dict[str, Any]]:
    """(status, body) of /health: 503 until the first load is done, then 200, degraded naming
    every cause while the last index is still served."""
    pipeline, mirror = app[PIPELINE], app.get(MIRROR)
    parts: list[Part | None] = [pipeline, app[OUTPUT], app.get(WATCHER), mirror]
    cause = "; ".join(problem for part in parts if part is not None and (problem := part.problem()) is not None)
    if not pipeline.loaded.is_set():
        return 503, {"status": "degraded", "cause": cause} if cause else {"status": "starting"}
    body: dict[str, Any] = {"status": "degraded" if cause else "ok"}
    if cause:
        body["cause"] = cause
    body["users"] = len(app[INDEX])
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
