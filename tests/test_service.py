"""The service end to end on the folder store: real files, real awatch, real HTTP."""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
from typing import Any

import pytest
from helpers import PNG, SHARED_DATA, SpyStore, fast_settings, wait_until

from userdata.app import create_store
from userdata.records import parse_user_csv


def expected_records(source_dir) -> list[dict[str, Any]]:
    """What /data must say about a folder, computed without the service."""
    records = []
    for path in sorted(source_dir.glob("*.csv")):
        fields = parse_user_csv(path.read_bytes())
        png = path.with_suffix(".png")
        records.append(
            {
                "user_id": path.stem,
                "first_name": fields.first_name,
                "last_name": fields.last_name,
                "birthts": fields.birthts,
                "img_path": f"src-data/{png.name}" if png.exists() else None,
            }
        )
    return sorted(records, key=lambda r: r["user_id"])


def output_rows(output_path) -> list[dict[str, Any]]:
    with open(output_path, newline="", encoding="utf-8") as f:
        return [
            {**row, "birthts": int(row["birthts"]), "img_path": row["img_path"] or None} for row in csv.DictReader(f)
        ]


async def test_a_dropped_file_becomes_visible(service, write_user):
    assert await service.get("/data") == []
    write_user("7", "Ann", "Lee", -5, png=True)
    await wait_until(lambda: "7" in service.index)
    assert await service.get("/data") == [
        {"user_id": "7", "first_name": "Ann", "last_name": "Lee", "birthts": -5, "img_path": "src-data/7.png"}
    ]


async def test_an_edit_updates_the_user(service, write_user):
    write_user("7", "Ann", "Lee")
    await wait_until(lambda: "7" in service.index)
    write_user("7", "Anna", "Leigh", 1000)
    await wait_until(lambda: service.index.get("7").first_name == "Anna")
    assert (await service.get("/data"))[0] | {"img_path": None} == {
        "user_id": "7",
        "first_name": "Anna",
        "last_name": "Leigh",
        "birthts": 1000,
        "img_path": None,
    }


async def test_deleting_the_csv_removes_the_user_and_the_png_clears_img_path(service, write_user, source_dir):
    write_user("7", png=True)
    write_user("8", png=True)
    await wait_until(lambda: len(service.index) == 2 and service.index.get("8").img_path)
    (source_dir / "8.png").unlink()
    await wait_until(lambda: service.index.get("8").img_path is None)
    (source_dir / "7.csv").unlink()
    await wait_until(lambda: "7" not in service.index)
    assert await service.user_ids() == ["8"]
    assert (await service.get("/data"))[0]["img_path"] is None


async def test_an_image_without_a_csv_is_not_a_user_until_the_csv_comes(service, write_user, source_dir):
    (source_dir / "5.png").write_bytes(PNG)
    write_user("6")
    await wait_until(lambda: "6" in service.index)
    assert "5" not in service.index
    write_user("5")
    await wait_until(lambda: "5" in service.index)
    assert service.index.get("5").img_path == "src-data/5.png"


async def test_an_editor_writing_a_temp_file_and_renaming_it(service, write_user, source_dir):
    write_user("7", "Ann")
    await wait_until(lambda: "7" in service.index)
    for name in ("7.csv~", ".7.csv.swp", "7.csv.tmp"):
        (source_dir / name).write_text("first_name,last_name,birthts\nTemp,File,1\n")
    tmp = source_dir / ".7.csv.part"
    tmp.write_text("first_name,last_name,birthts\nBea,Lee,0\n")
    os.replace(tmp, source_dir / "7.csv")
    await wait_until(lambda: service.index.get("7").first_name == "Bea")
    assert await service.user_ids() == ["7"]
    health = await service.get("/health")
    assert health["rejected"] == [], health


