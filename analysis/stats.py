"""Statistics for studies over many runs: Spearman correlations with a cluster bootstrap and a
permutation test, the paired difference of two correlations, and a plain-language verdict.

Rows of a study table are clustered: tasks of one run share a backbone, so they are not
independent. Confidence intervals therefore resample whole runs (clusters) with replacement;
the permutation p-value shuffles the outcome across rows (exchangeable under "no association").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy.stats import rankdata

from dncsim.common import DncsimError

__all__ = ["CorrelationResult", "spearman", "cluster_bootstrap_spearman", "compare_predictors", "verdict",
           "correlation_table", "study_statistics", "within_task_ranks", "exclude_unlearned"]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


@dataclass(frozen=True)
class CorrelationResult:
    """Spearman rho with a cluster-bootstrap CI and a permutation p-value (two-sided).

    ``n`` rows in ``clusters`` clusters; ``ci`` the (1 - alpha) percentile interval of rho over
    ``bootstrap`` resamples of whole clusters (resamples where rho is undefined are dropped).
    """

    x: str
    y: str
    rho: float
    ci: tuple
    p: float
    n: int
    clusters: int
    bootstrap: int
    permutations: int

    def as_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "rho": self.rho, "ci_low": self.ci[0], "ci_high": self.ci[1], "p": self.p,
                "n": self.n, "clusters": self.clusters, "bootstrap": self.bootstrap, "permutations": self.permutations}


def _permuted_spearman(x, y, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman rho of x against ``permutations`` random shuffles of y, vectorised (ranks permuted once)."""
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    shuffled = rng.permuted(np.tile(ry, (permutations, 1)), axis=1)
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return shuffled @ rx / den if den > 0 else np.full(permutations, np.nan)


def _clean(x, y, clusters):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    c = np.asarray(clusters)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok], c[ok]


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


def cluster_bootstrap_spearman(x, y, clusters, *, names=("x", "y"), bootstrap: int = 2000, permutations: int = 2000,
                               alpha: float = 0.05, seed: int = 0) -> CorrelationResult:
    """Spearman rho of ``x`` and ``y`` (rows with NaN dropped), its cluster-bootstrap (1 - alpha) CI and
    a two-sided permutation p-value ((1 + #|rho_perm| >= |rho|) / (1 + permutations)). Seeded."""
    x, y, c = _clean(x, y, clusters)
    if len(x) < 3:
        raise DncsimError(f"{names[0]} vs {names[1]}: needs at least 3 complete rows; got {len(x)}")
    rng = np.random.default_rng(seed)
    rho = spearman(x, y)
    groups = _cluster_indices(c)
    boots = np.array([spearman(x[i], y[i]) for i in _resamples(groups, bootstrap, rng)])
    boots = boots[np.isfinite(boots)]
    ci = _percentile_interval(boots, alpha)
    extreme = int((np.abs(_permuted_spearman(x, y, permutations, rng)) >= abs(rho) - 1e-12).sum())
    p = (1 + extreme) / (1 + permutations)
    return CorrelationResult(names[0], names[1], rho, ci, float(p), len(x), len(groups), bootstrap, permutations)


def compare_predictors(x1, x2, y, clusters, *, names=("x1", "x2", "y"), bootstrap: int = 2000, alpha: float = 0.05,
                       seed: int = 0) -> dict:
    """rho(x1, y) - rho(x2, y) on the rows where all three are known, with a paired cluster-bootstrap CI
    (both correlations recomputed on the same resamples)."""
    x1, x2, y = (np.asarray(v, dtype=float) for v in (x1, x2, y))
    c = np.asarray(clusters)
    ok = np.isfinite(x1) & np.isfinite(x2) & np.isfinite(y)
    x1, x2, y, c = x1[ok], x2[ok], y[ok], c[ok]
    if len(y) < 3:
        raise DncsimError(f"{names[0]} vs {names[1]}: needs at least 3 complete rows; got {len(y)}")
    rng = np.random.default_rng(seed)
    diff = spearman(x1, y) - spearman(x2, y)
    groups = _cluster_indices(c)
    boots = np.array([spearman(x1[i], y[i]) - spearman(x2[i], y[i]) for i in _resamples(groups, bootstrap, rng)])
    boots = boots[np.isfinite(boots)]
    ci = _percentile_interval(boots, alpha)
    return {"x1": names[0], "x2": names[1], "y": names[2], "difference": float(diff), "ci_low": ci[0],
            "ci_high": ci[1], "n": int(len(y)), "clusters": len(groups)}


