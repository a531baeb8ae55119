"""Tidy tables over many runs, read from run directories (never from models).

``task_rows``: one row per (run, task) with the run's factors, the task's geometry when learned
and at the end, the overlap of its axes with later tasks' axes, and its accuracy, forgetting and
the run's BWT under every probe and protocol. ``pair_rows``: one row per (run, task pair a < b)
with the axis overlap when b was learned and the measured interference of b on a. Column names
for per-probe values are ``<metric>/<probe>/<protocol>``.
"""
from __future__ import annotations

import csv
import io
import itertools
from typing import Dict, List, Sequence

import numpy as np

from analysis import names as N
from analysis.report.rundata import RunData

__all__ = ["task_rows", "pair_rows", "rows_to_csv"]


def _keys(run: RunData):
    return [tuple(reversed(k.split("/"))) for k in sorted(run.matrices)]      # (probe, protocol)


def _base(run: RunData, factors: Dict[str, object]) -> dict:
    """Columns every row of a run shares: run name, the study factors, objective, strategy, seed."""
    cfg = run.config
    return {"run": cfg.get("name") or run.path.name, **factors, "objective": cfg["objective"]["name"],
            "strategy": cfg["strategy"]["name"], "seed": cfg.get("seed")}


def task_rows(run: RunData, factors: Dict[str, object]) -> List[dict]:
    """One row per task of ``run`` (see the module docstring); ``factors`` are copied into every row."""
    ix = run.index()
    last = run.last
    base = _base(run, factors)
    rows = []
    for k, name in enumerate(run.tasks):
        r = dict(base, task=k, task_name=name)
        for when, exp in (("learned", k), ("final", last)):
            r[f"dir_cdnv_{when}"] = ix.get((N.DIR_CDNV, exp, k, None, None, None, None))
            r[f"cdnv_{when}"] = ix.get((N.CDNV, exp, k, None, None, None, None))
        later = [ix.get((N.AXIS_COS_MEDIAN, b, k, b, None, None, None)) for b in range(k + 1, run.T)]
        later = [v for v in later if v is not None]
        r["overlap_later"] = float(np.mean(later)) if later else None
        for probe, proto in _keys(run):
            key = f"{probe}/{proto}"
            R = run.matrices[f"{proto}/{probe}"]
            learned = R[k + 1, k] if k + 1 < R.shape[0] else np.nan
            r[f"acc_learned/{key}"] = None if np.isnan(learned) else float(learned)
            r[f"acc_final/{key}"] = ix.get((N.ACC, last, k, None, probe, proto, None))
            r[f"forgetting_max/{key}"] = ix.get((N.FORGETTING_MAX, last, k, None, probe, proto, None))
            r[f"forgetting_last/{key}"] = ix.get((N.FORGETTING_LAST, last, k, None, probe, proto, None))
            r[f"bwt/{key}"] = ix.get((N.BWT, last, None, None, probe, proto, None))
        rows.append(r)
    return rows


def pair_rows(run: RunData, factors: Dict[str, object]) -> List[dict]:
    """One row per task pair a < b of ``run``: overlap when b was learned and at the end, interference."""
    ix = run.index()
    last = run.last
    base = _base(run, factors)
    rows = []
    for a, b in itertools.combinations(range(run.T), 2):
        r = dict(base, task_a=a, task_b=b, name_a=run.tasks[a], name_b=run.tasks[b],
                 overlap=ix.get((N.AXIS_COS_MEDIAN, b, a, b, None, None, None)),
                 overlap_max=ix.get((N.AXIS_COS_MAX, b, a, b, None, None, None)),
                 overlap_final=ix.get((N.AXIS_COS_MEDIAN, last, a, b, None, None, None)),
                 prop42_frac_final=ix.get((N.PROP42_FRAC, last, a, b, None, None, None)))
        for probe, proto in _keys(run):
            if proto == N.FROZEN:
                r[f"interference/{probe}/{proto}"] = ix.get((N.INTERFERENCE, b, a, b, probe, proto, None))
        rows.append(r)
    return rows


def rows_to_csv(rows: Sequence[dict]) -> str:
    """CSV text of a list-of-dicts table (columns in first-seen order; None -> empty)."""
    cols: List[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in cols])
    return buf.getvalue()
