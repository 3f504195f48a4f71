"""Restarts read only what changed: the catalog's hint beside output.csv, and every doubt about it."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import RandomFolder, S3Bucket, SpyStore, catalog_state, fast_settings, wait_until

from userdata.index import UserIndex
from userdata.pipeline import Pipeline, Restored
from userdata.records import UserRecord
from userdata.sinks.catalog_hint import hint_key
from userdata.sinks.output_csv import OutputWriter, render_output
from userdata.stores.folder import FolderStore

PREFIX = "src/"
KEY = "out/output.csv"
HINT = hint_key(KEY)


async def start(store: SpyStore, *, hint: bool = True, max_object_size: int = 1 << 20) -> tuple[Pipeline, OutputWriter]:
    """A start as the service makes one: output.csv and its hint restored, a load, both written.

    ``hint=False``: the reference, a start that reads every object (output.csv still restored).
    """
    index = UserIndex()
    pipeline = Pipeline(store, index, PREFIX)
    output = OutputWriter(store, index, KEY)
    catalog = lambda: pipeline.reconciler.catalog  # noqa: E731
    output.follow(catalog, pipeline.loaded, bucket="bucket", prefix=PREFIX, max_object_size=max_object_size)

    async def without_hint() -> Restored:
        return (await output.restore())._replace(hint=None)

    await pipeline.load(restore=output.restore if hint else without_hint)
    assert await output.flush()
    return pipeline, output


def record(index: UserIndex, user_id: str) -> UserRecord:
    found = index.get(user_id)
    assert found is not None, user_id
    return found


def csv_keys(source: Path) -> set[str]:
    return {PREFIX + path.name for path in source.iterdir() if path.suffix.lower() == ".csv"}


@pytest.fixture
def folder(tmp_path: Path) -> Callable[..., None]:
    """A source folder of a few good, bad, conflicting and future-dated users, with images."""
    source = tmp_path / "bucket" / PREFIX
    source.mkdir(parents=True)

    def write(name: str, text: str) -> None:
        (source / name).write_text(text)

    for i in range(20):
        write(f"{i}.csv", f"first_name, last_name, birthts\nAnn{i}, Lee, {i * 10**10}\n")
        if i % 3:
            (source / f"{i}.png").write_bytes(b"\x89PNG")
    write("bad.csv", "first_name\nAnn\n")
    write("7.CSV", "first_name, last_name, birthts\nOther, Seven, 0\n")  # a conflict with 7.csv
    write("later.csv", "first_name, last_name, birthts\nNot, Yet, 99999999999999\n")
    (source / "orphan.png").write_bytes(b"\x89PNG")
    return write


async def test_a_restart_on_unchanged_data_reads_only_what_time_may_have_changed(tmp_path, folder):
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    first, output = await start(store)
    assert output.hint_writes == 1
    store.reads.clear()
    again, output_again = await start(store)
    # A birthts in the future may be in the past now: only that file is read again.
    assert store.reads == [PREFIX + "later.csv"]
    assert catalog_state(again) == catalog_state(first)
    assert again.index.records() == first.index.records()
    assert again.rejected == first.rejected and PREFIX + "bad.csv" in again.rejected
    assert (output_again.writes, output_again.hint_writes) == (0, 0)  # both are still what they were


async def test_a_restart_reads_only_what_changed_meanwhile(tmp_path, folder):
    source = tmp_path / "bucket" / PREFIX
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    await start(store)
    folder("3.csv", "first_name, last_name, birthts\nChanged, Three, 3\n")
    folder("new.csv", "first_name, last_name, birthts\nNew, User, 4\n")
    folder("bad.csv", "first_name, last_name, birthts\nNow, Good, 5\n")
    (source / "5.csv").unlink()
    (source / "7.CSV").unlink()  # the conflict is over: 7.csv is read again for its record
    (source / "4.png").unlink()
    (source / "3.png").write_bytes(b"\x89PNG")
    store.reads.clear()
    again, _ = await start(store)
    changed = ("3.csv", "new.csv", "bad.csv", "7.csv", "later.csv")
    assert sorted(store.reads) == sorted(PREFIX + name for name in changed)
    reference, _ = await start(store, hint=False)
    assert catalog_state(again) == catalog_state(reference)
    assert again.index.records() == reference.index.records()
    records = {r.user_id: r for r in again.index.records()}
    assert records["3"].first_name == "Changed" and records["3"].img_path == PREFIX + "3.png"
    assert "5" not in records and records["4"].img_path is None and records["bad"].first_name == "Now"


@pytest.mark.parametrize("seed", range(4))
async def test_restarts_after_random_changes_agree_with_a_start_that_reads_everything(tmp_path, seed):
    rng = random.Random(seed)
    folder = RandomFolder(tmp_path, rng, PREFIX)
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    for _ in range(15):
        for _ in range(rng.randint(0, 5)):
            folder.change()
        # the next start reads the CSVs of the users changed (a conflict that is over has its
        # other CSV read again), and nothing else
        users = {name[:-4] for name in folder.touched}
        may_read = {key for key in csv_keys(folder.dir) if key[len(PREFIX) : -4] in users}
        store.reads.clear()
        pipeline, _ = await start(store)
        assert set(store.reads) <= may_read
        reference, _ = await start(store, hint=False)
        assert catalog_state(pipeline) == catalog_state(reference)
        assert pipeline.index.records() == reference.index.records()
        store.reads.clear()
        await start(store)  # nothing changed since
        assert store.reads == []
        folder.touched.clear()


def _edit_hint(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = tmp_path / "bucket" / HINT
    doc = orjson.loads(path.read_bytes())
    edit(doc)
    path.write_bytes(orjson.dumps(doc))


def _without_user_0(doc: dict[str, Any]) -> None:
    at = doc["entries"].index(PREFIX + "0.csv")
    del doc["entries"][at : at + 2]


DOUBTS: dict[str, Callable[[Path], object]] = {
    "missing": lambda tmp: (tmp / "bucket" / HINT).unlink(),
    "not-json": lambda tmp: (tmp / "bucket" / HINT).write_bytes(b"\x00garbage"),
    "truncated": lambda tmp: (tmp / "bucket" / HINT).write_bytes((tmp / "bucket" / HINT).read_bytes()[:-40]),
    "other-format": lambda tmp: _edit_hint(tmp, lambda doc: doc["meta"].update(format=99)),
    "other-bucket": lambda tmp: _edit_hint(tmp, lambda doc: doc["meta"].update(bucket="elsewhere")),
    "other-prefix": lambda tmp: _edit_hint(tmp, lambda doc: doc["meta"].update(prefix="other/")),
    "odd-entries": lambda tmp: _edit_hint(tmp, lambda doc: doc["entries"].append("src/x.csv")),
    "bad-key": lambda tmp: _edit_hint(tmp, lambda doc: doc["entries"].extend([1, "v"])),
    "bad-version": lambda tmp: _edit_hint(tmp, lambda doc: doc["entries"].extend(["src/x.csv", [[1]]])),
    "bad-reason": lambda tmp: _edit_hint(tmp, lambda doc: doc["rejected"].update({"src/0.csv": 5})),
    "no-rejected": lambda tmp: _edit_hint(tmp, lambda doc: doc.pop("rejected")),
    "other-output": lambda tmp: (tmp / "bucket" / KEY).write_bytes(render_output([])),
    "output-edited": lambda tmp: (tmp / "bucket" / KEY).write_bytes((tmp / "bucket" / KEY).read_bytes() + b"\n"),
    # a hint that names fewer users than output.csv holds: written by hand, or by another version
    "missing-users": lambda tmp: _edit_hint(tmp, _without_user_0),
}


@pytest.mark.parametrize("doubt", DOUBTS.values(), ids=DOUBTS.keys())
async def test_any_doubt_about_the_hint_means_a_full_read(tmp_path, folder, doubt):
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    first, _ = await start(store)
    doubt(tmp_path)
    store.reads.clear()
    again, output = await start(store)
    assert set(store.reads) == csv_keys(tmp_path / "bucket" / PREFIX)  # every CSV read again
    assert again.index.records() == first.index.records()
    assert catalog_state(again) == catalog_state(first)
    assert output.hint_writes == 1  # and a hint that pairs with output.csv written again
    store.reads.clear()
    await start(store)
    assert store.reads == [PREFIX + "later.csv"]


async def test_an_unchanged_load_writes_a_missing_hint_and_a_stale_one_is_never_trusted(tmp_path, folder):
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    await start(store)
    hint = (tmp_path / "bucket" / HINT).read_bytes()
    folder("3.csv", "first_name, last_name, birthts\nChanged, Three, 3\n")
    second, _ = await start(store)
    assert record(second.index, "3").first_name == "Changed"
    # the old hint beside the new output.csv: as if the hint's write had failed after output.csv's
    (tmp_path / "bucket" / HINT).write_bytes(hint)
    store.reads.clear()
    third, _ = await start(store)
    assert set(store.reads) == csv_keys(tmp_path / "bucket" / PREFIX)
    assert record(third.index, "3").first_name == "Changed"


async def test_the_service_restarted_on_the_same_folder_reads_nothing_again(
    start_service, data_dir, write_user, output_path
):
    for i in range(10):
        write_user(str(i), png=i % 2 == 0)
    first = await start_service(fast_settings(data_dir))
    hint = output_path.with_name(output_path.name + ".catalog.json")
    await wait_until(hint.exists, message="for the hint")
    answers = await first.get("/data")
    await first.stop()
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    again = await start_service(fast_settings(data_dir), store=store)
    assert store.reads == []
    assert await again.get("/data") == answers
    write_user("3", first_name="Later")
    await wait_until(lambda: record(again.index, "3").first_name == "Later")  # and it follows changes


async def test_an_s3_restart_on_unchanged_data_reads_no_object(start_service, s3: S3Bucket):
    from userdata.app import create_store

    for i in range(10):
        s3.put_user(str(i), png=i % 2 == 0)
    s3.put("src-data/bad.csv", "first_name\nAnn\n")
    settings = s3.settings()
    first = await start_service(settings)
    await wait_until(lambda: s3.get(hint_key(settings.output_key)) is not None, message="for the hint")
    answers, health = await first.get("/data"), await first.get("/health")
    await first.stop()
    store = SpyStore(create_store(settings))
    again = await start_service(settings, store=store)
    assert store.reads == [] and store.stats == []
    assert await again.get("/data") == answers
    assert (await again.get("/health"))["rejected"] == health["rejected"]


async def test_a_file_that_could_not_be_read_is_read_again_at_the_next_start(tmp_path, folder):
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    store.unreadable[PREFIX + "2.csv"] = "permission denied"
    first, _ = await start(store)
    assert first.rejected[PREFIX + "2.csv"].startswith("cannot read")
    store.unreadable.clear()
    store.reads.clear()
    again, _ = await start(store)
    assert sorted(store.reads) == [PREFIX + "2.csv", PREFIX + "later.csv"]
    assert record(again.index, "2").first_name == "Ann2" and PREFIX + "2.csv" not in again.rejected


async def test_a_file_the_hint_holds_no_version_of_is_found_gone_after_a_restart(tmp_path, folder):
    # later.csv: rejected for a birthts in the future, after a good record; 2.csv: unreadable.
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    folder("later.csv", "first_name, last_name, birthts\nWas, Good, 5\n")
    await start(store)
    folder("later.csv", "first_name, last_name, birthts\nNot, Yet, 99999999999999\n")
    store.unreadable[PREFIX + "2.csv"] = "permission denied"
    first, _ = await start(store)
    assert record(first.index, "later").first_name == "Was" and record(first.index, "2").first_name == "Ann2"
    store.unreadable.clear()
    (tmp_path / "bucket" / PREFIX / "later.csv").unlink()
    (tmp_path / "bucket" / PREFIX / "2.csv").unlink()
    again, _ = await start(store)
    reference, _ = await start(store, hint=False)
    assert "later" not in again.index and "2" not in again.index
    assert catalog_state(again) == catalog_state(reference) and again.index.records() == reference.index.records()


async def test_a_hint_written_under_another_size_limit_is_not_trusted(tmp_path, folder):
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    folder("big.csv", "first_name, last_name, birthts\nBig, " + "x" * 200 + ", 5\n")
    first, _ = await start(store)
    assert "big" in first.index
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX, max_object_size=100))
    again, _ = await start(store, max_object_size=100)
    assert set(store.reads) == csv_keys(tmp_path / "bucket" / PREFIX)  # every CSV judged again
    assert "larger than the limit" in again.rejected[PREFIX + "big.csv"]


def _set_version(version: Callable[[int, int], tuple[object, object]]) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        at = doc["entries"].index(PREFIX + "3.csv")
        doc["entries"][at + 1 : at + 3] = version(*doc["entries"][at + 1 : at + 3])

    return edit


@pytest.mark.parametrize(
    "version",
    [
        lambda high, low: (high, low ^ 1),  # another int
        lambda high, low: (f"{high:x}{low:x}", None),  # a string, even of the same digits
        lambda high, low: (None, None),  # unknown
    ],
    ids=["another-int", "a-string", "unknown"],
)
async def test_a_version_the_hint_holds_wrong_reads_that_object_again(tmp_path, folder, version):
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    first, _ = await start(store)
    _edit_hint(tmp_path, _set_version(version))
    store.reads.clear()
    again, _ = await start(store)
    assert sorted(store.reads) == [PREFIX + "3.csv", PREFIX + "later.csv"]
    assert again.index.records() == first.index.records()
    assert catalog_state(again) == catalog_state(first)


async def test_the_hint_leaves_out_the_image_output_csv_names_and_keeps_the_others(tmp_path, folder):
    (tmp_path / "bucket" / PREFIX / "1.PNG").write_bytes(b"\x89PNG")  # a second image of user 1
    store = SpyStore(FolderStore(tmp_path, "bucket", PREFIX))
    first, _ = await start(store)
    assert record(first.index, "1").img_path == PREFIX + "1.PNG"  # the first, in sorted order
    entries = orjson.loads((tmp_path / "bucket" / HINT).read_bytes())["entries"]
    at = entries.index(PREFIX + "1.csv")
    assert type(entries[at + 1]) is int and type(entries[at + 2]) is int  # its version, in two numbers
    assert PREFIX + "1.png" in entries and PREFIX + "1.PNG" not in entries
    assert PREFIX + "2.png" not in entries  # named by output.csv
    store.reads.clear()
    again, _ = await start(store)
    assert store.reads == [PREFIX + "later.csv"]
    assert catalog_state(again) == catalog_state(first)
    (tmp_path / "bucket" / PREFIX / "1.PNG").unlink()  # the image output.csv names, gone
    third, _ = await start(store)
    assert record(third.index, "1").img_path == PREFIX + "1.png"
