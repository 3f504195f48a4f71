"""GET /metrics, scraped as Prometheus does, against the real service: the figures move as it works."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from helpers import Service, SpyStore, fast_settings, wait_until
from pgserver import own_database
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from userdata.stores import StoreUnavailable
from userdata.stores.folder import FolderStore

Start = Callable[..., Awaitable[Service]]


class Scrape:
    """One scrape of /metrics, parsed with prometheus-client's own parser."""

    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def type(self, family: str) -> str:
        return self.families[family].type

    def value(self, sample: str, **labels: str) -> float | None:
        """The value of the sample of that name and labels, None if there is none."""
        for family in self.families.values():
            for s in family.samples:
                if s.name == sample and s.labels == labels:
                    return s.value
        return None

    def __getitem__(self, sample: str) -> float:
        value = self.value(sample)
        assert value is not None, f"no sample {sample}"
        return value


async def scrape(service: Service, query: str = "") -> Scrape:
    r = await service.client.get("/metrics" + query)
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    return Scrape(await r.text())


async def scraped(
    service: Service, predicate: Callable[[Scrape], bool], message: str = "", timeout: float = 5.0
) -> Scrape:
    """The first scrape for which ``predicate`` holds (scraping again and again until then)."""
    found: list[Scrape] = []

    async def check() -> bool:
        found[:] = [await scrape(service)]
        return predicate(found[0])

    await wait_until(check, timeout, message)
    return found[0]


async def test_metrics_have_their_types_and_count_each_request_under_its_route_and_status(
    start_service: Start, data_dir: Path, write_user: Callable[..., Path]
) -> None:
    write_user("1")
    service = await start_service(fast_settings(data_dir))
    before = await scrape(service)
    assert before.type("userdata_http_requests") == "counter"
    assert before.type("userdata_http_request_duration_seconds") == "histogram"
    assert before.type("userdata_scan_duration_seconds") == "histogram"
    assert before.type("userdata_users") == "gauge"
    assert before.type("userdata_store_errors") == "counter"
    assert before["userdata_ready"] == 1
    assert "userdata_mirror_lag_seconds" not in before.families  # no database

    def count(scrape: Scrape, route: str, status: str, method: str = "GET") -> float:
        return scrape.value("userdata_http_requests_total", route=route, method=method, status=status) or 0.0

    await service.get("/stats")
    await service.get("/stats?min_age=abc", status=400)
    await service.get("/nowhere", status=404)
    r = await service.client.request("PROPFIND", "/stats")  # a rare method is not a label of its own
    assert r.status == 405
    after = await scrape(service)
    assert count(after, "/stats", "200") == count(before, "/stats", "200") + 1
    assert count(after, "/stats", "400") == count(before, "/stats", "400") + 1
    assert count(after, "unmatched", "404") == count(before, "unmatched", "404") + 1
    assert count(after, "unmatched", "405", method="other") == 1
    assert count(after, "/metrics", "200") == count(before, "/metrics", "200") + 1
    stats_seconds = after.value("userdata_http_request_duration_seconds_count", route="/stats")
    assert stats_seconds == (before.value("userdata_http_request_duration_seconds_count", route="/stats") or 0) + 2
    assert after.value("userdata_http_request_duration_seconds_bucket", route="/stats", le="+Inf") == stats_seconds
    # The app's own registry: the process-wide one knows nothing of it.
    assert REGISTRY.get_sample_value("userdata_users") is None


