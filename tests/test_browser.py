"""The dashboard (GET /) in a real browser: Debian's headless Chromium driven by Playwright,
against the real service on a loopback port and a real folder store.

Without a browser (or Playwright) these skip with the reason, unless TESTS_REQUIRE_BROWSER=1
(.ci/run sets it): then that is a failure. Every wait is on a condition (Playwright's expect and
wait_for_*), none on time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import PNG, S3Bucket, Service, SpyStore, fast_settings, wait_until
from natsserver import NatsServer
from served import Served, free_port

from bench.browser import CHROMIUM, CHROMIUM_ARGS, missing
from userdata.app import create_store
from userdata.records import DAY_MS, UserRecord, age_on
from userdata.sinks.output_csv import render_output

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
    from playwright.async_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the fixture says so: skipped, or failed where a browser is required
    pass
else:
    expect.set_options(timeout=10_000)

#: Users of the usual data set: ids 000-059, ages 20-60 (one or two of each), every other one with an image.
USERS = 60
REJECTED = {"bad1.csv": "first_name, last_name\nAnn, Lee\n", "bad2.csv": "first_name, last_name, birthts\n"}


def unavailable(reason: str) -> None:
    if os.environ.get("TESTS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (TESTS_REQUIRE_BROWSER=1, so this is a failure)", pytrace=False)
    pytest.skip(reason)


def birthts_for_age(age: int) -> int:
    """A birth time (noon UTC, Jan 1) giving ``age`` today, whatever day it is."""
    year = dt.datetime.now(dt.UTC).year - age
    return int(dt.datetime(year, 1, 1, 12, tzinfo=dt.UTC).timestamp() * 1000)


def age_of(i: int) -> int:
    return 20 + (i * 7) % 41


def has_image(i: int) -> bool:
    return i % 2 == 0


def write_users(source_dir: Path, users: int = USERS) -> None:
    for i in range(users):
        (source_dir / f"{i:03d}.csv").write_text(
            f"first_name, last_name, birthts\nFirst{i}, Last{i}, {birthts_for_age(age_of(i))}\n"
        )
        if has_image(i):
            (source_dir / f"{i:03d}.png").write_bytes(PNG)
    for name, body in REJECTED.items():
        (source_dir / name).write_text(body)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    why = missing()
    if why is not None:
        unavailable(why)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


class Dashboard:
    """A browser tab on the dashboard; every request it makes is recorded, and its script's errors."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base.rstrip("/")
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    async def open(self, path: str = "/") -> None:
        await self.page.goto(self.base + path)
        await self.page.wait_for_selector("body[data-ready='1']")

    def text(self, selector: str) -> Any:
        return expect(self.page.locator(selector))

    async def value(self, selector: str) -> str | None:
        return await self.page.locator(selector).get_attribute("data-value")

    async def row_ids(self) -> list[str]:
        return await self.page.locator("#users-body tr[data-user-id]").evaluate_all(  # type: ignore[no-any-return]
            "rows => rows.map((r) => r.dataset.userId)"
        )

    async def wait_rows(self, expected: list[str]) -> None:
        """Wait until the table shows the users ``expected``, in that order."""
        try:
            await self.page.wait_for_function(
                "ids => JSON.stringify([...document.querySelectorAll('#users-body tr[data-user-id]')]"
                ".map((r) => r.dataset.userId)) === JSON.stringify(ids)",
                arg=expected,
                timeout=10_000,
            )
        except PlaywrightTimeout:
            raise AssertionError(f"the table shows {await self.row_ids()}, not {expected}") from None

    async def bars(self) -> list[dict[str, int]]:
        return await self.page.locator("#chart g.bar").evaluate_all(  # type: ignore[no-any-return]
            "bars => bars.map((b) => ({low: +b.dataset.low, high: +b.dataset.high, count: +b.dataset.count}))"
        )

    def data_requests(self) -> list[dict[str, list[str]]]:
        """The query of every GET /data the page made."""
        return [parse_qs(urlsplit(url).query) for url in self.requests if urlsplit(url).path == "/data"]


