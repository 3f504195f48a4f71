"""The HTTP API end to end: query validation, /data and /stats, /health, POST /data, errors."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from helpers import Service, SpyStore, fast_settings, wait_until

from userdata import views
from userdata.app import create_app
from userdata.health import REJECTED_SHOWN
from userdata.keys import TASKS
from userdata.stores.folder import FolderStore

ROOT = Path(__file__).resolve().parents[1]

DAY_MS = 86_400_000
YEAR_MS = 365.2425 * DAY_MS  # the SPEC's year for exact ages


async def assert_error(r: ClientResponse, status: int, *mentions: str) -> str:
    """The canonical error: ``status``, JSON, body exactly {"error": <str>} mentioning ``mentions``."""
    text = await r.text()
    assert r.status == status, text
    assert r.content_type == "application/json", (r.content_type, text)
    body = json.loads(text)
    assert isinstance(body, dict) and list(body) == ["error"], text
    assert isinstance(body["error"], str) and body["error"], text
    for mention in mentions:
        assert mention in body["error"], text
    return body["error"]


# Users relative to today's UTC date. On Feb 29 nobody born in a non-leap year has a birthday,
# so the boundary age is then one whose birth year is a leap year too.
TODAY = dt.datetime.now(dt.UTC).date()
AGE = 28 if (TODAY.month, TODAY.day) == (2, 29) else 30


def ms(day: dt.date) -> int:
    """Midnight UTC of ``day`` in milliseconds since the epoch."""
    return round(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def years_before(day: dt.date, years: int) -> dt.date:
    return day.replace(year=day.year - years)


# user_id -> (first_name, last_name, birthts, has image). Ages: "10" turns AGE today (noon),
# "9" turns AGE tomorrow (so is AGE - 1), "100" is AGE + 10, "0007" is 5.
USERS: dict[str, tuple[str, str, int, bool]] = {
    "10": ("Ten", "Today", ms(years_before(TODAY, AGE)) + DAY_MS // 2, True),
    "9": ("Nine", "Tomorrow", ms(years_before(TODAY, AGE) + dt.timedelta(days=1)), False),
    "100": ("Hundred", "Older", ms(years_before(TODAY, AGE + 10) - dt.timedelta(days=100)), True),
    "0007": ("Seven", "Young", ms(years_before(TODAY, 5) - dt.timedelta(days=1)), False),
}
SORTED_IDS = ["0007", "10", "100", "9"]  # as strings, not as numbers


def record(user_id: str) -> dict[str, Any]:
    first_name, last_name, birthts, png = USERS[user_id]
    return {
        "user_id": user_id,
        "first_name": first_name,
        "last_name": last_name,
        "birthts": birthts,
        "img_path": f"src-data/{user_id}.png" if png else None,
    }


def exact_age(user_id: str) -> float:
    return (time.time() * 1000 - USERS[user_id][2]) / YEAR_MS


@pytest.fixture
async def users(start_service: Callable[..., Awaitable[Service]], write_user: Callable[..., Path], data_dir: Path):
    """A service started on USERS."""
    for user_id, (first_name, last_name, birthts, png) in USERS.items():
        write_user(user_id, first_name, last_name, birthts, png=png)
    service = await start_service(fast_settings(data_dir))
    assert len(service.index) == len(USERS)
    return service


# Bad requests.

# (query, what the message must mention)
BAD_QUERIES = [
    pytest.param("foo=1", ["foo"], id="unknown"),
    pytest.param("min_age=30&foo=", ["foo"], id="unknown-empty"),
    pytest.param("MIN_AGE=30", ["MIN_AGE"], id="unknown-case"),
    pytest.param("min_age=1&min_age=2", ["min_age"], id="repeated-min_age"),
    pytest.param("max_age=1&max_age=1", ["max_age"], id="repeated-same-value"),
    pytest.param("is_image_exists=true&is_image_exists=false", ["is_image_exists"], id="repeated-is_image_exists"),
    pytest.param("min_age=", ["min_age"], id="min_age-empty"),
    pytest.param("max_age=", ["max_age"], id="max_age-empty"),
    pytest.param("min_age", ["min_age"], id="min_age-no-value"),
    pytest.param("min_age=%20", ["min_age"], id="min_age-blank"),
    pytest.param("is_image_exists=", ["is_image_exists"], id="is_image_exists-empty"),
    pytest.param("is_image_exists=maybe", ["is_image_exists"], id="is_image_exists-maybe"),
    pytest.param("is_image_exists=2", ["is_image_exists"], id="is_image_exists-2"),
    pytest.param("min_age=40&max_age=30", ["min_age", "max_age"], id="min-above-max"),
    pytest.param("min_age=30.5&max_age=30.4", ["min_age", "max_age"], id="min-above-max-fraction"),
    pytest.param("min_age=%ff", ["min_age"], id="min_age-not-utf8"),
    *(
        pytest.param(f"{name}={value}", [name], id=f"{name}-{label}")
        for name in ("min_age", "max_age")
        for value, label in [
            ("nan", "nan"),
            ("NaN", "NaN"),
            ("inf", "inf"),
            ("-inf", "minus-inf"),
            ("Infinity", "Infinity"),
            ("1e999", "overflow"),
            ("9" * 400, "overflow-digits"),
            ("-1", "negative"),
            ("-0.5", "negative-fraction"),
            ("abc", "abc"),
            ("0x10", "hex"),
            ("1_0", "underscore"),
            ("1,5", "comma"),
            ("30years", "suffix"),
        ]
    ),
]


@pytest.mark.parametrize("path", ["/data", "/stats"])
@pytest.mark.parametrize(("query", "mentions"), BAD_QUERIES)
async def test_bad_query_is_a_400_naming_the_parameter(
    service: Service, path: str, query: str, mentions: list[str]
) -> None:
    await assert_error(await service.client.get(f"{path}?{query}"), 400, *mentions)


async def test_unknown_path_is_a_404_json_error(service: Service) -> None:
    await assert_error(await service.client.get("/nothing/here"), 404, "/nothing/here")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("DELETE", "/data", {"GET", "POST"}, id="DELETE-data"),
        pytest.param("PUT", "/data", {"GET", "POST"}, id="PUT-data"),
        pytest.param("POST", "/stats", {"GET"}, id="POST-stats"),
        pytest.param("POST", "/health", {"GET"}, id="POST-health"),
    ],
)
async def test_wrong_method_is_a_405_json_error_with_allow(
    service: Service, method: str, path: str, allowed: set[str]
) -> None:
    r = await service.client.request(method, path)
    await assert_error(r, 405, method)
    allow = {m.strip() for m in r.headers.get("Allow", "").split(",")}
    assert allowed <= allow and method not in allow, r.headers.get("Allow")


async def test_a_handler_that_fails_is_a_500_json_error_and_every_answer_is_counted(tmp_path: Path) -> None:
    # Routes of the test's own, added to the service's app: the wrapper that answers errors and
    # counts requests is around every route, not only the service's.
    app = create_app(fast_settings(tmp_path))

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/data")

    app.router.add_get("/test/broken", broken)
    app.router.add_get("/test/moved", moved)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        await assert_error(await client.get("/test/broken"), 500, "internal error")
        r = await client.get("/test/moved", allow_redirects=False)
        assert (r.status, r.headers["Location"]) == (302, "/data")
        text = await (await client.get("/metrics")).text()
        for route, status in (("/test/broken", "500"), ("/test/moved", "302")):
            assert f'userdata_http_requests_total{{method="GET",route="{route}",status="{status}"}} 1.0' in text
    finally:
        await client.close()


# Accepted values.


@pytest.mark.parametrize(
    ("value", "has_image"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("false", False, id="false"),
        pytest.param("TRUE", True, id="TRUE"),
        pytest.param("False", False, id="False"),
        pytest.param("1", True, id="1"),
        pytest.param("0", False, id="0"),
        pytest.param("yes", True, id="yes"),
        pytest.param("No", False, id="No"),
        pytest.param("%20true%20", True, id="padded"),
    ],
)
async def test_is_image_exists_accepts_boolean_spellings(users: Service, value: str, has_image: bool) -> None:
    expected = [record(uid) for uid in SORTED_IDS if USERS[uid][3] is has_image]
    assert await users.get(f"/data?is_image_exists={value}") == expected
    assert await users.get(f"/stats?is_image_exists={value}") == {
        "count": len(expected),
        "average_age": pytest.approx(sum(exact_age(r["user_id"]) for r in expected) / len(expected), abs=1e-6),
    }


@pytest.mark.parametrize(
    ("query", "same_as"),
    [
        pytest.param("min_age=%20{a}%20", "min_age={a}", id="space-padded"),
        pytest.param("min_age=%09{a}", "min_age={a}", id="tab-padded"),
        pytest.param("max_age={b}.0", "max_age={b}", id="trailing-zero"),
        pytest.param("min_age={b}.5", "min_age={a}", id="half-min-rounds-up"),
        pytest.param("max_age={a}.5", "max_age={a}", id="half-max-rounds-down"),
        pytest.param("min_age={a}&max_age={a}", "min_age={a}&max_age={a}.9", id="min-equals-max"),
        pytest.param("max_age={a}&min_age={a}", "min_age={a}&max_age={a}", id="any-order"),
        pytest.param("min_age=0", "", id="zero"),
        pytest.param("min_age=0.0&max_age=1e3", "", id="exponent"),
    ],
)
async def test_numeric_spellings_that_are_accepted(users: Service, query: str, same_as: str) -> None:
    query, same_as = query.format(a=AGE, b=AGE - 1), same_as.format(a=AGE, b=AGE - 1)
    expected = await users.get("/data?" + same_as)
    assert await users.get("/data?" + query) == expected
    stats = await users.get("/stats?" + same_as)
    if stats["average_age"] is not None:  # time passes between the two requests
        stats["average_age"] = pytest.approx(stats["average_age"], abs=1e-6)
    assert await users.get("/stats?" + query) == stats


# /data and /stats on real users.

# (query, ids expected in order)
FILTERS = [
    pytest.param("", SORTED_IDS, id="none"),
    pytest.param("is_image_exists=true", ["10", "100"], id="with-image"),
    pytest.param("is_image_exists=false", ["0007", "9"], id="without-image"),
    pytest.param(f"min_age={AGE}", ["10", "100"], id="min-boundary-today-counts"),
    pytest.param(f"max_age={AGE - 1}", ["0007", "9"], id="max-boundary-tomorrow-not-yet"),
    pytest.param(f"min_age={AGE}&max_age={AGE}", ["10"], id="exact-age"),
    pytest.param(f"min_age={AGE - 1}&max_age={AGE - 1}", ["9"], id="exact-age-minus-one"),
    pytest.param(f"min_age={AGE - 1}.5", ["10", "100"], id="min-fraction"),
    pytest.param(f"max_age={AGE}.5", ["0007", "10", "9"], id="max-fraction"),
    pytest.param(f"min_age={AGE}.5&max_age={AGE}.9", [], id="fraction-range-without-whole-age"),
    pytest.param("min_age=5&max_age=5", ["0007"], id="five"),
    pytest.param(f"is_image_exists=no&min_age={AGE}", [], id="no-image-and-old"),
    pytest.param(f"is_image_exists=yes&max_age={AGE + 9}", ["10"], id="image-and-young"),
    pytest.param("min_age=150", [], id="nobody-that-old"),
    pytest.param("max_age=1e308", SORTED_IDS, id="huge-max"),
    pytest.param("min_age=1e308", [], id="huge-min"),
]


@pytest.mark.parametrize(("query", "ids"), FILTERS)
async def test_data_filters_and_sorts_by_user_id_as_strings(users: Service, query: str, ids: list[str]) -> None:
    assert await users.get("/data?" + query) == [record(uid) for uid in ids]


@pytest.mark.parametrize(("query", "ids"), FILTERS)
async def test_stats_counts_and_averages_exact_ages(users: Service, query: str, ids: list[str]) -> None:
    expected_average = pytest.approx(sum(map(exact_age, ids)) / len(ids), abs=1e-6) if ids else None
    assert await users.get("/stats?" + query) == {"count": len(ids), "average_age": expected_average}


async def test_stats_asked_again_and_again_follows_each_change_at_once(
    service: Service, write_user: Callable[..., Path]
) -> None:
    # Answers are shared within a millisecond on one index version: a change is a new version,
    # seen by the very next request whatever the clock.
    for count in range(1, 4):
        before = [await service.get("/stats") for _ in range(20)]
        assert {b["count"] for b in before} == {count - 1}
        write_user(f"u{count}", "A", "B", 0)
        await service.post("/data")
        assert (await service.get("/stats"))["count"] == count
        assert (await service.get("/stats?min_age=1000"))["count"] == 0


async def test_data_and_stats_on_an_empty_store(service: Service) -> None:
    assert await service.get("/data") == []
    assert await service.get("/stats") == {"count": 0, "average_age": None}


async def test_user_ids_keep_leading_zeros_and_images_are_matched_by_id(
    service: Service, write_user: Callable[..., Path], source_dir: Path
) -> None:
    write_user("0001", "Zero", "One", 0)
    write_user("1", "Plain", "One", 0, png=True)
    (source_dir / "0002.png").write_bytes(b"an image without a CSV is not a user")
    await wait_until(lambda: len(service.index) == 2 and (r := service.index.get("1")) is not None and r.img_path)
    assert await service.get("/data") == [
        {"user_id": "0001", "first_name": "Zero", "last_name": "One", "birthts": 0, "img_path": None},
        {"user_id": "1", "first_name": "Plain", "last_name": "One", "birthts": 0, "img_path": "src-data/1.png"},
    ]


async def test_data_follows_changes_to_the_folder(
    service: Service, write_user: Callable[..., Path], source_dir: Path
) -> None:
    before_1970 = ms(dt.date(1950, 5, 17))
    write_user("42", "Old", "Timer", before_1970, png=True)
    await wait_until(lambda: "42" in service.index)
    assert await service.get("/data") == [
        {
            "user_id": "42",
            "first_name": "Old",
            "last_name": "Timer",
            "birthts": before_1970,
            "img_path": "src-data/42.png",
        }
    ]
    (source_dir / "42.png").unlink()
    await wait_until(lambda: (r := service.index.get("42")) is not None and r.img_path is None)
    assert await service.get("/data?is_image_exists=false") == [
        {"user_id": "42", "first_name": "Old", "last_name": "Timer", "birthts": before_1970, "img_path": None}
    ]


async def test_a_repeated_query_sees_every_change(
    users: Service, write_user: Callable[..., Path], source_dir: Path
) -> None:
    """Answers are cached per index version: a change, however small, is never hidden."""
    query = "/data?is_image_exists=true"
    assert await users.get(query) == await users.get(query) == [record("10"), record("100")]
    write_user("11", "Eleven", "New", 0, png=True)
    await wait_until(lambda: "11" in users.index)
    eleven = {"user_id": "11", "first_name": "Eleven", "last_name": "New", "birthts": 0, "img_path": "src-data/11.png"}
    assert await users.get(query) == [record("10"), record("100"), eleven]
    (source_dir / "100.png").unlink()
    await wait_until(lambda: (r := users.index.get("100")) is not None and r.img_path is None)
    assert await users.get(query) == [record("10"), eleven]
    (source_dir / "11.csv").unlink()
    await wait_until(lambda: "11" not in users.index)
    assert await users.get(query) == [record("10")]


async def test_a_repeated_query_follows_the_date(users: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no change to the index, tomorrow's answer is tomorrow's: "9" turns AGE then."""
    query = f"/data?min_age={AGE}"
    assert await users.user_ids(f"?min_age={AGE}") == ["10", "100"]
    today_ms = views._now_ms()
    monkeypatch.setattr(views, "_now_ms", lambda: today_ms + DAY_MS)
    assert [r["user_id"] for r in await users.get(query)] == ["10", "100", "9"]