async def test_sub_folders_and_other_files_are_ignored(service, write_user, source_dir):
    (source_dir / "nested").mkdir()
    (source_dir / "nested" / "9.csv").write_text("first_name,last_name,birthts\nA,B,0\n")
    (source_dir / "notes.txt").write_text("hello")
    (source_dir / "10.csv").mkdir()  # a folder named like a CSV is not a file
    write_user("7")
    await wait_until(lambda: "7" in service.index)
    report = await service.post("/data")
    assert (report["users"], report["rejected"]) == (1, 0), report
    assert await service.user_ids() == ["7"]


async def test_a_thousand_files_dropped_at_once(service, write_user, source_dir, output_path):
    for i in range(1000):
        write_user(f"{i:04d}", f"First{i}", f"Last{i}", i * 86_400_000, png=i % 3 == 0)
    expected = expected_records(source_dir)
    await wait_until(lambda: len(service.index) == 1000, timeout=20, message=lambda: f"{len(service.index)} users")
    await wait_until(lambda: sum(1 for r in service.index.records() if r.img_path) == 334, timeout=10)
    assert await service.get("/data") == expected
    await wait_until(lambda: output_path.exists() and output_rows(output_path) == expected, timeout=10)


async def test_a_bad_file_is_listed_in_health_and_the_last_good_record_kept(service, write_user):
    write_user("7", "Ann", "Lee", 123, png=True)
    await wait_until(lambda: "7" in service.index)
    good = await service.get("/data")
    write_user("7", csv="first_name,last_name,birthts\nAnn,Lee,not-a-number\n")
    await wait_until(lambda: service.pipeline.rejected)
    health = await service.get("/health")
    assert health["rejected"] == [{"key": "src-data/7.csv", "reason": "birthts is not an integer: 'not-a-number'"}]
    assert health["status"] == "ok"
    assert await service.get("/data") == good
    write_user("7", "Ann", "Lee", 456)
    await wait_until(lambda: service.index.get("7").birthts == 456)
    assert (await service.get("/health"))["rejected"] == []


async def test_a_bad_file_for_a_new_user_makes_no_user(service, write_user):
    write_user("7", csv="first_name,last_name,birthts\n")
    write_user("8")
    await wait_until(lambda: "8" in service.index and service.pipeline.rejected)
    assert await service.user_ids() == ["8"]
    assert (await service.get("/health"))["rejected"][0]["key"] == "src-data/7.csv"


async def test_two_csvs_naming_one_user_are_both_rejected_until_one_goes(service, write_user, source_dir):
    write_user("7", "Ann")
    await wait_until(lambda: "7" in service.index)
    write_user("7", "Other", name="7.CSV")
    await wait_until(lambda: len(service.pipeline.rejected) == 2)
    rejected = (await service.get("/health"))["rejected"]
    assert [r["key"] for r in rejected] == ["src-data/7.CSV", "src-data/7.csv"]
    assert all("conflict" in r["reason"] for r in rejected), rejected
    assert service.index.get("7").first_name == "Ann"  # the last good record stays
    (source_dir / "7.csv").unlink()
    await wait_until(lambda: service.index.get("7").first_name == "Other")
    assert (await service.get("/health"))["rejected"] == []


async def test_output_csv_equals_data_and_is_rewritten_only_on_change(service, write_user, source_dir, output_path):
    write_user("b", csv='first_name, last_name, birthts\nBo, "Quote ""Q"", Jr", 5\n', png=True)
    write_user("a", "Al", "Lee", -7)
    await wait_until(lambda: len(service.index) == 2)
    await wait_until(lambda: output_path.exists() and len(output_rows(output_path)) == 2)
    data = await service.get("/data")
    assert output_rows(output_path) == data
    text = output_path.read_bytes()
    assert text.startswith(b"user_id,first_name,last_name,birthts,img_path\n")
    assert b'"Quote ""Q"", Jr"' in text
    writes = service.output.writes
    report = await service.post("/data")
    assert (report["added"], report["updated"], report["removed"]) == (0, 0, 0), report
    assert await service.output.flush()
    assert service.output.writes == writes


