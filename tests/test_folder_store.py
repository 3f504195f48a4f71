import os

import pytest

from userdata.stores import StoreUnavailable
from userdata.stores.folder import FolderStore, ThreadTrials


@pytest.fixture
def store(tmp_path):
    store = FolderStore(tmp_path, "bucket", "src/")
    store.ensure_source_dir()
    return store


async def test_list_gives_files_directly_under_the_prefix_with_versions(store):
    (store.source_dir / "1.csv").write_text("x")
    (store.source_dir / "sub").mkdir()
    (store.source_dir / "sub" / "2.csv").write_text("y")
    os.symlink(store.source_dir / "1.csv", store.source_dir / "link.csv")
    os.symlink("missing", store.source_dir / "dangling.csv")
    listing = await store.list_objects()
    assert sorted(listing) == ["src/1.csv", "src/link.csv"]
    before = listing["src/1.csv"]
    (store.source_dir / "1.csv").write_text("xy")
    assert (await store.list_objects())["src/1.csv"] != before


async def test_a_missing_source_folder_is_unavailable_not_empty(tmp_path):
    with pytest.raises(StoreUnavailable, match="not found"):
        await FolderStore(tmp_path, "bucket", "src/").list_objects()


async def test_read_many_reports_missing_and_non_files_as_none(store):
    (store.source_dir / "1.csv").write_text("one")
    (store.source_dir / "d.csv").mkdir()
    os.symlink("loop.csv", store.source_dir / "loop.csv")
    got = await store.read_many(["src/1.csv", "src/gone.csv", "src/d.csv", "src/loop.csv"], bytes)
    assert got["src/1.csv"][1] == b"one"
    assert got["src/gone.csv"] is None and got["src/d.csv"] is None and got["src/loop.csv"] is None
    stats = await store.stat_many(["src/1.csv", "src/gone.csv", "src/d.csv", "src/loop.csv"])
    assert stats["src/1.csv"] == got["src/1.csv"][0]
    assert [stats[k] for k in ("src/gone.csv", "src/d.csv", "src/loop.csv")] == [None, None, None]


async def test_read_many_handles_many_keys_in_chunks(store):
    for i in range(1000):
        (store.source_dir / f"{i}.csv").write_text(str(i))
    got = await store.read_many([f"src/{i}.csv" for i in range(1000)], bytes.decode)
    assert {k: v[1] for k, v in got.items()} == {f"src/{i}.csv": str(i) for i in range(1000)}  # parsed where read


async def test_write_replaces_the_file_whole_and_leaves_no_temp_files(store):
    await store.write("out/output.csv", b"first")
    await store.write("out/output.csv", b"second")
    out = store.root / "out"
    assert os.listdir(out) == ["output.csv"]
    assert (out / "output.csv").read_bytes() == b"second"
    assert await store.read("out/output.csv") == b"second"
    assert await store.read("out/missing.csv") is None


@pytest.mark.parametrize("disk", [False, True], ids=["page-cache", "disk"])
def test_reads_go_on_the_number_of_threads_found_faster(disk: bool) -> None:
    # One thread reads faster from the page cache, two from the disk.
    seconds_per_file = {1: 2.0, 2: 1.0} if disk else {1: 1.0, 2: 2.0}
    trials = ThreadTrials(2, every=4)
    used = []
    for i in range(10):
        threads = trials.threads(i)
        used.append(threads)
        trials.took(i, threads, seconds_per_file[threads])
    # Batches 0 and 1 of every 4 are the trials, on one thread and on two; the others follow.
    assert used == ([1, 2, 2, 2, 1, 2, 2, 2, 1, 2] if disk else [1, 2, 1, 1, 1, 2, 1, 1, 1, 2])


async def test_a_read_of_many_batches_returns_every_file(store, monkeypatch):
    from userdata.stores import folder

    monkeypatch.setattr(folder, "_BATCH", 10)
    for i in range(95):
        (store.source_dir / f"{i}.csv").write_text(str(i))
    got = await store.read_many([f"src/{i}.csv" for i in range(95)], bytes.decode)
    assert {k: v[1] for k, v in got.items()} == {f"src/{i}.csv": str(i) for i in range(95)}