# /health and the page.


async def test_health_lists_users_and_rejected_files(users: Service, write_user: Callable[..., Path]) -> None:
    body = await users.get("/health")
    assert isinstance(body.pop("store", ""), str), body
    assert isinstance(body.pop("changed_at", None), str), body  # the first load found the users
    assert body == {"status": "ok", "users": len(USERS), "rejected": [], "rejected_count": 0}

    write_user("99", csv="first_name,last_name\nA,B\n")

    async def rejected() -> list[Any]:
        listed: list[Any] = (await users.get("/health"))["rejected"]
        return listed

    await wait_until(rejected, message="for the bad file to be listed")
    body = await users.get("/health")
    body.pop("store", None)
    body.pop("changed_at", None)
    reason = body["rejected"][0].get("reason") if body["rejected"] else None
    assert body == {
        "status": "ok",
        "users": len(USERS),
        "rejected": [{"key": "src-data/99.csv", "reason": reason}],
        "rejected_count": 1,
    }
    assert isinstance(reason, str) and "birthts" in reason and "\n" not in reason, reason
    assert "99" not in users.index


async def test_a_fixed_file_leaves_the_rejected_list(service: Service, write_user: Callable[..., Path]) -> None:
    write_user("5", csv="first_name, last_name, birthts\nA, B, soon\n")
    await wait_until(lambda: service.pipeline.rejected)
    assert [r["key"] for r in (await service.get("/health"))["rejected"]] == ["src-data/5.csv"]
    write_user("5", "A", "B", 0)
    await wait_until(lambda: "5" in service.index)
    body = await service.get("/health")
    assert (body["status"], body["users"], body["rejected"]) == ("ok", 1, []), body