def _supported(r: dict, alpha: float) -> bool:
    return r["p"] < alpha and (r["ci_low"] > 0 or r["ci_high"] < 0)


def verdict(main: dict, classical: Optional[dict], difference: Optional[dict], pairwise: Optional[dict],
            alpha: float = 0.05) -> Sequence[str]:
    """Plain sentences: effect size, CI and p for each test, and whether the data support the
    hypothesis (low directional variability -> less forgetting, i.e. a positive rho between
    dir-CDNV and forgetting). "Support" needs p < alpha AND a CI that excludes 0."""
    def line(r, what):
        return (f"{what}: Spearman rho = {r['rho']:.2f} [95% CI {r['ci_low']:.2f}, {r['ci_high']:.2f}], "
                f"permutation p = {r['p']:.3g} (n = {r['n']} rows in {r['clusters']} runs)")
    out = [line(main, "Directional CDNV when a task was learned vs its later forgetting")]
    if _supported(main, alpha) and main["rho"] > 0:
        out.append("Supported: tasks with lower directional variability when learned forgot less.")
    elif _supported(main, alpha):
        out.append("Contradicted: tasks with lower directional variability when learned forgot MORE.")
    else:
        out.append("Not supported by these data: the correlation is not distinguishable from zero "
                   f"(the CI covers 0 or p >= {alpha}).")
    if classical is not None:
        out.append(line(classical, "Classical CDNV when learned vs forgetting"))
    if difference is not None:
        d = difference
        settled = d["ci_low"] > 0 or d["ci_high"] < 0
        better = "directional CDNV" if d["difference"] > 0 else "classical CDNV"
        out.append(f"Difference rho(dir-CDNV) - rho(CDNV) = {d['difference']:.2f} [95% CI {d['ci_low']:.2f}, "
                   f"{d['ci_high']:.2f}]: " + (f"{better} predicts forgetting better." if settled else
                                               "neither predicts forgetting measurably better."))
    if pairwise is not None:
        out.append(line(pairwise, "Axis overlap of a task pair vs the interference between them"))
        supported = _supported(pairwise, alpha) and pairwise["rho"] > 0
        out.append("Overlapping axes went with more interference." if supported
                   else "No measurable link between axis overlap and interference.")
    return out


def correlation_table(rows: Sequence[Dict], x: str, y: str, cluster: str, **kw) -> dict:
    """:func:`cluster_bootstrap_spearman` on columns of a list-of-dicts table (``None`` -> NaN)."""
    get = lambda k: [np.nan if r.get(k) is None else r[k] for r in rows]  # noqa: E731
    return cluster_bootstrap_spearman(get(x), get(y), [r[cluster] for r in rows], names=(x, y), **kw).as_dict()


# --- the tests of a study, from its tidy tables -----------------------------------------------------

def _try(fn, *args, **kw):
    try:
        return fn(*args, **kw), None
    except DncsimError as exc:
        return None, str(exc)


