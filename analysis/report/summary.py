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
from dncsim.analysis.names import (ACC, ACC_SEEN, AXIS_BEYOND_NULL, AXIS_COS_MAX, AXIS_COS_MEDIAN,
                                   AXIS_COS_NULL_MEDIAN, AXIS_COS_NULL_P, AXIS_COS_NULL_Q05, BARELY_RESOLVED_PAIRS,
                                   BOUND, BWT, FEWSHOT_ERR, FORGETTING_LAST, FORGETTING_MAX, FORGETTING_NORM, FROZEN,
                                   INTERFERENCE, LABELS_CRAMERS_V, LINEAR, NCC, NEGATIVE_NUMERATOR_PAIRS,
                                   PROP42_FRAC, PROP42_TIGHTNESS, PROP42_VS_RANDOM, REFIT, RESOLVED_PAIRS, ProbeKey)
from dncsim.analysis.metrics.probe_accuracy import convergence_finding, probe_convergence
from dncsim.analysis.orthogonality import INDEPENDENCE_V_MAX, cross_task_cosines, random_abs_cos
from dncsim.rundir import RunData

__all__ = ["primary_key", "prop42_points", "run_summary", "findings", "undefined_reason", "task_set",
           "MIN_PAIRS_FOR_CORRELATION", "WHEN", "GEOMETRY_METRICS", "STORY_DROP"]

MIN_PAIRS_FOR_CORRELATION = 4
#: the debiased estimator's regime flags, summarised per task after the last experience
REGIME_FLAGS = (BARELY_RESOLVED_PAIRS, NEGATIVE_NUMERATOR_PAIRS)
#: the moments at which per-task scalars are summarised
WHEN = ("init", "learned", "final")
#: the per-task geometry scalars whose undefined values are named with a reason
GEOMETRY_METRICS = ("dir_cdnv", "cdnv", "cdnv_ratio")
#: an accuracy change (fraction) the story calls a fall; smaller changes count as kept
STORY_DROP = 0.1


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
    out["acc_init"], out["gain_over_init"] = {}, {}
    for key in run.probe_keys:
        init = run.value(ACC, -1, k, key=ProbeKey(key.probe, REFIT))   # a frozen probe is first fitted when learned
        out["acc_init"][str(key)] = init
        learned = out["acc_learned"][str(key)]
        out["gain_over_init"][str(key)] = None if init is None or learned is None else learned - init
    for metric in scalars:
        for when, exp in zip(WHEN, (-1, L, last)):
            out[f"{metric}_{when}"] = None if exp is None else run.value(metric, exp, k)
    out["undefined"] = {f"{metric}_{when}": undefined_reason(run, metric, exp, k)
                        for metric in GEOMETRY_METRICS if metric in scalars
                        for when, exp in zip(WHEN, (-1, L, last))
                        if exp is not None and out[f"{metric}_{when}"] is None}
    grouped: dict = {}
    for key, why in out["undefined"].items():
        grouped.setdefault(why, []).append(key)
    out["undefined_note"] = "; ".join(f"{', '.join(keys)}: {why}" for why, keys in grouped.items()) or None
    out["fewshot"] = [{"shots": m, "error": run.value(FEWSHOT_ERR, last, k, shots=m),
                       "bound": run.value(BOUND, last, k, shots=m)} for m in run.shots()]
    missing = [f["shots"] for f in out["fewshot"] if f["error"] is not None and f["bound"] is None]
    out["bound_undefined"] = (None if not missing else
                              f"bound undefined at m = {', '.join(map(str, missing))}: some class pair's margin is "
                              "not positive (its classes overlap more than their spread allows), so Theorem 4.1 "
                              "gives no bound")
    out["regime_final"] = {m: run.value(m, last, k) for m in REGIME_FLAGS if run.value(m, last, k) is not None}
    return out


def regime_notes(tasks: List[dict]) -> List[str]:
    """One sentence per task whose dir-CDNV after the last experience comes from pairs in a flagged regime of
    the debiased estimator (``regime_final``)."""
    out = []
    for t in tasks:
        flags = t.get("regime_final") or {}
        barely, negative = flags.get(BARELY_RESOLVED_PAIRS) or 0, flags.get(NEGATIVE_NUMERATOR_PAIRS) or 0
        parts = []
        if barely:
            parts.append(f"gap barely resolved for {int(barely)} ordered class pair(s) (the second-order terms "
                         "move them by more than 25%)")
        if negative:
            parts.append(f"axis variance below the noise floor for {int(negative)} ordered class pair(s) "
                         "(a negative estimate)")
        if parts:
            out.append(f"Note: dir-CDNV of task '{t['name']}' after the last experience: {'; '.join(parts)}; "
                       "read it with its interval (docs, Methods, Estimators).")
    return out