async def test_the_dashboard_is_html_css_and_a_script_from_the_package(service: Service) -> None:
    """GET / and its two files (tests/test_browser.py runs them in a browser): served from the
    package, nothing fetched from elsewhere, asking the API a page at a time."""
    r = await service.client.get("/")
    html = await r.text()
    assert r.status == 200, html
    assert r.content_type == "text/html", r.content_type
    assert '<script type="module" src="/static/page.js"></script>' in html
    assert '<link rel="stylesheet" href="/static/page.css">' in html
    files = {}
    pages = [("/", "text/html"), ("/static/page.js", "text/javascript"), ("/static/page.css", "text/css")]
    for path, content_type in pages:
        r = await service.client.get(path)
        assert (r.status, r.content_type, r.charset) == (200, content_type, "utf-8"), path
        assert r.headers["Cache-Control"] == "no-cache"
        files[path] = await r.text()
        again = await service.client.get(path, headers={"If-None-Match": r.headers["ETag"]})
        assert again.status == 304 and await again.read() == b"", path
    script, style = files["/static/page.js"], files["/static/page.css"]
    for asked in ["/stats", "/stats/ages", "/data", "/rejected", "/health", "/images/", 'new EventSource("/updates")']:
        assert asked in script, asked
    assert "const LIMIT = 50;" in script and "limit: LIMIT" in script  # /data a page at a time
    for text in [html, script, style]:  # offline: no CDN, no font or import from elsewhere
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg\b)", text), text
        assert not re.search(r"@import|url\(", text)
    # Labels, live regions, a caption; light and dark; focus shown.
    for field in ("f-image", "f-min", "f-max"):
        assert f'<label for="{field}">' in html, field
    assert 'aria-live="polite"' in html and 'role="alert"' in html and "<caption" in html
    assert '<html lang="en">' in html and 'name="viewport"' in html
    assert "@media (prefers-color-scheme: dark)" in style and ":focus-visible" in style


