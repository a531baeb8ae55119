"""The paper's three claims (Luthra, Salunkhe, Galanti 2026), checked on one ``joint``-stream run (``RunData``).

Levels are fixed constants; "the end" is the mean over the last ``LAST_POINTS`` points of training:

* **S1**: the anisotropy index (dir-CDNV / CDNV) x 2d, geometric mean over attributes, falls at
  least ``S1_FALL``-fold from before training to the end.
* **S2**: at the largest shot count m >= 10, within each point of training the attributes' errors
  (those ``S2_MARGIN`` below chance) rank as their bounds (one-sided permutation p <= ``S2_ALPHA``,
  rank correlation >= ``S2_RANK_RHO``) and the bound is never below the error.
* **S3**: every attribute pair's median |cos| is below its permutation null's 5% quantile at the end.

Intervals: percentile bootstrap over points of training. Definitions: docs, Methods, The paper check.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from dncsim.analysis.bounds import THEOREM_MIN_SHOTS
from dncsim.analysis.names import (AXIS_COS_MEDIAN, AXIS_COS_NULL_MEDIAN, AXIS_COS_NULL_P, AXIS_COS_NULL_Q05, BOUND,
                                   CDNV, CDNV_RATIO, DIR_CDNV, FEWSHOT_ERR, PROP42_TIGHTNESS, RESOLVED_PAIRS)
from dncsim.analysis.orthogonality import random_abs_cos
from dncsim.rundir import RunData

__all__ = ["paper_claims", "paper_findings", "paper_over_runs", "over_runs_findings", "rank_tracking",
           "S1_FALL", "S2_RANK_RHO", "S2_ALPHA", "S2_PERMUTATIONS", "S2_MARGIN", "S3_PAPER_LEVEL", "LAST_POINTS",
           "BOOTSTRAP", "PAPER_NUMBERS"]

#: points of training averaged for "the end" (the last quarter of the shipped 20 blocks)
LAST_POINTS = 5
#: bootstrap resamples of the points of training (seeded: the same run gives the same interval)
BOOTSTRAP = 2000
#: the paper's dir-CDNV falls from 2^-1 to 2^-5 while CDNV stays within 2^1 to 2^3: a ratio fall of >= 2^2
S1_FALL = 4.0
S2_RANK_RHO = 0.5
S2_ALPHA = 0.05
S2_PERMUTATIONS = 1999
#: S2 ranks only errors at least this far below chance (1 - 1/ways): near chance, error and bound both
#: follow the sampling noise of the class means, and signal-free features would "track"
S2_MARGIN = 0.1
#: the paper's largest reported median |cos| (shape-size): a reference line, not the test
S3_PAPER_LEVEL = 2.0 ** -3

#: what the paper reports, as the report quotes it (documentation: Methods, The paper check)
PAPER_NUMBERS = {
    "S1": "training from scratch (SimCLR, VICReg, DINO, MAE): dir-CDNV falls from about 2^-1 to 2^-5 while "
          "CDNV stays around 2^1 to 2^3",
    "S2": "pretrained MAE on mini-ImageNet: Pearson rho(error, bound) = 0.99 across shot counts; the bound "
          "is above the error at every m",
    "S3": "synthetic multitask, SimCLR ResNet-18 after 1000 epochs: median |cos| color-shape and color-size "
          "about 2^-5, shape-size about 2^-3; the Prop. 4.2 bound's median about 2^-0.6 to 2^-1.2",
}


def _points(run: RunData) -> List[int]:
    return sorted({r["exp"] for r in run.rows})


def _last(points: List[int]) -> List[int]:
    """The last ``LAST_POINTS`` points after the first (before training)."""
    return points[1:][-LAST_POINTS:] if len(points) > 1 else list(points)


def _median(values) -> Optional[float]:
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def _boot(values: np.ndarray, stat: Callable[[np.ndarray], np.ndarray], seed: int = 0) -> Tuple[float, float]:
    """95% percentile interval of ``stat`` over resamples of the rows (points) of ``values`` (K, ...);
    ``stat`` maps (B, K, ...) to (B,)."""
    K = values.shape[0]
    idx = np.random.default_rng(seed).integers(0, K, size=(BOOTSTRAP, K))
    s = stat(values[idx])
    s = s[np.isfinite(s)]
    if not len(s):
        return None, None
    lo, hi = np.quantile(s, [0.025, 0.975])
    return float(lo), float(hi)


# --- S1 ----------------------------------------------------------------------------------------------

#: the debiased estimator's count of ordered class pairs whose gap its second-order terms move by > 25%
_BARELY = "barely_resolved_pairs"


def _firm(run: RunData, e: int, k: int) -> bool:
    """Task k has a positive ratio at point e and, where the run records it, at least one class pair whose
    gap is firmly resolved (not every resolved ordered pair barely resolved)."""
    ratio = run.value(CDNV_RATIO, e, k)
    if ratio is None or not ratio > 0:
        return False
    barely, resolved = run.value(_BARELY, e, k), run.value(RESOLVED_PAIRS, e, k)
    return barely is None or resolved is None or barely < 2 * resolved


def _s1(run: RunData, points: List[int]) -> dict:
    first, last = (points[0] if points else None), _last(points)
    two_d = 2 * run.feature_dim
    tasks = [k for k in range(run.T) if points and _firm(run, first, k) and all(_firm(run, e, k) for e in last)]
    left_out = [run.tasks[k] for k in range(run.T) if k not in tasks]

    def gm(metric, e, scale=1.0):
        v = [run.value(metric, e, k) for k in tasks]
        v = [x * scale for x in v if x is not None and x > 0]
        return float(np.exp(np.mean(np.log(v)))) if v else None

    traj = [{"exp": e, "index": gm(CDNV_RATIO, e, two_d), "ratio": gm(CDNV_RATIO, e), "dir_cdnv": gm(DIR_CDNV, e),
             "cdnv": gm(CDNV, e)} for e in points]
    out = {"reproduced": None, "index_init": None, "index_end": None, "index_end_ci": [None, None], "fall": None,
           "fall_ci": [None, None], "index_final_point": None, "attributes": [run.tasks[k] for k in tasks],
           "left_out": left_out, "trajectory": traj, "last_points": last, "d": run.feature_dim,
           "thresholds": {"fall": S1_FALL}}
    if not tasks or len(points) < 2:
        return out
    logs = np.log(np.array([[run.value(CDNV_RATIO, e, k) * two_d for k in tasks] for e in last]))   # (K, A)
    i0 = float(np.exp(np.mean(np.log([run.value(CDNV_RATIO, first, k) * two_d for k in tasks]))))
    end = float(np.exp(logs.mean()))
    lo, hi = _boot(logs, lambda b: np.exp(b.mean(axis=(1, 2))))
    out.update(index_init=i0, index_end=end, index_end_ci=[lo, hi], fall=i0 / end,
               fall_ci=[None if hi is None else i0 / hi, None if lo is None else i0 / lo],
               index_final_point=traj[-1]["index"], reproduced=bool(i0 / end >= S1_FALL))
    return out


# --- S2 ----------------------------------------------------------------------------------------------

def _pearson(x, y) -> Optional[float]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _centred_ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis among the finite entries, centred; 0 where not finite."""
    from scipy.stats import rankdata
    ok = np.isfinite(v)
    r = rankdata(np.where(ok, v, np.inf), axis=-1)
    n = ok.sum(-1, keepdims=True)
    return np.where(ok, r - (n + 1) / 2.0, 0.0)