def undefined_reason(run: RunData, metric: str, exp: int, k: int) -> str:
    """Why a per-task geometry value is missing at a row: no class pair resolved (debiased, crossfit), or not
    measured."""
    if run.value(RESOLVED_PAIRS, exp, k) == 0:
        return ("no class pair resolved: every pair's bias-corrected squared mean gap is within the noise of "
                "the class means (debiased and crossfit estimators)")
    if any(r["exp"] == exp for r in run.rows):
        return "not measured at this row"
    return "the row was not measured (the run stopped before it)"


def task_set(tasks: List[dict], keys) -> dict:
    """The tasks with a positive value for every ``keys`` entry (``<metric>_<when>``), the others with the
    reason: ``{"tasks": [names], "n": n, "left_out": [{"task", "reason"}]}``."""
    inside, left = [], []
    for t in tasks:
        bad = [key for key in keys if t.get(key) is None or t[key] <= 0]
        if not bad:
            inside.append(t["name"])
            continue
        why: dict = {}
        for key in bad:
            metric, _, when = key.rpartition("_")
            why.setdefault((when, t.get("undefined", {}).get(key) or "not positive"), []).append(metric)
        reasons = [f"{' and '.join(ms)} {'before training' if when == 'init' else 'after the last experience'} "
                   f"undefined ({r})" for (when, r), ms in why.items()]
        left.append({"task": t["name"], "reason": "; ".join(dict.fromkeys(reasons))})
    return {"tasks": inside, "n": len(inside), "left_out": left}


def _pair_summary(run: RunData, a: int, b: int, last: int, primary: ProbeKey) -> dict:
    Lb = run.learned_at[b]
    beyond = run.value(AXIS_BEYOND_NULL, last, a, b)
    return {"a": a, "b": b, "names": [run.tasks[a], run.tasks[b]],
            "axis_cos_median_final": run.value(AXIS_COS_MEDIAN, last, a, b),
            "axis_cos_max_final": run.value(AXIS_COS_MAX, last, a, b),
            "axis_cos_median_when_b_learned": None if Lb is None else run.value(AXIS_COS_MEDIAN, Lb, a, b),
            "axis_cos_null_median_final": run.value(AXIS_COS_NULL_MEDIAN, last, a, b),
            "axis_cos_null_q05_final": run.value(AXIS_COS_NULL_Q05, last, a, b),
            "axis_cos_null_p_final": run.value(AXIS_COS_NULL_P, last, a, b),
            "beyond_null_final": None if beyond is None else bool(beyond),
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
    geo = (task_set(tasks, [f"{m}_{w}" for m in ("dir_cdnv", "cdnv") for w in ("init", "final")])
           if "dir_cdnv" in scalars else {"tasks": [], "n": 0, "left_out": []})
    same = [t for t in tasks if t["name"] in geo["tasks"]]
    learned_tasks = [t for t in tasks if t["learned"] is not False]
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
                "feature_dim": d,
                "estimator": run.estimator},
        "primary": {"probe": primary.probe, "protocol": primary.protocol, "key": str(primary)},
        "learned": {"learned": sum(t["learned"] is True for t in tasks), "not_learned": unlearned,
                    "undecided": [t["name"] for t in tasks if t["learned"] is None]},
        "acc_seen": {probe: [{"exp": e, "value": v} for e, v in run.series(ACC_SEEN, probe=probe, protocol=REFIT)]
                     for probe in (NCC, LINEAR) if run.series(ACC_SEEN, probe=probe, protocol=REFIT)},
        "task_scalars": scalars,
        "tasks": tasks,
        "stream": {
            "bwt": {str(key): run.value(BWT, last, key=key) for key in run.probe_keys},
            "geometry_task_set": geo,
            "geomean_dir_cdnv_init": _geomean(t.get("dir_cdnv_init") for t in same),
            "geomean_dir_cdnv_final": _geomean(t.get("dir_cdnv_final") for t in same),
            "geomean_cdnv_init": _geomean(t.get("cdnv_init") for t in same),
            "geomean_cdnv_final": _geomean(t.get("cdnv_final") for t in same),
            "accuracy_task_set": {"tasks": [t["name"] for t in learned_tasks
                                            if t["final_acc"].get(str(primary)) is not None],
                                  "rule": "tasks not judged unlearned, with a final accuracy"},
            "mean_final_acc": _mean(t["final_acc"].get(str(primary)) for t in learned_tasks),
            "mean_forgetting": _mean(t["forgetting_max"].get(str(primary)) for t in learned_tasks)},
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


def _story_keys(keys) -> tuple:
    """(frozen key, refit key) of one probe (linear first), either None when not measured."""
    for probe in (LINEAR, NCC):
        frozen, refit = str(ProbeKey(probe, FROZEN)), str(ProbeKey(probe, REFIT))
        if frozen in keys or refit in keys:
            return (frozen if frozen in keys else None), (refit if refit in keys else None)
    return None, None