def test_the_dashboard_s_files_are_package_data() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["userdata"].split(",")]
    package = ROOT / "userdata"
    shipped = {path.relative_to(package).as_posix() for pattern in patterns for path in package.glob(pattern)}
    assert {"page.html", "static/page.js", "static/page.css"} <= shipped, shipped


# POST /data: a forced rescan.


async def test_rescan_reports_what_changed_since_the_last_look(
    start_service: Callable[..., Awaitable[Service]],
    write_user: Callable[..., Path],
    source_dir: Path,
    data_dir: Path,
) -> None:
    write_user("1", "Ann", "Lee", 0)
    write_user("2", "Bob", "Ray", DAY_MS)
    service = await start_service(fast_settings(data_dir, watch=False))
    assert await service.user_ids() == ["1", "2"]

    write_user("3", "Cy", "New", 2 * DAY_MS)  # added
    write_user("1", "Ann", "Changed", 0, png=True)  # updated (name and image)
    (source_dir / "2.csv").unlink()  # removed
    write_user("4", csv="first_name,last_name\nA,B\n")  # rejected
    assert await service.user_ids() == ["1", "2"], "nothing should be seen before the rescan"

    report = await service.post("/data")
    assert isinstance(report.get("duration_ms"), int) and report["duration_ms"] >= 0, report
    assert report == {
        "users": 2,
        "added": 1,
        "updated": 1,
        "removed": 1,
        "rejected": 1,
        "duration_ms": report["duration_ms"],
    }
    assert await service.get("/data") == [
        {"user_id": "1", "first_name": "Ann", "last_name": "Changed", "birthts": 0, "img_path": "src-data/1.png"},
        {"user_id": "3", "first_name": "Cy", "last_name": "New", "birthts": 2 * DAY_MS, "img_path": None},
    ]

    again = await service.post("/data")
    assert again == {
        "users": 2,
        "added": 0,
        "updated": 0,
        "removed": 0,
        "rejected": 1,
        "duration_ms": again["duration_ms"],
    }
    assert isinstance(again["duration_ms"], int), again


