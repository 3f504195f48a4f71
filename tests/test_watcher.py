import asyncio

import pytest
from helpers import wait_until

from userdata.objects import SourceObject
from userdata.watcher import RESCAN, Watcher, folder_objects, minio_objects


def _keys(seen: set[str]):
    def submit(objects):
        seen.update(obj.key for obj in objects)

    return submit


async def test_the_watcher_maps_paths_to_source_objects_and_filters_names(tmp_path):
    seen: set[str] = set()
    watcher = Watcher(tmp_path, folder_objects(tmp_path, "src/"), _keys(seen), debounce_ms=50, step_ms=10)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0)  # awatch registers its watch in its first step
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "1.csv").write_text("x")
        for name in ("2.csv", "3.PNG", ".hidden.csv", "4.csv~", "5.csv.tmp", "notes.txt"):
            (tmp_path / name).write_text("x")
        await wait_until(lambda: {"src/2.csv", "src/3.PNG"} <= seen)
        (tmp_path / "6.csv").write_text("x")
        await wait_until(lambda: "src/6.csv" in seen)
        assert seen == {"src/2.csv", "src/3.PNG", "src/6.csv"}
    finally:
        watcher.stop_event.set()
        await asyncio.wait_for(task, 5)


async def test_a_failed_watch_is_started_again_and_asks_to_catch_up(tmp_path):
    directory = tmp_path / "later"
    seen: set[str] = set()
    restarts = []
    watcher = Watcher(
        directory,
        folder_objects(directory, ""),
        _keys(seen),
        on_rescan=lambda: restarts.append(1),
        retry_delays=(0.05,),
    )
    task = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: watcher.error is not None)
        assert watcher.error is not None
        assert "not watching" in watcher.error
        directory.mkdir()
        await wait_until(lambda: restarts and watcher.error is None, timeout=10)
        (directory / "1.csv").write_text("x")
        await wait_until(lambda: "1.csv" in seen)
    finally:
        watcher.stop_event.set()
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize(
    ("relative", "key"),
    [
        ("src/1.csv/xl.meta", "src/1.csv"),
        ("src/1.csv", "src/1.csv"),
        ("src/2.PNG/6f0e0c5d-1b2a-4c6f/part.1", "src/2.PNG"),
        ("src/2.PNG/6f0e0c5d-1b2a-4c6f", "src/2.PNG"),
        ("src", RESCAN),
        (".", RESCAN),
        ("src/sub/3.csv/xl.meta", None),
        ("src/.hidden.csv/xl.meta", None),
        ("src/notes.txt/xl.meta", None),
        ("other/4.csv/xl.meta", None),
    ],
)
def test_minio_paths_map_to_the_objects_they_belong_to(tmp_path, relative, key):
    # MinIO's layout, simulated: object k of the bucket is the folder <bucket>/<k>/.
    bucket_dir = tmp_path / "bucket"
    meaning = minio_objects(bucket_dir, "src/")(str((bucket_dir / relative).resolve()))
    assert (meaning.key if isinstance(meaning, SourceObject) else meaning) == key