@pytest.fixture
async def open_page(browser: Browser) -> AsyncIterator[Callable[..., Awaitable[Dashboard]]]:
    """Open the dashboard of a service in a new tab (1280 x 900 unless told); no script error at the end."""
    opened: list[Dashboard] = []

    async def open_page(base: str, path: str = "/", refuse: str | None = None, **options: Any) -> Dashboard:
        options = {"viewport": {"width": 1280, "height": 900}, "locale": "en-US", "timezone_id": "UTC"} | options
        context = await browser.new_context(**options)
        if refuse is not None:  # as a proxy that does not pass it would: 502 for that path
            await context.route(f"**{refuse}", lambda route: route.fulfill(status=502, body="refused"))
        dashboard = Dashboard(await context.new_page(), base)
        opened.append(dashboard)
        await dashboard.open(path)
        return dashboard

    yield open_page
    for dashboard in opened:
        await dashboard.page.context.close()
        assert dashboard.errors == [], dashboard.errors


@pytest.fixture
async def users(start_service: Callable[..., Awaitable[Service]], data_dir: Path, source_dir: Path) -> Service:
    """The service, watching a folder of USERS users and two rejected files."""
    write_users(source_dir)
    service: Service = await start_service(fast_settings(data_dir))
    return service


def url_of(service: Service) -> str:
    return str(service.client.make_url("/"))


def ids_where(keep: Callable[[int], bool]) -> list[str]:
    return [f"{i:03d}" for i in range(USERS) if keep(i)]


async def test_counts_chart_and_the_first_page_on_load(users: Service, open_page, source_dir: Path) -> None:
    page = await open_page(url_of(users))
    with_image = len(ids_where(has_image))
    assert await page.value("#users") == str(USERS)
    assert await page.value("#with-image") == str(with_image)
    assert await page.value("#without-image") == str(USERS - with_image)
    assert await page.value("#selection-count") == str(USERS)
    assert await page.value("#rejected-count") == "2"
    await page.text("#status").to_have_text("ok")
    await page.text("#changed-at").to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    average = float(await page.value("#average-age") or "nan")
    assert abs(average - (await users.get("/stats"))["average_age"]) < 0.01
    # One bar per year of age, youngest to oldest, counting every user.
    bars = await page.bars()
    assert [b["low"] for b in bars] == list(range(20, 61)) and all(b["low"] == b["high"] for b in bars)
    assert sum(b["count"] for b in bars) == USERS
    ages = [age_of(i) for i in range(USERS)]
    assert {b["low"]: b["count"] for b in bars} == {a: ages.count(a) for a in range(20, 61)}
    # The first page of the table: 50 rows in user_id order, ages as SPEC.md counts them, thumbnails.
    assert await page.row_ids() == ids_where(lambda i: True)[:50]
    first = page.page.locator("#users-body tr").first
    await expect(first.locator("td.age")).to_have_text(str(age_of(0)))
    await expect(first.locator("img")).to_have_attribute("src", "/images/000")
    await expect(first.locator("img")).to_have_attribute("loading", "lazy")
    await expect(page.page.locator("#users-body tr[data-user-id='001'] img")).to_have_count(0)
    await page.text("#users-caption").to_have_text("Users in the selection: rows 1–50 of 60")
    await page.text("#users-next").to_be_enabled()
    await page.text("#users-prev").to_be_disabled()
    # Rejected files, listed with their reasons.
    await page.text("#rejected-body").to_contain_text("src-data/bad1.csv")
    await page.text("#rejected-body").to_contain_text("src-data/bad2.csv")
    # The page asked for one table page, never a whole answer.
    assert page.data_requests() and all(q["limit"] == ["50"] for q in page.data_requests())
    # Served from the package, nothing from elsewhere.
    assert all(url.startswith(page.base) for url in page.requests), page.requests


