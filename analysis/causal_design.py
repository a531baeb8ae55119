"""Causal analysis of the per-task 2 x 2 dose design: reduced forms, first stages with conditional F, the
joint 2SLS of the outcome on both log2 mediators, Hansen's J and the placebo arm.

Rows are tasks (``run``, ``task_name``, ``position``, ``dose_dir``, ``dose_orth``, ``placebo``; CSV strings
parsed). Fixed effects for run, task name and position; run-clustered CR2 errors, t on Bell-McCaffrey df
(analysis/clustered.py). A dose is the indicator of its higher level with two levels, else its step (index
among the sorted levels). Instruments: the dose cells' dummies. Details: docs, Methods.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import linalg as sla
from scipy import stats as sps

from dncsim.analysis.clustered import cluster_fit
from dncsim.common import DncsimError

__all__ = ["DOSE_DIR", "DOSE_ORTH", "PLACEBO", "MEDIATORS", "WEAK_F", "has_dose_design", "design_analysis",
           "design_sentences", "simulate_design_table"]

DOSE_DIR, DOSE_ORTH, PLACEBO = "dose_dir", "dose_orth", "placebo"
DOSES = (DOSE_DIR, DOSE_ORTH)
MEDIATORS = ("dir_cdnv_learned", "cdnv_learned")
LABELS = {"dir_cdnv_learned": "dir_cdnv", "cdnv_learned": "cdnv"}
WEAK_F = 10.0
FIXED = ("run", "task_name", "position")


def _float(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f if math.isfinite(f) else float("nan")


def _flag(v) -> float:
    if isinstance(v, str):
        v = {"true": 1.0, "false": 0.0}.get(v.strip().lower(), v)
    f = _float(v)
    return 0.0 if math.isnan(f) else float(f != 0)


def has_dose_design(rows: Sequence[dict]) -> bool:
    """Whether the rows carry ``dose_dir``/``dose_orth`` and at least one of them takes two values."""
    for col in DOSES:
        values = {_float(r.get(col)) for r in rows}
        if len({v for v in values if not math.isnan(v)}) > 1:
            return True
    return False


def _log2(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log2(np.where(values > 0, values, 1.0)), np.nan)


class _Table:
    """The rows as arrays: coded doses, cell dummies, arm, and the string columns of the fixed effects."""

    def __init__(self, rows: Sequence[dict], columns: Sequence[str]):
        rows = [r for r in rows if r.get("run") not in (None, "")]
        self.rows = rows
        self.n = len(rows)
        self._exog: dict = {}
        self.fixed = {c: np.array([str(r.get(c)) for r in rows]) for c in FIXED}
        self.values = {c: np.array([_float(r.get(c)) for r in rows]) for c in columns}
        self.real = np.array([_flag(r.get(PLACEBO)) for r in rows]) == 0
        self.coding, self.levels, codes = {}, {}, []
        for col in DOSES:
            raw = np.array([_float(r.get(col)) for r in rows])
            if np.isnan(raw).any():
                raise DncsimError(f"{col}: every task row needs a number (the dose its experience received)")
            levels = sorted(set(raw[self.real].tolist())) or sorted(set(raw.tolist()))
            if len(levels) < 2:
                raise DncsimError(f"{col}: one level ({levels[0]:g}) in the real arm; the 2 x 2 design needs "
                                  "both doses to take two values")
            self.levels[col] = [float(v) for v in levels]
            step = np.searchsorted(np.array(levels), raw).astype(float)
            if len(levels) == 2:
                self.coding[col] = f"indicator of {col} = {levels[1]:g} (vs {levels[0]:g})"
                codes.append((raw >= levels[1]).astype(float))
            else:
                self.coding[col] = f"dose step (index among the levels {', '.join(f'{v:g}' for v in levels)})"
                codes.append(step)
            self.values[f"{col}:step"] = step
        self.D = np.column_stack(codes)
        cells = sorted(set(zip(self.values[f"{DOSE_DIR}:step"][self.real].tolist(),
                               self.values[f"{DOSE_ORTH}:step"][self.real].tolist())))
        self.cells = cells
        key = list(zip(self.values[f"{DOSE_DIR}:step"].tolist(), self.values[f"{DOSE_ORTH}:step"].tolist()))
        self.C = np.column_stack([[float(k == c) for k in key] for c in cells[1:]]) if len(cells) > 1 \
            else np.zeros((self.n, 0))

    def cell_name(self, cell) -> str:
        return (f"{DOSE_DIR}={self.levels[DOSE_DIR][int(cell[0])]:g}, "
                f"{DOSE_ORTH}={self.levels[DOSE_ORTH][int(cell[1])]:g}")

    def cell_counts(self, mask) -> Dict[str, int]:
        d, o = self.values[f"{DOSE_DIR}:step"][mask], self.values[f"{DOSE_ORTH}:step"][mask]
        out: Dict[str, int] = {}
        for a, b in zip(d.tolist(), o.tolist()):
            out[self.cell_name((a, b))] = out.get(self.cell_name((a, b)), 0) + 1
        return dict(sorted(out.items()))

    def exog(self, mask):
        key = mask.tobytes()
        if key not in self._exog:
            self._exog[key] = self._build_exog(mask)
        return self._exog[key]

    def _build_exog(self, mask):
        """Intercept and the dummies (first level dropped) of run, task name and position among the masked rows,
        collinear columns dropped (pivoted QR); the run codes of those rows."""
        cols = [np.ones(int(mask.sum()))]
        for c in FIXED:
            values = self.fixed[c][mask]
            levels = np.unique(values)
            cols += [(values == v).astype(float) for v in levels[1:]]
        W = np.column_stack(cols)
        _, R, piv = sla.qr(W, mode="economic", pivoting=True)
        diag = np.abs(np.diag(R))
        keep = np.sort(piv[diag > 1e-9 * diag[0]])
        _, runs = np.unique(self.fixed["run"][mask], return_inverse=True)
        return W[:, keep], runs


def _coef(fit, j: int, alpha: float) -> dict:
    b, se, df = float(fit.params[j]), float(fit.se[j]), float(fit.df[j])
    half = float(sps.t.ppf(1 - alpha / 2, df)) * se
    p = float(2 * sps.t.sf(abs(b / se), df)) if se > 0 else float("nan")
    return {"estimate": b, "se": se, "df": df, "ci_low": b - half, "ci_high": b + half, "p": p}


def _wald(fit, idx: Sequence[int]) -> dict:
    """Cluster-robust Wald test of ``params[idx] = 0``: F = W / q; p from t(Bell-McCaffrey df) for q = 1,
    else from F(q, G - q) on the Hotelling-scaled W (G - q) / (q (G - 1))."""
    idx = list(idx)
    b = fit.params[idx]
    V = fit.cov[np.ix_(idx, idx)]
    try:
        w = float(b @ np.linalg.solve(V, b))
    except np.linalg.LinAlgError:
        w = float("inf")
    q, G = len(idx), fit.n_clusters
    if q == 1:
        p = float(2 * sps.t.sf(math.sqrt(w), fit.df[idx[0]]))
    elif G > q:
        p = float(sps.f.sf(w * (G - q) / (q * (G - 1)), q, G - q))
    else:
        p = float("nan")
    return {"F": w / q, "wald": w, "q": q, "clusters": int(G), "p": p}


def _rows_with(t: _Table, mask, columns) -> np.ndarray:
    ok = mask.copy()
    for c in columns:
        ok &= np.isfinite(t.values[c])
    return ok


def _ols(t: _Table, mask, y, regs):
    W, runs = t.exog(mask)
    k = regs.shape[1]
    return cluster_fit(np.column_stack([regs[mask], W]), y[mask], runs, terms=range(k))


def _reduced(t: _Table, mask, y, alpha, applied: bool = False) -> dict:
    fit = _ols(t, mask, y, t.D)
    out = {DOSE_DIR: _coef(fit, 0, alpha), DOSE_ORTH: _coef(fit, 1, alpha), "joint": _wald(fit, [0, 1]),
           "n_rows": int(mask.sum()), "n_runs": int(fit.n_clusters)}
    if applied:       # any penalty applied (either dose above its lowest level) against none
        any_dose = (t.D.max(1) > 0).astype(float)[:, None]
        out["applied"] = _coef(_ols(t, mask, y, any_dose), 0, alpha)
    return out


def _first_stage(t: _Table, mask, m: Dict[str, np.ndarray], mediator: str, other: str, alpha) -> dict:
    W, runs = t.exog(mask)
    x, xo, C = m[mediator][mask], m[other][mask], t.C[mask]
    L = C.shape[1]
    doses = cluster_fit(np.column_stack([t.D[mask], W]), x, runs, terms=[0, 1])
    cells = cluster_fit(np.column_stack([C, W]), x, runs, terms=range(L))
    # Sanderson-Windmeijer: partial out the 2SLS projection of the other mediator, then the F of the
    # excluded instruments on what is left, over L - K + 1 = L - 1 restrictions (K = 2 endogenous)
    proj = cluster_fit(np.column_stack([xo, W]), x, runs, instruments=np.column_stack([C, W]), terms=[0])
    resid = x - np.column_stack([xo, W]) @ proj.params
    sw = cluster_fit(np.column_stack([C, W]), resid, runs, terms=range(L))
    sw_w = _wald(sw, range(L))
    f_sw = sw_w["wald"] / max(L - 1, 1)
    f_all = _wald(cells, range(L))
    return {DOSE_DIR: _coef(doses, 0, alpha), DOSE_ORTH: _coef(doses, 1, alpha),
            "F": f_all["F"], "F_p": f_all["p"], "conditional_F": f_sw, "weak": bool(f_sw < WEAK_F),
            "instruments": L, "n_rows": int(mask.sum()), "n_runs": int(doses.n_clusters)}


def _hansen_j(y, X, Z, W, runs) -> float:
    """Two-step cluster-robust Hansen J of y on X (endogenous) with excluded instruments Z, W partialled out."""
    P = np.linalg.lstsq(W, np.column_stack([y, X, Z]), rcond=None)[0]
    R = np.column_stack([y, X, Z]) - W @ P
    yt, Xt, Zt = R[:, 0], R[:, 1:1 + X.shape[1]], R[:, 1 + X.shape[1]:]
    ZX, Zy = Zt.T @ Xt, Zt.T @ yt
    A = np.linalg.pinv(Zt.T @ Zt)
    b = np.linalg.solve(ZX.T @ A @ ZX, ZX.T @ A @ Zy)
    u = yt - Xt @ b
    G = runs.max() + 1
    scores = np.zeros((G, Zt.shape[1]))
    np.add.at(scores, runs, Zt * u[:, None])
    S = scores.T @ scores
    Si = np.linalg.pinv(S)
    b2 = np.linalg.solve(ZX.T @ Si @ ZX, ZX.T @ Si @ Zy)
    g = Zt.T @ (yt - Xt @ b2)
    return float(g @ Si @ g)


def _mediated(t: _Table, mask, y, m, alpha) -> dict:
    W, runs = t.exog(mask)
    X = np.column_stack([m[MEDIATORS[0]][mask], m[MEDIATORS[1]][mask]])
    Z = np.column_stack([t.C[mask], W])
    fit = cluster_fit(np.column_stack([X, W]), y[mask], runs, instruments=Z, terms=[0, 1])
    size = {"n_rows": int(mask.sum()), "n_runs": int(fit.n_clusters)}
    out = {LABELS[MEDIATORS[0]]: dict(_coef(fit, 0, alpha), **size),
           LABELS[MEDIATORS[1]]: dict(_coef(fit, 1, alpha), **size)}
    L = t.C.shape[1]
    if L <= 2:
        over = {"statistic": None, "df": 0, "p": None,
                "reason": f"{L} instruments for 2 mediators: just identified, nothing to test"}
    else:
        j, q, G = _hansen_j(y[mask], X, t.C[mask], W, runs), L - 2, int(fit.n_clusters)
        p = float(sps.f.sf(j * (G - q) / (q * (G - 1)), q, G - q)) if G > q else float("nan")
        over = {"statistic": j, "df": q, "clusters": G, "p": p, "p_chi2": float(sps.chi2.sf(j, q)),
                "method": "Hansen J of two-step GMM with a run-clustered weight matrix (fixed effects partialled "
                          "out); p: J (G - df) / (df (G - 1)) on F(df, G - df) (G runs), p_chi2: on chi2(df)"}
    return out, over


def design_analysis(rows: Sequence[dict], outcomes: Sequence[str], mediators: Sequence[str] = MEDIATORS,
                    alpha: float = 0.05, *, brief: bool = False) -> dict:
    """The causal analysis of the per-task dose design (module docstring): ``reduced_forms``, ``first_stages``,
    ``mediators`` (per mediator label, per outcome), ``overidentification``, ``placebo`` and
    ``direct_effect`` (per outcome), cell counts, ``n_rows``/``n_runs`` and ``sentences``. ``brief`` (for
    simulations) leaves out the first stages and the placebo arm's mediators and differences. DncsimError
    when the design cannot identify the effects (a dose with one level, fewer than 3 real-arm runs)."""
    if tuple(mediators) != MEDIATORS:
        raise DncsimError(f"mediators: expected {', '.join(MEDIATORS)}")
    missing = [c for c in (*DOSES, *FIXED) if not any(r.get(c) not in (None, "") for r in rows)]
    if missing:
        raise DncsimError(f"tasks table: no column {', '.join(missing)} (the dose design's columns)")
    t = _Table(rows, [*outcomes, *mediators])
    m = {k: _log2(t.values[k]) for k in mediators}
    real_runs = len(set(t.fixed["run"][t.real].tolist()))
    if real_runs < 3:
        raise DncsimError(f"{real_runs} run(s) in the real arm (placebo 0): at least 3 are needed for inference "
                          "over runs")
    if len(t.cells) < 3:
        raise DncsimError(f"{len(t.cells)} dose cells in the real arm: at least 3 are needed to instrument "
                          "two mediators")
    for k in mediators:
        t.values[k] = m[k]
    out = {"n_rows": int(t.real.sum()), "n_runs": real_runs, "n_placebo_rows": int((~t.real).sum()),
           "n_placebo_runs": len(set(t.fixed["run"][~t.real].tolist())),
           "coding": dict(t.coding), "levels": dict(t.levels),
           "cells": {"real": t.cell_counts(t.real), "placebo": t.cell_counts(~t.real)},
           "instruments": [t.cell_name(c) for c in t.cells[1:]], "outcomes": list(outcomes),
           "reduced_forms": {}, "first_stages": {}, "mediators": {LABELS[k]: {} for k in mediators},
           "overidentification": {}, "placebo": None, "direct_effect": {}, "notes": [],
           "method": "fixed effects for run, task name and position; run-clustered CR2 errors, t on Bell-McCaffrey "
                     "df; instruments: the dose cells' dummies; mediators as log2 (per doubling)"}
    notes = out["notes"]

    def attempt(label, fn, *args):
        try:
            return fn(*args)
        except DncsimError as exc:
            notes.append(f"{label}: {exc}")
            return None

    fs_mask = _rows_with(t, t.real, mediators)
    for k, other in ((mediators[0], mediators[1]), (mediators[1], mediators[0])) if not brief else ():
        out["first_stages"][k] = attempt(f"first stage of {k}", _first_stage, t, fs_mask, m, k, other, alpha)
    for y in outcomes:
        out["reduced_forms"][y] = attempt(f"reduced form of {y}", _reduced, t, _rows_with(t, t.real, [y]),
                                          t.values[y], alpha)
        res = attempt(f"mediators of {y}", _mediated, t, _rows_with(t, t.real, [y, *mediators]),
                      t.values[y], m, alpha)
        med, over = res if res is not None else (None, None)
        for k in mediators:
            out["mediators"][LABELS[k]][y] = None if med is None else med[LABELS[k]]
        out["overidentification"][y] = over
    out["placebo"] = _placebo(t, outcomes, () if brief else mediators, alpha, attempt, brief)
    for y in outcomes:
        over = out["overidentification"].get(y) or {}
        pl = ((out["placebo"] or {}).get("outcomes") or {}).get(y) or {}
        p_pl = (pl.get("applied") or {}).get("p")
        p_j = over.get("p")
        flagged = any(p is not None and p < alpha / 2 for p in (p_pl, p_j))
        out["direct_effect"][y] = {"flagged": bool(flagged), "placebo_p": p_pl, "overidentification_p": p_j,
                                   "rule": f"placebo arm's penalty-applied contrast or Hansen J, p < {alpha / 2:g} "
                                           f"(alpha {alpha:g} split over the two)"}
    out["sentences"] = design_sentences(out, alpha)
    return out


def _placebo(t: _Table, outcomes, mediators, alpha, attempt, brief=False) -> Optional[dict]:
    pl = ~t.real
    runs = len(set(t.fixed["run"][pl].tolist()))
    if runs < 3:
        return {"available": False, "reason": f"{runs} placebo run(s): at least 3 are needed", "outcomes": {},
                "mediators": {}, "difference": {}}
    out = {"available": True, "n_rows": int(pl.sum()), "n_runs": runs, "outcomes": {}, "mediators": {},
           "difference": {}}
    both = np.column_stack([t.D, t.D * t.real[:, None]])
    for col in [*outcomes, *mediators]:
        key = "outcomes" if col in outcomes else "mediators"
        out[key][col] = attempt(f"placebo arm, {col}", _reduced, t, _rows_with(t, pl, [col]), t.values[col], alpha,
                                key == "outcomes")
        if brief:
            continue
        mask = _rows_with(t, np.ones(t.n, bool), [col])
        fit = attempt(f"real - placebo, {col}", _ols, t, mask, t.values[col], both)
        out["difference"][col] = None if fit is None else {DOSE_DIR: _coef(fit, 2, alpha),
                                                            DOSE_ORTH: _coef(fit, 3, alpha)}
    return out


def _ci(c: dict, fmt: str = "+.3g") -> str:
    return f"{c['estimate']:{fmt}} [{c['ci_low']:{fmt}}, {c['ci_high']:{fmt}}]"


def design_sentences(res: dict, alpha: float = 0.05) -> List[str]:
    """The verdicts of :func:`design_analysis` in words, whichever way they come out."""
    out = [f"Dose design: {res['n_runs']} real-arm runs ({res['n_rows']} task rows), {res['n_placebo_runs']} "
           f"placebo runs; doses coded as {res['coding'][DOSE_DIR]} and {res['coding'][DOSE_ORTH]}."]
    for k, fs in res["first_stages"].items():
        if fs is None:
            continue
        out.append(f"First stage, log2 {k}: dose_dir {_ci(fs[DOSE_DIR])}, dose_orth {_ci(fs[DOSE_ORTH])}; "
                   f"F = {fs['F']:.1f}, conditional F (Sanderson-Windmeijer) = {fs['conditional_F']:.1f}"
                   + (f": WEAK instrument (< {WEAK_F:g}), its 2SLS interval is not to be trusted." if fs["weak"]
                      else "."))
    for y in res["outcomes"]:
        rf = res["reduced_forms"].get(y)
        if rf is not None:
            out.append(f"Reduced form on {y}: dose_dir {_ci(rf[DOSE_DIR])} (p = {rf[DOSE_DIR]['p']:.3g}), "
                       f"dose_orth {_ci(rf[DOSE_ORTH])} (p = {rf[DOSE_ORTH]['p']:.3g}).")
        parts = []
        for label, what in (("dir_cdnv", "directional CDNV"), ("cdnv", "CDNV")):
            c = res["mediators"][label].get(y)
            if c is None:
                continue
            decided = c["ci_low"] > 0 or c["ci_high"] < 0
            verdict = ((f"raising {what} raises {y}" if c["estimate"] > 0 else f"raising {what} lowers {y}")
                       if decided else "the interval covers 0: no effect shown")
            parts.append(f"{what} {_ci(c)} per doubling, p = {c['p']:.3g} ({verdict})")
        if parts:
            out.append(f"Mediators of {y} (2SLS, the other held fixed): " + "; ".join(parts) + ".")
        over = res["overidentification"].get(y)
        if over and over.get("p") is not None:
            out.append(f"Over-identification ({y}): Hansen J = {over['statistic']:.2f} on {over['df']} df "
                       f"(p = {over['p']:.3g})"
                       + (": the instruments disagree, a path outside the two mediators is likely."
                          if over["p"] < alpha else ": no evidence against the exclusion restrictions."))
        pl = ((res.get("placebo") or {}).get("outcomes") or {}).get(y) or {}
        if pl.get("applied"):
            a = pl["applied"]
            out.append(f"Placebo arm (permuted labels): applying a penalty changes {y} by {_ci(a)}, "
                       f"p = {a['p']:.3g}.")
        de = res["direct_effect"].get(y)
        if de is not None:
            out.append(f"Direct effect of applying a penalty on {y} (placebo or over-identification p < "
                       f"{alpha / 2:g}): " + ("FLAGGED: part of the dose's effect does not run through the two "
                                              "mediators, so their 2SLS estimates are not causal." if de["flagged"]
                                              else "not flagged."))
    pl = res.get("placebo")
    if pl and not pl.get("available"):
        out.append(f"Placebo arm: {pl['reason']}.")
    return out


# --- a structural model with known effects (the simulation of the suite and the benchmarks) ---------------

def simulate_design_table(seed: int, *, runs: int = 24, placebo_runs: int = 12, b_dir: float = 0.0,
                          b_cdnv: float = 0.0, direct: float = 0.0, confound: float = 0.0,
                          first: tuple = (-1.5, -0.4, -1.5, -0.4), doses: tuple = (5.0, 5.0),
                          noise: float = 0.03, as_strings: bool = False) -> List[dict]:
    """Task rows of ``runs`` runs x 4 tasks, the last ``placebo_runs`` placebo: every run holds each 2 x 2 cell
    once (Latin squares), random task order, run/task/position effects. log2 M_dir = a1 D_dir + a12 D_orth + U + e,
    log2 M_cdnv = a2 D_orth + a21 D_dir + U' + e (``first`` = (a1, a12, a2, a21); real arm only); forgetting =
    b_dir log2 M_dir + b_cdnv log2 M_cdnv + direct 1[any dose] (both arms) + confound (U + U') + noise, None
    at the last position. Seeded."""
    rng = np.random.default_rng(seed)
    tasks = ["color", "size", "shape", "style"]
    cells = [(0, 0), (1, 0), (0, 1), (1, 1)]
    task_fx = {"color": (0.0, 0.2, 0.02), "size": (0.3, -0.1, 0.0), "shape": (-0.2, 0.1, 0.04),
               "style": (0.1, 0.0, -0.02)}
    pos_fx = [0.0, 0.05, -0.03, 0.02]
    a1, a12, a2, a21 = first
    rows = []
    for r in range(runs):
        if r % 4 == 0:
            square_rows, square_cols = rng.permutation(4), rng.permutation(4)
        cell_of = [cells[square_cols[(square_rows[r % 4] + k) % 4]] for k in range(4)]
        order = rng.permutation(4)
        placebo = r >= runs - placebo_runs
        run_fx = rng.normal(0, 0.5, 3) * (1, 1, 0.05)
        for k, name in enumerate(tasks):
            pos = int(np.flatnonzero(order == k)[0])
            dd, do = cell_of[k]
            u, u2 = rng.normal(0, 0.3, 2)
            move = 0.0 if placebo else 1.0
            md = run_fx[0] + task_fx[name][0] + move * (a1 * dd + a12 * do) + u + rng.normal(0, 0.3)
            mc = run_fx[1] + task_fx[name][1] + move * (a2 * do + a21 * dd) + u2 + rng.normal(0, 0.3)
            y = (0.2 + run_fx[2] + task_fx[name][2] + pos_fx[pos] + b_dir * md + b_cdnv * mc
                 + direct * float(dd or do) + confound * (u + u2) + rng.normal(0, noise))
            row = {"run": f"run{r:02d}", "task": pos, "position": pos, "task_name": name,
                   "dose_dir": doses[0] * dd, "dose_orth": doses[1] * do, "placebo": int(placebo),
                   "dir_cdnv_learned": 2.0 ** md, "cdnv_learned": 2.0 ** mc,
                   "forgetting": None if pos == 3 else y, "acc_learned": 0.9 + rng.normal(0, 0.02)}
            rows.append({k2: ("" if v is None else str(v)) for k2, v in row.items()} if as_strings else row)
    return rows
