"""The paper's three claims (Luthra, Salunkhe, Galanti 2026), checked on one ``joint``-stream run (``RunData``).

Levels are fixed constants:

* **S1**: geometric-mean dir-CDNV / CDNV falls at least ``S1_FALL``-fold and ends at most 1 / ``S1_GAP``.
* **S2**: the bound is at least the few-shot NCC error wherever defined, and per attribute the Pearson
  correlation over (m, point) is at least ``S2_RHO``.
* **S3**: at the end every attribute pair has median |cos| at most ``S3_MAX`` and below
  ``S3_RANDOM_FACTOR`` x random.

Definitions: docs, Methods, The paper check.
"""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from dncsim.analysis.bounds import THEOREM_MIN_SHOTS
from dncsim.analysis.names import AXIS_COS_MEDIAN, BOUND, CDNV, CDNV_RATIO, DIR_CDNV, FEWSHOT_ERR, PROP42_TIGHTNESS
from dncsim.analysis.orthogonality import random_abs_cos
from dncsim.rundir import RunData

__all__ = ["paper_claims", "paper_findings", "S1_FALL", "S1_GAP", "S2_RHO", "S3_MAX", "S3_RANDOM_FACTOR",
           "PAPER_NUMBERS"]

S1_FALL = 4.0
S1_GAP = 8.0
S2_RHO = 0.9
S3_MAX = 2.0 ** -3
S3_RANDOM_FACTOR = 2.0

#: what the paper reports, as the report quotes it (documentation: Methods, The paper check)
PAPER_NUMBERS = {
    "S1": "training from scratch (SimCLR, VICReg, DINO, MAE): dir-CDNV falls from about 2^-1 to 2^-5 while "
          "CDNV stays around 2^1 to 2^3",
    "S2": "pretrained MAE on mini-ImageNet: Pearson rho(error, bound) = 0.99 across shot counts; the bound "
          "is above the error at every m",
    "S3": "synthetic multitask, SimCLR ResNet-18 after 1000 epochs: median |cos| color-shape and color-size "
          "about 2^-5, shape-size about 2^-3; the Prop. 4.2 bound's median about 2^-0.6 to 2^-1.2",
}


def _geomean(values) -> Optional[float]:
    v = [x for x in values if x is not None and x > 0]
    return float(np.exp(np.mean(np.log(v)))) if v else None


def _points(run: RunData) -> List[int]:
    return sorted({r["exp"] for r in run.rows})


def _s1(run: RunData, points: List[int]) -> dict:
    first, last = points[0], points[-1]
    tasks = [k for k in range(run.T)
             if run.value(CDNV_RATIO, first, k) is not None and run.value(CDNV_RATIO, last, k) is not None]
    left_out = [run.tasks[k] for k in range(run.T) if k not in tasks]
    traj = [{"exp": e, "ratio": _geomean(run.value(CDNV_RATIO, e, k) for k in tasks),
             "dir_cdnv": _geomean(run.value(DIR_CDNV, e, k) for k in tasks),
             "cdnv": _geomean(run.value(CDNV, e, k) for k in tasks)} for e in points]
    r0, r1 = traj[0]["ratio"], traj[-1]["ratio"]
    fall = None if not (r0 and r1) else r0 / r1
    gap = None if not r1 else 1.0 / r1
    ok = None if fall is None else bool(fall >= S1_FALL and gap >= S1_GAP)
    return {"reproduced": ok, "fall": fall, "gap_final": gap, "ratio_init": r0, "ratio_final": r1,
            "attributes": [run.tasks[k] for k in tasks], "left_out": left_out, "trajectory": traj,
            "thresholds": {"fall": S1_FALL, "gap": S1_GAP}}


def _pearson(pts) -> Optional[float]:
    errs, bounds = np.array([p[2] for p in pts]), np.array([p[3] for p in pts])
    if len(pts) < 3 or np.ptp(errs) == 0 or np.ptp(bounds) == 0:
        return None
    return float(np.corrcoef(errs, bounds)[0, 1])


def _s2(run: RunData, points: List[int]) -> dict:
    per, violations = [], []
    for k in range(run.T):
        pts = []
        for e in points:
            for m in run.shots():
                err, bound = run.value(FEWSHOT_ERR, e, k, shots=m), run.value(BOUND, e, k, shots=m)
                if err is not None and bound is not None:
                    pts.append((e, m, err, bound))
                    if bound < err:
                        violations.append({"task": run.tasks[k], "exp": e, "shots": m, "error": err,
                                           "bound": bound})
        errs, bounds = np.array([p[2] for p in pts]), np.array([p[3] for p in pts])
        per.append({"task": run.tasks[k], "points": len(pts), "rho": _pearson(pts),
                    "rho_in_range": _pearson([p for p in pts if p[1] >= THEOREM_MIN_SHOTS]),
                    "rho_by_point": [{"exp": e, "rho": _pearson([p for p in pts if p[0] == e])} for e in points],
                    "min_bound_over_error": (float(np.min(bounds / np.maximum(errs, 1e-12))) if pts else None),
                    "shots": sorted({p[1] for p in pts})})
    for p in per:
        by_point = [q["rho"] for q in p["rho_by_point"] if q["rho"] is not None]
        p["rho_per_point_min"] = min(by_point) if by_point else None
    rhos = [p["rho"] for p in per]
    defined = all(r is not None for r in rhos) and bool(per)
    ok = None if not defined else bool(not violations and min(rhos) >= S2_RHO)
    return {"reproduced": ok, "per_attribute": per, "violations": violations,
            "min_rho": min(rhos) if defined else None, "points": sum(p["points"] for p in per),
            "thresholds": {"rho": S2_RHO}}