async def test_pages_go_forward_by_the_link_and_back_by_the_stack(users: Service, open_page) -> None:
    page = await open_page(url_of(users))
    everyone = ids_where(lambda i: True)
    await page.page.click("#users-next")
    await page.wait_rows(everyone[50:])
    await page.text("#users-caption").to_have_text("Users in the selection: rows 51–60 of 60")
    await page.text("#users-next").to_be_disabled()
    assert page.data_requests()[-1]["after"] == ["049"]
    await page.page.click("#users-prev")
    await page.wait_rows(everyone[:50])
    await page.text("#users-prev").to_be_disabled()
    assert all(q["limit"] == ["50"] for q in page.data_requests())


async def test_filters_change_the_table_the_chart_and_the_url(users: Service, open_page) -> None:
    page = await open_page(url_of(users))
    await page.page.select_option("#f-image", "true")
    await expect(page.page).to_have_url(re.compile(r"/\?is_image_exists=true$"))
    with_image = ids_where(has_image)
    await page.wait_rows(with_image)
    assert await page.value("#selection-count") == str(len(with_image))
    assert sum(b["count"] for b in await page.bars()) == len(with_image)
    assert await page.page.locator("#users-body img").count() == len(with_image)

    await page.page.fill("#f-min", "30")
    await page.page.fill("#f-max", "40")
    await page.page.press("#f-max", "Enter")
    await expect(page.page).to_have_url(re.compile(r"/\?is_image_exists=true&min_age=30&max_age=40$"))
    narrowed = ids_where(lambda i: has_image(i) and 30 <= age_of(i) <= 40)
    assert narrowed
    await page.wait_rows(narrowed)
    bars = await page.bars()
    assert bars[0]["low"] >= 30 and bars[-1]["high"] <= 40 and sum(b["count"] for b in bars) == len(narrowed)
    await page.text("#download-csv").to_have_attribute(
        "href", "/data?is_image_exists=true&min_age=30&max_age=40&format=csv"
    )
    await page.text("#download-json").to_have_attribute("href", "/data?is_image_exists=true&min_age=30&max_age=40")

    # Back: the selection before, form and all.
    await page.page.go_back()
    await expect(page.page).to_have_url(re.compile(r"/\?is_image_exists=true$"))
    await page.wait_rows(with_image)
    await page.text("#f-min").to_have_value("")
    await page.text("#f-image").to_have_value("true")
    # Forward, then reload: the same view again, from the URL alone.
    await page.page.go_forward()
    await page.wait_rows(narrowed)
    await page.page.reload()
    await page.page.wait_for_selector("body[data-ready='1']")
    await page.wait_rows(narrowed)
    await page.text("#f-min").to_have_value("30")
    await page.text("#f-max").to_have_value("40")
    await page.text("#f-image").to_have_value("true")
    assert await page.value("#selection-count") == str(len(narrowed))
    # Clear: everyone, at /.
    await page.page.click("#clear")
    await expect(page.page).to_have_url(re.compile(r"/$"))
    await page.wait_rows(ids_where(lambda i: True)[:50])


async def test_a_shared_link_opens_its_view(users: Service, open_page) -> None:
    page = await open_page(url_of(users), "/?is_image_exists=false&min_age=50")
    expected = ids_where(lambda i: not has_image(i) and age_of(i) >= 50)
    await page.wait_rows(expected)
    await page.text("#f-image").to_have_value("false")
    await page.text("#f-min").to_have_value("50")
    assert {q.get("min_age", [""])[0] for q in page.data_requests()} == {"50"}


