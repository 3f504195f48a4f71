"""Benchmark 9: the dashboard's time to first render, in headless Chromium, on ``bench.server``.

    python -m bench --only page --sizes 100000,1000000
    python -m bench.page --users 100000          # one size, the measurements as JSON

The time from navigation start to the page's own mark ``userdata:ready`` (set once the counts,
the age chart and the first table page are shown), at each size beside the same at
:data:`REFERENCE_USERS` users: the issue asks that it open as fast at 1,000,000 users as at 100.
Skipped, saying why, where Debian's chromium or Playwright is missing (see bench/browser.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

from .api import TRIVIAL
from .browser import CHROMIUM, CHROMIUM_ARGS, missing
from .procs import ROOT, bench_env, free_port, stop_process, wait_http
from .report import Row

__all__ = ("LOADS", "PAGE_NOTE", "REFERENCE_USERS", "bench_page", "measure_page", "measure_pages")

REFERENCE_USERS = 100
#: Timed loads after the first, each in a fresh browser context (no HTTP cache, no cookies).
LOADS = 7
PAGE_NOTE = (
    "Dashboard: `python -m bench.server` (as in 4) serves N generated users; Debian's headless "
    "Chromium, driven by Playwright, opens `GET /` in a fresh browser context (1280 x 900, nothing "
    "cached) and reads the page's own mark `userdata:ready`, set once the counts (the first state "
    "event of /updates, then /stats), the age chart (/stats/ages), the first table page "
    "(/data?limit=50) and the first page of rejected files are shown: its time from navigation "
    "start. The first load after the server starts (one sample, and it pays for the server's first "
    "counts after the records were applied: the index's prefix sums are built by the first count), "
    f"then the median of {LOADS} more, each after a load of the same page on a server of "
    f"{REFERENCE_USERS} users (the ceiling, whose median is beside it): the machine's noise falls on both."
)


class _Server:
    """``bench.server`` with ``users`` generated users, on a free port, until stopped."""

    def __init__(self, users: int) -> None:
        self.users = users
        self.base = f"http://127.0.0.1:{free_port()}"
        port = self.base.rsplit(":", 1)[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", f"--users={users}", f"--port={port}"],
            cwd=ROOT,
            env=bench_env(),
            stdout=subprocess.DEVNULL,
        )

    def wait(self) -> None:
        wait_http(self.base + TRIVIAL, timeout=600, proc=self.process)
        wait_http(self.base + "/health", timeout=60, proc=self.process)

    def stop(self) -> None:
        stop_process(self.process, 30)


def _load(browser: Any, base: str) -> float:
    """ms from navigation start to the page's mark, in a fresh context (nothing cached)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(base + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        if page.locator("#users-body tr[data-user-id]").count() == 0:
            raise RuntimeError(f"the page at {base} showed no users")
        return float(page.evaluate("performance.getEntriesByName('userdata:ready')[0].startTime"))
    finally:
        context.close()


def measure_pages(sizes: list[int], loads: int = LOADS) -> dict[int, dict[str, Any]]:
    """The page's first load on a server of each size (and of REFERENCE_USERS users), then
    ``loads`` more alternating with the reference's (the machine's noise falls on both alike)."""
    from playwright.sync_api import sync_playwright

    reference = _Server(REFERENCE_USERS)
    results: dict[int, dict[str, Any]] = {}
    try:
        reference.wait()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                _load(browser, reference.base)  # untimed: the browser's own first start
                results[REFERENCE_USERS] = {"users": REFERENCE_USERS, "first_ms": _load(browser, reference.base)}
                for users in sizes:
                    server = _Server(users)
                    try:
                        server.wait()
                        first = _load(browser, server.base)
                        pairs = [(_load(browser, reference.base), _load(browser, server.base)) for _ in range(loads)]
                    finally:
                        server.stop()
                    results[users] = {
                        "users": users,
                        "first_ms": first,
                        "later_ms": [ms for _, ms in pairs],
                        "reference_ms": [ms for ms, _ in pairs],
                        "median_ms": statistics.median(ms for _, ms in pairs),
                        "reference_median_ms": statistics.median(ms for ms, _ in pairs),
                    }
            finally:
                browser.close()
    finally:
        reference.stop()
    return results


def measure_page(users: int, loads: int = LOADS) -> dict[str, Any]:
    """:func:`measure_pages` at one size."""
    return measure_pages([users], loads)[users]


def _ms(value: float) -> str:
    return f"{value:,.0f} ms"


def bench_page(sizes: list[int], raw: dict[str, Any], log: Any = print) -> list[Row]:
    """Benchmark 9 at each of ``sizes``, beside the same at REFERENCE_USERS users; [] without a browser."""
    why = missing()
    if why is not None:
        log(f"page: skipped, {why}")
        return []
    log(f"page: first render at {', '.join(f'{n:,}' for n in sizes)} users, beside {REFERENCE_USERS}")
    measured = measure_pages(sizes)
    raw.update({f"page_{users}": figures for users, figures in measured.items()})
    reference = measured[REFERENCE_USERS]
    rows = []
    for users in sizes:
        figures = measured[users]
        # The first load is one sample beside one, and pays for the server's first counts: the
        # target is the median's.
        first = figures["first_ms"] / reference["first_ms"]
        median = figures["median_ms"] / figures["reference_median_ms"]
        rows += [
            Row("9", "dashboard: navigation to counts, chart and first page shown, first load after the start", users,
                _ms(figures["first_ms"]), f"{REFERENCE_USERS} users: {_ms(reference['first_ms'])}", f"{first:.2f}x"),
            Row("9", f"dashboard: navigation to counts, chart and first page shown, median of {LOADS} more", users,
                _ms(figures["median_ms"]), f"{REFERENCE_USERS} users: {_ms(figures['reference_median_ms'])}",
                f"{median:.2f}x", f"<= 1.5x at {REFERENCE_USERS} users", median <= 1.5),
        ]  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=LOADS)
    args = parser.parse_args()
    why = missing()
    if why is not None:
        raise SystemExit(f"bench.page: {why}")
    print(json.dumps(measure_page(args.users, args.loads)))


if __name__ == "__main__":
    main()
