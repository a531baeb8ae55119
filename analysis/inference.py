"""Inference on study tables whose rows are clustered by run.

:func:`primary_analysis`: OLS of a forgetting on the log directional CDNV when learned, standardised by
its within-run sd, fixed effects for run, task identity and stream position and the interactions of task
identity with every run-level factor (:func:`run_factors`; aliased ones dropped, noted), run-clustered
CR2 errors, t on Bell-McCaffrey df (analysis/clustered.py); a wild cluster bootstrap p below
``few_clusters`` runs; none below 3.
Verdict: ``supported`` (interval above 0), ``contradicted`` (below) or ``inconclusive``, with the
80%-power minimal detectable effect; a run-level permutation p as a check. Rationale: docs, Methods.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import stats as sps

from dncsim.analysis.clustered import ClusterFit, cluster_fit
from dncsim.common import DncsimError

__all__ = ["Design", "build_design", "run_factors", "RESEED_COLUMNS", "MIN_RESIDUAL_DF", "fit_cluster_ols",
           "wild_cluster_bootstrap", "permutation_p", "primary_analysis", "WEBB_WEIGHTS", "VERDICTS"]

WEBB_WEIGHTS = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])
VERDICTS = ("supported", "contradicted", "inconclusive")


#: larger magnitudes are not measurements (their squares overflow): such a cell counts as missing
MAX_MAGNITUDE = 1e100


def _number(v) -> Optional[float]:
    """A cell as a float; None for missing, non-numeric, non-finite or absurdly large values."""
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and abs(f) < MAX_MAGNITUDE else None


@dataclass
class Design:
    """A regression design from a tidy table: ``y`` (n,), ``X`` (n, p) with an intercept, ``names`` (p,),
    ``clusters`` (n,) int codes, ``strata`` (n,) int codes of each row's run stratum, ``row_keys`` (n,)
    the within-run key that aligns runs for permutation, ``predictors`` the indices of the predictor
    columns, ``notes`` what was left out and why, ``n_dropped`` rows without the needed values, ``sd`` the
    sd each predictor is standardised by (on the (log) scale) and ``sd_basis`` which one (``within-run`` or
    ``total``), ``unidentified`` why the fixed effects leave a predictor no variation (None: they do not)."""

    y: np.ndarray
    X: np.ndarray
    names: List[str]
    clusters: np.ndarray
    strata: np.ndarray
    row_keys: List[str]
    predictors: Dict[str, int]
    notes: List[str] = field(default_factory=list)
    n_dropped: int = 0
    factors: Dict[str, int] = field(default_factory=dict)
    sd: Dict[str, float] = field(default_factory=dict)
    sd_basis: str = "within-run"
    unidentified: Optional[str] = None

    @property
    def terms(self) -> List[str]:
        """The model's terms, fixed effects summarised: ``intercept``, the predictors, ``run (35 levels)``..."""
        fixed = [f"{label} ({n + 1} levels)" for label, n in self.factors.items()]
        return self.names[:1 + len(self.predictors)] + fixed

    @property
    def n_clusters(self) -> int:
        return int(len(np.unique(self.clusters)))


def _rank(X) -> int:
    return int(np.linalg.matrix_rank(X)) if X.size else 0


#: the fewest residual degrees of freedom (rows minus terms) with which a slope is reported
MIN_RESIDUAL_DF = 3

PRIMARY_FIXED = (("run", "run"), ("task identity", "task_name"), ("position in the stream", "learned_at"),
                 ("objective", "objective"), ("strategy", "strategy"))
POOLED_FIXED = (("task identity", "task_name"), ("position in the stream", "learned_at"), ("objective", "objective"),
                ("strategy", "strategy"))


#: run-level columns that only reseed a run: replicates, not treatments; no task interaction is held for them
RESEED_COLUMNS = ("seed", "scenario.seed")
#: the first per-row column of a study table: the columns before it are the run's (``aggregate._base``)
ROW_COLUMNS = ("task", "task_name", "task_a", "name_a")


