"""The benchmark suite's own references, and a run of it at a tiny size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.cold import least_load
from bench.datagen import BUCKET, PREFIX, write_users
from userdata.index import UserIndex
from userdata.pipeline import Pipeline
from userdata.stores.folder import FolderStore

ROOT = Path(__file__).resolve().parent.parent


async def test_least_load_builds_the_index_the_service_does(tmp_path: Path) -> None:
    # The reference is only a reference if it does the same work: the same users, the same records.
    write_users(tmp_path, 500)
    index = UserIndex()
    await Pipeline(FolderStore(tmp_path, BUCKET, PREFIX), index, PREFIX).load()
    least = least_load(str(tmp_path))
    assert len(index) == 500
    assert least.records() == index.records()
    assert any(record.img_path for record in index.records()), "demo users with an image"


def test_bench_runs_and_reports_every_figure_of_its_benchmarks(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    argv = ["--sizes", "300", "--only", "folder,memory", "--repeat", "1", "--out", str(out)]
    subprocess.run([sys.executable, "-m", "bench", *argv], cwd=ROOT, check=True, capture_output=True, timeout=120)
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| 1 |", "| 5 |", "| 7 |", "| 8 |"))]
    measures = [row.split(" | ")[1] for row in rows]
    assert measures == [
        "cold load from folder (median of runs)",
        "the least Python load: one loop, nothing but read, parse, index",
        "peak RSS of that load",
        "the process's RSS kept after the load, per user",
        "index memory per user (tracemalloc)",
        "index memory per user (RSS difference)",
        "incremental rescan (nothing changed): its time, longest event-loop stall",
        "forced rescan (POST /data): its time, longest event-loop stall",
        "restart on unchanged data from folder (0 objects read)",
        "the process's RSS kept after that restart, per user (folder)",
    ]
    for row in rows:
        cells = [cell.strip() for cell in row.split(" | ")]
        assert cells[3], row  # a result
        assert cells[5] == "" or cells[5].endswith("x"), row  # a ratio where its ceiling is measurable
        if cells[0] == "| 7":
            assert cells[3].endswith(" ms") and cells[4].startswith("idle: "), row
        if "RSS kept" in cells[1]:
            assert cells[4].startswith("index alone: "), row
    assert '"least"' in text  # the raw measurements keep every run
