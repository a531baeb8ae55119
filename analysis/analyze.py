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
from dncsim.common import DncsimError
from dncsim.analysis.fewshot import ncc_fewshot_error
from dncsim.analysis.geometry import class_geometry
from dncsim.analysis.orthogonality import (labeling_independence, orthogonality_summary, permutation_null_tasks,
                                           random_abs_cos)
from dncsim.analysis.text_table import format_table

__all__ = ["analyze_labelings", "format_analysis", "labeling_independence"]


#: labelings with more axes than this (C (C - 1) / 2) are summarised on a sample of axes, and get no null
_NULL_MAX_AXES = 2048


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


def analyze_labelings(features, labelings: Dict[str, object], *, shots: Sequence[int] = (1, 5, 10, 20),
                      ways: Optional[int] = 2, episodes: int = 200, seed: int = 0, ddof: int = 0,
                      dtype: torch.dtype = torch.float64, device=None, null_draws: int = 200) -> dict:
    """Geometry, few-shot error vs Theorem 4.1, and pairwise orthogonality of labelings of ``features``.

    ``features`` (N, d); ``labelings`` name -> labels (N,) int. Per labeling: C, N, CDNV (unordered pairs),
    directional CDNV (ordered pairs), their ratio (``ddof`` as ``class_geometry``), mean gap, and per shot
    count the ``ways``-way NCC error over ``episodes`` seeded episodes with the bound on the same subsets
    (too-large shot counts skipped, noted). Per pair of labelings: the orthogonality summary with Prop. 4.2,
    whether they are balanced and independent, and with ``null_draws`` > 0 the permutation null
    (``permutation_null_tasks``, seeded by ``seed``): ``null_median_abs_cos``, ``null_q05``, ``null_p``,
    ``beyond_null`` (None when a labeling's axes are sampled); ``random_median_abs_cos`` is a reference.
    """
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
        s = g.summary()
        rows, limit = _fewshot_rows(x, y, g, shots, ways, episodes, seed, dtype)
        out[name] = {"C": s["C"], "N": s["N"], "cdnv": s["cdnv"], "dir_cdnv": s["dir_cdnv"],
                     "ratio": s["ratio"], "mean_gap": _unscaled(s["mean_gap"], exponent), "fewshot": rows,
                     "bound_limit": limit}
    if int(null_draws) < 0:
        raise DncsimError(f"null_draws must be 0 (off) or a positive count; got {null_draws}")
    null = None
    names = list(ys)
    if multi and null_draws and all(g.C * (g.C - 1) // 2 <= _NULL_MAX_AXES for g in geoms.values()):
        null = permutation_null_tasks(x, torch.stack([ys[k] for k in names]), draws=int(null_draws), seed=seed)
    random_level = random_abs_cos(int(x.shape[1]))["median"]
    pairs = []
    for a, b in itertools.combinations(ys, 2):
        orth = orthogonality_summary(geoms[a], geoms[b], seed=seed)
        med = orth["median_abs_cos"]
        orth["tightness"] = orth["median_bound"] / med if med > 0 else None
        orth["bound_vs_random"] = orth["median_bound"] / random_abs_cos(geoms[a].d)["median"]
        ia, ib = names.index(a), names.index(b)
        test = {"null_median_abs_cos": None, "null_q05": None, "null_p": None, "beyond_null": None}
        if null is not None:
            test = {k: float(null[k][ia, ib]) for k in ("null_median_abs_cos", "null_q05", "null_p")}
            test["beyond_null"] = bool(null["beyond_null"][ia, ib])
        pairs.append({"a": a, "b": b, **labeling_independence(ys[a].cpu().numpy(), ys[b].cpu().numpy()),
                      **orth, **test, "random_median_abs_cos": random_level})
    return {"N": int(x.shape[0]), "d": int(x.shape[1]),
            "settings": {"ddof": ddof, "ways": ways, "episodes": episodes, "seed": seed, "shots": shots,
                         "null_draws": int(null_draws),
                         "dtype": str(dtype).replace("torch.", "")},
            "labelings": out, "pairs": pairs}


def _num(v, fmt="{:.4g}"):
    return "n/a" if v is None or not math.isfinite(v) else fmt.format(v)


def format_analysis(result: dict, title: str = "") -> str:
    """The human-readable tables for an :func:`analyze_labelings` result."""
    st = result["settings"]
    head = f"{title}: " if title else ""
    lines = [f"{head}N={result['N']} samples, d={result['d']} dimensions, ddof={st['ddof']}, "
             f"{st['episodes']} episodes per shot count (seed {st['seed']})", ""]
    geo = [[name, r["C"], r["N"], _num(r["dir_cdnv"]), _num(r["cdnv"]), _num(r["ratio"]), _num(r["mean_gap"])]
           for name, r in result["labelings"].items()]
    lines.append(format_table(["labeling", "C", "N", "dir-CDNV", "CDNV", "dir/CDNV", "mean gap"], geo,
                              title="Geometry (dir-CDNV: mean over ordered pairs; CDNV: mean over unordered pairs)"))
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
        null_rows = [[f"{p['a']} / {p['b']}", f"{p['median_abs_cos']:.3f}", f"{p['null_median_abs_cos']:.3f}",
                      f"{p['null_q05']:.3f}", f"{p['null_p']:.3f}", "yes" if p["beyond_null"] else "no",
                      f"{p['random_median_abs_cos']:.3f}"]
                     for p in result["pairs"] if p["null_p"] is not None]
        draws = result["settings"].get("null_draws", 0)
        if null_rows:
            lines += ["", format_table(
                ["labelings", "median |cos|", "null median", "null 5%", "null p", "beyond the null",
                 "random directions"], null_rows,
                title=f"Orthogonality against the permutation null ({draws} relabelings of the same samples, "
                      f"same class sizes)")]
            lines.append("  beyond the null: the observed median |cos| is at or below the null's 5% level (null p "
                         "<= 0.05): the axes are more orthogonal than random relabelings' axes in these features. "
                         "Random directions' median |cos| is a reference line, not the test.")
        elif draws and len(result["pairs"]):
            lines.append("  (no permutation null: a labeling has more than 2048 axes)")
        if any(p["axes_sampled"] for p in result["pairs"]):
            lines.append("  (labelings with many classes are summarised on a seeded sample of 2048 axes)")
    return "\n".join(lines)