async def test_a_bad_value_is_shown_beside_its_field(users: Service, open_page) -> None:
    page = await open_page(url_of(users))
    await page.page.fill("#f-min", "-1")
    await page.page.press("#f-min", "Enter")
    await page.text("#min_age-error").to_contain_text("min_age must be a non-negative number, not '-1'")
    await page.text("#f-min").to_have_attribute("aria-invalid", "true")
    await page.text("#max_age-error").to_have_text("")
    await expect(page.page).to_have_url(re.compile(r"/$"))  # the URL keeps the last good view
    await page.wait_rows(ids_where(lambda i: True)[:50])  # and so does the page

    await page.page.fill("#f-min", "40")
    await page.page.fill("#f-max", "30")
    await page.page.press("#f-max", "Enter")
    await page.text("#min_age-error").to_contain_text("greater than max_age")

    await page.page.fill("#f-max", "45")
    await page.page.press("#f-max", "Enter")
    await expect(page.page).to_have_url(re.compile(r"/\?min_age=40&max_age=45$"))
    await page.text("#min_age-error").to_have_text("")
    await expect(page.page.locator("#f-min")).not_to_have_attribute("aria-invalid", "true")

    # A link with a bad value: its error beside the field, at once.
    other = await open_page(url_of(users), "/?max_age=abc")
    await other.text("#max_age-error").to_contain_text("max_age must be a non-negative number, not 'abc'")


async def test_hovering_a_bar_shows_its_count_and_clicking_narrows_to_it(users: Service, open_page) -> None:
    page = await open_page(url_of(users))
    bar = page.page.locator("#chart g.bar[data-low='27']")
    count = [age_of(i) for i in range(USERS)].count(27)
    await bar.hover()
    await page.text("#chart-tip").to_be_visible()
    await page.text("#chart-tip").to_have_text(f"Age 27: {count} user{'s' if count > 1 else ''}")
    await bar.click()
    await expect(page.page).to_have_url(re.compile(r"/\?min_age=27&max_age=27$"))
    await page.wait_rows(ids_where(lambda i: age_of(i) == 27))
    assert await page.bars() == [{"low": 27, "high": 27, "count": count}]
    await page.text("#f-min").to_have_value("27")
    # By keyboard: back to everyone, a bar focused, the next one chosen with an arrow and Enter.
    await page.page.go_back()
    await page.wait_rows(ids_where(lambda i: True)[:50])
    await page.page.locator("#chart g.bar").first.focus()
    await page.page.keyboard.press("ArrowRight")
    await page.page.keyboard.press("Enter")
    await expect(page.page).to_have_url(re.compile(r"/\?min_age=21&max_age=21$"))


async def test_files_dropped_and_deleted_show_without_a_reload(users: Service, open_page, source_dir: Path) -> None:
    page = await open_page(url_of(users))
    await page.page.click("#users-next")  # the page's position is kept through the changes
    await page.wait_rows(ids_where(lambda i: True)[50:])
    (source_dir / "0555.png").write_bytes(PNG)
    (source_dir / "0555.csv").write_text(f"first_name, last_name, birthts\nNew, Comer, {birthts_for_age(99)}\n")
    await page.text("#users").to_have_attribute("data-value", str(USERS + 1))
    await page.text("#with-image").to_have_attribute("data-value", str(len(ids_where(has_image)) + 1))
    everyone = ids_where(lambda i: True)
    await page.wait_rows([*everyone[50:56], "0555", *everyone[56:]])
    assert (await page.bars())[-1] == {"low": 99, "high": 99, "count": 1}
    (source_dir / "0555.csv").unlink()
    (source_dir / "057.csv").unlink()
    await page.text("#users").to_have_attribute("data-value", str(USERS - 1))
    await page.wait_rows([i for i in ids_where(lambda i: True)[50:] if i != "057"])
    (source_dir / "bad1.csv").unlink()
    await page.text("#rejected-count").to_have_attribute("data-value", "1")
    await expect(page.page.locator("#rejected-body")).not_to_contain_text("bad1.csv")
    assert page.page.url.endswith("/")  # no navigation: the same document all along
    assert await page.page.evaluate("performance.getEntriesByType('navigation').length") == 1