async def test_restart_gives_the_same_answers(start_service, data_dir, write_user, output_path):
    for i in range(20):
        write_user(str(i), f"F{i}", f"L{i}", i * 10**10, png=i % 2 == 0)
    write_user("bad", csv="nonsense")
    first = await start_service(fast_settings(data_dir))
    answers = [await first.get(path) for path in ("/data", "/stats", "/data?is_image_exists=1&min_age=40")]
    await first.stop()
    mtime = output_path.stat().st_mtime_ns
    second = await start_service(fast_settings(data_dir))
    again = [await second.get(path) for path in ("/data", "/stats", "/data?is_image_exists=1&min_age=40")]
    # average_age is exact age now, so it grows by the milliseconds between the two requests
    assert again[1] == {"count": answers[1]["count"], "average_age": pytest.approx(answers[1]["average_age"])}
    assert (again[0], again[2]) == (answers[0], answers[2])
    assert await second.output.flush()
    assert output_path.stat().st_mtime_ns == mtime  # same index: output.csv not rewritten


async def test_a_file_rejected_while_the_service_was_down_keeps_its_last_good_record(
    start_service, data_dir, write_user
):
    write_user("7", "Ann", "Lee", 42, png=True)
    write_user("8", "Bob")
    first = await start_service(fast_settings(data_dir, watch=False))
    before = await first.get("/data")
    await first.stop()
    write_user("7", csv=b"first_name,last_name,birthts\n\xff\xfe,Lee,42\n")  # not UTF-8
    (data_dir / "datalake" / "src-data" / "8.csv").unlink()
    second = await start_service(fast_settings(data_dir, watch=False))
    assert await second.get("/data") == [before[0]]
    health = await second.get("/health")
    assert [(r["key"], r["reason"].split(" (")[0]) for r in health["rejected"]] == [("src-data/7.csv", "not UTF-8")]


async def test_a_same_size_rewrite_with_the_same_mtime_is_caught_by_post_data(start_service, data_dir, write_user):
    path = write_user("7", "Ann")
    service = await start_service(fast_settings(data_dir, watch=False))
    stat = path.stat()
    write_user("7", "Bea")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    report = await service.post("/data")
    assert report["updated"] == 1, report
    assert service.index.get("7").first_name == "Bea"


async def test_the_periodic_rescan_catches_changes_without_a_watcher(start_service, data_dir, write_user):
    service = await start_service(fast_settings(data_dir, watch=False, rescan_interval=0.05))
    write_user("7", png=True)
    await wait_until(lambda: "7" in service.index and service.index.get("7").img_path)


async def test_the_incremental_rescan_reads_only_changed_files(start_service, data_dir, write_user):
    for i in range(50):
        write_user(str(i), birthts=i)
    settings = fast_settings(data_dir, watch=False)
    spy = SpyStore(create_store(settings))
    service = await start_service(settings, store=spy)
    read = spy.reads
    read.clear()
    write_user("3", birthts=10**6)
    write_user("new")
    report = await service.pipeline.rescan(force=False)
    assert sorted(read) == ["src-data/3.csv", "src-data/new.csv"]
    assert (report.added, report.updated, report.removed) == (1, 1, 0)
    read.clear()
    report = await service.pipeline.rescan(force=True)
    assert len(read) == 51 and (report.added, report.updated, report.removed) == (0, 0, 0)


async def test_rescans_racing_the_watcher_lose_nothing(service, write_user, source_dir):
    async def churn() -> None:
        for round_ in range(5):
            for i in range(40):
                write_user(str(i), f"R{round_}", "Lee", i, png=round_ % 2 == 0)
            for i in range(0, 40, 7):
                (source_dir / f"{i}.csv").unlink()
            await asyncio.sleep(0)  # let the rescans below interleave with the writes

    results = await asyncio.gather(churn(), *(service.post("/data") for _ in range(4)))
    assert all(isinstance(r, dict) for r in results[1:])
    expected = expected_records(source_dir)
    await wait_until(lambda: [r.user_id for r in service.index.records()] == [r["user_id"] for r in expected])
    await service.post("/data")
    assert await service.get("/data") == expected