def rank_tracking(err: np.ndarray, bound: np.ndarray, *, permutations: int = S2_PERMUTATIONS, seed: int = 0) -> dict:
    """Whether, within each point of training (row), the attributes (columns) that have larger bounds
    also have larger errors. ``err``, ``bound`` (P, T), NaN where not measured. ``rho``: Pearson of the
    within-row centred ranks, pooled (a within-point Spearman); ``p``: one-sided, bounds permuted among
    each row's measured cells; ``ci``: bootstrap over rows. A common trend along training and any
    function of m alone have no within-row ranks: they cannot pass."""
    ok = np.isfinite(err) & np.isfinite(bound)
    rows = ok.sum(1) >= 2
    out = {"rho": None, "p": None, "ci": [None, None], "points": int(rows.sum()), "cells": int(ok[rows].sum())}
    e, b, ok = np.where(ok, err, np.nan)[rows], np.where(ok, bound, np.nan)[rows], ok[rows]
    if not len(e):
        return out
    re, rb = _centred_ranks(e), _centred_ranks(b)
    den = math.sqrt(float((re ** 2).sum() * (rb ** 2).sum()))
    if den == 0:
        return out
    obs = float((re * rb).sum() / den)
    rng = np.random.default_rng(seed)
    keys = np.where(ok[None], rng.random((permutations,) + ok.shape), np.inf)
    order = keys.argsort(-1, kind="stable")                      # measured cells first, in random order
    home = np.argsort(~ok, -1, kind="stable")                    # measured cells first, in place order
    perm = np.zeros((permutations,) + ok.shape)
    np.put_along_axis(perm, np.broadcast_to(home, perm.shape).copy(), np.take_along_axis(
        np.broadcast_to(rb, perm.shape), order, -1), -1)
    null = (re[None] * perm).sum((1, 2)) / den
    p = float((1 + np.sum(null >= obs - 1e-12)) / (1 + permutations))

    def stat(bs):
        num = (bs[:, :, 0] * bs[:, :, 1]).sum((1, 2))
        d = np.sqrt((bs[:, :, 0] ** 2).sum((1, 2)) * (bs[:, :, 1] ** 2).sum((1, 2)))
        return np.where(d > 0, num / np.where(d > 0, d, 1), np.nan)
    lo, hi = _boot(np.stack([re, rb], axis=1), stat, seed)
    out.update(rho=obs, p=p, ci=[lo, hi])
    return out


