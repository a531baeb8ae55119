"""The numbers of a report (``summary.json``), read from a run's metrics table and geometry files.

Every number here is looked up in, or computed only from, the run directory's files (through
``dncsim.rundir``); the report's figures and text show these same numbers. Per-task scalar metrics
(rows with a task and no second task, probe or shot count) are summarised generically, whatever
metric wrote them: ``<metric>_init`` (before training), ``_learned`` (right after the task's
experience) and ``_final``.
"""
from __future__ import annotations

import itertools
import math
from typing import List, Optional

import numpy as np
import torch
from scipy.stats import spearmanr

from dncsim.analysis.bounds import orthogonality_bound
from dncsim.analysis.names import (ACC, ACC_SEEN, AXIS_COS_MAX, AXIS_COS_MEDIAN, BOUND, BWT, FEWSHOT_ERR,
                                   FORGETTING_LAST, FORGETTING_MAX, FORGETTING_NORM, FROZEN, INTERFERENCE,
                                   LABELS_CRAMERS_V, LINEAR, NCC, PROP42_FRAC, PROP42_TIGHTNESS, PROP42_VS_RANDOM,
                                   REFIT, ProbeKey)
from dncsim.analysis.metrics.probe_accuracy import convergence_finding, probe_convergence
from dncsim.analysis.orthogonality import INDEPENDENCE_V_MAX, cross_task_cosines, random_abs_cos
from dncsim.rundir import RunData

__all__ = ["primary_key", "prop42_points", "run_summary", "findings", "MIN_PAIRS_FOR_CORRELATION", "WHEN"]

MIN_PAIRS_FOR_CORRELATION = 4
#: the moments at which per-task scalars are summarised
WHEN = ("init", "learned", "final")


def primary_key(run: RunData) -> ProbeKey:
    """The probe and protocol the summary leads with: linear/frozen when measured (the interference view)."""
    for want in (ProbeKey(LINEAR, FROZEN), ProbeKey(NCC, FROZEN), ProbeKey(LINEAR, REFIT), ProbeKey(NCC, REFIT)):
        if want in run.matrices:
            return want
    return run.probe_keys[0]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def prop42_points(run: RunData, row: int = -1) -> List[dict]:
    """Per pair of independent labelings of the same samples (the pairs with Prop. 4.2 rows), every axis
    pair's observed |cos| and Prop. 4.2 bound at a row."""
    geoms = run.geometry(row)
    same = {(r["task"], r["task_b"]) for r in run.rows if r["metric"] == PROP42_FRAC}
    out = []
    for a, b in sorted(same):
        if a in geoms and b in geoms and geoms[a].mean_axis_var is not None and geoms[b].mean_axis_var is not None:
            cos = cross_task_cosines(geoms[a], geoms[b]).flatten()
            rhs = orthogonality_bound(geoms[a], geoms[b]).flatten()
            out.append({"a": a, "b": b, "cos": cos.tolist(), "bound": rhs.tolist()})
    return out


def _task_summary(run: RunData, k: int, last: int, scalars: List[str]) -> dict:
    L = run.learned_at[k]
    out = {"index": k, "name": run.tasks[k], "learned_at": L, "learned": run.learned(k), "acc_learned": {},
           "final_acc": {}, "forgetting_max": {}, "forgetting_last": {}, "forgetting_norm": {}}
    for key in run.probe_keys:
        out["acc_learned"][str(key)] = None if L is None else run.value(ACC, L, k, key=key)
        out["final_acc"][str(key)] = run.value(ACC, last, k, key=key)
        out["forgetting_max"][str(key)] = run.value(FORGETTING_MAX, last, k, key=key)
        out["forgetting_last"][str(key)] = run.value(FORGETTING_LAST, last, k, key=key)
        out["forgetting_norm"][str(key)] = run.value(FORGETTING_NORM, last, k, key=key)
    for metric in scalars:
        for when, exp in zip(WHEN, (-1, L, last)):
            out[f"{metric}_{when}"] = None if exp is None else run.value(metric, exp, k)
    out["fewshot"] = [{"shots": m, "error": run.value(FEWSHOT_ERR, last, k, shots=m),
                       "bound": run.value(BOUND, last, k, shots=m)} for m in run.shots()]
    return out