async def test_rescan_of_unchanged_data_reports_no_change(users: Service) -> None:
    report = await users.post("/data")
    assert report == {
        "users": len(USERS),
        "added": 0,
        "updated": 0,
        "removed": 0,
        "rejected": 0,
        "duration_ms": report["duration_ms"],
    }
    assert isinstance(report["duration_ms"], int), report


async def test_concurrent_rescans_all_succeed_and_agree(
    start_service: Callable[..., Awaitable[Service]], write_user: Callable[..., Path], data_dir: Path
) -> None:
    service = await start_service(fast_settings(data_dir, watch=False))
    for i in range(3):
        write_user(str(i), "Ann", "Lee", i * DAY_MS)

    responses = await asyncio.gather(*(service.client.post("/data") for _ in range(5)))
    bodies = []
    for r in responses:
        text = await r.text()
        assert r.status == 200, text
        bodies.append(json.loads(text))
    assert all(body == bodies[0] for body in bodies), bodies
    assert bodies[0] == {
        "users": 3,
        "added": 3,
        "updated": 0,
        "removed": 0,
        "rejected": 0,
        "duration_ms": bodies[0]["duration_ms"],
    }
    assert await service.user_ids() == ["0", "1", "2"]


# /health before the first load.


async def test_health_and_rescan_are_503_until_the_store_can_be_listed(data_dir: Path) -> None:
    source = data_dir / "datalake" / "src-data"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"a file where the source folder should be")

    # start_service(settings, loaded=False), with the client closed here even if startup fails,
    # so a failure shows as this test's own error.
    client = TestClient(TestServer(create_app(fast_settings(data_dir)), host="127.0.0.1", port=0))
    try:
        await client.start_server()
        service = Service(client.app, client)
        seen: list[Any] = []

        async def degraded() -> bool:
            r = await client.get("/health")
            text = await r.text()
            assert r.status == 503, text
            seen.append(body := json.loads(text))
            assert body in ({"status": "starting"}, {"status": "degraded", "cause": body.get("cause")}), text
            status: str = body["status"]
            return status == "degraded"

        await wait_until(degraded, message=lambda: f"for /health to say degraded; saw {seen[-3:]}")
        cause = seen[-1]["cause"]
        assert isinstance(cause, str) and cause.strip(), cause
        assert await service.get("/data") == []
        # A rescan cannot do better than the load that waits for the store: it says so at once.
        await assert_error(await client.post("/data"), 503, "not loaded yet")

        source.unlink()
        source.mkdir()
        (source / "1.csv").write_text("first_name, last_name, birthts\nAnn, Lee, 0\n")

        async def healthy() -> bool:
            return (await client.get("/health")).status == 200

        await wait_until(healthy, message="for /health to recover")
        body = await service.get("/health")
        body.pop("store", None)
        body.pop("changed_at", None)
        assert body == {"status": "ok", "users": 1, "rejected": [], "rejected_count": 0}
        assert await service.user_ids() == ["1"]
    finally:
        await client.close()


