"""Health: the problems each part reports of itself, composed into one answer (``GET /health``),
and the checks orchestrators ask: liveness, readiness, the whole list of rejected files."""

from __future__ import annotations

import heapq
from typing import Any

from aiohttp import web

from .keys import CHANGES, ELECTION, EVENTS, INDEX, MIRROR, OUTPUT, PIPELINE, SETTINGS, STORE, WATCHER, Part
from .live import utc_text

__all__ = ("READY_LAG", "REJECTED_SHOWN", "catching_up", "check_health", "health_status", "parts", "rejected_page")

_OPTIONAL: tuple[tuple[str, web.AppKey[Any]], ...] = (  # the parts an app may run
    ("watcher", WATCHER),
    ("mirror", MIRROR),
    ("events", EVENTS),
    ("election", ELECTION),
)
#: Rejected files /health lists at most (the first by key); ``GET /rejected`` pages through all.
REJECTED_SHOWN = 100
#: Events of the stream a loaded replica may have still to take and be ready (a steady stream of
#: changes keeps a few in flight: readiness must not flap with them).
READY_LAG = 100


def parts(app: web.Application) -> list[tuple[str, Part]]:
    """The parts ``app`` runs that report their problems, by name (/health, /metrics)."""
    named: dict[str, Part] = {"pipeline": app[PIPELINE], "output": app[OUTPUT]}
    named |= {name: app[key] for name, key in _OPTIONAL if key in app}
    return list(named.items())


def health_status(app: web.Application) -> tuple[str, str | None]:
    """The status of /health (``starting``, ``ok`` or ``degraded``) and every cause (None if none):
    a few attributes of each part, cheap enough to ask often (GET /updates does)."""
    cause = "; ".join(problem for _, part in parts(app) if (problem := part.problem()) is not None)
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
    if ELECTION in app:
        body |= app[ELECTION].summary()  # role (writer or reader) and epoch
    elif app[SETTINGS].read_only:
        body["role"] = "reader"
    if mirror is not None:
        body["mirror"] = mirror.summary()
    if EVENTS in app:
        body["events"] = app[EVENTS].summary()
    return 200, body


def catching_up(app: web.Application) -> dict[str, Any] | None:
    """Why a replica fed by JetStream is not ready yet although loaded: connected to NATS, it has
    no position in the stream yet or more than READY_LAG events wait; None when it is caught up,
    has no stream, or cannot reach NATS (an outage must not take every replica out of service)."""
    if EVENTS not in app:
        return None
    summary = app[EVENTS].summary()
    if not summary.get("connected"):
        return None  # NATS is down: /health is degraded, the index served, the rescan covers
    lag = summary.get("lag")
    return None if lag is not None and lag <= READY_LAG else {"status": "catching up", "lag": lag}


def rejected_page(app: web.Application, limit: int, after: str | None) -> tuple[dict[str, Any], str | None]:
    """Up to ``limit`` rejected files with keys after ``after``, in key order, with the total;
    and the last key when more follow (None on the last page)."""
    rejected = app[PIPELINE].rejected
    keys = heapq.nsmallest(limit + 1, (key for key in rejected if after is None or key > after))
    page = keys[:limit]
    body = {"rejected": [{"key": k, "reason": rejected[k]} for k in page], "count": len(rejected)}
    return body, page[-1] if len(keys) > limit else None