def _chance(run: RunData, k: int) -> float:
    """The few-shot error of guessing: 1 - 1/ways (ways capped by the task's classes when known)."""
    ways = run.ways
    classes = None
    try:
        classes = run.geometry()[k].C if run.geometry_rows else None
    except (KeyError, IndexError, OSError):
        classes = None
    if not isinstance(ways, int):
        ways = classes or 2
    return 1.0 - 1.0 / (min(ways, classes) if classes else ways)


def _s2(run: RunData, points: List[int]) -> dict:
    shots = run.shots()
    checked = [m for m in shots if m >= THEOREM_MIN_SHOTS]
    m_check = max(checked) if checked else None
    per, violations, extrapolated_violations, n = [], [], [], 0
    for k in range(run.T):
        by_point = []
        for e in points:
            pts = []
            for m in shots:
                err, bound = run.value(FEWSHOT_ERR, e, k, shots=m), run.value(BOUND, e, k, shots=m)
                if err is None or bound is None:
                    continue
                pts.append((m, err, bound))
                n += 1
                if bound < err:
                    (violations if m >= THEOREM_MIN_SHOTS else extrapolated_violations).append(
                        {"task": run.tasks[k], "exp": e, "shots": m, "error": err, "bound": bound})
            by_point.append({"exp": e, "rho": _pearson([p[1] for p in pts], [p[2] for p in pts])})
        rhos = [q["rho"] for q in by_point if q["rho"] is not None]
        per.append({"task": run.tasks[k], "rho_by_point": by_point, "rho_median": _median(rhos),
                    "rho_min": min(rhos) if rhos else None, "rho_max": max(rhos) if rhos else None})
    all_rhos = [q["rho"] for p in per for q in p["rho_by_point"] if q["rho"] is not None]
    paper_stat = {"median": _median(all_rhos), "min": min(all_rhos) if all_rhos else None,
                  "max": max(all_rhos) if all_rhos else None, "count": len(all_rhos)}
    out = {"reproduced": None, "paper_statistic": paper_stat, "per_attribute": per, "violations": violations,
           "extrapolated_violations": extrapolated_violations, "points": n, "shots_checked": m_check,
           "tracking": {"rho": None, "p": None, "ci": [None, None], "points": 0, "cells": 0},
           "nonvacuous_share": None, "nonvacuous_share_end": None,
           "cells_near_chance": 0,
           "thresholds": {"rank_rho": S2_RANK_RHO, "alpha": S2_ALPHA, "min_shots": THEOREM_MIN_SHOTS,
                          "margin": S2_MARGIN}}
    if m_check is None:
        return out

    def grid(metric, pts):
        return np.array([[np.nan if (v := run.value(metric, e, k, shots=m_check)) is None else v
                          for k in range(run.T)] for e in pts], float)
    err, bound = grid(FEWSHOT_ERR, points), grid(BOUND, points)
    chance = np.array([_chance(run, k) for k in range(run.T)])
    signal = err <= chance[None] - S2_MARGIN
    out["tracking"] = rank_tracking(np.where(signal, err, np.nan), bound)
    out["cells_near_chance"] = int((np.isfinite(err) & ~signal).sum())
    defined = np.isfinite(bound)
    if defined.any():
        out["nonvacuous_share"] = float((bound[defined] < 1).mean())
    end = grid(BOUND, _last(points))
    if np.isfinite(end).any():
        out["nonvacuous_share_end"] = float((end[np.isfinite(end)] < 1).mean())
    t = out["tracking"]
    if t["rho"] is not None:
        out["reproduced"] = bool(not violations and t["p"] <= S2_ALPHA and t["rho"] >= S2_RANK_RHO)
    return out


