"""Everything ``dncsim analyze`` reports about one feature matrix and its labelings, as plain data.

:func:`analyze_labelings` returns a JSON-ready dict (no NaN anywhere: an undefined number is
``None`` with a note saying why); :func:`format_analysis` renders it as the tables the CLI prints.
"""
from __future__ import annotations

import itertools
import math
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from dncsim.analysis.inputs import as_features, as_labels
from dncsim.analysis.bounds import THEOREM_MIN_SHOTS, ncc_error_bound
from dncsim.analysis.estimators import (DEFAULT_ESTIMATOR, FLAGS, bootstrap_summaries, check_estimator,
                                        estimate_geometry, jackknife_summaries_tasks)
from dncsim.analysis.geometry import UndefinedGeometry
from dncsim.common import DncsimError
from dncsim.analysis.fewshot import ncc_fewshot_error
from dncsim.analysis.geometry import class_geometry
from dncsim.analysis.orthogonality import labeling_independence, orthogonality_summary, random_abs_cos
from dncsim.analysis.text_table import format_table

__all__ = ["analyze_labelings", "format_analysis", "labeling_independence"]


def _fewshot_rows(x, y, geom, shots, ways, episodes, seed, dtype):
    counts = geom.counts
    feasible = [m for m in shots if m < int(counts.min())]
    rows = []
    skipped = [m for m in shots if m not in feasible]
    if feasible:
        w = min(ways, geom.C) if ways else None
        fs = ncc_fewshot_error(x, y, shots=feasible, ways=w, episodes=episodes, seed=seed, dtype=dtype)
        b = ncc_error_bound(geom, feasible, classes=fs.classes, extrapolate=True)
        for k, m in enumerate(feasible):
            undefined = int(b.nonpositive_margin[k].sum())
            note = ""
            if undefined:
                value = None
                note = (f"bound undefined in {undefined} of {episodes} episodes "
                        "(1 + (v_j - v_i)/(m d2) <= 0)")
            else:
                value = float(b.value[k].mean())
                if m < THEOREM_MIN_SHOTS:
                    note = f"m < {THEOREM_MIN_SHOTS}: outside Theorem 4.1's range (extrapolated)"
            rows.append({"shots": m, "ways": int(fs.classes.shape[1]), "episodes": episodes,
                         "error": float(fs.error[k]), "error_std": float(fs.error_std[k]),
                         "bound": value, "bound_in_range": bool(m >= THEOREM_MIN_SHOTS and not undefined),
                         "note": note})
        limit = float(b.limit.mean())
    else:
        limit = float(ncc_error_bound(geom, math.inf).limit[0]) if ways is None else None
    for m in skipped:
        rows.append({"shots": m, "ways": None, "episodes": 0, "error": None, "error_std": None,
                     "bound": None, "bound_in_range": False,
                     "note": f"skipped: the smallest class has {int(counts.min())} samples "
                             f"(needs more than {m})"})
    rows.sort(key=lambda r: r["shots"])
    return rows, limit


#: largest |feature| (as a power of two) analysed as given, per accumulation dtype: fourth moments and
#: squared gaps of features beyond it (or below its inverse) overflow (underflow) the dtype
_SAFE_EXPONENT = {torch.float64: 64, torch.float32: 16}


def _power_of_two_scaled(x: torch.Tensor, dtype: torch.dtype):
    """``(x * 2**-e, e)``: features whose largest magnitude is outside [2**-k, 2**k] (k from
    ``_SAFE_EXPONENT``) scaled by a power of two to a largest magnitude in [0.5, 1), else ``(x, 0)``.
    Multiplying by a power of two is exact, so every scale-free result (CDNV, errors, bounds, cosines)
    is the one of the features as given, without the overflow or underflow of their moments."""
    k = _SAFE_EXPONENT.get(dtype, 16)
    top = float(x.detach().abs().max())
    if top == 0 or 2.0 ** -k <= top <= 2.0 ** k:
        return x, 0
    e = math.frexp(top)[1]
    scaled = np.ldexp(x.detach().cpu().numpy().astype(np.float64), -e)     # exact, subnormals included
    return torch.from_numpy(scaled).to(x.device), e


def _unscaled(value, exponent: int):
    return value if value is None or not exponent else math.ldexp(value, exponent)


