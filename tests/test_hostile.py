"""Hostile input and faults: odd names, odd folder entries, huge files, a key that breaks, a
folder that goes, secrets, crash leftovers, a birthts that comes true."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import PNG, S3Bucket, SpyStore, fast_settings, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from userdata.logs import JsonFormatter
from userdata.names import bad_name, shown
from userdata.objects import classify
from userdata.records import UserRecord
from userdata.redact import Redactor, redacted_url
from userdata.settings import Settings
from userdata.sinks.output_csv import parse_output, render_output
from userdata.stores import StoreUnavailable
from userdata.stores.folder import FolderStore

CSV = b"first_name, last_name, birthts\nAnn, Lee, 0\n"


def _rejected(health: dict[str, Any]) -> dict[str, str]:
    return {r["key"]: r["reason"] for r in health["rejected"]}


async def test_names_not_utf8_or_with_control_characters_are_rejected_files_never_users(
    start_service, data_dir, source_dir, output_path
):
    raw = os.fsencode(source_dir)
    for name in (b"\xff\xfe.csv", b"a\nb.csv", b"tab\tx.png", b"del\x7f.csv", b"c1\xc2\x85.csv"):
        with open(raw + b"/" + name, "wb") as f:
            f.write(CSV)
    (source_dir / "1.csv").write_bytes(CSV)
    (source_dir / "Zoë 🙂.csv").write_bytes(CSV)  # UTF-8 of any kind is a name like any other
    service = await start_service(fast_settings(data_dir))
    assert [r["user_id"] for r in await service.get("/data")] == ["1", "Zoë 🙂"]
    rejected = _rejected(await service.get("/health"))
    assert rejected == {
        "src-data/\\xff\\xfe.csv": "the name is not UTF-8",
        "src-data/a\\nb.csv": "the name holds a control character",
        "src-data/tab\\tx.png": "the name holds a control character",
        "src-data/del\\x7f.csv": "the name holds a control character",
        "src-data/c1\\x85.csv": "the name holds a control character",
    }
    await wait_until(lambda: output_path.exists() and b"Zo" in output_path.read_bytes())
    assert [r.user_id for r in parse_output(output_path.read_bytes())] == ["1", "Zoë 🙂"]
    # one made while the service runs is listed within a second or so (the watcher asks for a rescan)
    with open(raw + b"/late\x01.csv", "wb") as f:
        f.write(CSV)
    await wait_until(lambda: _get_rejected(service, "src-data/late\\x01.csv"), message="the late bad name in /health")


async def _get_rejected(service, key: str) -> bool:
    return key in _rejected(await service.get("/health"))


def test_names_are_shown_escaped_and_never_classified() -> None:
    assert bad_name("a\x00b.csv") and bad_name("\udcff.csv") and bad_name("x\u0085.csv")
    assert not bad_name("Zoë\u00a0\u200d.csv")  # no-break space and joiners are not control characters
    assert shown("\udcff\n.csv") == "\\xff\\n.csv"
    assert shown("\ud800.csv") == "\\ud800.csv"  # a surrogate no file system gave
    assert classify("src/a\nb.csv", "src/") is None and classify("src/\udcff.csv", "src/") is None


@pytest.mark.parametrize("key", ["src-data/ctl\x01.csv", "src-data/nl\n.csv"])
async def test_s3_keys_with_control_characters_are_rejected_files(start_service, s3: S3Bucket, key: str):
    s3.put_user("1")
    s3.put(key, CSV.decode())
    service = await start_service(s3.settings())
    assert [r["user_id"] for r in await service.get("/data")] == ["1"]
    assert _rejected(await service.get("/health")) == {shown(key): "the name holds a control character"}


async def test_the_webhook_ignores_keys_that_are_not_utf8_or_hold_control_characters(start_service, data_dir):
    service = await start_service(fast_settings(data_dir, webhook_token="t"))
    records = [
        {"s3": {"bucket": {"name": "datalake"}, "object": {"key": key}}}
        for key in ("src-data%2F%FF.csv", "src-data%2Fa%01b.csv", "src-data%2Fa%0Ab.csv", "src-data%2Fok.csv")
    ]
    body = orjson.dumps({"Records": records})
    r = await service.client.post("/events", data=body, headers={"Authorization": "Bearer t"})
    assert r.status == 200, await r.text()
    assert await r.json() == {"keys": 1}  # only src-data/ok.csv was queued


async def test_odd_entries_of_the_folder_are_each_just_one_entry(start_service, data_dir, source_dir):
    (source_dir / "1.csv").write_bytes(CSV)
    os.symlink("self.csv", source_dir / "self.csv")  # a link to itself
    os.symlink(".hidden.csv", source_dir / ".hidden.csv")
    os.symlink("b.csv", source_dir / "a.csv")  # a loop of two
    os.symlink("a.csv", source_dir / "b.csv")
    os.symlink("nowhere", source_dir / "dangling.csv")
    (source_dir / "x.csv").mkdir()  # a folder named like a CSV
    (source_dir / "sub").mkdir()
    os.symlink("sub", source_dir / "folder.csv")
    os.mkfifo(source_dir / "fifo.csv")
    os.symlink(source_dir / "1.csv", source_dir / "link.csv")  # a link to a file is that file
    short = Path("/tmp") / f"userdata-sock-{os.getpid()}.csv"  # sockets' paths are short
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(short))
    os.symlink(short, source_dir / "sock.csv")
    try:
        with_device = True
        try:
            os.mknod(source_dir / "null.csv", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except PermissionError:
            with_device = False
        service = await start_service(fast_settings(data_dir))
        assert [r["user_id"] for r in await service.get("/data")] == ["1", "link"]
        report = await service.post("/data")  # a forced rescan goes through them too
        assert report["users"] == 2
        health = await service.get("/health")
        assert health["status"] == "ok" and health["rejected"] == [], health
        assert with_device or not (source_dir / "null.csv").exists()
    finally:
        sock.close()
        short.unlink()


async def test_a_key_that_fails_holds_up_no_other_and_shows_until_it_is_applied(start_service, data_dir, source_dir):
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    service = await start_service(fast_settings(data_dir, watch=False), store=store)
    (source_dir / "good.csv").write_bytes(CSV)
    (source_dir / "bad.csv").write_bytes(CSV)
    store.explode = {"src-data/bad.csv"}
    service.pipeline.submit([obj for n in ("good", "bad") if (obj := classify(f"src-data/{n}.csv", "src-data/"))])
    await wait_until(lambda: "good" in service.index)
    health = await service.get("/health", status=200)
    assert health["status"] == "degraded" and "cannot apply the changes of 1 keys" in health["cause"], health
    assert "bad" not in service.index
    store.explode = set()
    await wait_until(lambda: "bad" in service.index)  # retried, with backoff
    assert (await service.get("/health"))["status"] == "ok"


async def test_a_store_outage_during_the_key_by_key_retry_requeues_every_key(start_service, data_dir, source_dir):
    # One key breaks the batch, so each is tried on its own; the store goes down after the first.
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    service = await start_service(fast_settings(data_dir, watch=False), store=store)
    for name in ("a", "bad", "c"):
        (source_dir / f"{name}.csv").write_bytes(CSV)
    store.explode = {"src-data/bad.csv"}

    async def go_down(keys: Any) -> None:
        if set(keys) == {"src-data/a.csv"}:
            store.fail = StoreUnavailable("connection refused")

    store.after_read = go_down
    service.pipeline.submit([obj for n in ("a", "bad", "c") if (obj := classify(f"src-data/{n}.csv", "src-data/"))])
    await wait_until(lambda: store.fail is not None)
    health = await service.get("/health", status=200)
    assert health["status"] == "degraded" and "connection refused" in health["cause"], health
    assert "c" not in service.index and "bad" not in service.index  # not tried: the store was down
    store.after_read, store.fail, store.explode = None, None, set()
    await wait_until(lambda: all(n in service.index for n in ("a", "bad", "c")), timeout=10.0)  # all again
    await wait_until(_ok(service), message="/health ok once all are applied")


async def test_a_watched_folder_moved_away_degrades_health_and_when_back_is_watched_again(
    start_service, data_dir, source_dir, write_user
):
    write_user("1")
    service = await start_service(fast_settings(data_dir))
    moved = data_dir / "elsewhere"
    source_dir.rename(moved)
    await wait_until(_degraded(service), timeout=5.0, message="/health degraded")
    assert [r["user_id"] for r in await service.get("/data")] == ["1"]  # the last index served
    moved.rename(source_dir)
    await wait_until(_ok(service), timeout=5.0, message="/health ok again")
    write_user("2")
    await wait_until(lambda: "2" in service.index, timeout=2.0)


async def test_a_watched_folder_deleted_and_made_again_is_watched_again(
    start_service, data_dir, source_dir, write_user
):
    write_user("1")
    service = await start_service(fast_settings(data_dir))
    shutil.rmtree(source_dir)
    await wait_until(lambda: "1" not in service.index)  # its files were deleted: so is the user
    source_dir.mkdir()
    started = time.monotonic()
    await wait_until(_ok(service), timeout=5.0, message="/health ok again")
    write_user("2")
    await wait_until(lambda: "2" in service.index, timeout=2.0)
    assert time.monotonic() - started < 5.0


async def test_minio_data_directory_moved_away_or_made_again_in_s3_mode_is_watched_again(
    start_service, s3: S3Bucket, tmp_path
):
    # MinIO's layout simulated (as in test_s3): object k is the folder <data-dir>/<bucket>/<k>/.
    bucket_dir = tmp_path / "minio" / s3.name
    (bucket_dir / "src-data").mkdir(parents=True)

    def hint(user_id: str) -> None:
        s3.put_user(user_id)
        (bucket_dir / "src-data" / f"{user_id}.csv").mkdir()
        (bucket_dir / "src-data" / f"{user_id}.csv" / "xl.meta").write_bytes(b"XL2 simulated")

    service = await start_service(s3.settings(data_dir=tmp_path / "minio", rescan_interval=0))
    hint("1")
    await wait_until(lambda: "1" in service.index)
    moved = tmp_path / "elsewhere"
    bucket_dir.rename(moved)
    await wait_until(_degraded(service), timeout=5.0, message="/health degraded")
    assert await service.user_ids() == ["1"]  # the last index served
    moved.rename(bucket_dir)
    await wait_until(_ok(service), timeout=5.0, message="/health ok again")
    hint("2")
    await wait_until(lambda: "2" in service.index, timeout=2.0)

    shutil.rmtree(bucket_dir)
    await wait_until(_degraded(service), timeout=5.0, message="/health degraded")
    (bucket_dir / "src-data").mkdir(parents=True)
    await wait_until(_ok(service), timeout=5.0, message="/health ok again")
    hint("3")
    await wait_until(lambda: "3" in service.index, timeout=2.0)
    assert await service.user_ids() == ["1", "2", "3"]  # S3 holds them all still


def _degraded(service: Any) -> Any:
    async def check() -> bool:
        return bool((await service.get("/health"))["status"] == "degraded")

    return check


def _ok(service: Any) -> Any:
    async def check() -> bool:
        return bool((await service.get("/health"))["status"] == "ok")

    return check


async def test_a_csv_past_the_size_limit_is_rejected_unread(start_service, data_dir, source_dir):
    (source_dir / "1.csv").write_bytes(CSV)
    (source_dir / "huge.csv").write_bytes(CSV + b"x" * 5000)
    service = await start_service(fast_settings(data_dir, max_object_size=1000))
    assert [r["user_id"] for r in await service.get("/data")] == ["1"]
    reason = _rejected(await service.get("/health"))["src-data/huge.csv"]
    assert "larger than the limit of 1,000" in reason, reason


async def test_an_s3_object_past_the_size_limit_is_rejected_unread(start_service, s3: S3Bucket):
    s3.put_user("1")
    s3.put("src-data/huge.csv", CSV.decode() + "x" * 5000)
    service = await start_service(s3.settings(max_object_size=1000))
    assert [r["user_id"] for r in await service.get("/data")] == ["1"]
    assert "larger than the limit" in _rejected(await service.get("/health"))["src-data/huge.csv"]


async def test_a_birthts_in_the_future_becomes_a_user_when_its_time_comes(start_service, data_dir, source_dir):
    soon = int(time.time() * 1000) + 1500
    (source_dir / "soon.csv").write_bytes(f"first_name, last_name, birthts\nSoon, Born, {soon}\n".encode())
    service = await start_service(fast_settings(data_dir))
    assert "soon" not in service.index
    assert "future" in _rejected(await service.get("/health"))["src-data/soon.csv"]
    await wait_until(lambda: "soon" in service.index, timeout=5.0)  # no rescan asked for
    assert (await service.get("/health"))["rejected"] == []


async def test_leftovers_of_an_interrupted_write_are_removed_at_start(start_service, data_dir, output_path):
    output_path.parent.mkdir(parents=True)
    leftovers = [
        output_path.parent / f".{output_path.name}.k1ll3d.tmp",
        output_path.parent / f".{output_path.name}.catalog.json.x.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"half a write")
    other = output_path.parent / ".someone-elses.tmp"
    other.write_bytes(b"not ours")
    service = await start_service(fast_settings(data_dir))
    await wait_until(output_path.exists)
    assert not any(path.exists() for path in leftovers) and other.exists()
    assert service.output.problem() is None


SECRET = "s3cr%40t"


def test_a_database_password_never_shows_in_a_repr_or_the_startup_line() -> None:
    url = f"postgresql://me:{SECRET}@db:5432/x?sslmode=require&password=other%20one"
    chosen = Settings(database_url=url)
    for text in (repr(chosen), chosen.chosen(), redacted_url(url)):
        assert "s3cr" not in text and "other" not in text, text
    assert "watch_debounce_ms" not in chosen.chosen()  # tuning is not a user's setting
    assert chosen.secrets() >= {SECRET, "s3cr@t", "other%20one", "other one"}


def test_the_log_filter_hides_secrets_in_messages_and_tracebacks() -> None:
    redactor = Redactor({"s3cr@t", "tok"})
    try:
        raise ValueError("cannot connect as me:s3cr@t")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "url %s token %s", ("me:s3cr@t@h", "tok"), sys.exc_info()
        )
    assert redactor.filter(record)
    text = logging.Formatter().format(record)
    assert "s3cr@t" not in text and "tok" not in text and "***" in text


def test_json_log_lines_hide_secrets_in_the_event_fields_too() -> None:
    record = logging.LogRecord("userdata.access", logging.INFO, __file__, 1, "GET %s", ("/data?t=s3cr3t",), None)
    record.path = "/data?t=s3cr3t"  # as the access log's extra= fields
    assert Redactor({"s3cr3t"}).filter(record)
    line = orjson.loads(JsonFormatter().format(record))
    assert line["path"] == "/data?t=***" and line["message"] == "GET /data?t=***", line


def test_the_startup_line_shows_the_chosen_settings_and_no_password(tmp_path: Path) -> None:
    url = "postgresql://me:hunter2secret@127.0.0.1:1/x?password=hunter3"
    argv = ["serve", "--data-dir", str(tmp_path), "--port", "0", "--database-url", url, "--rescan-interval", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "userdata", *argv], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 30
        while "serving on" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[1]
    assert "serving on" in line, rest
    assert "hunter2secret" not in line + rest and "hunter3" not in line + rest
    assert "database_url=postgresql://me:***@127.0.0.1:1/x?password=***" in line
    assert "watch_debounce_ms" not in line and "max_object_size=1048576" in line


_NAMES = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
_IDS = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=10).filter(
    lambda s: "/" not in s and not s.startswith(".")
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(_IDS, _NAMES, _NAMES, st.integers(-(10**15), 10**15), st.none() | _NAMES),
        max_size=8,
        unique_by=lambda t: t[0],
    )
)
def test_whatever_output_csv_holds_reads_back_identically_and_as_json(rows) -> None:
    records = sorted((UserRecord(*row) for row in rows), key=lambda r: r.user_id)
    assert parse_output(render_output(records)) == [r._replace(img_path=r.img_path or None) for r in records]
    assert orjson.loads(orjson.dumps([r._asdict() for r in records])) == [r._asdict() for r in records]


async def test_data_never_answers_500_for_any_valid_name(start_service, data_dir, source_dir):
    names = ["a,b", 'q"uote', "sp ace", "ünï", "🙂", "x;y", "-1", "0001", "a+b", "tab\u00a0nbsp", "\u200djoin"]
    for name in names:
        (source_dir / f"{name}.csv").write_bytes(CSV)
        (source_dir / f"{name}.png").write_bytes(PNG)
    service = await start_service(fast_settings(data_dir))
    assert sorted(r["user_id"] for r in await service.get("/data")) == sorted(names)
    assert (await service.get("/stats"))["count"] == len(names)


def _records(n: int) -> list[UserRecord]:
    return [UserRecord(f"{i:06d}", f"First{i}", "Last, with a comma", i * 10**6, None) for i in range(n)]


async def test_a_large_answer_is_whole_and_built_once_for_requests_asking_at_once(start_service, data_dir):
    import asyncio

    service = await start_service(fast_settings(data_dir, watch=False))
    records = _records(3_500)  # several parts
    service.index.apply(records)
    selects = 0
    select = service.index.select

    def counting(*args: Any) -> Any:
        nonlocal selects
        selects += 1
        return select(*args)

    service.index.select = counting
    plain = {"Accept-Encoding": "identity"}  # the length sent is the body's (test_formats: compressed)
    answers = await asyncio.gather(*(service.client.get("/data", headers=plain) for _ in range(10)))
    bodies = [await r.read() for r in answers]
    assert {r.status for r in answers} == {200} and selects == 1
    assert all(int(r.headers["Content-Length"]) == len(b) for r, b in zip(answers, bodies, strict=True))
    assert orjson.loads(bodies[0]) == [r._asdict() for r in records] and len(set(bodies)) == 1
    assert (await service.client.get("/data", headers=plain)).status == 200 and selects == 1  # and kept
    head = await service.client.head("/data", headers=plain)
    assert (head.status, int(head.headers["Content-Length"]), await head.read()) == (200, len(bodies[0]), b"")
    assert (await service.client.get("/stats")).status == 200  # the connection is still well framed


async def test_slow_clients_of_a_large_answer_share_it_and_hold_no_copy_each(start_service, data_dir):
    import tracemalloc

    service = await start_service(fast_settings(data_dir, watch=False))
    service.index.apply(_records(60_000))  # a body of about 6.5 MB
    host, port = service.client.host, service.client.port
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        clients = []
        for _ in range(20):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # what a slow reader takes in
            sock.connect((host, port))
            sock.sendall(b"GET /data HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
            sock.setblocking(False)
            clients.append(sock)

        def all_answered() -> bool:
            return all(_has_bytes(sock) for sock in clients)

        await wait_until(all_answered, message="every client's answer under way")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        for sock in clients:
            sock.close()
    assert grown < 20_000_000, f"{grown:,} bytes for 20 clients of a 6.5 MB answer"


def _has_bytes(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


async def test_a_due_file_is_submitted_once_until_it_is_read_again() -> None:
    from types import SimpleNamespace

    from userdata.future import FutureBirthts

    reconciler = SimpleNamespace(prefix="src/", future={"src/a.csv": 0})  # long due
    submitted: list[list[str]] = []
    future = FutureBirthts(reconciler, lambda objects: submitted.append([o.key for o in objects]))  # type: ignore[arg-type]
    future.mind()
    await wait_until(lambda: submitted == [["src/a.csv"]])
    assert future._timer is None  # not armed again while the pipeline has it
    future.mind()  # another change applied meanwhile: still not submitted again
    assert future._timer is None
    reconciler.future["src/a.csv"] = 1  # read again, and still (another birthts) in the future
    future.mind()
    await wait_until(lambda: len(submitted) == 2)
