"""The notes under the closing table of ``dncsim run``: why a task's geometry is shown as n/a, and which
dir-CDNV values come from pairs in a flagged regime of the debiased estimator."""
from __future__ import annotations

from typing import List, Sequence

from dncsim.analysis.names import BARELY_RESOLVED_PAIRS, CDNV, DIR_CDNV, NEGATIVE_NUMERATOR_PAIRS, RESOLVED_PAIRS

__all__ = ["closing_notes"]

NO_PAIR = ("no class pair resolved (every pair's bias-corrected squared mean gap is within the noise of the "
           "class means)")


def closing_notes(rows: Sequence[dict], tasks: Sequence[str]) -> str:
    """One ``n/a: ...`` line per task whose dir-CDNV or CDNV is missing after the last experience, with
    the reason, and one ``note: ...`` line per task with flagged pairs ("" when neither); rows are the
    metrics table's."""
    last = max(r["exp"] for r in rows)
    have = {(r["metric"], r["task"]) for r in rows if r["exp"] == last and r.get("task_b") is None
            and r.get("probe") is None and r.get("shots") is None}
    notes: List[str] = []
    for k, name in enumerate(tasks):
        missing = [label for metric, label in ((DIR_CDNV, "dir-CDNV"), (CDNV, "CDNV")) if (metric, k) not in have]
        if missing:
            why = NO_PAIR if (RESOLVED_PAIRS, k) in have else "not measured after the last experience"
            notes.append(f"n/a: {name}'s {' and '.join(missing)} undefined after the last experience: {why}")
    value = {(r["metric"], r["task"]): r["value"] for r in rows if r["exp"] == last and r.get("task_b") is None
             and r["metric"] in (BARELY_RESOLVED_PAIRS, NEGATIVE_NUMERATOR_PAIRS)}
    for k, name in enumerate(tasks):
        barely = int(value.get((BARELY_RESOLVED_PAIRS, k)) or 0)
        negative = int(value.get((NEGATIVE_NUMERATOR_PAIRS, k)) or 0)
        parts = ([f"gap barely resolved for {barely} class pair(s)"] if barely else []) + (
            [f"axis variance below the noise floor for {negative} class pair(s)"] if negative else [])
        if parts:
            notes.append(f"note: dir-CDNV of {name}: {'; '.join(parts)} (debiased estimator; read it with its "
                         "interval)")
    return "".join("\n" + n for n in notes)