# --- S3 ----------------------------------------------------------------------------------------------

def _s3(run: RunData, points: List[int]) -> dict:
    last = _last(points)
    d = run.feature_dim
    chance = random_abs_cos(d)["median"]
    pairs, obs_cols, q_cols = [], [], []
    for a in range(run.T):
        for b in range(a + 1, run.T):
            obs = [run.value(AXIS_COS_MEDIAN, e, a, b) for e in last]
            q05 = [run.value(AXIS_COS_NULL_Q05, e, a, b) for e in last]
            if not obs or any(v is None for v in obs):
                continue
            pair = {"names": [run.tasks[a], run.tasks[b]], "median_abs_cos": float(np.mean(obs)),
                    "median_abs_cos_final_point": obs[-1], "log2": math.log2(np.mean(obs)) if np.mean(obs) > 0
                    else None, "tightness": run.value(PROP42_TIGHTNESS, last[-1], a, b),
                    "trajectory": [{"exp": e, "value": v} for e, v in run.series(AXIS_COS_MEDIAN, task=a, task_b=b)],
                    "null_trajectory": [{"exp": e, "value": v}
                                        for e, v in run.series(AXIS_COS_NULL_Q05, task=a, task_b=b)],
                    "null_q05": None, "null_median": None, "null_p_median": None, "ci": list(
                        _boot(np.array(obs), lambda s: s.mean(1))), "beyond_null": None}
            if all(v is not None for v in q05):
                nm = [v for e in last if (v := run.value(AXIS_COS_NULL_MEDIAN, e, a, b)) is not None]
                pair.update(null_q05=float(np.mean(q05)), null_median=float(np.mean(nm)) if nm else None,
                            null_p_median=_median([run.value(AXIS_COS_NULL_P, e, a, b) for e in last]),
                            beyond_null=bool(np.mean(obs) < np.mean(q05)))
                obs_cols.append(obs)
                q_cols.append(q05)
            pairs.append(pair)
    judged = [p for p in pairs if p["beyond_null"] is not None]
    out = {"reproduced": None, "pairs": pairs, "random_median": chance, "d": d, "last_points": last,
           "max_median_abs_cos": max((p["median_abs_cos"] for p in pairs), default=None),
           "worst_over_null": None, "worst_over_null_ci": [None, None],
           "thresholds": {"null_quantile": 0.05, "paper_level": S3_PAPER_LEVEL, "random": chance}}
    if judged and len(judged) == len(pairs):
        o, q = np.array(obs_cols).T, np.array(q_cols).T                                  # (K, pairs)
        out["worst_over_null"] = float(np.max(o.mean(0) / q.mean(0)))
        out["worst_over_null_ci"] = list(_boot(np.stack([o, q], 1), lambda s: np.max(
            s[:, :, 0].mean(1) / s[:, :, 1].mean(1), axis=1)))
        out["reproduced"] = all(p["beyond_null"] for p in pairs)
    return out