def _pair_summary(run: RunData, a: int, b: int, last: int, primary: ProbeKey) -> dict:
    Lb = run.learned_at[b]
    return {"a": a, "b": b, "names": [run.tasks[a], run.tasks[b]],
            "axis_cos_median_final": run.value(AXIS_COS_MEDIAN, last, a, b),
            "axis_cos_max_final": run.value(AXIS_COS_MAX, last, a, b),
            "axis_cos_median_when_b_learned": None if Lb is None else run.value(AXIS_COS_MEDIAN, Lb, a, b),
            "prop42_frac_final": run.value(PROP42_FRAC, last, a, b),
            "interference": (run.value(INTERFERENCE, Lb, a, b, key=primary)
                             if primary.protocol == FROZEN and Lb is not None else None)}


def _prop42(run: RunData, last: int, n_axis: int, under: int) -> dict:
    """Prop. 4.2 per pair of tasks labelling the same samples: independence, and for independent pairs
    the tightness of the bound along the stream (the share under it is 1 by construction on exactly
    balanced independent labelings, so it is kept as a check, not reported as a finding)."""
    same = sorted({(r["task"], r["task_b"]) for r in run.rows if r["metric"] == LABELS_CRAMERS_V}
                  | {(r["task"], r["task_b"]) for r in run.rows if r["metric"] == PROP42_FRAC})
    pairs, dependent = [], []
    for a, b in same:
        v = run.value(LABELS_CRAMERS_V, last, a, b)
        entry = {"a": a, "b": b, "names": [run.tasks[a], run.tasks[b]], "cramers_v": v}
        if run.value(PROP42_FRAC, last, a, b) is None:
            entry["reason"] = (f"the labelings are dependent (Cramer's V = {v:.2f} > {INDEPENDENCE_V_MAX}); "
                               "Prop. 4.2 assumes independent labelings" if v is not None else
                               "not measured after the last experience")
            dependent.append(entry)
            continue
        entry.update({
            "frac_under_final": run.value(PROP42_FRAC, last, a, b),
            "tightness_final": run.value(PROP42_TIGHTNESS, last, a, b),
            "bound_vs_random_final": run.value(PROP42_VS_RANDOM, last, a, b),
            "tightness": [{"exp": e, "value": x} for e, x in run.series(PROP42_TIGHTNESS, task=a, task_b=b)],
            "bound_vs_random": [{"exp": e, "value": x} for e, x in run.series(PROP42_VS_RANDOM, task=a, task_b=b)]})
        pairs.append(entry)
    tight = [p["tightness_final"] for p in pairs if p["tightness_final"] is not None]
    vs_random = [p["bound_vs_random_final"] for p in pairs if p["bound_vs_random_final"] is not None]
    return {"axis_pairs": n_axis, "under_bound": int(under), "fraction": (under / n_axis) if n_axis else None,
            "independence_v_max": INDEPENDENCE_V_MAX, "pairs": pairs, "dependent": dependent,
            "median_tightness_final": float(np.median(tight)) if tight else None,
            "tightness_range_final": [float(min(tight)), float(max(tight))] if tight else None,
            "median_bound_vs_random_final": float(np.median(vs_random)) if vs_random else None}


def _mean(values) -> Optional[float]:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _geomean(values) -> Optional[float]:
    """Geometric mean of positive values (variabilities span orders of magnitude across tasks)."""
    v = [x for x in values if x is not None and x > 0]
    return float(np.exp(np.mean(np.log(v)))) if v else None


def _spearman(x, y) -> Optional[dict]:
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    if len(pairs) < MIN_PAIRS_FOR_CORRELATION:
        return {"n": len(pairs), "rho": None, "p": None}
    xs, ys = zip(*pairs)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"n": len(pairs), "rho": None, "p": None}
    res = spearmanr(xs, ys)
    return {"n": len(pairs), "rho": float(res.statistic), "p": float(res.pvalue)}