def _estimated(x, ys: Dict[str, torch.Tensor], estimator: str, design: str, groups: int, resamples: int,
               seed: int) -> Dict[str, dict]:
    """Per labeling: the summaries by ``estimator`` with their 95% intervals (debiased: the other labelings
    are its strata, jackknife of ``groups`` groups; plugin and crossfit: ``resamples`` bootstrap
    resamples), or None values with a note when undefined."""
    names = list(ys)
    out = {}
    if estimator == "debiased":
        if groups:
            ests, ivs = jackknife_summaries_tasks(x, torch.stack([ys[k] for k in names]), groups=groups,
                                                  design=design, seeds=[seed] * len(names))
        else:
            from dncsim.analysis.estimators import debiased_geometry_tasks

            ests = debiased_geometry_tasks(x, torch.stack([ys[k] for k in names]), design=design)
            ivs = [None] * len(names)
        pairs = list(zip(ests, ivs))
    else:
        pairs = []
        for k in names:
            try:
                e = estimate_geometry(x, ys[k], estimator, seed=seed)
                iv = bootstrap_summaries(x, ys[k], estimator=estimator, resamples=resamples, seed=seed) \
                    if resamples else None
            except UndefinedGeometry as exc:
                e, iv = exc, None
            pairs.append((e, iv))
    for k, (e, iv) in zip(names, pairs):
        row = {"estimator": estimator, "design": getattr(e, "design", None), "dir_cdnv": None, "cdnv": None,
               "ratio": None, "mean_gap": None, "dir_cdnv_ci": None, "cdnv_ci": None, "note": "",
               **{f: None for f in FLAGS}}
        try:
            if isinstance(e, Exception):
                raise e
            s = e.summary()
        except UndefinedGeometry as exc:
            row["note"] = f"{estimator} estimate undefined: {exc}"
            out[k] = row
            continue
        row.update({f: s[f] for f in ("dir_cdnv", "cdnv", "ratio", "mean_gap")})
        row.update({f: s.get(f) for f in FLAGS})
        if iv is not None:
            for f in ("dir_cdnv", "cdnv"):
                lo, hi = iv[f]
                row[f + "_ci"] = [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None
        notes = []
        if s.get("barely_resolved_pairs"):
            notes.append(f"gap barely resolved for {s['barely_resolved_pairs']} ordered pair(s)")
        if s.get("negative_numerator_pairs"):
            notes.append(f"axis variance below the noise floor for {s['negative_numerator_pairs']} ordered pair(s)")
        if s.get("undefined_pairs"):
            notes.append(f"{s['undefined_pairs']} class pair(s) unresolved and left out")
        row["note"] = "; ".join(notes)
        out[k] = row
    return out


def analyze_labelings(features, labelings: Dict[str, object], *, shots: Sequence[int] = (1, 5, 10, 20),
                      ways: Optional[int] = 2, episodes: int = 200, seed: int = 0, ddof: int = 0,
                      dtype: torch.dtype = torch.float64, device=None, estimator: str = DEFAULT_ESTIMATOR,
                      design: str = "auto", interval_groups: int = 20, bootstrap: int = 200) -> dict:
    """Geometry, few-shot error vs Theorem 4.1, and pairwise orthogonality of labelings of ``features``.

    ``features`` (N, d); ``labelings`` name -> labels (N,) int. Per labeling: C, N, dir-CDNV (ordered
    pairs), CDNV (unordered pairs), ratio and mean gap by ``estimator`` (default debiased, the other
    labelings as strata under ``design``) with 95% intervals ``dir_cdnv_ci``, ``cdnv_ci`` (jackknife of
    ``interval_groups`` groups; plugin/crossfit: ``bootstrap`` resamples) and regime flags; ``plugin``: the
    plug-in summaries (``ddof``) that the few-shot bound uses; per shot count the ``ways``-way NCC error over
    ``episodes`` seeded episodes with the bound on the same subsets. Per pair of labelings: the
    orthogonality summary with Prop. 4.2 and whether they are balanced and independent.
    """
    check_estimator(estimator)
    x, exponent = _power_of_two_scaled(as_features(features, device=device), dtype)
    if not labelings:
        raise DncsimError("no labelings given")
    ys = {k: as_labels(v, x.shape[0], name=f"labels '{k}'", device=x.device) for k, v in labelings.items()}
    shots = sorted(set(int(m) for m in shots))
    if not shots or shots[0] < 1:
        raise DncsimError(f"shots must be positive integers; got {shots}")
    multi = len(ys) > 1
    geoms, out = {}, {}
    for name, y in ys.items():
        try:
            g = class_geometry(x, y, ddof=ddof, dtype=dtype, mean_axis_var=multi)
        except DncsimError as exc:
            raise DncsimError(f"labeling '{name}': {exc}") from None
        geoms[name] = g
    estimated = _estimated(x, ys, estimator, design, interval_groups, bootstrap, seed)
    for name, y in ys.items():
        g = geoms[name]
        s = g.summary()
        rows, limit = _fewshot_rows(x, y, g, shots, ways, episodes, seed, dtype)
        e = estimated[name]
        e["mean_gap"] = _unscaled(e["mean_gap"], exponent)
        out[name] = {"C": s["C"], "N": s["N"], **e,
                     "plugin": {"dir_cdnv": s["dir_cdnv"], "cdnv": s["cdnv"], "ratio": s["ratio"],
                                "mean_gap": _unscaled(s["mean_gap"], exponent)},
                     "fewshot": rows, "bound_limit": limit}
    pairs = []
    for a, b in itertools.combinations(ys, 2):
        orth = orthogonality_summary(geoms[a], geoms[b], seed=seed)
        med = orth["median_abs_cos"]
        orth["tightness"] = orth["median_bound"] / med if med > 0 else None
        orth["bound_vs_random"] = orth["median_bound"] / random_abs_cos(geoms[a].d)["median"]
        pairs.append({"a": a, "b": b, **labeling_independence(ys[a].cpu().numpy(), ys[b].cpu().numpy()),
                      **orth})
    return {"N": int(x.shape[0]), "d": int(x.shape[1]),
            "settings": {"ddof": ddof, "ways": ways, "episodes": episodes, "seed": seed, "shots": shots,
                         "dtype": str(dtype).replace("torch.", ""), "estimator": estimator, "design": design,
                         "interval_groups": interval_groups, "bootstrap": bootstrap},
            "labelings": out, "pairs": pairs}


def _num(v, fmt="{:.4g}"):
    return "n/a" if v is None or not math.isfinite(v) else fmt.format(v)


def format_analysis(result: dict, title: str = "") -> str:
    """The human-readable tables for an :func:`analyze_labelings` result."""
    st = result["settings"]
    head = f"{title}: " if title else ""
    lines = [f"{head}N={result['N']} samples, d={result['d']} dimensions, ddof={st['ddof']}, "
             f"{st['episodes']} episodes per shot count (seed {st['seed']})", ""]
    def ci(v):
        return "n/a" if v is None else f"[{v[0]:.4g}, {v[1]:.4g}]"

    geo = [[name, r["C"], r["N"], _num(r["dir_cdnv"]), ci(r["dir_cdnv_ci"]), _num(r["cdnv"]), ci(r["cdnv_ci"]),
            _num(r["ratio"]), _num(r["mean_gap"]), r["design"] or "-"] for name, r in result["labelings"].items()]
    lines.append(format_table(["labeling", "C", "N", "dir-CDNV", "95% CI", "CDNV", "95% CI", "dir/CDNV", "mean gap",
                               "design"], geo,
                              title=f"Geometry by the {st['estimator']} estimator (dir-CDNV: mean over ordered "
                                    "pairs; CDNV: mean over unordered pairs)"))
    lines += [f"  note: {name}: {r['note']}" for name, r in result["labelings"].items() if r["note"]]
    plug = [[name, _num(r["plugin"]["dir_cdnv"]), _num(r["plugin"]["cdnv"]), _num(r["plugin"]["ratio"])]
            for name, r in result["labelings"].items()]
    if st["estimator"] != "plugin":
        lines += ["", format_table(["labeling", "dir-CDNV", "CDNV", "dir/CDNV"], plug,
                                   title=f"Plug-in geometry (ddof={st['ddof']}; the Theorem 4.1 bound below uses it)")]
    notes, fs_rows = [], []
    for name, r in result["labelings"].items():
        for row in r["fewshot"]:
            mark = ""
            if row["note"]:
                if row["note"] not in notes:
                    notes.append(row["note"])
                mark = " " + "*" * (notes.index(row["note"]) + 1)
            err = "n/a" if row["error"] is None else f"{row['error']:.4f} ± {row['error_std']:.3f}"
            fs_rows.append([name, row["shots"], row["ways"] if row["ways"] else "-", err,
                            _num(row["bound"]) + mark])
        fs_rows.append([name, "inf", "", "", _num(r["bound_limit"]) + " (limit)"])
    lines += ["", format_table(["labeling", "shots", "ways", "NCC error (mean ± sd)", "Thm 4.1 bound"], fs_rows,
                               title="Few-shot nearest-centre error against the Theorem 4.1 bound (same class "
                                     "subsets)")]
    lines += [f"  {'*' * (k + 1)} {n}" for k, n in enumerate(notes)]
    if result["pairs"]:
        rows = []
        for p in result["pairs"]:
            indep = "exact" if p["independent"] else f"no (V={p['cramers_v']:.2f})"
            bal = "yes" if p["balanced_a"] and p["balanced_b"] else "no"
            tight = "n/a" if p["tightness"] is None else f"{p['tightness']:.3g}"
            rows.append([f"{p['a']} / {p['b']}", p["axis_pairs"], f"{p['median_abs_cos']:.3f}",
                         f"{p['max_abs_cos']:.3f}", f"{p['cos2_vs_random']:.2f}", f"{p['median_bound']:.3f}",
                         tight, f"{p['bound_vs_random']:.3g}", f"{100 * p['frac_under_bound']:.1f}%", indep, bal])
        lines += ["", format_table(
            ["labelings", "axis pairs", "median |cos|", "max |cos|", "cos²·d", "median bound",
             "bound/observed", "bound/random", "under bound", "independent", "balanced"], rows,
            title="Decision-axis orthogonality between labelings and the Prop. 4.2 check")]
        lines.append("  cos²·d: mean cos² over the random-direction value 1/d (1 = random, < 1 = more "
                     "orthogonal). bound/observed: median bound over median |cos| (1 = tight); bound/random: "
                     "over random directions' median |cos|.")
        lines.append("  Prop. 4.2 assumes balanced, independent labelings; on exactly such labelings every "
                     "axis pair is under the bound whatever the features, so its tightness is the measurement.")
        if any(p["axes_sampled"] for p in result["pairs"]):
            lines.append("  (labelings with many classes are summarised on a seeded sample of 2048 axes)")
    return "\n".join(lines)
