"""The notes under the closing table of ``dncsim run``: why a task's geometry is shown as n/a."""
from __future__ import annotations

from typing import List, Sequence

from dncsim.analysis.names import CDNV, DIR_CDNV, RESOLVED_PAIRS

__all__ = ["closing_notes"]

NO_PAIR = ("no class pair resolved (every pair's bias-corrected squared mean gap is within the noise of the "
           "class means)")


def closing_notes(rows: Sequence[dict], tasks: Sequence[str]) -> str:
    """One ``n/a: ...`` line per task whose dir-CDNV or CDNV is missing after the last experience, with
    the reason ("" when none is missing); rows are the metrics table's."""
    last = max(r["exp"] for r in rows)
    have = {(r["metric"], r["task"]) for r in rows if r["exp"] == last and r.get("task_b") is None
            and r.get("probe") is None and r.get("shots") is None}
    notes: List[str] = []
    for k, name in enumerate(tasks):
        missing = [label for metric, label in ((DIR_CDNV, "dir-CDNV"), (CDNV, "CDNV")) if (metric, k) not in have]
        if missing:
            why = NO_PAIR if (RESOLVED_PAIRS, k) in have else "not measured after the last experience"
            notes.append(f"n/a: {name}'s {' and '.join(missing)} undefined after the last experience: {why}")
    return "".join("\n" + n for n in notes)