def run_summary(run: RunData, points: Optional[List[dict]] = None) -> dict:
    """Everything ``summary.json`` holds for one run (see docs, Reading a report); ``points``: the
    :func:`prop42_points` of the last row when the caller already has them."""
    last = run.last
    primary = primary_key(run)
    scalars = run.task_scalars()
    tasks = [_task_summary(run, k, last, scalars) for k in range(run.T)]
    pairs = [_pair_summary(run, a, b, last, primary) for a, b in itertools.combinations(range(run.T), 2)]
    d = run.feature_dim
    points = prop42_points(run) if points is None else points
    n_axis = sum(len(p["cos"]) for p in points)
    under = sum(sum(c <= r for c, r in zip(p["cos"], p["bound"])) for p in points)
    inputs = run.training_inputs
    unlearned = [t["name"] for t in tasks if t["learned"] is False]
    summary = {
        "run": {"name": run.name, "path": str(run.path), "status": run.manifest.get("status"),
                "error": run.manifest.get("error"),
                "source": run.source, "stream": run.stream, "tasks": run.tasks, "objective": run.objective,
                "experiences": run.experiences, "inputs_differ": inputs.get("inputs_differ"),
                "experience_inputs": inputs.get("experiences", []),
                "strategy": run.strategy, "backbone": run.backbone, "seed": run.seed,
                "device": run.manifest.get("device"), "versions": run.manifest.get("versions"),
                "started": run.manifest.get("started"), "finished": run.manifest.get("finished"),
                "duration_s": run.manifest.get("duration_s"), "experiences_done": run.manifest.get("experiences_done"),
                "feature_dim": d},
        "primary": {"probe": primary.probe, "protocol": primary.protocol, "key": str(primary)},
        "learned": {"learned": sum(t["learned"] is True for t in tasks), "not_learned": unlearned,
                    "undecided": [t["name"] for t in tasks if t["learned"] is None]},
        "acc_seen": {probe: [{"exp": e, "value": v} for e, v in run.series(ACC_SEEN, probe=probe, protocol=REFIT)]
                     for probe in (NCC, LINEAR) if run.series(ACC_SEEN, probe=probe, protocol=REFIT)},
        "task_scalars": scalars,
        "tasks": tasks,
        "stream": {
            "bwt": {str(key): run.value(BWT, last, key=key) for key in run.probe_keys},
            "geomean_dir_cdnv_init": _geomean(t.get("dir_cdnv_init") for t in tasks),
            "geomean_dir_cdnv_final": _geomean(t.get("dir_cdnv_final") for t in tasks),
            "geomean_cdnv_init": _geomean(t.get("cdnv_init") for t in tasks),
            "geomean_cdnv_final": _geomean(t.get("cdnv_final") for t in tasks),
            "mean_final_acc": _mean(t["final_acc"].get(str(primary)) for t in tasks if t["learned"] is not False),
            "mean_forgetting": _mean(t["forgetting_max"].get(str(primary)) for t in tasks
                                     if t["learned"] is not False)},
        "pairs": pairs,
        "random_abs_cos": random_abs_cos(d),
        "prop42": _prop42(run, last, n_axis, under),
        "correlations": {
            "overlap_vs_interference": _spearman([p["axis_cos_median_when_b_learned"] for p in pairs],
                                                 [p["interference"] for p in pairs]),
            "dir_cdnv_learned_vs_forgetting": _spearman(
                [t.get("dir_cdnv_learned") for t in tasks if t["learned"] is not False],
                [t["forgetting_max"].get(str(primary)) for t in tasks if t["learned"] is not False])},
    }
    summary["linear_probe"] = probe_convergence(run.rows, run.learned_at)
    summary["findings"] = findings(summary)
    return _jsonable(summary)


def _learned_findings(summary: dict) -> List[str]:
    out = []
    run, learned = summary["run"], summary["learned"]
    if run.get("inputs_differ") is False:
        out.append("Every experience trained on the same inputs (the stream said so with allow_same_inputs): "
                   "an objective that ignores labels saw one data set several times, not a sequence of tasks.")
    note = convergence_finding(summary.get("linear_probe"))
    if note:
        out.append(note)
    if learned["not_learned"]:
        n, total = len(learned["not_learned"]), len(summary["tasks"]) - len(learned["undecided"])
        out.append(f"{n} of {total} tasks were not learned (probe accuracy right after their experience within the "
                   f"margin of chance): {', '.join(learned['not_learned'])}; their forgetting measures nothing.")
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, torch.Tensor)):
        obj = float(obj)
    if isinstance(obj, np.integer):
        obj = int(obj)
    return _clean(obj)