async def test_the_rescan_report_shows(
    start_service: Callable[..., Awaitable[Service]], open_page, data_dir: Path, source_dir: Path
) -> None:
    write_users(source_dir, 3)
    service = await start_service(fast_settings(data_dir, watch=False))
    page = await open_page(url_of(service))
    (source_dir / "100.csv").write_text(f"first_name, last_name, birthts\nNew, Comer, {birthts_for_age(30)}\n")
    await page.page.click("#rescan")
    report = page.page.locator("#rescan-report")
    await expect(report).to_have_attribute("data-added", "1")
    await expect(report).to_contain_text(re.compile(r"Rescan done in \d+ ms: 4 users; 1 added, 0 updated, 0 removed"))
    await page.wait_rows(["000", "001", "002", "100"])
    await page.text("#users").to_have_attribute("data-value", "4")


async def test_a_stopped_service_is_shown_unreachable_and_the_page_recovers(
    serve: Callable[..., Awaitable[Served]], open_page, data_dir: Path, source_dir: Path
) -> None:
    write_users(source_dir, 5)
    port = free_port()
    args = ("--data-dir", str(data_dir), "--rescan-interval", "0")
    served = await serve(*args, port=port)
    await served.wait_healthy()
    page = await open_page(served.url)
    await page.text("#live").to_have_text("live")
    await page.text("#banner").to_be_hidden()
    assert await served.stop(signal.SIGTERM) == 0
    await page.text("#banner").to_be_visible()
    await page.text("#banner").to_contain_text("unreachable")
    await page.text("#live").to_have_text("unreachable")
    # While it is away, a user comes; the service returns on the same port.
    (source_dir / "005.csv").write_text(f"first_name, last_name, birthts\nBack, Again, {birthts_for_age(33)}\n")
    again = await serve(*args, port=port)
    await again.wait_healthy()
    await page.text("#banner").to_be_hidden()
    await page.text("#live").to_have_text("live")
    await page.text("#users").to_have_attribute("data-value", "6")
    await page.wait_rows(["000", "001", "002", "003", "004", "005"])


async def test_without_the_stream_the_page_loads_and_looks_again_by_itself(
    users: Service, open_page, source_dir: Path
) -> None:
    page = await open_page(url_of(users), refuse="/updates")
    assert await page.value("#users") == str(USERS)  # from /health and /stats instead
    await page.wait_rows(ids_where(lambda i: True)[:50])
    await page.text("#live").to_have_text(re.compile("not live"))
    await page.text("#banner").to_be_hidden()  # the service answers: it is not unreachable
    (source_dir / "000.csv").unlink()
    await page.text("#users").to_have_attribute("data-value", str(USERS - 1))  # within 5 s or so
    await page.wait_rows(ids_where(lambda i: True)[1:51])


