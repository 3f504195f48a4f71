"""Metrics: ``GET /metrics`` in the Prometheus exposition format, from a registry of the app's own.

What happens is counted as it happens, and cheaply: each request costs a counter's increment and
a histogram's observation, their labelled children kept per route, method and status (a dict
lookup, not ``labels()``); the pipeline tells of its scans, failures and applied changes. What
the parts already hold (users, rejected files, the pipeline's backlog, output.csv, the database
mirror, store errors) is read when scraped, so nothing is paid for it per change.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from itertools import accumulate

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from .health import parts
from .index import Diff
from .keys import INDEX, METRICS, MIRROR, OUTPUT, PIPELINE
from .pipeline import Pipeline
from .reports import Meter

__all__ = ("LAG_EVERY", "Metrics", "metrics_ctx", "routes")

routes = web.RouteTableDef()

#: Seconds between two looks at how late the event loop runs.
LAG_EVERY = 0.25
#: The route label of requests no route matched (404, 405): their paths would be labels without end.
UNMATCHED = "unmatched"
#: Methods that are labels of their own; any other is ``other``, as any token is a method.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_REQUEST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SCAN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_VISIBLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_REQUEST_LABELS = ("route", "method", "status")
_CHANGES = ("added", "updated", "removed")
_SCANS = ("load", "incremental", "forced")


class Metrics(Meter):
    """The service's metrics, in a registry of their own (one per app, never the global one).

    :attr:`requests` counts and times every request (told by the app's answer_errors);
    :meth:`follow` has the pipeline tell what it does; :func:`metrics_ctx` reads the parts'
    state at each scrape and samples the event loop's lag while the app runs.
    """

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.requests = _Requests()
        registry.register(self.requests)
        changes = Counter("userdata_changes_applied", "Users added, updated, removed", ("change",), registry=registry)
        self._changes = [changes.labels(change) for change in _CHANGES]
        self._scans = Histogram(
            "userdata_scan_duration_seconds",
            "Time a scan of the store took: the first load, a forced or an incremental rescan",
            ("kind",),
            registry=registry,
            buckets=_SCAN_BUCKETS,
        )
        for kind in _SCANS:
            self._scans.labels(kind)
        self._visible = Histogram(
            "userdata_change_visible_seconds",
            "Time from a change's file event or webhook to its visibility in the index (a batch's first)",
            registry=registry,
            buckets=_VISIBLE_BUCKETS,
        )
        self.loop_lag = Histogram(
            "userdata_event_loop_lag_seconds",
            f"How late the event loop wakes a task that sleeps {LAG_EVERY} s",
            registry=registry,
            buckets=_LAG_BUCKETS,
        )
        #: times the pipeline found the store unavailable (a listing or a read failed as a whole)
        self.store_failures = 0
        #: answers GET /metrics (the text format, or OpenMetrics when asked for)
        self.handler = make_aiohttp_handler(registry)

    def follow(self, pipeline: Pipeline) -> None:
        """Have ``pipeline`` tell of its scans, store failures and changes; before it runs."""
        pipeline.meter = self
        pipeline.listeners.append(self.notify)

    def notify(self, diff: Diff) -> None:
        """A pipeline listener: count the changes."""
        added, updated, removed = self._changes
        added.inc(len(diff.added))
        updated.inc(len(diff.updated))
        removed.inc(len(diff.removed))

    def scanned(self, kind: str, seconds: float) -> None:
        self._scans.labels(kind).observe(seconds)

    def store_failed(self) -> None:
        self.store_failures += 1

    def visible(self, seconds: float) -> None:
        self._visible.observe(seconds)


class _Requests:
    """Requests counted and timed in plain numbers, exported when scraped: prometheus-client's
    labelled children take a lock and scan the buckets at each request, and every request pays
    this (the route of a request is its resource's canonical path; no route: UNMATCHED)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}
        #: per route: requests by bucket of _REQUEST_BUCKETS (the last one: slower), then their sum
        self._latency: dict[str, list[float]] = {}
        self._known: dict[tuple[object, str, int], tuple[tuple[str, str, str], list[float]]] = {}

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        """Count an answer of ``status`` that took ``seconds`` (answer_errors' ``observe``)."""
        resource = request.match_info.route.resource
        key = (resource, request.method, status)
        known = self._known.get(key)
        if known is None:
            route = UNMATCHED if resource is None else resource.canonical
            method = request.method if request.method in _METHODS else "other"
            known = (route, method, str(status)), self._latency.setdefault(route, [0] * (len(_REQUEST_BUCKETS) + 2))
            if method != "other":  # other methods are not kept: they could be any
                self._known[key] = known
        labels, slots = known
        self._counts[labels] = self._counts.get(labels, 0) + 1
        slots[bisect_left(_REQUEST_BUCKETS, seconds)] += 1
        slots[-1] += seconds

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("userdata_http_requests", "HTTP requests answered", labels=_REQUEST_LABELS)
        for labels, count in self._counts.items():
            requests.add_metric(labels, count)
        yield requests
        latency = HistogramMetricFamily(
            "userdata_http_request_duration_seconds", "Time to answer an HTTP request", labels=("route",)
        )
        for route, slots in self._latency.items():
            bounds = map(floatToGoString, (*_REQUEST_BUCKETS, math.inf))
            buckets = list(zip(bounds, accumulate(slots[:-1]), strict=True))
            latency.add_metric((route,), buckets, slots[-1])
        yield latency


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.StreamResponse:
    """The metrics in Prometheus' text format (OpenMetrics for a scraper that asks for it)."""
    return await request.app[METRICS].handler(request)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """While the app runs: its parts' state read at each scrape, the event loop's lag sampled."""
    metrics = app[METRICS]
    state = _State(app, metrics)
    metrics.registry.register(state)
    task = asyncio.create_task(_sample_lag(metrics.loop_lag), name="userdata.loop_lag")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    metrics.registry.unregister(state)


async def _sample_lag(histogram: Histogram) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LAG_EVERY
        await asyncio.sleep(LAG_EVERY)
        histogram.observe(max(0.0, loop.time() - due))


class _State:
    """A collector of what the app's parts hold, read when scraped (a few attributes each)."""

    def __init__(self, app: web.Application, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        """The families it yields (their values too), for ``/metrics?name[]=...`` to find them."""
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        app = self.app
        pipeline, output, mirror = app[PIPELINE], app[OUTPUT], app.get(MIRROR)
        yield _gauge("userdata_ready", "1 once the first load is done (as /readyz), else 0", pipeline.loaded.is_set())
        yield _gauge("userdata_users", "Users in the index", len(app[INDEX]))
        rejected = len(pipeline.rejected)  # as /health counts them
        yield _gauge("userdata_rejected_files", "Source files rejected now (as /health counts them)", rejected)
        yield _gauge("userdata_pipeline_backlog", "Source objects named and not applied yet", len(pipeline.named))
        errors = CounterMetricFamily(
            "userdata_store_errors", "Objects that could not be read, and the store found unavailable", labels=("kind",)
        )
        errors.add_metric(("object",), pipeline.reconciler.unreadable)
        errors.add_metric(("store",), self.metrics.store_failures)
        yield errors
        yield CounterMetricFamily("userdata_output_csv_writes", "output.csv objects written", output.writes)
        yield CounterMetricFamily("userdata_catalog_hint_writes", "Catalog hints written", output.hint_writes)
        yield CounterMetricFamily(
            "userdata_output_csv_failures", "Writes of output.csv or its hint that failed (retried)", output.failures
        )
        yield _gauge(
            "userdata_output_csv_dirty", "1 while the index has changes output.csv lacks, else 0", output.dirty
        )
        # Always the family (without a sample before the first write): /metrics?name[]=... finds
        # only the families a collector described when it was registered.
        age = GaugeMetricFamily(
            "userdata_output_csv_age_seconds", "Seconds since output.csv was written or found current"
        )
        if output.written_at is not None:
            age.add_metric((), time.monotonic() - output.written_at)
        yield age
        if mirror is not None:
            summary = mirror.summary()
            yield _gauge(
                "userdata_mirror_lag_seconds", "Seconds since the oldest change not in the database", summary["lag_s"]
            )
            yield _gauge("userdata_mirror_backlog", "Users with a change not yet in the database", summary["pending"])
        degraded = GaugeMetricFamily(
            "userdata_degraded", "1 while a part has a problem (/health names it), else 0", labels=("part",)
        )
        for name, part in parts(app):
            degraded.add_metric((name,), part.problem() is not None)
        yield degraded


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value)
