"""S3 mode against a real S3 server (SeaweedFS, started by the `seaweedfs` fixture)."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import shutil
from typing import Any

import orjson
import pytest
from helpers import PNG, S3Bucket, SpyStore, fast_settings, wait_until
from seaweed import SeaweedFS, require_weed, s3_client

from userdata.app import create_store
from userdata.stores import PRESENT, ObjectError, StoreUnavailable
from userdata.stores.s3 import S3Store, _object_error
from userdata.stores.s3_http import Answer
from userdata.stores.sigv4 import Credentials


def s3_record(bucket: str, key: str, event: str = "s3:ObjectCreated:Put") -> dict[str, Any]:
    """One record of a MinIO notification; ``key`` URL-encoded as MinIO sends it."""
    return {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def rows(data: bytes | None) -> list[list[str]]:
    return [] if data is None else list(csv.reader(io.StringIO(data.decode(), newline="")))


async def test_load_update_delete_through_forced_rescans(start_service, s3: S3Bucket):
    s3.put_user("1", "Ann", "Lee", 5, png=True)
    s3.put_user("2", "Bob", "Ray", -5)
    s3.put("src-data/sub/3.csv", "first_name,last_name,birthts\nSub,Folder,0\n")
    service = await start_service(s3.settings())
    assert await service.get("/data") == [
        {"user_id": "1", "first_name": "Ann", "last_name": "Lee", "birthts": 5, "img_path": "src-data/1.png"},
        {"user_id": "2", "first_name": "Bob", "last_name": "Ray", "birthts": -5, "img_path": None},
    ]
    s3.put_user("1", "Anna", "Lee", 5, png=True)
    s3.delete("src-data/2.csv")
    s3.delete("src-data/1.png")
    s3.put_user("4", "Cy", "Fox", 7)
    report = await service.post("/data")
    assert {k: report[k] for k in ("users", "added", "updated", "removed")} == {
        "users": 2, "added": 1, "updated": 1, "removed": 1,
    }  # fmt: skip
    assert [(r["user_id"], r["first_name"], r["img_path"]) for r in await service.get("/data")] == [
        ("1", "Anna", None),
        ("4", "Cy", None),
    ]
    expected = [["1", "Anna", "Lee", "5", ""], ["4", "Cy", "Fox", "7", ""]]
    await wait_until(lambda: rows(s3.get("processed_data/output.csv"))[1:] == expected)


async def test_large_objects_are_parsed_as_small_ones_are(start_service, s3: S3Bucket):
    # Bodies past a few KiB are parsed off the event loop: the outcome must not depend on it.
    long_name = "N" * 40_000
    s3.put_user("big", long_name, "Lee", 5)
    s3.put("src-data/bad.csv", "first_name, last_name, birthts\n" + "x, y, 1\n" * 5_000)
    service = await start_service(s3.settings())
    assert [(r["user_id"], r["first_name"]) for r in await service.get("/data")] == [("big", long_name)]
    rejected = (await service.get("/health"))["rejected"]
    assert rejected == [{"key": "src-data/bad.csv", "reason": "expected exactly one data row, found 5000"}]


async def test_the_periodic_rescan_finds_changes(start_service, s3: S3Bucket):
    service = await start_service(s3.settings(rescan_interval=0.1))
    s3.put_user("9", png=True)
    await wait_until(lambda: (r := service.index.get("9")) is not None and r.img_path == "src-data/9.png")
    s3.delete("src-data/9.csv")
    await wait_until(lambda: "9" not in service.index)


async def test_the_incremental_rescan_reads_only_changed_objects(start_service, s3: S3Bucket):
    for i in range(30):
        s3.put_user(str(i), birthts=i, png=i % 2 == 0)
    settings = s3.settings()
    spy = SpyStore(create_store(settings))
    service = await start_service(settings, store=spy)
    gets = spy.reads
    gets.clear()
    report = await service.pipeline.rescan(force=False)
    assert gets == [] and (report.added, report.updated, report.removed) == (0, 0, 0)
    s3.put_user("7", "Changed")
    s3.put_user("new")
    s3.put("src-data/new.png", PNG)  # an image is listed, never read
    report = await service.pipeline.rescan(force=False)
    assert sorted(gets) == ["src-data/7.csv", "src-data/new.csv"]
    assert (report.added, report.updated, report.removed) == (1, 1, 0)
    assert service.index.get("new").img_path == "src-data/new.png"


async def test_the_webhook_needs_the_token_and_applies_the_keys_it_names(start_service, s3: S3Bucket):
    service = await start_service(s3.settings(webhook_token="s3cret"))
    s3.put("src-data/a b.csv", "first_name,last_name,birthts\nAnn,Lee,1\n")
    s3.put_user("other")
    event = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{s3.name}/src-data/a b.csv",
        "Records": [
            s3_record(s3.name, "src-data%2Fa+b.csv"),
            s3_record("elsewhere", "src-data%2Fother.csv"),
            s3_record(s3.name, "elsewhere%2Fx.csv"),
        ],
    }
    body = orjson.dumps(event)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret"},
        {"Authorization": "Bearer s3cre\xff"},
    ):
        r = await service.client.post("/events", data=body, headers=headers)
        assert r.status == 401, await r.text()
        assert "error" in await r.json()
    assert "a b" not in service.index
    r = await service.client.post("/events", data=body, headers={"Authorization": "Bearer s3cret"})
    assert r.status == 200, await r.text()
    assert await r.json() == {"keys": 1}
    await wait_until(lambda: "a b" in service.index)
    assert "other" not in service.index  # named only for another bucket
    s3.delete("src-data/a b.csv")
    deleted = {"Records": [s3_record(s3.name, "src-data/a+b.csv", "s3:ObjectRemoved:Delete")]}
    r = await service.client.post("/events", data=orjson.dumps(deleted), headers={"Authorization": "Bearer s3cret"})
    assert r.status == 200, await r.text()
    await wait_until(lambda: "a b" not in service.index)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"Records": 5}', b'{"Records": [{"s3": {}}]}'],
    ids=["text", "list", "no-list", "no-key"],
)
async def test_the_webhook_rejects_what_is_not_an_s3_event(start_service, s3: S3Bucket, body):
    service = await start_service(s3.settings(webhook_token="t"))
    r = await service.client.post("/events", data=body, headers={"Authorization": "Bearer t"})
    assert r.status == 400, await r.text()
    assert set(await r.json()) == {"error"}


async def test_a_token_that_is_not_utf8_is_a_401_not_a_500(start_service, s3: S3Bucket):
    service = await start_service(s3.settings(webhook_token="t"))
    url = service.client.make_url("/events")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:  # raw bytes: an HTTP client would encode the header as UTF-8
        writer.write(b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.split()[1] == b"401", status_line


async def test_the_webhook_is_not_there_without_a_token(start_service, s3: S3Bucket):
    service = await start_service(s3.settings())
    r = await service.client.post("/events", data=b"{}", headers={"Authorization": "Bearer x"})
    assert r.status == 404, await r.text()


async def test_s3_and_folder_modes_give_the_same_answers(start_service, s3: S3Bucket, tmp_path, write_user):
    users = [(str(i), f"F{i}", f"L, {i}", (i - 50) * 7 * 10**9, i % 3 == 0) for i in range(100)]
    for user_id, first, last, birthts, png in users:
        s3.put(f"src-data/{user_id}.csv", f'first_name,last_name,birthts\n{first},"{last}",{birthts}\n')
        write_user(user_id, csv=f'first_name,last_name,birthts\n{first},"{last}",{birthts}\n', png=png)
        if png:
            s3.put(f"src-data/{user_id}.png", PNG)
    s3.put("src-data/bad.csv", "first_name\nx\n")
    write_user("bad", csv="first_name\nx\n")
    in_s3 = await start_service(s3.settings())
    in_folder = await start_service(fast_settings(tmp_path / "data", watch=False))
    for path in ("/data", "/data?is_image_exists=true&max_age=40", "/stats?min_age=20.5"):
        a, b = await in_s3.get(path), await in_folder.get(path)
        if path.startswith("/stats"):
            assert a == {"count": b["count"], "average_age": pytest.approx(b["average_age"])}
        else:
            assert a == b
    assert (await in_s3.get("/health"))["rejected"] == (await in_folder.get("/health"))["rejected"]
    await in_s3.stop()
    await in_folder.stop()
    folder_output = (tmp_path / "data" / "datalake" / "processed_data" / "output.csv").read_bytes()
    assert s3.get("processed_data/output.csv") == folder_output


async def test_a_server_down_at_start_and_mid_run_degrades_and_recovers(start_service, tmp_path, monkeypatch):
    weed = require_weed()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    server = SeaweedFS(weed, tmp_path / "weed")  # a server of this test's own, to stop and start
    bucket = S3Bucket(server.endpoint, "outage", None)

    async def healthy() -> bool:
        status: str = (await service.get("/health"))["status"]
        return status == "ok"

    try:
        service = await start_service(bucket.settings(webhook_token="t"), loaded=False)
        # The first failure is reported once the client's own retries (3 attempts, with up to
        # 2 + 4 s of backoff between them) are spent.
        await wait_until(lambda: service.pipeline.store_error is not None, timeout=20)
        health = await service.client.get("/health")
        body = await health.json()
        assert health.status == 503 and body["status"] == "degraded" and "cause" in body, body
        await asyncio.to_thread(server.start)
        bucket.client = s3_client(server.endpoint)
        bucket.client.create_bucket(Bucket="outage")
        bucket.put_user("1", "Ann")
        await wait_until(lambda: service.pipeline.loaded.is_set(), timeout=60)
        assert (await service.post("/data"))["users"] == 1  # the load may have run before the PUT
        # A new bucket may refuse its first writes a while; each failed write costs the client's
        # retries (up to 6 s) before the writer's own delay.
        await wait_until(healthy, timeout=30)

        bucket.put_user("2", "Bob")  # in S3, but no event for it reaches the service before...
        await asyncio.to_thread(server.stop)
        r = await service.client.post("/data")
        assert r.status == 503, await r.text()
        health = await service.get("/health")
        assert health["status"] == "degraded" and "store unavailable" in health["cause"], health
        assert await service.user_ids() == ["1"]  # the last index is still served
        event = {"Records": [s3_record("outage", "src-data%2F2.csv")]}
        r = await service.client.post("/events", data=orjson.dumps(event), headers={"Authorization": "Bearer t"})
        assert r.status == 200, await r.text()  # ...the server is down: accepted, applied later

        await asyncio.to_thread(server.start)
        await wait_until(lambda: "2" in service.index, timeout=30)  # retried by the pipeline itself
        assert await service.user_ids() == ["1", "2"]
        await wait_until(healthy, timeout=30)
        await wait_until(lambda: len(rows(bucket.get("processed_data/output.csv"))) == 3, timeout=30)
    finally:
        await asyncio.to_thread(server.stop)


async def test_minio_change_hints_reread_objects_through_s3(start_service, s3: S3Bucket, tmp_path, caplog):
    # MinIO is not installable here: its on-disk layout is simulated in a temp directory.
    # Object k lives in <data-dir>/<bucket>/<k>/xl.meta (large ones in <k>/<uuid>/part.N).
    data_dir = tmp_path / "minio"
    bucket_dir = data_dir / s3.name
    bucket_dir.mkdir(parents=True)
    service = await start_service(s3.settings(data_dir=data_dir))

    # The first object under the prefix: its folder and the prefix's appear at once, quicker than
    # a watch on them could, so the new prefix folder is what must lead to the object.
    s3.put_user("1", "Ann")
    (bucket_dir / "src-data" / "1.csv").mkdir(parents=True)
    (bucket_dir / "src-data" / "1.csv" / "xl.meta").write_bytes(b"XL2 simulated")
    await wait_until(lambda: "1" in service.index)

    s3.put_user("2", "Big")  # a large object: the hint is a part file in a new directory
    part_dir = bucket_dir / "src-data" / "2.csv" / "0b7a0bb7-44c6-4d0b-9a4c-6f0e0c5d1b2a"
    part_dir.mkdir(parents=True)
    (part_dir / "part.1").write_bytes(b"\0" * 10)
    await wait_until(lambda: "2" in service.index)

    s3.put_user("1", "Anna")  # an overwrite: MinIO renames a new xl.meta into place
    (bucket_dir / "src-data" / "1.csv" / "xl.meta").write_bytes(b"XL2 simulated again")
    await wait_until(lambda: service.index.get("1").first_name == "Anna")

    s3.delete("src-data/1.csv")  # a delete removes the object's directory
    shutil.rmtree(bucket_dir / "src-data" / "1.csv")
    await wait_until(lambda: "1" not in service.index)

    with caplog.at_level(logging.WARNING, logger="userdata.watcher"):
        (bucket_dir / "src-data" / "4.csv").write_text("first_name,last_name,birthts\nPlain,File,0\n")
        await wait_until(lambda: "not an object" in caplog.text)
    assert "mc cp" in caplog.text
    assert await service.user_ids() == ["2"]


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("NoSuchKey", 404, "missing"),
        ("404", 404, "missing"),  # HEAD has no body, so no code but the status
        ("AccessDenied", 403, "object"),
        ("403", 403, "object"),
        ("InvalidObjectState", 403, "object"),
        ("InvalidRequest", 400, "object"),
        ("NoSuchBucket", 404, "store"),
        ("InvalidAccessKeyId", 403, "store"),
        ("SignatureDoesNotMatch", 403, "store"),
        ("SlowDown", 503, "store"),
        ("InternalError", 500, "store"),
    ],
)
def test_errors_of_one_object_are_told_apart_from_errors_of_the_store(code, status, outcome):
    error = Answer(status, code, "m")
    if outcome == "store":
        with pytest.raises(StoreUnavailable, match=code):
            _object_error(error, "src-data/1.csv")
    else:
        found = _object_error(error, "src-data/1.csv")
        if outcome == "missing":
            assert found is None
        else:
            assert isinstance(found, ObjectError) and code in str(found)


async def test_an_object_that_cannot_be_read_holds_up_no_other(start_service, s3: S3Bucket):
    s3.put_user("bad", "Bad", png=True)
    s3.put_user("good", "Good")
    s3.put("src-data/good.png", PNG)
    settings = s3.settings(webhook_token="t")
    spy = SpyStore(create_store(settings))
    # As S3 answers for objects this service may not read (the store's own mapping of S3's
    # errors to ObjectError is tested above).
    spy.unreadable.update({"src-data/bad.csv": "AccessDenied Access Denied", "src-data/bad.png": "403"})
    service = await start_service(settings, store=spy)
    assert await service.user_ids() == ["good"]
    health = await service.get("/health")
    assert health["status"] == "ok", health
    assert health["rejected"] == [{"key": "src-data/bad.csv", "reason": "cannot read: AccessDenied Access Denied"}]
    s3.put_user("good", "Better")
    event = {"Records": [s3_record(s3.name, key) for key in ("src-data%2Fbad.png", "src-data%2Fgood.csv")]}
    r = await service.client.post("/events", data=orjson.dumps(event), headers={"Authorization": "Bearer t"})
    assert r.status == 200, await r.text()
    await wait_until(lambda: service.index.get("good").first_name == "Better")
    assert service.index.get("good").img_path == "src-data/good.png"
    assert service.pipeline.store_error is None


@pytest.mark.parametrize("wrong", ["secret", "access key"])
async def test_a_request_signed_with_wrong_credentials_is_refused_and_degrades(s3: S3Bucket, wrong: str) -> None:
    s3.put_user("1")
    credentials = Credentials("test", "not-the-secret") if wrong == "secret" else Credentials("nobody", "test")
    store = S3Store(s3.endpoint, s3.name, s3.prefix, credentials=credentials, region="us-east-1")
    good = S3Store(s3.endpoint, s3.name, s3.prefix, credentials=Credentials("test", "test"), region="us-east-1")
    await store.open()
    await good.open()
    try:
        with pytest.raises(StoreUnavailable, match=r"SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied"):
            await store.list_objects()
        with pytest.raises(StoreUnavailable):
            await store.read_many([s3.prefix + "1.csv"], bytes)
        assert list(await good.list_objects()) == [s3.prefix + "1.csv"]
    finally:
        await store.close()
        await good.close()


async def test_keys_of_any_shape_round_trip_through_the_listing_and_reads(s3: S3Bucket) -> None:
    names = ["a b.csv", "plus+sign.csv", "pct%41.csv", "amp&lt.csv", "ünï.csv", "tilde~.csv", "q?x=1.csv"]
    for name in names:
        s3.put(s3.prefix + name, name)
    store = S3Store(s3.endpoint, s3.name, s3.prefix)
    await store.open()
    try:
        listing = await store.list_objects()
        assert sorted(listing) == sorted(s3.prefix + name for name in names)
        read = await store.read_many(list(listing), bytes.decode)
        assert all(content is not None and not isinstance(content, ObjectError) for content in read.values())
        assert {key: content[1] for key, content in read.items()} == {s3.prefix + n: n for n in names}  # type: ignore[index]
        assert all(listing[key] == read[key][0] for key in listing)  # type: ignore[index]  # one ETag form
        await store.write("out/x y+z.csv", b"data")
        assert await store.read("out/x y+z.csv") == b"data" and s3.get("out/x y+z.csv") == b"data"
    finally:
        await store.close()


async def test_images_are_listed_as_present_and_csvs_with_their_etag(s3: S3Bucket) -> None:
    # Only whether a user has an image matters: one shared value, no ETag string per image.
    s3.put_user("1", png=True)
    store = S3Store(s3.endpoint, s3.name, s3.prefix)
    await store.open()
    try:
        listing = await store.list_objects()
        assert listing[s3.prefix + "1.png"] is PRESENT
        version = listing[s3.prefix + "1.csv"]
        assert version == (await store.stat_many([s3.prefix + "1.csv"]))[s3.prefix + "1.csv"]
        etag = await store.etag(s3.prefix + "1.csv")
        assert etag is not None and version == int(etag.strip('"'), 16)  # the MD5's int: no string kept
        assert set((await store.list_objects(versions=False)).values()) == {PRESENT}  # a load reads them
    finally:
        await store.close()


async def test_credentials_missing_at_start_degrade_until_they_are_there(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to look for here
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = S3Store(seaweedfs.endpoint, "probe", "")
    await store.open()  # no error: the service starts degraded
    try:
        with pytest.raises(StoreUnavailable, match="no S3 credentials"):
            await store.list_objects()
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        assert "probe" in await store.list_objects()  # the server's own probe object
    finally:
        await store.close()


def _page(contents: list[str], encoded: bool = True) -> str:
    encoding = "<EncodingType>url</EncodingType>" if encoded else ""
    return f"<ListBucketResult>{encoding}{''.join(f'<Contents>{c}</Contents>' for c in contents)}</ListBucketResult>"


@pytest.mark.parametrize(
    ("contents", "encoded", "expected"),
    [
        pytest.param(
            ["<Key>a%2Bb+c.csv</Key><LastModified>x</LastModified><ETag>&#34;1&#34;</ETag><Size>1</Size>"],
            True, {"a+b c.csv": '"1"'}, id="as-servers-write-it",
        ),
        pytest.param(
            ["<ETag>&quot;2&quot;</ETag><Key>k.csv</Key>", "<Key>j.csv</Key><ETag>&#34;3&#34;</ETag>"],
            True, {"k.csv": '"2"', "j.csv": '"3"'}, id="etag-first-in-one",
        ),
        pytest.param(
            ["<Key>n.csv</Key><Owner><ID>o</ID></Owner><ETag>\"4\"</ETag>", "<Key>m.csv</Key><ETag>5</ETag>"],
            True, {"n.csv": '"4"', "m.csv": "5"}, id="nested-element-between",
        ),
        pytest.param(
            ["<Key>a&amp;b &lt;&#34;.csv</Key><ETag>&#34;6&amp;&#34;</ETag>"],
            False, {'a&b <".csv': '"6&"'}, id="entities-not-url-encoded",
        ),
        pytest.param(["<Key>no-etag.csv</Key>", "<Key>p.csv</Key><ETag>7</ETag>"], True, {"p.csv": "7"}, id="no-etag"),
    ],
)  # fmt: skip
def test_listing_pages_are_read_whatever_the_order_of_their_elements(
    contents: list[str], encoded: bool, expected: dict[str, str]
) -> None:
    from userdata.stores.s3_listing import objects

    assert dict(objects(_page(contents, encoded))) == expected