def paper_claims(run: RunData) -> dict:
    """S1, S2, S3 (module docstring) on ``run``: each ``reproduced`` (True / False; None when the run
    has not the measurements), the measured numbers with intervals and thresholds, and the paper's
    numbers; plus ``epochs_per_point`` (training.epochs) to put the points on an epoch axis."""
    points = _points(run)
    epochs = run.epochs
    return {"S1": _s1(run, points), "S2": _s2(run, points), "S3": _s3(run, points), "paper": PAPER_NUMBERS,
            "points": points, "last_points": _last(points), "epochs_per_point": epochs, "stream": run.stream}


def _word(ok: Optional[bool]) -> str:
    return {True: "reproduced", False: "not reproduced", None: "not measured"}[ok]


def _ci(lo, hi) -> str:
    return "" if lo is None or hi is None else f" [95% bootstrap interval {lo:.3g}, {hi:.3g}]"


def paper_findings(claims: dict) -> List[str]:
    """One sentence per claim: reproduced or not, with the numbers."""
    s1, s2, s3 = claims["S1"], claims["S2"], claims["S3"]
    k = len(claims.get("last_points") or [])
    out = []
    if s1["fall"] is not None:
        out.append(f"S1 (directional collapse) {_word(s1['reproduced'])}: the anisotropy index (dir-CDNV/CDNV x 2d: "
                   f"how many times the decision axis carries an average direction's variance; 1 for isotropic "
                   f"noise), geometric mean over {len(s1['attributes'])} attributes, fell {s1['fall']:.3g}-fold"
                   f"{_ci(*s1['fall_ci'])} (needs >= {S1_FALL:g}), from {s1['index_init']:.3g} before training to "
                   f"{s1['index_end']:.3g} over the last {k} points." + (
                       f" Left out (no ratio at both ends): {', '.join(s1['left_out'])}." if s1["left_out"] else ""))
    else:
        out.append("S1 (directional collapse) not measured: no attribute has a positive dir-CDNV/CDNV ratio with a "
                   "firmly resolved class pair before training and at the end.")
    t, ps = s2["tracking"], s2["paper_statistic"]
    if s2["points"]:
        paper = (f"the paper's statistic (Pearson over shot counts, per attribute and point) has median "
                 f"{ps['median']:.3g}, range {ps['min']:.3g} to {ps['max']:.3g}" if ps["median"] is not None
                 else "the paper's statistic is undefined (fewer than 3 shot counts)")
        if t["rho"] is not None:
            track = (f"at m = {s2['shots_checked']}, within each point of training the attributes' errors rank as "
                     f"their bounds with rank correlation {t['rho']:.3g}{_ci(*t['ci'])}, one-sided permutation "
                     f"p = {t['p']:.3g} (needs >= {S2_RANK_RHO:g} and p <= {S2_ALPHA:g})")
        else:
            track = (f"the tracking check needs two attributes with errors at least {S2_MARGIN:g} below chance and "
                     f"bounds at one point, at a shot count m >= {THEOREM_MIN_SHOTS}")
        viol = (f"the bound was below the error at {len(s2['violations'])} points with m >= {THEOREM_MIN_SHOTS}"
                if s2["violations"] else f"the bound was never below the error at m >= {THEOREM_MIN_SHOTS}")
        vac = ("" if s2["nonvacuous_share"] is None else
               f"; the bound is below 1 (non-vacuous) at {100 * s2['nonvacuous_share']:.0f}% of the checked points"
               + ("" if s2["nonvacuous_share_end"] is None else
                  f" ({100 * s2['nonvacuous_share_end']:.0f}% over the last {k})"))
        out.append(f"S2 (Theorem 4.1) {_word(s2['reproduced'])}: {track}; {viol}{vac}; {paper}.")
    else:
        out.append("S2 (Theorem 4.1) not measured: no shot count has both a few-shot error and a defined bound.")
    if s3["pairs"] and s3["reproduced"] is not None:
        worst = max(s3["pairs"], key=lambda p: p["median_abs_cos"] / p["null_q05"])
        n_ok = sum(p["beyond_null"] for p in s3["pairs"])
        out.append(f"S3 (near-orthogonality) {_word(s3['reproduced'])}: {n_ok} of {len(s3['pairs'])} attribute pairs "
                   f"are more orthogonal than the permutation null (mean over the last {k} points below the null's "
                   f"5% quantile); closest to the null {' / '.join(worst['names'])}: median |cos| "
                   f"{worst['median_abs_cos']:.3g}{_ci(*worst['ci'])} against the null's 5% quantile "
                   f"{worst['null_q05']:.3g}" + ("" if worst["null_median"] is None else
                   f" (null median {worst['null_median']:.3g})") + f"; random directions in d = "
                   f"{s3['d']}: {s3['random_median']:.3g}, the paper's 2^-3 = {S3_PAPER_LEVEL:.3g} (references).")
    elif s3["pairs"]:
        out.append("S3 (near-orthogonality) not measured: the run has no permutation null of the axes "
                   f"(median |cos| up to {s3['max_median_abs_cos']:.3g}; rerun with this dncsim).")
    else:
        out.append("S3 (near-orthogonality) not measured: fewer than two attributes.")
    return out


