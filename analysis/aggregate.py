"""Tidy tables over many runs, from ``RunData`` (``dncsim.rundir.load_run``) to rows of plain values.

``task_rows``: one row per (run, task): the run's factors, ``learned_at`` / ``learned``, the treatment
(``position``, ``dose_dir``, ``dose_orth``, ``placebo``: ``RunData.treatment``), each per-task
metric when learned and at the end (``<metric>_learned``, ``<metric>_final``), axis overlap with later
tasks, accuracy, forgetting and BWT per probe and protocol, ``probe_converged_learned`` and
``probe_at_budget``. ``pair_rows``: one row per (run, pair a < b): axis overlap when b was learned
(``overlap``, ``overlap_max``), before b's experience with a's axes fixed when a was learned
(``overlap_pre``, pre-treatment for b; None when not measured), at the end, and the interference of b
on a. Per-probe columns: ``<metric>/<probe>/<protocol>``.
"""
from __future__ import annotations

import itertools
from typing import Dict, List, Sequence

import numpy as np

from dncsim.common import csv_text
from dncsim.analysis.names import (ACC, AXIS_COS_MAX, AXIS_COS_MEDIAN, AXIS_COS_PRE, BWT, FORGETTING_LAST,
                                   FORGETTING_MAX, FORGETTING_NORM, FROZEN, INTERFERENCE, LABELS_CRAMERS_V, LINEAR,
                                   PROBE_CONVERGED, PROP42_FRAC, PROP42_TIGHTNESS, REFIT, ProbeKey)

__all__ = ["task_rows", "pair_rows", "rows_to_csv"]


LINEAR_REFIT = ProbeKey(LINEAR, REFIT)


def _base(run, factors: Dict[str, object]) -> dict:
    """Columns every row of a run shares: run name, the study factors, objective, strategy, seed."""
    return {"run": run.name, **factors, "objective": run.objective, "strategy": run.strategy, "seed": run.seed}


def task_rows(run, factors: Dict[str, object]) -> List[dict]:
    """One row per task of ``run`` (see the module docstring); ``factors`` are copied into every row."""
    last = run.last
    base = _base(run, factors)
    scalars = run.task_scalars()
    solves: Dict[int, List[float]] = {}
    for row in run.rows:
        if row["metric"] == PROBE_CONVERGED:
            solves.setdefault(row["task"], []).append(row["value"])
    rows = []
    for k, name in enumerate(run.tasks):
        L = run.learned_at[k]
        r = dict(base, task=k, task_name=name, learned_at=L, learned=run.learned(k), **run.treatment(k))
        for metric in scalars:
            r[f"{metric}_learned"] = None if L is None else run.value(metric, L, k)
            r[f"{metric}_final"] = run.value(metric, last, k)
        flags = solves.get(k)
        if flags:
            r["probe_converged_learned"] = None if L is None else run.value(PROBE_CONVERGED, L, k, key=LINEAR_REFIT)
            r["probe_at_budget"] = sum(v == 0 for v in flags)
        later = [run.value(AXIS_COS_MEDIAN, Lb, k, b) for b, Lb in enumerate(run.learned_at)
                 if b > k and Lb is not None and L is not None and Lb > L]
        later = [v for v in later if v is not None]
        r["overlap_later"] = float(np.mean(later)) if later else None
        for key in run.probe_keys:
            R = run.matrices[key]
            learned = R[L + 1, k] if L is not None and L + 1 < R.shape[0] else np.nan
            r[f"acc_learned/{key}"] = None if np.isnan(learned) else float(learned)
            r[f"acc_final/{key}"] = run.value(ACC, last, k, key=key)
            r[f"forgetting_max/{key}"] = run.value(FORGETTING_MAX, last, k, key=key)
            r[f"forgetting_last/{key}"] = run.value(FORGETTING_LAST, last, k, key=key)
            r[f"forgetting_norm/{key}"] = run.value(FORGETTING_NORM, last, k, key=key)
            r[f"bwt/{key}"] = run.value(BWT, last, key=key)
        rows.append(r)
    return rows


def pair_rows(run, factors: Dict[str, object]) -> List[dict]:
    """One row per task pair a < b of ``run``: overlap when b was learned, before b trained (``overlap_pre``)
    and at the end, interference."""
    last = run.last
    base = _base(run, factors)
    rows = []
    for a, b in itertools.combinations(range(run.T), 2):
        Lb = run.learned_at[b]
        r = dict(base, task_a=a, task_b=b, name_a=run.tasks[a], name_b=run.tasks[b],
                 learned_a=run.learned(a), learned_b=run.learned(b),
                 overlap=None if Lb is None else run.value(AXIS_COS_MEDIAN, Lb, a, b),
                 overlap_max=None if Lb is None else run.value(AXIS_COS_MAX, Lb, a, b),
                 overlap_pre=None if Lb is None else run.value(AXIS_COS_PRE, Lb - 1, a, b),
                 overlap_final=run.value(AXIS_COS_MEDIAN, last, a, b),
                 labels_cramers_v=run.value(LABELS_CRAMERS_V, last, a, b),
                 prop42_frac_final=run.value(PROP42_FRAC, last, a, b),
                 prop42_tightness_final=run.value(PROP42_TIGHTNESS, last, a, b))
        for key in run.probe_keys:
            if key.protocol == FROZEN:
                r[f"interference/{key}"] = None if Lb is None else run.value(INTERFERENCE, Lb, a, b, key=key)
        rows.append(r)
    return rows


def rows_to_csv(rows: Sequence[dict]) -> str:
    """CSV text of a list-of-dicts table (columns in first-seen order; None -> empty; ``dncsim.common.csv_text``)."""
    cols: List[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    return csv_text(cols, ([r.get(c) for c in cols] for r in rows))