async def test_the_age_rule_is_spec_md_s(users: Service, open_page) -> None:
    """The page's ageOn against the service's own rule, on the days that make it hard."""
    page = await open_page(url_of(users))
    day = dt.date(2000, 1, 1).toordinal()
    cases = [
        (dt.date(2000, 2, 29), dt.date(2001, 2, 28)),  # a Feb 29 birthday counts from Mar 1
        (dt.date(2000, 2, 29), dt.date(2001, 3, 1)),
        (dt.date(2000, 2, 29), dt.date(2004, 2, 29)),
        (dt.date(2000, 6, 15), dt.date(2026, 6, 14)),
        (dt.date(2000, 6, 15), dt.date(2026, 6, 15)),
        (dt.date(1901, 12, 31), dt.date(2026, 1, 1)),
        (dt.date(1969, 12, 31), dt.date(1970, 1, 1)),
    ]
    pairs = []
    for born, today in cases:
        birthts = (born.toordinal() - day) * DAY_MS + 946_684_800_000 + 23 * 3_600_000  # late in the UTC day
        now = (today.toordinal() - day) * DAY_MS + 946_684_800_000 + 60_000  # early in it
        pairs.append((birthts, now, age_on(birthts // DAY_MS, now // DAY_MS)))
    got = await page.page.evaluate(
        "async (pairs) => { const m = await import('/static/page.js'); return pairs.map(([b, n]) => m.ageOn(b, n)); }",
        [[b, n] for b, n, _ in pairs],
    )
    assert got == [age for _, _, age in pairs]


async def test_on_a_phone_the_page_fits_and_the_chart_bands_years(users: Service, open_page) -> None:
    page = await open_page(url_of(users), viewport={"width": 320, "height": 700}, is_mobile=True, has_touch=True)
    assert await page.page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    bars = await page.bars()
    band = int(await page.page.locator("#chart").get_attribute("data-band") or "0")
    assert sum(b["count"] for b in bars) == USERS and bars[0]["low"] <= 20 and bars[-1]["high"] >= 60
    assert all(b["high"] - b["low"] + 1 == band for b in bars)
    width = await page.page.locator("#chart svg").evaluate("s => s.getBoundingClientRect().width")
    assert width <= 320
    # The chart's band rule: per year where bars are wide enough, else bands of round sizes.
    ages = [{"age": a, "count": 1} for a in range(10, 90)]
    sizes = await page.page.evaluate(
        "async (ages) => { const m = await import('/static/page.js');"
        " return [2000, 500, 200].map((w) => m.bands(ages, w).size); }",
        ages,
    )
    assert sizes == [1, 1, 5]


async def test_at_100000_users_the_page_asks_for_one_table_page_at_a_time(
    start_service: Callable[..., Awaitable[Service]], open_page, data_dir: Path, source_dir: Path
) -> None:
    from bench.datagen import make_records

    service = await start_service(fast_settings(data_dir, watch=False))
    service.index.apply(make_records(100_000))
    page = await open_page(url_of(service))
    await page.text("#users").to_have_attribute("data-value", "100000")
    await page.text("#users").to_have_text("100,000")
    await page.wait_rows(sorted(service.index.user_ids())[:50])
    await page.page.click("#users-next")
    await page.wait_rows(sorted(service.index.user_ids())[50:100])
    await page.page.select_option("#f-image", "false")
    await expect(page.page).to_have_url(re.compile(r"is_image_exists=false"))
    await page.text("#selection-count").not_to_have_text("100,000")
    data = page.data_requests()
    assert len(data) >= 3
    for query in data:
        assert "limit" in query and int(query["limit"][0]) <= 50, query  # never the whole selection
    rejected = [parse_qs(urlsplit(u).query) for u in page.requests if urlsplit(u).path == "/rejected"]
    assert rejected and all(int(q["limit"][0]) <= 50 for q in rejected)


async def test_a_replica_opened_while_it_loads_shows_its_users_once_loaded(
    start_service: Callable[..., Awaitable[Service]], s3: S3Bucket, nats_server: NatsServer, open_page
) -> None:
    # A replica answers the selection 503 until its first load is done, and a load may leave the
    # index's version as it was: the end of the load alone must bring the selection.
    held = asyncio.Event()
    try:
        s3.put_user("1", "Ann")
        s3.put_user("2", "Bob")
        # output.csv as an earlier run left it: restored before the load, which then changes nothing.
        records = [UserRecord("1", "Ann", "Lee", 0, None), UserRecord("2", "Bob", "Lee", 0, None)]
        s3.put("processed_data/output.csv", render_output(records))
        settings = s3.settings(nats_url=nats_server.url, rescan_interval=0)
        store = SpyStore(create_store(settings))

        async def hold(keys: object) -> None:
            await held.wait()

        store.after_read = hold
        service = await start_service(settings, store=store, loaded=False)
        await wait_until(lambda: store.reads and len(service.index) == 2, message="for the restore, then the load")
        version = service.index.version
        page = await open_page(url_of(service))
        await page.text("#users-body").to_contain_text("The users are not available: starting")
        held.set()
        await expect(page.page.locator("#users-body tr[data-user-id]")).to_have_count(2)
        assert await page.row_ids() == ["1", "2"]
        await page.text("#status").to_have_text("ok")
        assert service.index.version == version  # the load changed nothing
    finally:
        held.set()