def run_factors(rows: Sequence[dict], cluster: str = "run") -> List[str]:
    """The run-level factors of a study table: the columns before its first per-row column (the run's
    columns: the study's factors, objective, strategy, seed), and ``objective`` and ``strategy`` wherever
    they are, that are constant within every run and vary across runs; the cluster and
    ``RESEED_COLUMNS`` excepted, a column that splits the runs as an earlier one does left out."""
    if not rows:
        return []
    order = list(rows[0])
    first = min((order.index(c) for c in ROW_COLUMNS if c in order), default=len(order))
    candidates = [c for c in order[:first] + ["objective", "strategy"] if c in order]
    out, partitions = [], set()
    for column in dict.fromkeys(candidates):
        if column == cluster or column in RESEED_COLUMNS:
            continue
        of_run: Dict[str, set] = {}
        for r in rows:
            of_run.setdefault(str(r.get(cluster)), set()).add(str(r.get(column)))
        if any(len(v) > 1 for v in of_run.values()) or len({next(iter(v)) for v in of_run.values()}) < 2:
            continue
        groups: Dict[str, list] = {}
        for run, v in sorted(of_run.items()):
            groups.setdefault(next(iter(v)), []).append(run)
        partition = frozenset(tuple(g) for g in groups.values())
        if partition not in partitions:
            partitions.add(partition)
            out.append(column)
    return out


def _add_block(N: np.ndarray, block: np.ndarray):
    """The columns of ``block`` that add to the span of ``N``, greedily in order (indices)."""
    keep: List[int] = []
    base = _rank(N)
    for c in range(block.shape[1]):
        candidate = np.column_stack([N] + [block[:, i] for i in keep + [c]])
        if _rank(candidate) == base + len(keep) + 1:
            keep.append(c)
    return keep


def _within_sd(x: np.ndarray, runs: np.ndarray) -> Optional[float]:
    """The within-run sd of x: root mean square of x minus its run's mean, on n - G degrees of freedom
    (None when no run has two rows)."""
    G = int(runs.max()) + 1
    n_g = np.bincount(runs, minlength=G)
    if len(x) <= G:
        return None
    dev = x - (np.bincount(runs, weights=x, minlength=G) / n_g)[runs]
    return float(np.sqrt((dev ** 2).sum() / (len(x) - G)))