async def test_health_is_degraded_but_serving_when_the_store_goes_away(users: Service, source_dir: Path) -> None:
    moved = source_dir.with_name("moved-away")
    source_dir.rename(moved)
    r = await users.client.post("/data")
    await assert_error(r, 503, "store")
    body = await users.get("/health")
    body.pop("store", None)
    assert body.get("status") == "degraded" and body.get("cause"), body
    assert await users.user_ids() == SORTED_IDS, "the last index is still served"

    moved.rename(source_dir)
    report = await users.post("/data")
    assert (report["users"], report["added"], report["removed"]) == (len(USERS), 0, 0), report
    body = await users.get("/health")
    body.pop("store", None)
    body.pop("changed_at", None)
    assert body == {"status": "ok", "users": len(USERS), "rejected": [], "rejected_count": 0}


# Liveness, readiness, the rejected files.


async def test_liveness_answers_during_a_first_load_and_readiness_only_after_it(
    start_service, data_dir: Path, source_dir: Path, write_user
) -> None:
    write_user("1")
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    held = asyncio.Event()

    async def hold(keys: Any) -> None:
        await held.wait()

    store.after_read = hold  # the first load reads, then waits here
    service = await start_service(fast_settings(data_dir), store=store, loaded=False)
    await wait_until(lambda: store.reads, message="the first load under way")
    assert await service.get("/livez", status=200) == {"status": "alive"}
    assert await service.get("/readyz", status=503) == {"status": "starting"}
    assert (await service.get("/health", status=503))["status"] == "starting"
    held.set()
    await wait_until(service.pipeline.loaded.is_set)
    assert await service.get("/readyz", status=200) == {"status": "ready"}


