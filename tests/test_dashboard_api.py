"""What the dashboard asks besides /data and /stats: GET /stats/ages, GET /images/{user_id} (folder
and S3 stores, ETags, path traversal) and GET /output.csv."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from dates import ms, ref_age, utc_date
from helpers import PNG, S3Bucket, Service, SpyStore, fast_settings, wait_until

from userdata.stores import StoreUnavailable
from userdata.stores.folder import FolderStore

ETAG = f'"{hashlib.blake2b(PNG, digest_size=16).hexdigest()}"'
#: Births spread over 1930-2020, with Feb 29s: user_id -> birthts
BIRTHS = {str(n): ms(1930 + n * 7 % 90, 1 + n % 12, 1 + n * 5 % 28, n % 24) for n in range(60)}
BIRTHS |= {"leap1": ms(1984, 2, 29), "leap2": ms(2000, 2, 29, 23, 59, 59, 999)}


@pytest.fixture
async def folder_service(start_service, data_dir: Path, write_user: Callable[..., Path]) -> Service:
    """The users of BIRTHS, every third with an image, served from a folder watched by nobody."""
    for n, (user_id, birthts) in enumerate(BIRTHS.items()):
        write_user(user_id, birthts=birthts, png=n % 3 == 0)
    service: Service = await start_service(fast_settings(data_dir, watch=False))
    return service


# GET /stats/ages


def _expected_ages(query: dict[str, str]) -> list[dict[str, int]]:
    """The answer worked out from BIRTHS with ages of their own (tests/dates.py)."""
    today = utc_date(time.time_ns() // 1_000_000)
    with_image = {user_id for n, user_id in enumerate(BIRTHS) if n % 3 == 0}
    ages: Counter[int] = Counter()
    for user_id, birthts in BIRTHS.items():
        age = ref_age(utc_date(birthts), today)
        wanted = query.get("is_image_exists")
        if wanted is not None and (user_id in with_image) != (wanted == "true"):
            continue
        if ("min_age" in query and age < float(query["min_age"])) or (
            "max_age" in query and age > float(query["max_age"])
        ):
            continue
        ages[age] += 1
    return [{"age": age, "count": ages[age]} for age in range(min(ages), max(ages) + 1)] if ages else []


@pytest.mark.parametrize(
    "query",
    [{}, {"is_image_exists": "true"}, {"is_image_exists": "false", "min_age": "40"}, {"min_age": "30", "max_age": "50"},
     {"min_age": "25.5", "max_age": "60.5"}, {"max_age": "0"}, {"min_age": "500"}],
)  # fmt: skip
async def test_ages_count_the_selection_year_by_year(folder_service: Service, query: dict[str, str]) -> None:
    r = await folder_service.client.get("/stats/ages", params=query)
    assert r.status == 200 and r.content_type == "application/json"
    body = await r.json()
    assert body == {"ages": _expected_ages(query)}, query
    stats = await folder_service.get("/stats?" + "&".join(f"{k}={v}" for k, v in query.items()))
    assert sum(entry["count"] for entry in body["ages"]) == stats["count"]


async def test_ages_of_an_empty_index_are_none(service: Service) -> None:
    assert await service.get("/stats/ages") == {"ages": []}
    assert await service.get("/stats/ages?min_age=10&is_image_exists=yes") == {"ages": []}


@pytest.mark.parametrize(
    "query",
    ["min_age=abc", "max_age=-1", "min_age=50&max_age=40", "min_age=nan", "is_image_exists=maybe", "min_age=",
     "min_age=1&min_age=2", "limit=10", "foo=1"],
)  # fmt: skip
async def test_ages_refuse_what_stats_refuses_in_the_same_words(service: Service, query: str) -> None:
    ages, stats = [await service.client.get(f"{path}?{query}") for path in ("/stats/ages", "/stats")]
    assert ages.status == stats.status == 400, query
    assert await ages.json() == await stats.json()


# GET /images/{user_id}


async def test_an_image_is_served_with_a_strong_etag(service: Service, write_user: Callable[..., Path]) -> None:
    write_user("7", png=True)
    await service.post("/data")
    r = await service.client.get("/images/7")
    assert r.status == 200 and await r.read() == PNG
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["ETag"] == ETAG and r.headers["Cache-Control"] == "no-cache"
    head = await service.client.head("/images/7")
    assert head.status == 200 and head.headers["ETag"] == ETAG and await head.read() == b""
    for given in [ETAG, f"W/{ETAG}", f'"other", {ETAG}', "*"]:
        again = await service.client.get("/images/7", headers={"If-None-Match": given})
        assert again.status == 304 and await again.read() == b"", given
        assert again.headers["ETag"] == ETAG
    for given in ['"other"', ETAG[:-2] + '"', "garbage"]:
        fresh = await service.client.get("/images/7", headers={"If-None-Match": given})
        assert fresh.status == 200 and await fresh.read() == PNG, given


async def test_a_changed_image_gets_a_new_etag(service: Service, source_dir: Path, write_user) -> None:
    write_user("7", png=True)
    await service.post("/data")
    (source_dir / "7.png").write_bytes(PNG + b"\0")
    r = await service.client.get("/images/7", headers={"If-None-Match": ETAG})
    assert r.status == 200 and await r.read() == PNG + b"\0" and r.headers["ETag"] != ETAG


async def _assert_not_found(service: Service, path: str, words: str = "") -> None:
    r = await service.client.get(path)
    assert r.status == 404 and r.content_type == "application/json", (path, r.status)
    error = (await r.json())["error"]
    assert words in error, (path, error)


async def test_no_user_no_image_or_a_vanished_image_is_404(
    start_service, data_dir: Path, source_dir: Path, write_user
) -> None:
    write_user("1", png=True)
    write_user("2")
    (source_dir / "9.png").write_bytes(PNG)  # an image without a CSV: not a user
    service = await start_service(fast_settings(data_dir, watch=False))
    await _assert_not_found(service, "/images/2", "has no image")
    await _assert_not_found(service, "/images/9", "no user '9'")
    await _assert_not_found(service, "/images/nobody", "no user 'nobody'")
    (source_dir / "1.png").unlink()  # the index, watching nothing, still names it
    assert service.index.get("1").img_path == "src-data/1.png"
    await _assert_not_found(service, "/images/1", "gone")


async def _raw_get(service: Service, target: str) -> tuple[int, bytes]:
    """GET ``target`` sent as it is (an HTTP client would resolve its dot segments first)."""
    server = service.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_paths_and_odd_ids_never_reach_outside_the_index(
    start_service, data_dir: Path, source_dir: Path, write_user
) -> None:
    write_user("1", png=True)
    secret = data_dir / "secret.png"
    secret.write_bytes(b"TOP SECRET BYTES")
    (data_dir / "datalake" / "secret.png").write_bytes(b"TOP SECRET BYTES")
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    service = await start_service(fast_settings(data_dir, watch=False), store=store)
    store.reads.clear()
    for path in [
        "/images/..%2F..%2Fetc%2Fpasswd", "/images/%2e%2e", "/images/..", "/images/%2e%2e%2fsecret.png",
        "/images/..%2Fsecret", "/images/..%2F..%2Fsecret", "/images/src-data%2F1.png", "/images/1.png",
        "/images/%2Fetc%2Fpasswd", "/images/1%00", "/images/" + "a" * 4000, "/images/a/b", "/images/1/..%2F..%2Fsecret",
    ]:  # fmt: skip
        status, body = await _raw_get(service, path)
        assert status == 404 and orjson.loads(body)["error"], (path, status, body)
        assert b"TOP SECRET" not in body
    assert store.reads == [], "nothing was read"
    assert (await service.client.get("/images/1")).status == 200
    assert store.reads == ["src-data/1.png"]


async def test_an_image_past_the_size_limit_is_refused(start_service, data_dir: Path, source_dir: Path, write_user):
    write_user("1", png=True)
    (source_dir / "1.png").write_bytes(PNG * 10)
    service = await start_service(fast_settings(data_dir, watch=False, max_object_size=len(PNG) * 5))
    await _assert_not_found(service, "/images/1", "larger than the limit")


async def test_an_unavailable_store_is_503(start_service, data_dir: Path, write_user) -> None:
    write_user("1", png=True)
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    service = await start_service(fast_settings(data_dir, watch=False), store=store)
    store.fail = StoreUnavailable("the store is down")
    for path in ["/images/1", "/output.csv"]:
        r = await service.client.get(path)
        assert r.status == 503 and "the store is down" in (await r.json())["error"], path
    store.fail = None
    assert (await service.client.get("/images/1")).status == 200


async def test_images_from_s3(start_service, s3: S3Bucket) -> None:
    s3.put_user("1", png=True)
    s3.put_user("2")
    s3.put_user("3", png=True)
    s3.put("src-data/3.png", PNG * 10)
    service = await start_service(s3.settings(max_object_size=len(PNG) * 5))
    r = await service.client.get("/images/1")
    assert r.status == 200 and await r.read() == PNG and r.headers["ETag"] == ETAG
    assert (await service.client.get("/images/1", headers={"If-None-Match": ETAG})).status == 304
    await _assert_not_found(service, "/images/2", "has no image")
    await _assert_not_found(service, "/images/3", "larger than the limit")
    await _assert_not_found(service, "/images/..%2F..%2Fetc%2Fpasswd", "no user")
    s3.delete("src-data/1.png")  # no rescan: the index still names it
    await _assert_not_found(service, "/images/1", "gone")


# GET /output.csv


async def test_output_csv_is_the_file_as_written(
    start_service, data_dir: Path, output_path: Path, write_user: Callable[..., Path]
) -> None:
    write_user("1", "Ann", "Lee", 5, png=True)
    write_user("2", '"Bob, Jr."', "Ray", -5)
    # Written only long after changes settle, so that the test sees it missing first.
    service = await start_service(fast_settings(data_dir, watch=False, output_settle=60, output_max_delay=60))
    await _assert_not_found(service, "/output.csv", "not written yet")
    assert await service.output.flush()
    r = await service.client.get("/output.csv")
    assert r.status == 200 and await r.read() == output_path.read_bytes()
    assert r.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert r.headers["Content-Disposition"] == 'attachment; filename="output.csv"'
    assert output_path.read_bytes().splitlines()[2] == b'2,"Bob, Jr.",Ray,-5,'
    head = await service.client.head("/output.csv")
    assert head.status == 200 and await head.read() == b""


async def test_output_csv_from_s3(start_service, s3: S3Bucket) -> None:
    s3.put_user("1", png=True)
    service = await start_service(s3.settings())
    await wait_until(lambda: s3.get("processed_data/output.csv") is not None, message="for output.csv")
    r = await service.client.get("/output.csv")
    assert r.status == 200 and await r.read() == s3.get("processed_data/output.csv")
