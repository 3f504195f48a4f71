"""RESULTS.md: one table row per figure, beside its same-run ceiling, the ratio and the target."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ("Row", "render_results")


@dataclass(frozen=True)
class Row:
    """One figure of the table."""

    bench: str
    measure: str
    users: int
    result: str
    ceiling: str
    ratio: str
    target: str = ""
    met: bool | None = None


def _cell(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


#: Figures behind choices the code's comments explain without numbers, each measured once on the
#: machine of the benchmarks (2 cores, AMD EPYC) when the choice was made; not measured again by a
#: run of the suite. The code says why; these say how much.
CHOICES = (
    "Load (`tuning.frozen_when_done`): the garbage collector left on during a load adds about a third to "
    "its time; a full collection over a million records left unfrozen stalls the event loop about "
    "250 ms each time it comes (benchmark 4's server freezes its records for the same reason: "
    "stalls while output.csv was written went from 26-28 ms to 6 ms).",
    "Rescans (`tuning.collector_paused`): full collections during a forced rescan cost tens of ms each "
    "at 100,000 objects, growing with them; pausing the collector took the longest stall of a forced "
    "rescan at 100,000 users from 149 ms to 13-18 ms.",
    "Passes off the loop (`tuning.off_loop`): an incremental rescan done on the loop stalled it "
    "0.9 s at 100,000 users (about 10 s projected at 1,000,000); on a worker thread, 10-20 ms.",
    "Freeing (`tuning.free_off_loop`): `dict.clear()` of a million entries holds the GIL until all are "
    "freed; freed item by item on a thread, the longest stall of an incremental rescan at 1,000,000 "
    "users went from 243 ms to 61-67 ms, of a forced one from 240 ms to 96-205 ms.",
    "output.csv (`OutputWriter._render`): rendered whole in a thread, the GIL convoy stalls the loop "
    "for 100+ ms at 1,000,000 users; on the loop at 1,000,000 users (48 MB), hashing the whole file "
    "takes about 50 ms, joining its parts about 30 ms and copying the sorted ids about 20 ms, so each "
    "slice is hashed and spooled as it comes; restoring it (parsing, hashing) takes seconds, so that "
    "runs in a thread.",
    "Spool (`sinks/spool.py`): `b''.join` of 48 MB takes about 30 ms holding the GIL; reading the "
    "spool back in one read takes about the same with the GIL released; appending a slice of about "
    "50 KB takes a few microseconds.",
    "Differences of a forced rescan (`UserIndex.differences`): `held.keys() - users.keys()` builds a "
    "set of every id in one C call, holding the GIL 16-25 ms at 100,000 users; the ids copied in one "
    "call (pointers) and compared in Python took the longest stall of a forced rescan at 100,000 "
    "users from 25 / 23 ms to 21 / 17 ms (`python -m bench.child rescans`, ABAB after the full run).",
    "The catalog's hint read back (`catalog_hint.decode`): checking each version's shape, then "
    "copying it, cost 0.28 s at 100,000 users; made tuples in place, 0.14 s (orjson's parse alone: "
    "0.09 s). Kept flat (key, version, ...) and read in place, a restart's RSS per user at 100,000 "
    "users went from 1,321 to about 980 B.",
    "Heap trim after a load (`tuning.trim_heap`): glibc keeps the pages a load's passes freed; "
    "`malloc_trim(0)` gave back about 50 B per user at 100,000 users.",
    "The GIL's switch interval (`tuning.loop_first`): with CPython's default 5 ms, the longest stall of a"
    " forced rescan at 100,000 users from the folder was 21 / 17 ms and a change named meanwhile showed "
    "within 96 / 86 ms; at 1 ms, 5.1 / 5.9 ms and 40 / 38 ms, the rescan as fast (1.35 / 1.26 s against "
    "1.33 / 1.32 s; `python -m bench.child rescans`, ABAB). From S3 at 100,000 users it changes little "
    "(forced: 13 / 12 ms at 5 ms, 16 / 13 ms at 1 ms): there the loop's own turns are the stalls.",
    "Images keyed again only on a first load (`scan.records(rekey=...)`): deleting and re-inserting each "
    "image's key made the dict of 700,000 rebuild its table in one step, 45 ms in a plain loop; a "
    "rescan's catalog holds the index's strings already. At 1,000,000 users the stalls left are the "
    "dicts' own growth (benchmark 7's 'one dict's growth' shows the least of them).",
    "Images listed as PRESENT from S3 too (`stores.PRESENT`, as the folder did): no ETag string per "
    "image; the process's RSS kept per user after an S3 load of 100,000 users went from 1,017 to 952 B, "
    "after a restart from 1,170 to 994 B (the last full run before it and this one, on another machine of"
    " the same size: roughly).",
    "Versions as one int (`stores.etag_version`, the folder store's `_version`): a tuple of size and "
    "mtime cost 92 B per CSV and an ETag's string 83 B, one int 40 or 44 B; the RSS kept per user after "
    "a folder load of 1,000,000 users went from 809 B (the full run before) to 744 B (one run).",
    "A load's reads taken out as their records are made (`scan.records`): held until every record was "
    "made and then freed at once, their memory stayed the process's, as free pools inside arenas still in"
    " use (14 MB at 100,000 users, by `sys._debugmallocstats`); taken out one by one, the records are "
    "made in it. The RSS kept per user after a folder load went from 862-931 B to 671-744 B at 100,000 "
    "users (three runs each), from 744 B to 633 B at 1,000,000 (one run each).",
    "The hint's format 2 (`sinks/catalog_hint.py`): versions written as strings, and the key of every "
    "image, made a string per entry that a restart threw away, and the listing that followed filled "
    "those blocks and left them free (13 MB at 100,000 users, in pools the kept keys share); versions as "
    "two JSON numbers, and no key for the image output.csv names, a restart's RSS per user went from "
    "846-888 B to 691-733 B at 100,000 users (two runs each), and to 580 B at 1,000,000 (854 B in the "
    "full run before, when versions were tuples). The hint of 100,000 users shrank from 6.5 to 4.4 MB.",
)


def render_results(header: str, rows: list[Row], notes: list[str], raw: dict[str, Any]) -> str:
    """The Markdown page: ``header``, the table, ``notes``, then the raw measurements."""
    lines = [header, ""]
    lines.append("| # | measure | users | result | ceiling (same run) | ratio | target | met |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        cells = (r.bench, r.measure, f"{r.users:,}", r.result, r.ceiling, r.ratio, r.target, _cell(r.met))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## How each figure is measured", ""]
    lines += [f"{n}. {note}" for n, note in enumerate(notes, 1)]
    lines += ["", "## Figures behind the code's choices (measured once, not by this run)", ""]
    lines += [f"- {choice}" for choice in CHOICES]
    lines += ["", "<details><summary>Raw measurements (JSON)</summary>", "", "```json"]
    lines += [json.dumps(raw, indent=1, sort_keys=True), "```", "", "</details>", ""]
    return "\n".join(lines)
