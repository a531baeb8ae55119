"""The regulariser's randomised weight as an instrument for the causal effect of directional CDNV.

Rows are tasks (learned only by default). First stage: dose step -> log2 ``dir_cdnv_learned``;
reduced form: dose -> forgetting; their ratio (2SLS) is the change in forgetting per doubling. The dose
is its step among the sorted distinct weights; fixed effects for task identity and strategy; run-clustered
CR2 errors, t on Bell-McCaffrey df (analysis/clustered.py). Instrument strength: cluster-robust Wald F
(weak below 10). The same is run with CDNV as mediator. Details: docs, Methods.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import stats as sps

from dncsim.analysis.clustered import cluster_fit
from dncsim.common import DncsimError

__all__ = ["DOSE_COLUMN", "instrumental_analysis", "strategy_table", "causal_sentences", "WEAK_F"]

DOSE_COLUMN = "objective.regularizers.0.weight"
WEAK_F = 10.0


def _num(v) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _design(rows, outcome: str, mediator: str, dose: str, controls: Sequence[str]):
    """Outcome y, log2 mediator x, dose step, run codes, the exogenous columns (intercept and the dummies of
    the controls that vary, first level dropped), the dose levels and the controls used."""
    keep = []
    for r in rows:
        y, m, z = _num(r.get(outcome)), _num(r.get(mediator)), _num(r.get(dose))
        if y is None or m is None or z is None or m <= 0 or r.get("run") is None:
            continue
        keep.append((y, math.log2(m), z, str(r["run"]), [str(r.get(c)) for c in controls]))
    if not keep:
        raise DncsimError(f"no task row has {outcome}, {mediator} and {dose}")
    y = np.array([k[0] for k in keep])
    x = np.array([k[1] for k in keep])
    z = np.array([k[2] for k in keep])
    levels = sorted(set(z.tolist()))
    step = np.searchsorted(np.array(levels), z).astype(float)
    _, runs = np.unique([k[3] for k in keep], return_inverse=True)
    exog, used = [np.ones(len(keep))], []
    for i, c in enumerate(controls):
        values = np.array([k[4][i] for k in keep])
        others = sorted(set(values.tolist()))
        if len(others) > 1:
            used.append(c)
            exog += [(values == v).astype(float) for v in others[1:]]
    return y, x, step, runs, np.column_stack(exog), levels, used


def _coef(fit, j: int, alpha: float) -> dict:
    low, high = fit.interval(alpha)
    return {"estimate": float(fit.params[j]), "se": float(fit.se[j]), "df": float(fit.df[j]),
            "ci_low": float(low[j]), "ci_high": float(high[j]), "p": float(fit.p_values()[j])}


def instrumental_analysis(rows: Sequence[dict], outcome: str, mediator: str = "dir_cdnv_learned", *,
                          dose: str = DOSE_COLUMN, controls: Sequence[str] = ("task_name", "strategy"),
                          alpha: float = 0.05) -> dict:
    """First stage, reduced form and causal (2SLS) estimate (module docstring) of ``mediator`` (log2)
    on ``outcome`` with the dose step of ``dose`` as the instrument. DncsimError when the design
    cannot identify it (one dose level, fewer than 3 runs, collinear controls)."""
    y, x, step, runs, exog, levels, used = _design(rows, outcome, mediator, dose, controls)
    n_runs = int(runs.max()) + 1
    if len(levels) < 2:
        raise DncsimError(f"{dose}: one level ({levels[0]:g}) in the tasks table; the instrument must vary")
    if n_runs < 3:
        raise DncsimError(f"{n_runs} run(s): at least 3 are needed for inference over runs")
    Z = np.column_stack([exog, step])
    last = Z.shape[1] - 1
    first = cluster_fit(Z, x, runs, terms=[last])
    reduced = cluster_fit(Z, y, runs, terms=[last])
    iv = cluster_fit(np.column_stack([exog, x]), y, runs, instruments=Z, terms=[last])
    fs = _coef(first, last, alpha)
    f_stat = (fs["estimate"] / fs["se"]) ** 2 if fs["se"] > 0 else float("inf")
    return {"outcome": outcome, "mediator": mediator, "dose": dose, "levels": [float(v) for v in levels],
            "n_rows": int(len(y)), "n_runs": n_runs, "controls": used,
            "first_stage": fs, "first_stage_F": float(f_stat), "weak_instrument": bool(f_stat < WEAK_F),
            "reduced_form": _coef(reduced, last, alpha), "causal": _coef(iv, last, alpha),
            "method": "2SLS, dose step as the instrument, fixed effects for "
                      f"{', '.join(used) or 'nothing'}; run-clustered CR2 errors, t on Bell-McCaffrey df"}


def _t_interval(values, alpha: float) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": 1}
    half = float(sps.t.ppf(1 - alpha / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": int(len(v))}


def strategy_table(rows: Sequence[dict], forgetting: str, accuracy: str, *, alpha: float = 0.05) -> List[dict]:
    """Per strategy: forgetting of earlier tasks and accuracy when learned (module docstring), each the
    mean over runs with a t interval over runs."""
    by_run: Dict[str, List[dict]] = {}
    for r in rows:
        if r.get("run") is not None:
            by_run.setdefault(str(r["run"]), []).append(r)
    per: Dict[str, Dict[str, list]] = {}
    for run_rows in by_run.values():
        strategy = str(run_rows[0].get("strategy"))
        last = max(int(r["task"]) for r in run_rows)
        f = [_num(r.get(forgetting)) for r in run_rows if int(r["task"]) < last]
        a = [_num(r.get(accuracy)) for r in run_rows]
        f, a = [x for x in f if x is not None], [x for x in a if x is not None]
        entry = per.setdefault(strategy, {"forgetting": [], "accuracy": []})
        if f:
            entry["forgetting"].append(float(np.mean(f)))
        if a:
            entry["accuracy"].append(float(np.mean(a)))
    return [{"strategy": s, "runs": max(len(v["forgetting"]), len(v["accuracy"])),
             "forgetting": _t_interval(v["forgetting"], alpha), "accuracy": _t_interval(v["accuracy"], alpha)}
            for s, v in sorted(per.items())]


def causal_sentences(result: dict) -> List[str]:
    """The verdict of one instrumental analysis in words, whichever way it comes out."""
    fs, rf, c = result["first_stage"], result["reduced_form"], result["causal"]
    what = "directional CDNV" if result["mediator"].startswith("dir_") else "CDNV"
    levels = ", ".join(f"{v:g}" for v in result.get("levels", []))
    step = f"one dose step (to the next of the weights {levels})" if levels else "one dose step"
    out = [f"First stage: {step} changes log2 {what} when learned by "
           f"{fs['estimate']:+.3f} [{fs['ci_low']:+.3f}, {fs['ci_high']:+.3f}] (F = {result['first_stage_F']:.1f}"
           f"{'; weak instrument' if result['weak_instrument'] else ''}). Reduced form: forgetting changes by "
           f"{rf['estimate']:+.4f} [{rf['ci_low']:+.4f}, {rf['ci_high']:+.4f}] per step (p = {rf['p']:.3g})."]
    if result["weak_instrument"]:
        out.append(f"Causal estimate (2SLS) for {what}: {c['estimate']:+.4f} per doubling [{c['ci_low']:+.4f}, "
                   f"{c['ci_high']:+.4f}], p = {c['p']:.3g} -- but the instrument is weak (F < {WEAK_F:g}), so this "
                   "interval is not to be trusted.")
    else:
        sign = "more" if c["estimate"] > 0 else "less"
        decided = c["ci_low"] > 0 or c["ci_high"] < 0
        lead = (f"Causal estimate (2SLS) for {what}: each doubling of it that the dose brings about changes "
                f"forgetting by {c['estimate']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], p = {c['p']:.3g}")
        if decided:
            out.append(lead + f": tasks made to have higher {what} forget {sign}"
                       + ("." if c["estimate"] > 0 else f" -- lowering {what} makes them forget more."))
        else:
            direction = "reduces" if c["estimate"] > 0 else "increases"
            out.append(lead + f": the interval covers 0, so the data cannot tell whether lowering {what} changes "
                       f"forgetting (the point estimate says lowering it {direction} forgetting).")
    return out