def build_design(rows: Sequence[dict], outcome: str, predictors: Sequence[str], *,
                 fixed: Sequence[tuple] = PRIMARY_FIXED, interactions: Optional[Sequence[str]] = None,
                 log_predictors: bool = True, cluster: str = "run", key: str = "task_name") -> Design:
    """The design of ``outcome`` on the standardised (log) ``predictors`` with dummy-coded ``fixed``
    factors ((label, column) pairs; a factor with one level is skipped, an aliased one left out with a
    note) and the interactions of task identity (``key``) with each run-level column in ``interactions``
    (default :func:`run_factors`; aliased products left out). Predictors are standardised by their
    within-run sd (``sd``; the total sd when the model has no run fixed effects). Rows missing the
    outcome, a predictor (or a positive one, for the log) or the cluster are dropped (``n_dropped``).
    DncsimError when nothing is left or a predictor does not vary."""
    kept, dropped = [], 0
    for r in rows:
        y = _number(r.get(outcome))
        xs = [_number(r.get(p)) for p in predictors]
        if y is None or any(x is None or (log_predictors and x <= 0) for x in xs) or r.get(cluster) in (None, ""):
            dropped += 1
            continue
        kept.append((r, y, xs))
    if not kept:
        raise DncsimError(f"no row has {outcome} and {', '.join(predictors)}"
                          + (" (positive, for the log)" if log_predictors else ""))
    y = np.array([k[1] for k in kept], dtype=float)
    runs = [str(k[0].get(cluster)) for k in kept]
    _, clusters = np.unique(runs, return_inverse=True)
    N, nuisance_names, notes, factors = np.ones((len(kept), 1)), [], [], {}
    for label, column in fixed:
        values = [str(k[0].get(column)) for k in kept]
        levels = sorted(set(values))
        if len(levels) < 2:
            continue
        dummies = np.column_stack([[v == lev for v in values] for lev in levels[1:]]).astype(float)
        trial = np.column_stack([N, dummies])
        if _rank(trial) == _rank(N):
            run_level = column != cluster and all(
                len({str(k[0].get(column)) for k in kept if str(k[0].get(cluster)) == run}) == 1
                for run in set(runs))
            if run_level and any(f[1] == cluster for f in fixed):
                notes.append(f"{label} ({column}) is constant within every run: held fixed by the run fixed effects")
            else:
                notes.append(f"{label} ({column}) is fully determined by the factors before it in this design "
                             "(a fixed stream order makes position in the stream and task identity the same): "
                             "left out")
            continue
        keep = list(range(dummies.shape[1]))
        if _rank(trial) < trial.shape[1]:
            notes.append(f"{label} ({column}) is partly aliased with the factors before it: its redundant levels "
                         "are left out")
            keep = _add_block(N, dummies)
        N = np.column_stack([N, dummies[:, keep]])
        nuisance_names += [f"{column}={levels[1:][i]}" for i in keep]
        factors[label] = len(keep)
    keys = [str(k[0].get(key)) for k in kept]
    key_levels = sorted(set(keys))
    key_label = next((label for label, column in fixed if column == key), "task identity")
    columns = run_factors([k[0] for k in kept], cluster) if interactions is None else list(interactions)
    held = []
    for column in columns if len(key_levels) > 1 else []:
        values = [str(k[0].get(column)) for k in kept]
        levels = sorted(set(values))
        if len(levels) < 2:
            continue
        prods = [(t, lev) for t in key_levels[1:] for lev in levels[1:]]
        block = np.column_stack([[kk == t and v == lev for kk, v in zip(keys, values)]
                                 for t, lev in prods]).astype(float)
        keep = _add_block(N, block)
        if not keep:
            continue
        N = np.column_stack([N, block[:, keep]])
        nuisance_names += [f"{key}={prods[i][0]} x {column}={prods[i][1]}" for i in keep]
        factors[f"{key_label} x {column}"] = len(keep)
        held.append(column)
    if held:
        notes.append(f"{key_label} ({key}) x each run-level factor ({', '.join(held)}) held fixed: the slope "
                     "comes from differences between tasks of a run that these interactions do not explain")
    run_fe = any(col == cluster and label in factors for label, col in fixed)
    cols, names, pred_index, sds = [np.ones(len(kept))], ["intercept"], {}, {}
    for j, p in enumerate(predictors):
        x = np.array([k[2][j] for k in kept], dtype=float)
        x = np.log(x) if log_predictors else x
        if not x.std() > 0:
            raise DncsimError(f"{p} does not vary over the {len(kept)} rows: no slope can be estimated")
        sd = _within_sd(x, clusters) if run_fe else None
        sd = sd if sd is not None and sd > 0 else float(x.std())
        cols.append((x - x.mean()) / sd)
        pred_index[p] = len(names)
        sds[p] = sd
        names.append(f"z({'log ' if log_predictors else ''}{p})")
    P = np.column_stack(cols)
    if _rank(P) < P.shape[1]:
        raise DncsimError(f"the predictors {', '.join(predictors)} are collinear: they cannot be told apart")
    X = np.column_stack([P, N[:, 1:]])
    unidentified = None
    if _rank(X) < X.shape[1]:
        unidentified = (f"{', '.join(predictors)} {'is' if len(predictors) == 1 else 'are'} fully explained by "
                        f"the fixed effects ({', '.join(factors) or 'none'}): the slope is not identified in this "
                        "design")
    names += nuisance_names
    # runs are exchangeable when they share objective, strategy and the set of tasks
    by_run: Dict[str, tuple] = {}
    for k, run in zip(kept, runs):
        by_run.setdefault(run, [str(k[0].get("objective")), str(k[0].get("strategy")), set()])[2].add(
            str(k[0].get(key)))
    stratum_of = {run: (v[0], v[1], tuple(sorted(v[2]))) for run, v in by_run.items()}
    _, strata = np.unique([str(stratum_of[run]) for run in runs], return_inverse=True)
    return Design(y=y, X=X, names=names, clusters=clusters, strata=strata,
                  row_keys=keys, predictors=pred_index, notes=notes, n_dropped=dropped,
                  factors=factors, sd={p: sds[p] for p in predictors},
                  sd_basis="within-run" if run_fe else "total", unidentified=unidentified)


def fit_cluster_ols(design: Design) -> ClusterFit:
    """OLS of the design with run-clustered CR2 errors; degrees of freedom for the predictors."""
    return cluster_fit(design.X, design.y, design.clusters, terms=sorted(design.predictors.values()))


def _cluster_t(X_other_resid_x, y_resid, clusters, G):
    """Vectorised FWL: coefficient and CR0 standard error of one column, for every column of y_resid (n, B)
    and the partialled predictor x~ (n,) or (n, B). The bootstrap and the permutation compare t statistics
    of one design with each other, so no small-sample factor is applied (a constant one would cancel)."""
    xt = X_other_resid_x if X_other_resid_x.ndim == 2 else X_other_resid_x[:, None]
    sxx = (xt * xt).sum(0)
    beta = (xt * y_resid).sum(0) / sxx
    e = y_resid - xt * beta
    scores = np.zeros((G, e.shape[1]))
    np.add.at(scores, clusters, xt * e)
    se = np.sqrt((scores ** 2).sum(0)) / sxx
    return beta, se