async def test_health_lists_the_first_rejected_files_and_rejected_pages_through_all(
    start_service, data_dir: Path, source_dir: Path
) -> None:
    source_dir.mkdir(parents=True, exist_ok=True)
    for i in range(REJECTED_SHOWN + 30):
        (source_dir / f"bad{i:04d}.csv").write_text("not, a, user\n")
    service = await start_service(fast_settings(data_dir, watch=False))
    health = await service.get("/health")
    keys = sorted(f"src-data/bad{i:04d}.csv" for i in range(REJECTED_SHOWN + 30))
    assert health["rejected_count"] == len(keys)
    assert [r["key"] for r in health["rejected"]] == keys[:REJECTED_SHOWN]

    seen: list[str] = []
    url = "/rejected?limit=40"
    while url:
        response = await service.client.get(url)
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["count"] == len(keys) and len(body["rejected"]) <= 40
        assert all(r["reason"] for r in body["rejected"])
        seen += [r["key"] for r in body["rejected"]]
        link = response.headers.get("Link")
        url = link[1 : link.index(">")] if link else ""
        assert not link or link.endswith('; rel="next"')
    assert seen == keys  # every one once, in order, the last page without a next link


@pytest.mark.parametrize(
    ("query", "named"),
    [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit"), ("limit=²", "limit"), ("page=2", "page"),
     ("limit=1&limit=2", "more than once")],
)  # fmt: skip
async def test_bad_rejected_queries_are_400_naming_the_parameter(service: Service, query: str, named: str) -> None:
    response = await service.client.get(f"/rejected?{query}")
    assert response.status == 400
    assert named in (await response.json())["error"]