async def test_concurrent_posts_share_one_rescan(start_service, data_dir, source_dir, write_user):
    settings = fast_settings(data_dir)
    spy = SpyStore(create_store(settings))
    service = await start_service(settings, store=spy)
    write_user("7")
    listings = spy.listings
    reports = await asyncio.gather(*(service.post("/data") for _ in range(8)))
    scans = spy.listings - listings
    assert 1 <= scans <= 2, scans  # one may already be running when the others arrive
    assert len({r["users"] for r in reports}) == 1


async def test_a_vanished_source_folder_degrades_and_recovers(service, write_user, source_dir, output_path):
    write_user("7")
    await wait_until(lambda: "7" in service.index and output_path.exists())
    before = output_path.read_bytes()
    shutil.move(source_dir, source_dir.with_name("moved"))
    r = await service.client.post("/data")
    assert r.status == 503, await r.text()
    assert "store unavailable" in (await r.json())["error"]
    health = await service.get("/health")
    assert health["status"] == "degraded" and "not found" in health["cause"], health
    assert await service.user_ids() == ["7"]  # the last index is still served
    assert output_path.read_bytes() == before
    shutil.move(source_dir.with_name("moved"), source_dir)
    report = await service.post("/data")
    assert report["users"] == 1, report
    assert (await service.get("/health"))["status"] == "ok"


async def test_a_rescan_asked_for_while_the_store_is_away_runs_when_it_is_back(
    start_service, data_dir, write_user, source_dir
):
    # No watcher and no periodic rescan: only the pipeline's own retry can find the new user.
    service = await start_service(fast_settings(data_dir, watch=False))
    shutil.move(source_dir, source_dir.with_name("moved"))
    service.pipeline.rescan_soon()  # as the watcher does when a folder appears, or its watch restarts
    await wait_until(lambda: service.pipeline.store_error is not None)
    shutil.move(source_dir.with_name("moved"), source_dir)
    write_user("8")
    await wait_until(lambda: "8" in service.index)
    assert service.pipeline.store_error is None


async def test_an_unreadable_file_is_rejected_with_the_reason(start_service, data_dir, write_user):
    write_user("7", "Ann")
    write_user("8")
    settings = fast_settings(data_dir, watch=False)
    spy = SpyStore(create_store(settings))
    spy.unreadable["src-data/7.csv"] = "Permission denied"  # root reads any file: injected here
    service = await start_service(settings, store=spy)
    assert await service.user_ids() == ["8"]
    assert (await service.get("/health"))["rejected"] == [
        {"key": "src-data/7.csv", "reason": "cannot read: Permission denied"}
    ]
    spy.unreadable.clear()
    await service.pipeline.rescan(force=False)  # an unread file is read again by the next rescan
    assert await service.user_ids() == ["7", "8"]


async def test_a_fifo_named_like_a_csv_does_not_block(service, write_user, source_dir):
    os.mkfifo(source_dir / "9.csv")
    write_user("7")
    await wait_until(lambda: "7" in service.index)
    report = await asyncio.wait_for(service.post("/data"), 5)
    assert report["users"] == 1


async def test_output_csv_is_flushed_on_shutdown(start_service, data_dir, write_user, output_path):
    service = await start_service(fast_settings(data_dir, output_settle=60, output_max_delay=60))
    write_user("7")
    await wait_until(lambda: "7" in service.index)
    assert not output_path.exists()
    await service.stop()
    assert [r["user_id"] for r in output_rows(output_path)] == ["7"]


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"the original task's data is not at {SHARED_DATA}")
async def test_the_original_task_data(start_service, data_dir, source_dir, output_path):
    for path in SHARED_DATA.iterdir():
        shutil.copyfile(path, source_dir / path.name)
    service = await start_service(fast_settings(data_dir))
    expected = expected_records(source_dir)
    assert len(expected) == 100
    assert await service.get("/data") == expected
    stats = await service.get("/stats")
    assert stats["count"] == 100
    await wait_until(lambda: output_path.exists())
    assert output_rows(output_path) == expected
    with_image = sum(1 for r in expected if r["img_path"])
    assert (await service.get("/stats?is_image_exists=true"))["count"] == with_image
