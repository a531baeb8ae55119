"""What ``dncsim run`` says around its run: the closing table (:func:`final_summary`) with its notes (why a
task's geometry is shown as n/a, which dir-CDNV values come from pairs in a flagged regime of the debiased
estimator) and, before training, the note on the task pairs' median |cos| intervals
(:func:`pair_interval_hint`)."""
from __future__ import annotations

import itertools
from collections import Counter
from typing import List, Optional, Sequence

import torch

from dncsim.analysis.estimators import AUTO_WILD_PAIRS, balanced_pairs, resolve_pair_scheme
from dncsim.analysis.metrics.probe_accuracy import convergence_finding, probe_convergence
from dncsim.analysis.names import (ACC, BARELY_RESOLVED_PAIRS, CDNV, DIR_CDNV, FORGETTING_MAX,
                                   NEGATIVE_NUMERATOR_PAIRS, RESOLVED_PAIRS)
from dncsim.analysis.text_table import format_table

__all__ = ["closing_notes", "final_summary", "pair_interval_hint", "PAIR_HINT_PAIRS"]

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


def final_summary(rows: List[dict], tasks: Sequence[str], keys) -> str:
    """Per task after the last experience: accuracy (forgetting) per probe and protocol, dir-CDNV, CDNV;
    a geometry that is undefined there is ``n/a``, with a note saying why."""
    t = max(r["exp"] for r in rows)
    last = {(r["metric"], r["task"], r["probe"], r["protocol"]): r["value"] for r in rows if r["exp"] == t}
    table = []
    for k, name in enumerate(tasks):
        row = [k, name]
        for key in keys:
            acc = last.get((ACC, k, key.probe, key.protocol))
            forg = last.get((FORGETTING_MAX, k, key.probe, key.protocol))
            row.append("n/a" if acc is None else f"{acc:.3f}" + ("" if forg is None else f" ({forg:+.3f})"))
        geometry = [last.get((m, k, None, None)) for m in (DIR_CDNV, CDNV)]
        row += ["n/a" if v is None else f"{v:.4g}" for v in geometry]
        table.append(row)
    out = format_table(["task", "name"] + [f"{key.probe} {key.protocol}" for key in keys] + ["dir-CDNV", "CDNV"],
                       table, title="After the last experience: test accuracy (forgetting = best earlier minus final)")
    out += closing_notes(rows, tasks)
    note = convergence_finding(probe_convergence(rows))
    return out if note is None else f"{out}\nnote: {note}"


#: from this many task pairs resampled pair by pair (``joint``) a run says that the cost is theirs: the
#: number of pairs from which ``pair_bootstrap: auto`` itself stops resampling balanced pairs pair by pair
PAIR_HINT_PAIRS = AUTO_WILD_PAIRS


def pair_interval_hint(analysis, tasks, split: str = "test") -> Optional[str]:
    """One line about the median |cos| intervals of task pairs on the same samples, or None.

    A pair is balanced when its joint classes are an exactly balanced design (:func:`balanced_pairs`).
    ``auto``: how many pairs take the iid or wild bootstrap. ``joint``/``wild``: that unbalanced pairs hold
    their random cell sizes fixed; else, from ``PAIR_HINT_PAIRS`` pairs, that their cost dominates.
    """
    if not analysis.bootstrap:
        return None
    groups: dict = {}
    for task in tasks:
        groups.setdefault(task.group, []).append(task)
    counts = Counter()
    for members in groups.values():
        n = len(members)
        if n < 2:
            continue
        labels = torch.stack([t.test_labels if split == "test" else t.train_labels for t in members])
        bal = balanced_pairs(labels).tolist()
        for a, b in itertools.combinations(range(n), 2):
            counts[resolve_pair_scheme(analysis.pair_bootstrap, n, bal[a][b]), bal[a][b]] += 1
    total = sum(counts.values())
    unbalanced = sum(v for (_, b), v in counts.items() if not b)
    scheme = analysis.pair_bootstrap
    if scheme == "auto":
        iid, wild = counts["iid", False], counts["wild", True]
        if not (iid or wild):
            return None
        parts = [f"{iid} resample the samples (iid: joint classes of unequal size)" if iid else "",
                 f"{wild} share one wild bootstrap (balanced, 20 tasks or more)" if wild else "",
                 f"{counts['joint', True]} resample within their joint classes" if counts["joint", True] else ""]
        return (f"note: {total} task pairs share their samples; their median |cos| intervals: "
                + ", ".join(p for p in parts if p) + " (analysis.pair_bootstrap: auto; docs, Methods, Estimators)")
    if unbalanced and scheme != "iid":
        return (f"note: {unbalanced} of {total} task pairs on the same samples have joint classes of unequal "
                f"size; analysis.pair_bootstrap: {scheme} holds those sizes fixed, so their median |cos| "
                "intervals are too narrow if the samples were drawn at random (iid or auto lets them vary; "
                "docs, Methods, Estimators)")
    joint = counts["joint", True]
    if scheme != "joint" or joint < PAIR_HINT_PAIRS:
        return None
    return (f"note: {joint} task pairs share their samples; the interval of each pair's median |cos| resamples "
            f"that pair's joint classes (analysis.pair_bootstrap: {scheme}), a cost per evaluation that grows "
            "with the number of pairs; analysis.pair_bootstrap: wild grows with the number of tasks (docs: "
            "Benchmarks)")
