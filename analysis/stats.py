"""The statistics of a study from its tidy tables (``dncsim study`` / ``dncsim stats``).

Rows are clustered by run; each statistic names its unit of resampling or permutation.

* **Primary test** (``analysis.inference.primary_analysis``): the verdict reads from it alone; the same
  model for CDNV, both, and axis overlap against interference.
* **Descriptive correlations**: Spearman rho overall, per objective and within task; cluster-bootstrap
  intervals (runs resampled; only with ``MIN_CLUSTERS_FOR_INTERVAL`` runs or more) and run-level
  stratified permutation p-values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy.stats import rankdata

from dncsim.analysis.causal import DOSE_COLUMN, causal_sentences, instrumental_analysis, strategy_table
from dncsim.analysis.causal_design import design_analysis, has_dose_design
from dncsim.analysis.inference import primary_analysis
from dncsim.common import DncsimError

__all__ = ["CorrelationResult", "spearman", "cluster_bootstrap_spearman", "correlation_table",
           "study_statistics", "within_task_ranks", "exclude_unlearned", "MIN_CLUSTERS_FOR_INTERVAL",
           "PRIMARY_PREDICTOR", "CO_PRIMARY_OUTCOME", "holm"]

MIN_CLUSTERS_FOR_INTERVAL = 10
PRIMARY_PREDICTOR = "dir_cdnv_learned"
#: the co-primary outcome beside the configured one: frozen-NCC normalised forgetting
CO_PRIMARY_OUTCOME = "forgetting_norm/ncc/frozen"


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


@dataclass(frozen=True)
class CorrelationResult:
    """Spearman rho with a cluster-bootstrap CI and a run-permutation p-value (two-sided).

    ``n`` rows in ``clusters`` runs; ``ci`` the (1 - alpha) percentile interval of rho over ``bootstrap``
    resamples of whole runs, (None, None) with fewer than MIN_CLUSTERS_FOR_INTERVAL runs; ``p`` None when no
    two runs are exchangeable (no stratum holds two).
    """

    x: str
    y: str
    rho: float
    ci: tuple
    p: Optional[float]
    n: int
    clusters: int
    bootstrap: int
    permutations: int

    def as_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "rho": self.rho, "ci_low": self.ci[0], "ci_high": self.ci[1], "p": self.p,
                "n": self.n, "clusters": self.clusters, "bootstrap": self.bootstrap, "permutations": self.permutations}


def _cluster_indices(clusters: np.ndarray):
    labels, inv = np.unique(clusters, return_inverse=True)
    return [np.flatnonzero(inv == k) for k in range(len(labels))]


def _percentile_interval(boots: np.ndarray, alpha: float):
    """The (1 - alpha) percentile interval of bootstrap values (NaNs when there are none)."""
    if not len(boots):
        return (np.nan, np.nan)
    return (float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2)))


def _resamples(groups, n_boot: int, rng: np.random.Generator):
    for _ in range(n_boot):
        pick = rng.integers(0, len(groups), size=len(groups))
        yield np.concatenate([groups[g] for g in pick])


def _run_permutations(x, clusters, strata, keys, permutations: int, rng: np.random.Generator) -> Optional[np.ndarray]:
    """(permutations, n) copies of x in which whole runs' values moved to other runs of the same stratum,
    value for value by key; None when no stratum holds two runs."""
    runs = {}
    for i, (c, k) in enumerate(zip(clusters, keys)):
        runs.setdefault(c, {})[k] = i
    stratum = {c: s for c, s in zip(clusters, strata)}
    groups: Dict[object, List] = {}
    for c, s in stratum.items():
        groups.setdefault(s, []).append(c)
    groups = {s: m for s, m in groups.items() if len(m) > 1}
    if not groups:
        return None
    out = np.tile(x, (permutations, 1))
    for b in range(permutations):
        for members in groups.values():
            for src, dst in zip(members, rng.permutation(len(members))):
                dst = members[dst]
                for key, i in runs[dst].items():
                    if key in runs[src]:
                        out[b, i] = x[runs[src][key]]
    return out


def cluster_bootstrap_spearman(x, y, clusters, *, strata=None, keys=None, names=("x", "y"), bootstrap: int = 2000,
                               permutations: int = 2000, alpha: float = 0.05, seed: int = 0) -> CorrelationResult:
    """Spearman rho of ``x`` and ``y`` (rows with NaN dropped), its cluster-bootstrap (1 - alpha) CI
    (whole clusters resampled; only with at least MIN_CLUSTERS_FOR_INTERVAL clusters) and a two-sided
    permutation p-value ((1 + #|rho_perm| >= |rho|) / (1 + permutations)) that permutes whole clusters'
    x among clusters of the same ``strata`` (default: all one stratum), value for value by ``keys``
    (default: position within the cluster). Seeded."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    c = np.asarray(clusters)
    s = np.zeros(len(x), dtype=int) if strata is None else np.asarray(strata)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, c, s = x[ok], y[ok], c[ok], s[ok]
    if keys is None:
        seen: Dict[object, int] = {}
        keys = []
        for ci_ in c:
            keys.append(seen.get(ci_, 0))
            seen[ci_] = seen.get(ci_, 0) + 1
    else:
        keys = list(np.asarray(keys, dtype=object)[ok])
    if len(x) < 3:
        raise DncsimError(f"{names[0]} vs {names[1]}: needs at least 3 complete rows; got {len(x)}")
    rng = np.random.default_rng(seed)
    rho = spearman(x, y)
    groups = _cluster_indices(c)
    ci = (None, None)
    if len(groups) >= MIN_CLUSTERS_FOR_INTERVAL:
        boots = np.array([spearman(x[i], y[i]) for i in _resamples(groups, bootstrap, rng)])
        ci = _percentile_interval(boots[np.isfinite(boots)], alpha)
    perms = _run_permutations(x, list(c), list(s), keys, permutations, rng)
    p = None
    if perms is not None:
        extreme = sum(abs(spearman(xb, y)) >= abs(rho) - 1e-12 for xb in perms)
        p = float((1 + extreme) / (1 + permutations))
    return CorrelationResult(names[0], names[1], rho, ci, p, len(x), len(groups), bootstrap, permutations)


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f if math.isfinite(f) else float("nan")


def correlation_table(rows: Sequence[Dict], x: str, y: str, cluster: str = "run", key: str = "task_name",
                      **kw) -> dict:
    """:func:`cluster_bootstrap_spearman` on columns of a list-of-dicts table (missing -> NaN), strata
    (objective, strategy, task set) per run and runs aligned by ``key``."""
    tasks_of: Dict[object, set] = {}
    for r in rows:
        tasks_of.setdefault(r.get(cluster), set()).add(str(r.get(key)))
    strata = [str((r.get("objective"), r.get("strategy"), tuple(sorted(tasks_of[r.get(cluster)])))) for r in rows]
    return cluster_bootstrap_spearman([_num(r.get(x)) for r in rows], [_num(r.get(y)) for r in rows],
                                      [str(r.get(cluster)) for r in rows], strata=strata,
                                      keys=[str(r.get(key)) for r in rows], names=(x, y), **kw).as_dict()


def exclude_unlearned(tasks: List[dict], pairs: List[dict], include: bool = False):
    """The task rows whose ``learned`` is not False and the pair rows of two such tasks (everything with
    ``include``), and a record of what was left out and why."""
    if include:
        return tasks, pairs, {"task_rows": 0, "pair_rows": 0, "reason": "unlearned tasks kept (include_unlearned)"}
    kept = [r for r in tasks if r.get("learned") is not False]
    kept_pairs = [r for r in pairs if r.get("learned_a") is not False and r.get("learned_b") is not False]
    reason = ("tasks not learned (probe accuracy right after their experience within the learned margin of chance) "
              "have nothing to forget; statistics.include_unlearned: true keeps them")
    return kept, kept_pairs, {"task_rows": len(tasks) - len(kept), "pair_rows": len(pairs) - len(kept_pairs),
                              "reason": reason}


def probe_budget_note(tasks: List[dict], probe: str) -> Optional[str]:
    """For a linear-probe outcome: how many task rows carry a linear solve that stopped at the step budget
    (``probe_at_budget`` > 0), and how many of them in the frozen probe itself (``probe_converged_learned``
    0); None for NCC, for tables without those columns and when every solve converged."""
    known = [r for r in tasks if r.get("probe_at_budget") not in (None, "")]
    if probe != "linear" or not known:
        return None
    any_budget = sum(_num(r["probe_at_budget"]) > 0 for r in known)
    frozen = sum(r.get("probe_converged_learned") not in (None, "") and _num(r["probe_converged_learned"]) == 0
                 for r in known)
    if not any_budget:
        return None
    return (f"{any_budget} of {len(known)} task rows have linear-probe solves that stopped at the step budget "
            f"(evaluation.linear_steps), {frozen} of them in the frozen probe (the fit of the learned row): their "
            "accuracies and forgetting are those of the budgeted solve (docs, Methods, Linear probe)")


def within_task_ranks(rows: List[dict], columns: Sequence[str]) -> List[dict]:
    """Rows with ``columns`` replaced by their centred ranks among rows of the same task name, so a
    correlation on them compares runs within a task, not one task with another (None stays None)."""
    out = [dict(r) for r in rows]
    for name in {r["task_name"] for r in rows}:
        idx = [i for i, r in enumerate(rows) if r["task_name"] == name]
        for c in columns:
            known = [i for i in idx if rows[i].get(c) is not None and math.isfinite(_num(rows[i].get(c)))]
            if not known:
                continue
            ranks = rankdata([_num(rows[i][c]) for i in known])
            for i, rk in zip(known, ranks - ranks.mean()):
                out[i][c] = float(rk)
    return out


# --- the tests of a study, from its tidy tables -----------------------------------------------------

def _try(fn, *args, **kw):
    try:
        return fn(*args, **kw), None
    except DncsimError as exc:
        return None, str(exc)


def _primary_record(result: dict, predictor: str) -> dict:
    c = result["coefficients"][predictor]
    return {"predictor": predictor, "outcome": result["outcome"], "estimate": c["estimate"], "se": c["se"],
            "df": c["df"], "ci_low": c["ci_low"], "ci_high": c["ci_high"], "p": c["p"], "verdict": result["verdict"],
            "mde_80": c["mde_80"], "method": c["method"], "permutation_p": c["permutation_p"],
            "wild_bootstrap_p": c["wild_bootstrap_p"], "n_rows": result["n_rows"], "n_runs": result["n_runs"],
            "excluded_rows": result["excluded_rows"], "dropped_rows": result["dropped_rows"],
            "notes": result["notes"], "terms": result["terms"], "sd": c["sd"], "sd_within": c["sd_within"],
            "sd_basis": result["sd_basis"]}


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values (same order as given): reject the i-th smallest when its adjusted
    p is below alpha; controls the family-wise error rate under any dependence."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def _unit(rec: dict, per: str, log: bool = True) -> str:
    """What "per sd" means in a sentence: the within-run sd (or the total sd) and its size."""
    units = "log units" if log else "units"
    if rec.get("sd_basis") == "within-run":
        return f"per within-run sd of {per} ({rec['sd']:.2g} {units})"
    return f"per sd of {per} ({rec['sd']:.2g} {units}; total sd: the model has no run fixed effects)"


def _sentence(rec: dict, what: str, per: str, log: bool = True) -> str:
    ci = f"[95% CI {rec['ci_low']:+.3g}, {rec['ci_high']:+.3g}]"
    return (f"{what}: {rec['estimate']:+.3g} {ci} {_unit(rec, per, log)}, p = {rec['p']:.3g} "
            f"({rec['n_rows']} rows in {rec['n_runs']} runs; {rec['method']})")


def study_statistics(tasks: List[dict], pairs: List[dict], settings, *, predictor: str = PRIMARY_PREDICTOR) -> dict:
    """Every statistic of a study from its tables (``settings``: ``analysis.study.StatisticsConfig``, whose
    ``study_products`` checks it is one): the primary test and
    its verdict, the same model for classical CDNV and for both predictors together, the pairs analysis,
    the descriptive correlations, and plain sentences. ``predictor``: the primary predictor column."""
    y = f"{settings.forgetting}/{settings.probe}/{settings.protocol}"
    inter = f"interference/{settings.probe}/frozen"
    kw = dict(alpha=settings.alpha, seed=settings.seed, permutations=settings.permutations)
    out = {"outcome": y, "interference": inter, "predictor": predictor, "tests": [], "notes": []}
    include = getattr(settings, "include_unlearned", False)
    tasks, pairs, out["excluded"] = exclude_unlearned(tasks, pairs, include)
    if out["excluded"]["task_rows"] or out["excluded"]["pair_rows"]:
        out["notes"].append(f"{out['excluded']['task_rows']} task rows and {out['excluded']['pair_rows']} pair rows "
                            f"left out: {out['excluded']['reason']}")
    note = probe_budget_note(tasks, settings.probe)
    if note:
        out["notes"].append(note)
    classical_predictor = predictor.replace("dir_cdnv", "cdnv") if "dir_cdnv" in predictor else "cdnv_learned"

    def model(rows, outcome, predictors, label, **extra):
        res, err = _try(primary_analysis, rows, outcome, predictors, excluded_rows=out["excluded"]["task_rows"],
                        **kw, **extra)
        if err:
            out["notes"].append(f"{label}: {err}")
        return res

    primary = model(tasks, y, [predictor], "primary test")
    out["primary"] = None if primary is None else _primary_record(primary, predictor)
    out["co_primary"] = _co_primary(tasks, y, predictor, out["primary"], settings.alpha, out["notes"], model)
    classical = model(tasks, y, [classical_predictor], "classical CDNV") if predictor != classical_predictor else None
    out["classical"] = None if classical is None else _primary_record(classical, classical_predictor)
    joint = model(tasks, y, [predictor, classical_predictor], "both predictors") \
        if predictor != classical_predictor else None
    out["joint"] = None if joint is None else {p: _primary_record(joint, p) for p in (predictor, classical_predictor)}
    pair_rows = [dict(r, pair=f"{r.get('name_a')} | {r.get('name_b')}") for r in pairs]
    overlap = "overlap_pre" if any(r.get("overlap_pre") not in (None, "") for r in pair_rows) else "overlap"
    if pair_rows and overlap == "overlap":
        out["notes"].append("pairs analysis: the pairs table has no overlap_pre (runs written before it was "
                            "measured): interference on the overlap when the later task was learned "
                            "(post-treatment) instead")
    out["pairs_overlap"] = overlap
    pair_model = model(pair_rows, inter, [overlap], "pairs analysis", log_predictors=False, key="pair",
                       fixed=(("run", "run"), ("task pair", "pair"), ("objective", "objective"),
                              ("strategy", "strategy"))) if pair_rows else None
    if not pair_rows:
        out["notes"].append("pairs analysis: no pair rows (a one-task stream, or no pairs table)")
    out["pairs_primary"] = None if pair_model is None else _primary_record(pair_model, overlap)

    def describe(label, rows, x, yy, key="task_name"):
        res, err = _try(correlation_table, rows, x, yy, key=key, bootstrap=settings.bootstrap,
                        permutations=settings.permutations, alpha=settings.alpha, seed=settings.seed)
        if res is not None:
            out["tests"].append({"label": label, **res})
        elif err:
            out["notes"].append(f"{label}: {err}")
    describe("all runs: dir-CDNV when learned vs forgetting", tasks, predictor, y)
    describe("all runs: CDNV when learned vs forgetting", tasks, classical_predictor, y)
    for obj in sorted({str(r.get("objective")) for r in tasks}):
        sub = [r for r in tasks if str(r.get("objective")) == obj]
        describe(f"{obj}: dir-CDNV when learned vs forgetting", sub, predictor, y)
    within = within_task_ranks(tasks, [predictor, classical_predictor, y]) if tasks else []
    describe("within task: dir-CDNV when learned vs forgetting", within, predictor, y)
    describe("all runs: axis overlap vs interference (task pairs)", pair_rows, overlap, inter, key="pair")
    if tasks and any(t["clusters"] < MIN_CLUSTERS_FOR_INTERVAL for t in out["tests"]):
        out["notes"].append(f"descriptive correlations over fewer than {MIN_CLUSTERS_FOR_INTERVAL} runs have no "
                            "interval: a percentile bootstrap over so few runs is far too narrow")
    out["verdict"] = _verdict_sentences(out, settings.alpha)
    if tasks and has_dose_design(tasks):
        out["causal"] = _causal_design(tasks, y, settings, out["notes"])
        out["verdict"] += (out["causal"] or {}).get("sentences", [])
    elif tasks and any(r.get(DOSE_COLUMN) not in (None, "") for r in tasks):
        out["causal"] = _causal(tasks, y, predictor, classical_predictor, settings, out["notes"])
        for res in (out["causal"]["directional"], out["causal"]["classical"]):
            if res is not None:
                out["verdict"] += causal_sentences(res)
    return out


CO_PRIMARY_NORM = "forgetting_norm/ncc/frozen"


def _causal_design(tasks, y, settings, notes) -> Optional[dict]:
    """The per-task dose design (analysis/causal_design.py) on the co-primary outcomes (``y`` and
    CO_PRIMARY_NORM) and accuracy when learned. ``mediators.<m>`` holds ``y``'s estimate and ``by_outcome``."""
    acc = f"acc_learned/{settings.probe}/{settings.protocol}"
    outcomes = list(dict.fromkeys([y, CO_PRIMARY_NORM, acc]))
    block, err = _try(design_analysis, tasks, outcomes, alpha=settings.alpha)
    if err:
        notes.append(f"causal analysis (dose design): {err}")
        return None
    for label, per in list(block["mediators"].items()):
        block["mediators"][label] = dict(per.get(y) or {}, outcome=y, by_outcome=per)
    notes += [f"causal analysis: {n}" for n in block.pop("notes")]
    block["strategies"] = strategy_table(tasks, y, acc, alpha=settings.alpha)
    return block


def _causal(tasks, y, predictor, classical_predictor, settings, notes) -> dict:
    """The dose-response analysis of a study that randomises the regulariser's weight (analysis/causal.py)."""
    block = {}
    for label, mediator in (("directional", predictor), ("classical", classical_predictor)):
        res, err = _try(instrumental_analysis, tasks, y, mediator, alpha=settings.alpha)
        if err:
            notes.append(f"causal analysis ({label}): {err}")
        block[label] = res
    block["strategies"] = strategy_table(tasks, y, f"acc_learned/{settings.probe}/{settings.protocol}",
                                         alpha=settings.alpha)
    return block


def _co_primary(tasks, y, predictor, primary, alpha, notes, model) -> dict:
    """{outcome: record} of the configured outcome and ``CO_PRIMARY_OUTCOME``, each with the primary model,
    plus ``p_holm`` (Holm over the outcomes that could be tested) and ``holm_verdict``: supported or
    contradicted when p_holm < alpha (by the estimate's sign), else inconclusive."""
    out = {}
    if primary is not None:
        out[y] = dict(primary)
    if CO_PRIMARY_OUTCOME != y:
        if tasks and any(r.get(CO_PRIMARY_OUTCOME) not in (None, "") for r in tasks):
            res = model(tasks, CO_PRIMARY_OUTCOME, [predictor], f"co-primary test ({CO_PRIMARY_OUTCOME})")
            if res is not None:
                out[CO_PRIMARY_OUTCOME] = _primary_record(res, predictor)
        else:
            notes.append(f"co-primary test: the tasks table has no {CO_PRIMARY_OUTCOME} (no NCC probe, or a table "
                         "written without it): only the configured outcome is tested")
    adjusted = holm([rec["p"] for rec in out.values()])
    for rec, p in zip(out.values(), adjusted):
        rec["p_holm"] = p
        rec["holm_verdict"] = ("inconclusive" if not p < alpha else
                               "supported" if rec["estimate"] > 0 else "contradicted")
    return out


_OUTCOME_WORDS = {"forgetting_max": "forgetting (max)", "forgetting_last": "forgetting", "forgetting_norm":
                  "normalised forgetting"}


def _outcome_words(outcome: str) -> str:
    """"forgetting_norm/ncc/frozen" -> "frozen-NCC normalised forgetting"."""
    what, probe, protocol = (outcome.split("/") + ["", ""])[:3]
    probe = "NCC" if probe == "ncc" else probe
    return f"{protocol}-{probe} {_OUTCOME_WORDS.get(what, what)}".strip("-")


def _verdict_sentences(s: dict, alpha: float = 0.05) -> List[str]:
    p = s["primary"]
    if p is None:
        return ["No verdict: the primary test could not be run (" + "; ".join(s["notes"]) + ")."]
    per_sd = "per within-run sd" if p["sd_basis"] == "within-run" else "per sd"
    held = ("run, task, position and task x run-level factor interactions" if any(" x " in t for t in p["terms"])
            else "run, task and position")
    meaning = {"supported": f"Supported: with {held} held fixed, tasks whose directional CDNV was "
                            "lower when they were learned forgot less.",
               "contradicted": f"Contradicted: with {held} held fixed, tasks whose directional CDNV "
                               "was lower when they were learned forgot MORE.",
               "inconclusive": (f"Inconclusive: the interval covers 0. The study could have detected an effect of "
                                f"about {p['mde_80']:.3g} {per_sd} "
                                "with 80% power; a smaller one would need more runs.")}
    out = [_sentence(p, f"Primary test ({p['outcome']} on log directional CDNV when learned)",
                     "log directional CDNV"), meaning[p["verdict"]]]
    co = s.get("co_primary") or {}
    if len(co) > 1:
        parts = [f"{_outcome_words(o)} {r['estimate']:+.3g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}] "
                 f"{_unit(r, 'log directional CDNV')}, p = {r['p']:.3g}, Holm p = {r['p_holm']:.3g}: "
                 f"{r['holm_verdict']}" for o, r in co.items()]
        out.append(f"Co-primary outcomes (Holm over the {len(co)}, family-wise {alpha:g}): " + "; ".join(parts)
                   + ".")
    if s["joint"]:
        d, c = s["joint"][p["predictor"]], s["joint"][next(k for k in s["joint"] if k != p["predictor"])]
        carries = [name for name, r in (("directional CDNV", d), ("classical CDNV", c))
                   if r["p"] < alpha / 2]              # two tests, either one suffices: Bonferroni
        per_sd_each = "per within-run sd" if d["sd_basis"] == "within-run" else "per sd"
        conclusion = (f"{' and '.join(carries)} carries the signal with the other held fixed "
                      f"(p < {alpha / 2:g}, {alpha:g} split over the two)." if carries else
                      f"neither is distinguishable from zero with the other held fixed (p < {alpha / 2:g} for either).")
        out.append(f"Both together: directional CDNV {d['estimate']:+.3g} [{d['ci_low']:+.3g}, {d['ci_high']:+.3g}], "
                   f"classical CDNV {c['estimate']:+.3g} [{c['ci_low']:+.3g}, {c['ci_high']:+.3g}] "
                   f"{per_sd_each} of each: {conclusion}")
    if s["pairs_primary"]:
        q = s["pairs_primary"]
        what = ("axis overlap before the later task trained, the earlier task's axes fixed when it was learned"
                if q["predictor"] == "overlap_pre" else "axis overlap when the later task was learned")
        out.append(_sentence(q, f"Pairs (interference on {what})", "axis overlap", log=False)
                   + f": {q['verdict']}.")
    return out
