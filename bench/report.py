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
    lines += ["", "<details><summary>Raw measurements (JSON)</summary>", "", "```json"]
    lines += [json.dumps(raw, indent=1, sort_keys=True), "```", "", "</details>", ""]
    return "\n".join(lines)