def _s3(run: RunData, points: List[int]) -> dict:
    last = points[-1]
    d = run.feature_dim
    chance = random_abs_cos(d)["median"]
    pairs = []
    for a in range(run.T):
        for b in range(a + 1, run.T):
            cos = run.value(AXIS_COS_MEDIAN, last, a, b)
            if cos is None:
                continue
            pairs.append({"names": [run.tasks[a], run.tasks[b]], "median_abs_cos": cos,
                          "log2": math.log2(cos) if cos > 0 else None,
                          "tightness": run.value(PROP42_TIGHTNESS, last, a, b),
                          "trajectory": [{"exp": e, "value": v} for e, v in run.series(AXIS_COS_MEDIAN, task=a,
                                                                                          task_b=b)],
                          "ok": bool(cos <= S3_MAX and cos < S3_RANDOM_FACTOR * chance)})
    ok = None if not pairs else all(p["ok"] for p in pairs)
    return {"reproduced": ok, "pairs": pairs, "random_median": chance, "d": d,
            "max_median_abs_cos": max((p["median_abs_cos"] for p in pairs), default=None),
            "thresholds": {"max": S3_MAX, "random_factor": S3_RANDOM_FACTOR,
                           "limit": min(S3_MAX, S3_RANDOM_FACTOR * chance)}}


def paper_claims(run: RunData) -> dict:
    """S1, S2, S3 (module docstring) on ``run``: each ``reproduced`` (True / False; None when the run
    has not the measurements), the measured numbers and thresholds, and the paper's numbers; plus
    ``epochs_per_point`` (training.epochs) to put the points on an epoch axis."""
    points = _points(run)
    epochs = int((run.config.get("training") or {}).get("epochs", 1))
    return {"S1": _s1(run, points), "S2": _s2(run, points), "S3": _s3(run, points), "paper": PAPER_NUMBERS,
            "points": points, "epochs_per_point": epochs, "stream": run.stream}


def _word(ok: Optional[bool]) -> str:
    return {True: "reproduced", False: "not reproduced", None: "not measured"}[ok]


def paper_findings(claims: dict) -> List[str]:
    """One sentence per claim: reproduced or not, with the numbers."""
    s1, s2, s3 = claims["S1"], claims["S2"], claims["S3"]
    out = []
    if s1["fall"] is not None:
        out.append(f"S1 (directional collapse) {_word(s1['reproduced'])}: the geometric-mean dir-CDNV/CDNV ratio "
                   f"over {len(s1['attributes'])} attributes fell {s1['fall']:.3g}-fold (needs >= {S1_FALL:g}), from "
                   f"{s1['ratio_init']:.3g} to {s1['ratio_final']:.3g}, ending {s1['gap_final']:.3g}x below CDNV "
                   f"(needs >= {S1_GAP:g})." + (f" Left out (no ratio at both ends): {', '.join(s1['left_out'])}."
                                               if s1["left_out"] else ""))
    else:
        out.append("S1 (directional collapse) not measured: no attribute has a dir-CDNV/CDNV ratio before training "
                   "and at the end.")
    if s2["points"]:
        rhos = ", ".join(f"{p['task']} {p['rho']:.3f}" if p["rho"] is not None else f"{p['task']} n/a"
                         for p in s2["per_attribute"])
        viol = (f"the bound was below the measured error at {len(s2['violations'])} of {s2['points']} points"
                if s2["violations"] else f"the bound was above the measured error at all {s2['points']} points")
        inr = ", ".join(f"{p['task']} {p['rho_in_range']:.3f}" if p["rho_in_range"] is not None
                        else f"{p['task']} n/a" for p in s2["per_attribute"])
        per_point = [p["rho_per_point_min"] for p in s2["per_attribute"] if p["rho_per_point_min"] is not None]
        across = (f" Across shot counts at each point separately (the paper's own procedure, one representation "
                  f"at a time) the smallest rho was {min(per_point):.3f}." if per_point else "")
        out.append(f"S2 (Theorem 4.1) {_word(s2['reproduced'])}: {viol}; Pearson rho(bound, error) over shot counts "
                   f"and points of training: {rhos} (needs >= {S2_RHO:g} for every attribute; over m >= "
                   f"{THEOREM_MIN_SHOTS} only: {inr}).{across}")
    else:
        out.append("S2 (Theorem 4.1) not measured: no shot count has both a few-shot error and a defined bound.")
    if s3["pairs"]:
        worst = max(s3["pairs"], key=lambda p: p["median_abs_cos"])
        lim = s3["thresholds"]["limit"]
        out.append(f"S3 (near-orthogonality) {_word(s3['reproduced'])}: median |cos| between attributes' axes at the "
                   f"end ranged from {min(p['median_abs_cos'] for p in s3['pairs']):.3g} to "
                   f"{worst['median_abs_cos']:.3g} ({' / '.join(worst['names'])}), against the limit {lim:.3g} "
                   f"(2^-3 and {S3_RANDOM_FACTOR:g}x the random level {s3['random_median']:.3g} in d = {s3['d']}).")
    else:
        out.append("S3 (near-orthogonality) not measured: fewer than two attributes.")
    return out