def task_story(t: dict, experiences: int) -> str:
    """One sentence on what happened to a task: learned or not, the gain over the untrained backbone,
    and whether its frozen probe fell while a refit probe kept reading it (the axis moved) or both fell
    (the information was lost)."""
    frozen, refit = _story_keys(t["final_acc"])
    lead = refit or frozen
    name, L = t["name"], t["learned_at"]
    init = t["acc_init"].get(lead)
    probe = lead.split("/")[0]
    if t["learned"] is None or L is None:
        return (f"'{name}' was only watched: {probe}-probe accuracy (refit) {_num(init)} before training, "
                f"{_num(t['final_acc'].get(lead))} at the end.")
    at_l = t["acc_learned"].get(lead)
    gain = t["gain_over_init"].get(lead)
    head = (f"'{name}' (experience {L}): {probe}-probe accuracy {_num(at_l)} when learned, "
            f"{_signed(gain)} over the untrained backbone's {_num(init)}")
    if t["learned"] is False:
        return f"'{name}' was not learned (experience {L}): {probe}-probe accuracy {_num(at_l)} right after it, " \
               f"{_num(init)} before training; its later numbers measure nothing."
    if gain is not None and gain < STORY_DROP / 2:
        head += " (already readable before training)"
    if L >= experiences - 1:
        return head + "; learned last, so nothing came after it."
    fl, ff = (t["acc_learned"].get(frozen), t["final_acc"].get(frozen)) if frozen else (None, None)
    rl, rf = (t["acc_learned"].get(refit), t["final_acc"].get(refit)) if refit else (None, None)
    frozen_fell = fl is not None and ff is not None and fl - ff >= STORY_DROP
    refit_fell = rl is not None and rf is not None and rl - rf >= STORY_DROP
    if frozen_fell and rf is not None and not refit_fell:
        return head + (f"; its frozen probe then fell {_num(fl)} \u2192 {_num(ff)} while a refit probe still reads "
                       f"{_num(rf)}: the information stays, the axis moved.")
    if refit_fell:
        return head + (f"; by the end a refit probe reads only {_num(rf)} (from {_num(rl)})"
                       + (f" and the frozen one {_num(ff)}" if ff is not None else "")
                       + ": the information was lost.")
    if frozen_fell:
        return head + f"; its frozen probe then fell {_num(fl)} \u2192 {_num(ff)} (no refit probe measured)."
    kept = ", ".join(f"{p} {_num(v)}" for p, v in (("frozen", ff), ("refit", rf)) if v is not None)
    return head + f"; kept to the end ({kept})."


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _signed(v) -> str:
    return "n/a" if v is None else f"{0.0 if abs(v) < 0.005 else v:+.2f}"


def _geometry_finding(st: dict, total: int) -> List[str]:
    ts = st["geometry_task_set"]
    left = "; ".join(f"{x['task']}: {x['reason']}" for x in ts["left_out"])
    if st["geomean_dir_cdnv_init"] is None or st["geomean_dir_cdnv_final"] is None:
        return [f"No task has directional CDNV and CDNV defined both before training and after the last experience, "
                f"so there is no change over the stream to report ({left})."] if left else []
    over = ("all " + str(total) + " tasks" if ts["n"] == total else
            f"the {ts['n']} of {total} tasks defined both before and after training: {', '.join(ts['tasks'])}")
    out = (f"Directional CDNV (geometric mean over {over}) "
           f"{_change(st['geomean_dir_cdnv_init'], st['geomean_dir_cdnv_final'])} over the stream, from "
           f"{st['geomean_dir_cdnv_init']:.3g} before training to {st['geomean_dir_cdnv_final']:.3g}; "
           f"CDNV {_change(st['geomean_cdnv_init'], st['geomean_cdnv_final'])}, from "
           f"{st['geomean_cdnv_init']:.3g} to {st['geomean_cdnv_final']:.3g}.")
    if left:
        out += f" Left out, undefined at one end: {left}."
    return [out]


def findings(summary: dict) -> List[str]:
    """A few generated sentences with the numbers (used by every report format): first what happened to
    each task, then the run-level numbers, each over a stated task set."""
    st = summary["stream"]
    out = [task_story(t, summary["run"]["experiences"]) for t in summary["tasks"] if t["final_acc"]]
    out += _learned_findings(summary)
    out += _geometry_finding(st, len(summary["tasks"]))
    out += regime_notes(summary["tasks"])
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
    tested = [p for p in summary["pairs"] if p.get("beyond_null_final") is not None]
    if tested:
        beyond = [p for p in tested if p["beyond_null_final"]]
        which = "" if not beyond or len(beyond) == len(tested) else (
            ": " + ", ".join(f"{p['names'][0]} / {p['names'][1]}" for p in beyond))
        out.append(f"After the last experience {len(beyond)} of {len(tested)} task pairs on the same samples had "
                   f"decision axes more orthogonal than the permutation null (null p <= 0.05: at most 5% of random "
                   f"relabelings of the same samples in the same features gave a median |cos| as low){which}.")
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