def _residualise(design: Design, j: int):
    """The projection that removes every column but j: returns (M x_j, M y, M) as in Frisch-Waugh-Lovell."""
    others = np.delete(design.X, j, axis=1)
    Q, _ = np.linalg.qr(others)
    M = np.eye(len(design.y)) - Q @ Q.T
    return M @ design.X[:, j], M @ design.y, M


def wild_cluster_bootstrap(design: Design, j: int, *, draws: int = 999, seed: int = 0, alpha: float = 0.05):
    """Wild cluster bootstrap of coefficient j with Webb weights: ``(p, ci_low, ci_high)`` -- p from the
    restricted bootstrap (WCR, the null imposed), the interval from the unrestricted bootstrap-t (WCU)."""
    rng = np.random.default_rng(seed)
    G = design.n_clusters
    xt, yt, M = _residualise(design, j)
    beta, se = _cluster_t(xt, yt[:, None], design.clusters, G)
    v = WEBB_WEIGHTS[rng.integers(0, 6, size=(G, draws))][design.clusters]          # (n, draws)
    # restricted: the null beta_j = 0 imposed; y* = fitted_r + v * resid_r; in FWL form y~* = M y*
    resid_r = yt                                          # residuals of y on the other columns
    fitted_r = design.y - resid_r
    y_star = fitted_r[:, None] + v * resid_r[:, None]
    b_r, se_r = _cluster_t(xt, M @ y_star, design.clusters, G)
    t_obs = beta[0] / se[0]
    p = float((1 + np.sum(np.abs(b_r / se_r) >= abs(t_obs))) / (1 + draws))
    # unrestricted: y* = fitted + v * resid; t* = (b* - b) / se*
    resid_u = yt - xt * beta[0]
    y_star = (design.y - resid_u)[:, None] + v * resid_u[:, None]
    b_u, se_u = _cluster_t(xt, M @ y_star, design.clusters, G)
    t_star = (b_u - beta[0]) / se_u
    lo_q, hi_q = np.quantile(t_star, [alpha / 2, 1 - alpha / 2])
    return p, float(beta[0] - hi_q * se[0]), float(beta[0] - lo_q * se[0])


def permutation_p(design: Design, j: int, *, permutations: int = 999, seed: int = 0) -> Optional[float]:
    """Two-sided permutation p of coefficient j's cluster-robust t statistic, permuting whole runs' predictor vectors
    among runs of the same stratum (aligned by the row key); None when no stratum holds two runs."""
    rng = np.random.default_rng(seed)
    G, n = design.n_clusters, len(design.y)
    x = design.X[:, j]
    xt, yt, M = _residualise(design, j)
    beta, se = _cluster_t(xt, yt[:, None], design.clusters, G)
    t_obs = abs(beta[0] / se[0])
    rows_of = {}
    for i, (c, key) in enumerate(zip(design.clusters, design.row_keys)):
        rows_of.setdefault(int(c), {})[key] = i
    stratum_of = {int(c): int(s) for c, s in zip(design.clusters, design.strata)}
    groups: Dict[int, List[int]] = {}
    for c, s in stratum_of.items():
        groups.setdefault(s, []).append(c)
    if all(len(g) < 2 for g in groups.values()):
        return None
    X_perm = np.empty((n, permutations))
    for b in range(permutations):
        xb = x.copy()
        for members in groups.values():
            if len(members) < 2:
                continue
            target = rng.permutation(members)
            for src, dst in zip(members, target):           # run src's predictors go to run dst's rows
                for key, i in rows_of[dst].items():
                    if key in rows_of[src]:
                        xb[i] = x[rows_of[src][key]]
        X_perm[:, b] = xb
    b_p, se_p = _cluster_t(M @ X_perm, np.repeat(yt[:, None], permutations, 1), design.clusters, G)
    return float((1 + np.sum(np.abs(b_p / se_p) >= t_obs - 1e-12)) / (1 + permutations))


def _varies_within_runs(rows, predictors, cluster: str = "run") -> bool:
    """Some run has two rows whose first predictor differs (run fixed effects leave it something)."""
    by_run: Dict[str, set] = {}
    for r in rows:
        v = _number(r.get(predictors[0]))
        if v is not None and r.get(cluster) not in (None, ""):
            by_run.setdefault(str(r.get(cluster)), set()).add(v)
    return any(len(v) > 1 for v in by_run.values())


def _verdict(ci_low, ci_high) -> str:
    if ci_low is None or ci_high is None:
        return "inconclusive"
    if ci_low > 0:
        return "supported"
    if ci_high < 0:
        return "contradicted"
    return "inconclusive"