def _change(before, after) -> str:
    if before is None or after is None or before <= 0 or after <= 0:
        return "could not be compared"
    factor = before / after
    return f"fell {factor:.1f}-fold" if factor >= 1 else f"rose {1 / factor:.1f}-fold"


def findings(summary: dict) -> List[str]:
    """A few generated sentences with the numbers (used by every report format)."""
    st, out = summary["stream"], _learned_findings(summary)
    if st["geomean_dir_cdnv_init"] is not None and st["geomean_dir_cdnv_final"] is not None:
        out.append(f"Directional CDNV (geometric mean over tasks) "
                   f"{_change(st['geomean_dir_cdnv_init'], st['geomean_dir_cdnv_final'])} over the stream, from "
                   f"{st['geomean_dir_cdnv_init']:.3g} before training to {st['geomean_dir_cdnv_final']:.3g}; "
                   f"CDNV {_change(st['geomean_cdnv_init'], st['geomean_cdnv_final'])}, from "
                   f"{st['geomean_cdnv_init']:.3g} to {st['geomean_cdnv_final']:.3g}.")
    probe, proto = summary["primary"]["probe"], summary["primary"]["protocol"]
    inter = [p for p in summary["pairs"] if p["interference"] is not None]
    if inter:
        worst = max(inter, key=lambda p: p["interference"])
        a, b = worst["names"]
        if worst["interference"] > 0:
            out.append(f"Learning '{b}' interfered most with '{a}': its {probe}-probe accuracy ({proto} protocol) "
                       f"dropped by {worst['interference']:.3f} while '{b}' was learned.")
        else:
            out.append("No task's frozen-probe accuracy dropped while a later task was learned.")
    elif len(summary["tasks"]) < 2:
        out.append("One task: there are no task pairs, so no orthogonality or interference.")
    c = summary["correlations"]["overlap_vs_interference"]
    if c and c["rho"] is not None:
        verb = "went together" if c["rho"] > 0.3 else ("went in opposite directions" if c["rho"] < -0.3
                                                       else "were unrelated")
        out.append(f"Axis overlap (median |cos| when the later task was learned) and interference {verb}: "
                   f"Spearman rho = {c['rho']:.2f} over {c['n']} task pairs (p = {c['p']:.2g}).")
    elif c and c["n"] >= 1:
        out.append(f"Too few task pairs ({c['n']}) to relate axis overlap to interference "
                   f"(needs {MIN_PAIRS_FOR_CORRELATION}).")
    out.extend(_prop42_findings(summary["prop42"]))
    return out


def _prop42_findings(p42: dict) -> List[str]:
    out = []
    if p42["median_tightness_final"] is not None:
        lo, hi = p42["tightness_range_final"]
        spread = "" if len(p42["pairs"]) == 1 else f" (from {lo:.3g} to {hi:.3g} across {len(p42['pairs'])} pairs)"
        rel = p42["median_bound_vs_random_final"]
        chance = ("" if rel is None else
                  f"; the bound itself is {rel:.3g} times the median |cos| of random directions, so it "
                  + ("forces more orthogonality than chance" if rel < 1 else "is no stronger than chance"))
        med = p42["median_tightness_final"]
        out.append(f"Prop. 4.2's bound on |cos| between independent tasks' axes was {med:.3g} "
                   f"times the observed median |cos| after the last experience{spread}{chance}. (On exactly "
                   f"balanced independent labelings the inequality holds for any features; its slack is the "
                   f"measurement.)")
    if p42["dependent"]:
        names = ", ".join(f"{p['names'][0]} / {p['names'][1]} (V = {p['cramers_v']:.2f})" for p in p42["dependent"]
                          if p["cramers_v"] is not None)
        out.append(f"{len(p42['dependent'])} pair(s) of tasks label the same samples dependently and are left out of "
                   f"the Prop. 4.2 check: {names}.")
    return out