def study_statistics(tasks: List[dict], pairs: List[dict], settings) -> dict:
    """All tests of a study from its tables (``settings``: StatisticsConfig): overall, per objective, pairwise,
    the difference dir-CDNV vs CDNV, and the verdict sentences."""
    y = f"{settings.forgetting}/{settings.probe}/{settings.protocol}"
    inter = f"interference/{settings.probe}/frozen"
    kw = dict(bootstrap=settings.bootstrap, permutations=settings.permutations, alpha=settings.alpha,
              seed=settings.seed)
    out = {"outcome": y, "interference": inter, "tests": [], "notes": []}
    include = getattr(settings, "include_unlearned", False)
    tasks, pairs, out["excluded"] = exclude_unlearned(tasks, pairs, include)
    if out["excluded"]["task_rows"]:
        out["notes"].append(f"{out['excluded']['task_rows']} task rows and {out['excluded']['pair_rows']} pair rows "
                            f"left out: {out['excluded']['reason']}")

    def add(label, rows, x, yy, cluster="run"):
        res, err = _try(correlation_table, rows, x, yy, cluster, **kw)
        if res is not None:
            out["tests"].append({"label": label, **res})
        else:
            out["notes"].append(f"{label}: {err}")
        return res

    def difference(label, rows):
        col = lambda k: [np.nan if r.get(k) is None else r[k] for r in rows]  # noqa: E731
        d, err = _try(compare_predictors, col("dir_cdnv_learned"), col("cdnv_learned"), col(y),
                      [r["run"] for r in rows], names=("dir_cdnv_learned", "cdnv_learned", y),
                      bootstrap=settings.bootstrap, alpha=settings.alpha, seed=settings.seed)
        if err:
            out["notes"].append(f"{label}: {err}")
        return None if d is None else {"label": label, **d}

    main = add("all runs: dir-CDNV when learned vs forgetting", tasks, "dir_cdnv_learned", y)
    classical = add("all runs: CDNV when learned vs forgetting", tasks, "cdnv_learned", y)
    out["difference"] = difference("all runs: rho(dir-CDNV) - rho(CDNV)", tasks) if main is not None else None
    out["differences"] = [out["difference"]] if out["difference"] else []
    for obj in sorted({r["objective"] for r in tasks}):
        sub = [r for r in tasks if r["objective"] == obj]
        if add(f"{obj}: dir-CDNV when learned vs forgetting", sub, "dir_cdnv_learned", y) is not None:
            d = difference(f"{obj}: rho(dir-CDNV) - rho(CDNV)", sub)
            if d:
                out["differences"].append(d)
        add(f"{obj}: CDNV when learned vs forgetting", sub, "cdnv_learned", y)
    within = within_task_ranks(tasks, ["dir_cdnv_learned", "cdnv_learned", y])
    within_main = add("within task: dir-CDNV when learned vs forgetting", within, "dir_cdnv_learned", y)
    add("within task: CDNV when learned vs forgetting", within, "cdnv_learned", y)
    pairwise = add("all runs: axis overlap vs interference (task pairs)", pairs, "overlap", inter)
    if main is not None:
        out["verdict"] = list(verdict(main, classical, out["difference"], pairwise, alpha=settings.alpha))
    else:
        out["verdict"] = ["Not enough data to test the hypothesis: " + "; ".join(out["notes"])]
    if within_main is not None:
        held = within_main["p"] < settings.alpha and (within_main["ci_low"] > 0 or within_main["ci_high"] < 0)
        out["verdict"].append(
            f"Within each task (task identity held fixed, ranks taken across runs): rho = {within_main['rho']:.2f} "
            f"[95% CI {within_main['ci_low']:.2f}, {within_main['ci_high']:.2f}], p = {within_main['p']:.3g}: "
            + ("the link holds beyond differences between tasks." if held else
               "beyond differences between tasks, the data show no measurable link."))
    return out


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


def within_task_ranks(rows: List[dict], columns: Sequence[str]) -> List[dict]:
    """Rows with ``columns`` replaced by their centred ranks among rows of the same task name, so a
    correlation on them compares runs within a task, not one task with another (None stays None)."""
    out = [dict(r) for r in rows]
    for name in {r["task_name"] for r in rows}:
        idx = [i for i, r in enumerate(rows) if r["task_name"] == name]
        for c in columns:
            known = [i for i in idx if rows[i].get(c) is not None]
            if not known:
                continue
            ranks = rankdata([rows[i][c] for i in known])
            for i, rk in zip(known, ranks - ranks.mean()):
                out[i][c] = float(rk)
    return out