def primary_analysis(rows: Sequence[dict], outcome: str, predictors: Sequence[str], *, alpha: float = 0.05,
                     few_clusters: int = 10, draws: int = 999, permutations: int = 999, seed: int = 0,
                     fixed=None, interactions: Optional[Sequence[str]] = None, log_predictors: bool = True,
                     key: str = "task_name", excluded_rows: int = 0) -> dict:
    """Fit the design (see the module docstring) and report, per predictor, ``estimate`` (change of the
    outcome per ``sd`` of the (log) predictor: its within-run sd ``sd_within``, or the total sd when the
    model has no run fixed effects, ``sd_basis``), ``se``, ``df``, ``ci_low``, ``ci_high``, ``p``,
    ``method``, ``permutation_p``, ``mde_80``, and for the first predictor the ``verdict``; plus ``n_rows``,
    ``n_runs``, ``excluded_rows``, ``dropped_rows``, ``notes``, ``terms``. DncsimError for fewer than
    3 runs or a design that does not identify the slope (fewer than ``MIN_RESIDUAL_DF`` residual df, or
    fewer than 3 runs with predictor variation left by the fixed effects)."""
    pooled_note = None
    if fixed is None:
        fixed = PRIMARY_FIXED
        if not _varies_within_runs(rows, predictors):
            fixed, pooled_note = POOLED_FIXED, ("the predictor does not vary within runs (one task per run): run "
                                                "fixed effects would absorb it, so objective and strategy fixed "
                                                "effects stand in for them")
    design = build_design(rows, outcome, predictors, log_predictors=log_predictors, key=key, fixed=fixed,
                          interactions=interactions)
    if pooled_note:
        design.notes.insert(0, pooled_note)
    G = design.n_clusters
    if G < 3:
        raise DncsimError(f"{G} run(s) with {outcome} and {', '.join(predictors)}: at least 3 are needed for "
                          "any inference over runs")
    if design.unidentified:
        raise DncsimError(design.unidentified)
    n, p = design.X.shape
    if n - p < MIN_RESIDUAL_DF:
        raise DncsimError(f"{n} rows for {p} terms ({', '.join(design.terms)}): fewer than {MIN_RESIDUAL_DF} "
                          "residual degrees of freedom, the slope is not identified in this design")
    for p_name, j in design.predictors.items():
        xt = _residualise(design, j)[0]
        moving = np.bincount(design.clusters, weights=xt ** 2, minlength=G) > 1e-12 * max(float(xt @ xt), 1e-300)
        if int(moving.sum()) < 3:
            raise DncsimError(f"{p_name}: {int(moving.sum())} run(s) keep any variation once the fixed effects are "
                              "held: the slope is not identified in this design (at least 3 are needed)")
    fit = fit_cluster_ols(design)
    low, high = fit.interval(alpha)
    pvalues = fit.p_values()
    result = {"outcome": outcome, "predictors": list(predictors), "n_rows": len(design.y), "n_runs": G,
              "sd_basis": design.sd_basis,
              "excluded_rows": int(excluded_rows), "dropped_rows": design.n_dropped, "notes": list(design.notes),
              "terms": design.terms, "coefficients": {}}
    few = G < few_clusters
    if few:
        result["notes"].append(f"{G} runs (fewer than {few_clusters}): beside the small-sample corrected errors, a "
                               f"wild cluster bootstrap p (Webb weights, {draws} draws) as a check")
    held = ", ".join(design.factors) or "nothing"
    for p_name, j in design.predictors.items():
        se, df = float(fit.se[j]), float(fit.df[j])
        mde = (sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(0.8, df)) * se
        result["coefficients"][p_name] = {
            "estimate": float(fit.params[j]), "se": se, "df": df, "ci_low": float(low[j]), "ci_high": float(high[j]),
            "p": float(pvalues[j]), "sd": design.sd[p_name],
            "sd_within": design.sd[p_name] if design.sd_basis == "within-run" else None,
            "method": f"OLS with fixed effects for {held}; run-clustered CR2 errors, t on {df:.1f} "
                      "Bell-McCaffrey df",
            "wild_bootstrap_p": (wild_cluster_bootstrap(design, j, draws=draws, seed=seed, alpha=alpha)[0]
                                 if few else None),
            "permutation_p": permutation_p(design, j, permutations=permutations, seed=seed) if permutations else None,
            "mde_80": float(mde)}
    first = result["coefficients"][predictors[0]]
    result["verdict"] = _verdict(first["ci_low"], first["ci_high"])
    return result
