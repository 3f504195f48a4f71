"""GET /health: the problems each part reports of itself, composed into one answer."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .keys import INDEX, MIRROR, OUTPUT, PIPELINE, STORE, WATCHER, Part

__all__ = ("check_health",)


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
    body["rejected"] = [{"key": k, "reason": r} for k, r in sorted(pipeline.rejected.items())]
    body["store"] = app[STORE].describe()
    if mirror is not None:
        body["mirror"] = mirror.summary()
    return 200, body