async def test_liveness_fails_once_a_background_task_has_died(service: Service) -> None:
    assert await service.get("/livez", status=200) == {"status": "alive"}

    async def crash() -> None:
        raise RuntimeError("a bug")

    died = asyncio.create_task(crash(), name="userdata.output")
    with contextlib.suppress(RuntimeError):
        await died
    service.app[TASKS].append(died)  # as if the app's own output task had died
    body = await service.get("/livez", status=503)
    assert body["status"] == "stopped" and "userdata.output stopped (RuntimeError)" in body["cause"], body
    assert "a bug" not in body["cause"]  # the error's text stays in the log


# Paging /data.


@pytest.fixture
async def many(start_service, data_dir: Path, source_dir: Path) -> Service:
    """10,000 users born over 1940-2010, two thirds with an image."""
    source_dir.mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        birthts = -946_771_200_000 + i * 221_000_000  # 1940-01-01 onwards, about 2.6 days apart
        (source_dir / f"{i}.csv").write_text(f"first_name, last_name, birthts\nU{i}, L, {birthts}\n")
        if i % 3:
            (source_dir / f"{i}.png").write_bytes(b"png")
    service: Service = await start_service(fast_settings(data_dir, watch=False))
    return service


@pytest.mark.parametrize(
    ("filters", "limit"),
    [("", 1000), ("", 7), ("is_image_exists=true", 333), ("min_age=30&max_age=40", 250),
     ("min_age=85", 40), ("is_image_exists=false&min_age=80&max_age=81", 3), ("min_age=200", 10)],
)  # fmt: skip
async def test_paging_through_a_selection_gives_exactly_the_whole_answer(many: Service, filters: str, limit: int):
    whole = await many.get(f"/data?{filters}")
    pages: list[Any] = []
    url = f"/data?{filters}&limit={limit}" if filters else f"/data?limit={limit}"
    while url:
        response = await many.client.get(url)
        assert response.status == 200, await response.text()
        page = await response.json()
        assert len(page) <= limit
        pages += page
        link = response.headers.get("Link")
        if link is None:
            break
        assert link.endswith('; rel="next"') and len(page) == limit
        url = link[1 : link.index(">")]
        assert all(f in url for f in filters.split("&"))  # the same filters
    assert pages == whole


@pytest.mark.parametrize(
    ("query", "named"),
    [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=-1", "limit"), ("limit=", "limit"),
     ("after=5", "after needs limit"), ("limit=5&limit=6", "limit"), ("limit=5&page=2", "page")],
)  # fmt: skip
async def test_bad_paging_values_are_400_naming_the_parameter(service: Service, query: str, named: str):
    response = await service.client.get(f"/data?{query}")
    assert response.status == 400, await response.text()
    assert named in (await response.json())["error"]