# --- over runs (seeds) -------------------------------------------------------------------------------

def _over(values: Sequence[Optional[float]], log: bool = False) -> dict:
    """Mean over runs with a 95% t interval (for ``log``: geometric, the interval on the log scale)."""
    from scipy import stats as sps
    v = np.array([x for x in values if x is not None and (not log or x > 0)], float)
    out = {"values": list(values), "mean": None, "ci": [None, None], "n": int(len(v))}
    if not len(v):
        return out
    u = np.log(v) if log else v
    m = float(u.mean())
    back = np.exp if log else (lambda z: z)
    out["mean"] = float(back(m))
    if len(v) >= 2:
        h = float(sps.t.ppf(0.975, len(v) - 1) * u.std(ddof=1) / math.sqrt(len(v)))
        out["ci"] = [float(back(m - h)), float(back(m + h))]
    return out


def _verdict_over(oks: Sequence[Optional[bool]]) -> dict:
    judged = [o for o in oks if o is not None]
    k, n = sum(judged), len(judged)
    word = ("not measured" if not n else "reproduced in every run" if k == n else
            "not reproduced in any run" if k == 0 else f"reproduced in {k} of {n} runs")
    return {"reproduced": k, "runs": n, "verdict": word, "per_run": list(oks)}


def paper_over_runs(claims: Sequence[dict], labels: Sequence[str]) -> dict:
    """Each claim over several runs (seeds) of one setting, from their :func:`paper_claims`: per run the
    claim's value and verdict, the mean over runs with a 95% t interval, and how many reproduced."""
    s1 = [c["S1"] for c in claims]
    s2 = [c["S2"] for c in claims]
    s3 = [c["S3"] for c in claims]
    names = sorted({tuple(p["names"]) for c in s3 for p in c["pairs"]})
    return {"runs": list(labels), "last_points": LAST_POINTS,
            "S1": {**_verdict_over([c["reproduced"] for c in s1]), "fall": _over([c["fall"] for c in s1], log=True),
                   "index_init": _over([c["index_init"] for c in s1], log=True),
                   "index_end": _over([c["index_end"] for c in s1], log=True)},
            "S2": {**_verdict_over([c["reproduced"] for c in s2]),
                   "rank_rho": _over([c["tracking"]["rho"] for c in s2]),
                   "p": [c["tracking"]["p"] for c in s2],
                   "paper_statistic_median": _over([c["paper_statistic"]["median"] for c in s2]),
                   "nonvacuous_share": _over([c["nonvacuous_share"] for c in s2]),
                   "violations": [len(c["violations"]) for c in s2]},
            "S3": {**_verdict_over([c["reproduced"] for c in s3]),
                   "worst_over_null": _over([c["worst_over_null"] for c in s3], log=True),
                   "pairs": [{"names": list(n),
                              "median_abs_cos": _over([next((p["median_abs_cos"] for p in c["pairs"]
                                                             if tuple(p["names"]) == n), None) for c in s3], log=True),
                              "null_q05": _over([next((p["null_q05"] for p in c["pairs"]
                                                       if tuple(p["names"]) == n), None) for c in s3], log=True),
                              "beyond_null": [next((p["beyond_null"] for p in c["pairs"] if tuple(p["names"]) == n),
                                                   None) for c in s3]} for n in names]}}