async def test_users_changes_visibility_and_output_csv_follow_watched_files(
    start_service: Start, data_dir: Path, source_dir: Path, write_user: Callable[..., Path]
) -> None:
    write_user("1")
    write_user("2", png=True)
    service = await start_service(fast_settings(data_dir))
    # Written, and its hint too (output.csv is dirty until both are).
    loaded = await scraped(
        service,
        lambda s: s["userdata_output_csv_writes_total"] >= 1 and s["userdata_output_csv_dirty"] == 0,
        "output.csv written",
    )
    assert loaded["userdata_users"] == len(service.index) == 2
    assert loaded.value("userdata_scan_duration_seconds_count", kind="load") == 1
    assert loaded.value("userdata_changes_applied_total", change="added") == 2
    assert loaded["userdata_output_csv_dirty"] == 0
    assert loaded.value("userdata_degraded", part="watcher") == 0
    assert loaded["userdata_pipeline_backlog"] == 0
    since = time.monotonic()

    write_user("3")
    added = await scraped(service, lambda s: s["userdata_users"] == 3, "the new user counted")
    assert len(service.index) == 3
    assert added.value("userdata_changes_applied_total", change="added") == 3
    visible = added["userdata_change_visible_seconds_count"]
    assert visible >= 1  # a watched change: its time from the file event to the index
    assert 0 < added["userdata_change_visible_seconds_sum"] < 5 * visible
    written = await scraped(
        service,
        lambda s: (
            s["userdata_output_csv_writes_total"] > loaded["userdata_output_csv_writes_total"]
            and s["userdata_output_csv_dirty"] == 0
        ),
        "output.csv written again",
    )
    assert written["userdata_output_csv_age_seconds"] <= time.monotonic() - since  # written after `since`

    (source_dir / "1.csv").unlink()
    (source_dir / "2.csv").write_text("first_name, last_name, birthts\nBo, Lee, 5\n")
    changed = await scraped(
        service,
        lambda s: s["userdata_users"] == 2 and (s.value("userdata_changes_applied_total", change="updated") or 0) >= 1,
        "the removal and the update counted",
    )
    assert changed.value("userdata_changes_applied_total", change="removed") == 1
    assert changed["userdata_change_visible_seconds_count"] > visible
    assert len(service.index) == 2


async def test_rejected_files_rescans_and_store_errors_are_counted(
    start_service: Start, data_dir: Path, source_dir: Path, write_user: Callable[..., Path]
) -> None:
    write_user("1")
    write_user("2", csv="first_name, last_name\nAnn, Lee\n")  # birthts missing
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    service = await start_service(fast_settings(data_dir, watch=False), store=store)
    first = await scrape(service)
    assert first["userdata_rejected_files"] == 1
    assert first.value("userdata_store_errors_total", kind="object") == 0
    assert first.value("userdata_store_errors_total", kind="store") == 0

    write_user("3", csv=b"\xff\xfe")
    store.unreadable = {"src-data/1.csv": "access denied"}
    report = await service.post("/data")
    assert report["rejected"] == 3, report
    rescanned = await scrape(service)
    assert rescanned.value("userdata_scan_duration_seconds_count", kind="forced") == 1
    assert (rescanned.value("userdata_scan_duration_seconds_sum", kind="forced") or 0) > 0
    assert rescanned["userdata_rejected_files"] == 3
    assert rescanned.value("userdata_store_errors_total", kind="object") == 1
    assert rescanned["userdata_users"] == 1  # the last good record of 1 is kept

    store.fail = StoreUnavailable("connection refused")
    await service.post("/data", status=503)
    down = await scrape(service)
    assert down.value("userdata_store_errors_total", kind="store") == 1
    assert down.value("userdata_degraded", part="pipeline") == 1
    assert down.value("userdata_scan_duration_seconds_count", kind="forced") == 1  # only scans that ended
    store.fail, store.unreadable = None, {}
    await service.post("/data")
    back = await scrape(service)
    assert back.value("userdata_degraded", part="pipeline") == 0
    assert back.value("userdata_scan_duration_seconds_count", kind="forced") == 2
    assert back["userdata_rejected_files"] == 2


class FailingWrites(SpyStore):
    """A store whose writes fail while ``fail_writes`` is set; reads go on."""

    fail_writes = False

    async def write(self, key: str, data: bytes) -> None:
        if self.fail_writes:
            raise StoreUnavailable("disk full")
        await super().write(key, data)