def _mean_ci(o: dict) -> str:
    if o["mean"] is None:
        return "n/a"
    return f"{o['mean']:.3g}" + ("" if o["ci"][0] is None else f" [{o['ci'][0]:.3g}, {o['ci'][1]:.3g}]")


def over_runs_findings(agg: dict) -> List[str]:
    """One sentence per claim over runs; values are means over runs [95% t intervals]."""
    n = len(agg["runs"])
    s1, s2, s3 = agg["S1"], agg["S2"], agg["S3"]
    per = ", ".join("n/a" if v is None else f"{v:.3g}" for v in s1["fall"]["values"])
    out = [f"S1 over {n} runs (means over runs [95% t intervals]): {s1['verdict']}; anisotropy index fell "
           f"{_mean_ci(s1['fall'])}-fold (geometric mean; "
           f"per run {per}; needs >= {S1_FALL:g}), from {_mean_ci(s1['index_init'])} to {_mean_ci(s1['index_end'])}."]
    per = ", ".join("n/a" if v is None else f"{v:.3g}" for v in s2["rank_rho"]["values"])
    ps = ", ".join("n/a" if v is None else f"{v:.3g}" for v in s2["p"])
    out.append(f"S2 over {n} runs: {s2['verdict']}; within-point rank correlation of error and bound "
               f"{_mean_ci(s2['rank_rho'])} (per run {per}; p {ps}); the paper's statistic, median per run, "
               f"{_mean_ci(s2['paper_statistic_median'])}; non-vacuous share {_mean_ci(s2['nonvacuous_share'])}; "
               f"bound below the error (m >= {THEOREM_MIN_SHOTS}) at {', '.join(map(str, s2['violations']))} points.")
    pairs = "; ".join(f"{' / '.join(p['names'])} {_mean_ci(p['median_abs_cos'])} vs null 5% "
                      f"{_mean_ci(p['null_q05'])} (beyond the null in {sum(bool(b) for b in p['beyond_null'])} of "
                      f"{sum(b is not None for b in p['beyond_null'])})" for p in s3["pairs"])
    out.append(f"S3 over {n} runs: {s3['verdict']}; worst pair's median |cos| over its null's 5% quantile "
               f"(geometric means) {_mean_ci(s3['worst_over_null'])} (below 1 passes); per pair, mean over runs: "
               f"{pairs}.")
    return out