async def test_output_csv_failures_are_counted_and_it_stays_dirty_until_written(
    start_service: Start, data_dir: Path, write_user: Callable[..., Path]
) -> None:
    write_user("1")
    store = FailingWrites(FolderStore(data_dir, "datalake", "src-data/"))
    service = await start_service(fast_settings(data_dir, watch=False), store=store)
    start = await scraped(service, lambda s: s["userdata_output_csv_writes_total"] == 1, "output.csv written")
    store.fail_writes = True
    write_user("2")
    await service.post("/data")
    failing = await scraped(service, lambda s: s["userdata_output_csv_failures_total"] >= 1, "a failed write")
    assert failing["userdata_output_csv_dirty"] == 1
    assert failing.value("userdata_degraded", part="output") == 1
    assert failing["userdata_output_csv_writes_total"] == start["userdata_output_csv_writes_total"]
    store.fail_writes = False
    written = await scraped(service, lambda s: s["userdata_output_csv_dirty"] == 0, "written once it can be")
    assert written["userdata_output_csv_writes_total"] == 2
    assert written.value("userdata_degraded", part="output") == 0


async def test_a_webhook_change_is_timed_to_its_visibility(
    start_service: Start, data_dir: Path, write_user: Callable[..., Path]
) -> None:
    service = await start_service(fast_settings(data_dir, watch=False, webhook_token="t0ken"))
    write_user("7")
    key = "src-data%2F7.csv"
    event = {"Records": [{"s3": {"bucket": {"name": "datalake"}, "object": {"key": key}}}]}
    r = await service.client.post("/events", data=orjson.dumps(event), headers={"Authorization": "Bearer t0ken"})
    assert r.status == 200, await r.text()
    timed = await scraped(service, lambda s: s["userdata_change_visible_seconds_count"] == 1, "the change timed")
    assert timed["userdata_users"] == 1
    assert timed.value("userdata_http_requests_total", route="/events", method="POST", status="200") == 1


async def test_the_event_loop_lag_is_sampled_and_names_restrict_a_scrape(start_service: Start, data_dir: Path) -> None:
    service = await start_service(fast_settings(data_dir))
    lagged = await scraped(service, lambda s: s["userdata_event_loop_lag_seconds_count"] >= 2, "two samples")
    assert lagged.type("userdata_event_loop_lag_seconds") == "histogram"
    assert 0 <= lagged["userdata_event_loop_lag_seconds_sum"] < 1
    only = await scrape(service, "?name[]=userdata_users&name[]=userdata_ready")
    assert set(only.families) == {"userdata_users", "userdata_ready"}


async def test_the_mirror_shows_its_lag_and_backlog_while_the_database_cannot_be_reached(
    start_service: Start, data_dir: Path, write_user: Callable[..., Path]
) -> None:
    write_user("1")
    write_user("2")
    service = await start_service(fast_settings(data_dir, database_url="postgresql://postgres@127.0.0.1:1/none"))
    behind = await scraped(service, lambda s: s.value("userdata_degraded", part="mirror") == 1, "the mirror behind")
    assert behind["userdata_mirror_backlog"] == 2  # the first load's users, not in the table yet
    assert behind["userdata_mirror_lag_seconds"] >= 0
    assert behind.type("userdata_mirror_lag_seconds") == "gauge"


async def test_the_mirror_in_sync_has_no_backlog(
    start_service: Start, data_dir: Path, write_user: Callable[..., Path]
) -> None:
    write_user("1")
    with own_database() as url:
        service = await start_service(fast_settings(data_dir, database_url=url))
        synced = await scraped(
            service,
            lambda s: s.value("userdata_degraded", part="mirror") == 0 and s["userdata_mirror_backlog"] == 0,
            "the mirror in sync",
            timeout=15.0,
        )
        assert synced["userdata_mirror_lag_seconds"] == 0
        write_user("2")
        await scraped(service, lambda s: s["userdata_users"] == 2 and s["userdata_mirror_backlog"] == 0, timeout=15.0)
        await service.stop()
