"""Figures of decision-axis orthogonality: the overlap heatmap after the last experience and along the
stream, and Proposition 4.2's bound against the observed overlap; plus the overlap heatmap primitive
and its random-direction references, which the comparison reuses."""
from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np

from dncsim.analysis.names import AXIS_BEYOND_NULL, AXIS_COS_MEDIAN
from dncsim.analysis.orthogonality import random_abs_cos
from dncsim.analysis.report.figures.plotting import (EXP_LABEL, GREY, GREY_NOTE, grey_cells, greyed, heatmap,
                                                     integer_ticks, plotting, short, subplots)
from dncsim.rundir import RunData

__all__ = ["orthogonality_heatmap", "orthogonality_over_stream", "prop42_scatter", "prop42_tightness", "cos_matrix",
           "references", "mark_references", "reference_legend", "overlap_heatmap"]


def cos_matrix(run: RunData, exp: int, metric: str = AXIS_COS_MEDIAN) -> np.ndarray:
    """(T, T) symmetric matrix of a pairwise metric at one row (NaN diagonal and where unmeasured)."""
    m = np.full((run.T, run.T), np.nan)
    for r in run.rows:
        if r["metric"] == metric and r["exp"] == exp:
            m[r["task"], r["task_b"]] = m[r["task_b"], r["task"]] = r["value"]
    return m


def references(d: int) -> dict:
    """The random-direction levels of |cos| in d dimensions: ``median`` (the one to compare a median
    |cos| with) and ``rms`` = 1/sqrt(d)."""
    return random_abs_cos(d)


def mark_references(cb_ax, ref: dict) -> None:
    """The random-direction levels as lines across the colour bar (named by :func:`reference_legend`)."""
    cb_ax.axhline(ref["median"], color="tab:blue", lw=2)
    cb_ax.axhline(ref["rms"], color="tab:cyan", lw=1.2, ls="--")


def reference_legend(fig, ref: dict, greyed_any: bool = False, y: float = 0.0, ncol: int = 1,
                      beyond_any: bool = False) -> None:
    """A legend under the figure naming the colour bar's reference lines (and the greyed tasks, and the
    mark of pairs beyond the permutation null)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Line2D([], [], color="tab:blue", lw=2,
                      label=f"reference, not the test: random directions' median |cos| {ref['median']:.3f}"),
               Line2D([], [], color="tab:cyan", lw=1.2, ls="--", label=f"random: RMS 1/√d {ref['rms']:.3f}")]
    if beyond_any:
        handles.append(Line2D([], [], color="white", marker="o", markeredgecolor="black", ls="", markersize=5,
                              label="beyond the permutation null (null p ≤ 0.05)"))
    if greyed_any:
        handles.append(Patch(facecolor="#e8e8e8", edgecolor="grey", label=GREY_NOTE))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, y), fontsize=7, frameon=False,
               ncol=min(ncol, len(handles)))


def overlap_heatmap(ax, m, labels, vmax, ref, cbar=True, annotate=True, grey: Sequence[bool] = ()):
    _, sns = plotting()
    mesh = heatmap(m, ax, vmin=0, vmax=vmax, cmap=sns.color_palette("rocket_r", as_cmap=True), square=True,
                   annot=annotate and len(labels) <= 8, fmt=".2f", xticklabels=labels, yticklabels=labels, cbar=cbar,
                   cbar_kws={"label": "median |cos| between decision axes"} if cbar else None)
    if cbar:
        mark_references(mesh.colorbar.ax, ref)
    if any(grey):
        grey_cells(ax, grey, grey)
    ax.set_xlabel("task b")
    ax.set_ylabel("task a")


def orthogonality_heatmap(run: RunData):
    """Median |cos| between every pair of tasks' decision axes after the last experience."""
    m = cos_matrix(run, run.last)
    ref = references(run.feature_dim)
    fig, ax = subplots(figsize=(2.4 + 0.7 * run.T, 0.9 + 0.6 * run.T))
    labels = [short(t) for t in run.tasks]
    grey = greyed(run)
    overlap_heatmap(ax, m, labels, max(np.nanmax(m) if np.isfinite(m).any() else 0, ref["rms"]) * 1.05, ref, grey=grey)
    beyond = np.argwhere(cos_matrix(run, run.last, AXIS_BEYOND_NULL) == 1.0)
    if len(beyond):             # a corner mark on both cells of each pair beyond the permutation null
        ax.scatter(beyond[:, 1] + 0.85, beyond[:, 0] + 0.15, s=14, c="white", edgecolors="black", linewidths=0.6,
                   zorder=4)
    ax.set_title("Decision-axis overlap after the last experience")
    reference_legend(fig, ref, any(grey), y=-0.02, beyond_any=bool(len(beyond)))
    return fig


def orthogonality_over_stream(run: RunData):
    """Small multiples of the median-|cos| heatmap, one per row of the stream, on one colour scale."""
    plt, sns = plotting()
    rows = sorted({r["exp"] for r in run.rows})
    mats = [cos_matrix(run, e) for e in rows]
    ref = references(run.feature_dim)
    vmax = max([np.nanmax(m) for m in mats if np.isfinite(m).any()] + [ref["rms"]]) * 1.05
    n = len(rows)
    cols = min(n, 5)
    nrows = math.ceil(n / cols)
    fig, axes = subplots(nrows, cols + 1, figsize=(2.2 * cols + 0.6, 2.2 * nrows + 0.5), squeeze=False,
                          gridspec_kw={"width_ratios": [1] * cols + [0.06]})
    labels = [short(t, 8) for t in run.tasks]
    grey = greyed(run)
    for i, (e, m) in enumerate(zip(rows, mats)):
        ax = axes[i // cols][i % cols]
        overlap_heatmap(ax, m, labels, vmax, ref, cbar=False, annotate=False, grey=grey)
        ax.tick_params(labelsize=6)
        ax.set_title("before training" if e < 0 else f"after experience {e}", fontsize=8)
        if i % cols:
            ax.set_ylabel("")
    for j in range(n, nrows * cols):
        axes[j // cols][j % cols].axis("off")
    sm = plt.cm.ScalarMappable(cmap=sns.color_palette("rocket_r", as_cmap=True), norm=plt.Normalize(0, vmax))
    for r in range(nrows):
        axes[r][cols].axis("off")
    cb = fig.colorbar(sm, ax=axes[:, cols].tolist(), fraction=1.0, label="median |cos|")
    mark_references(cb.ax, ref)
    fig.suptitle("Decision-axis overlap over the stream", fontsize=10)
    reference_legend(fig, ref, any(grey), y=0.0, ncol=3)
    return fig


def prop42_scatter(points: List[dict], run: RunData):
    """Observed |u_a . u_b| against Prop. 4.2's right-hand side, one point per axis pair, with y = x.

    On exactly balanced independent labelings every point is below y = x whatever the features; the
    figure shows how far below (the bound's slack), not whether."""
    _, sns = plotting()
    fig, ax = subplots(figsize=(5.2, 4.4))
    palette = sns.color_palette("tab10", max(len(points), 1))
    lo, hi = 1.0, 1e-6
    for i, p in enumerate(points):
        cos = np.clip(np.array(p["cos"]), 1e-6, None)
        rhs = np.clip(np.array(p["bound"]), 1e-6, None)
        grey = greyed(run)
        dull = grey[p["a"]] or grey[p["b"]]
        ax.scatter(rhs, cos, s=12, alpha=0.7, color=GREY if dull else palette[i % len(palette)],
                   label=f"{short(run.tasks[p['a']], 10)} / {short(run.tasks[p['b']], 10)}"
                   + (" (greyed)" if dull else ""))
        lo = min(lo, cos.min(), rhs.min())
        hi = max(hi, cos.max(), rhs.max())
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="y = x (the bound)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Prop. 4.2 bound on |cos| (unitless)")
    ax.set_ylabel("observed |u_a · u_b| (unitless)")
    ax.set_title("Prop. 4.2 after the last experience: distance below y = x is the bound's slack", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def prop42_tightness(summary: dict, run: RunData):
    """Per pair of independent labelings along the stream: the median Prop. 4.2 bound over the median
    observed |cos| (left; 1 = tight), and over the median |cos| of random directions (right; below 1 the
    bound forces more orthogonality than chance). Log scale, with the level 1 marked."""
    _, sns = plotting()
    pairs = summary["prop42"]["pairs"]
    fig, (a1, a2) = subplots(1, 2, figsize=(10, 3.8))
    palette = sns.color_palette("tab10", max(len(pairs), 1))
    grey = greyed(run)
    for i, p in enumerate(pairs):
        dull = grey[p["a"]] or grey[p["b"]]
        label = f"{short(p['names'][0], 10)} / {short(p['names'][1], 10)}" + (" (greyed)" if dull else "")
        for ax, key in ((a1, "tightness"), (a2, "bound_vs_random")):
            pts = [(q["exp"], q["value"]) for q in p[key] if q["value"] is not None and q["value"] > 0]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=GREY if dull else palette[i % len(palette)], label=label)
    for ax in (a1, a2):
        ax.axhline(1.0, color="black", lw=1, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel(EXP_LABEL)
        ax.xaxis.set_major_locator(integer_ticks())
    a1.set_ylabel("median bound / median observed |cos|")
    a1.set_title("Slack of the bound (1 = tight)", fontsize=9)
    a2.set_ylabel("median bound / random median |cos|")
    a2.set_title(f"Bound against random directions (d = {run.feature_dim})", fontsize=9)
    a1.legend(fontsize=7)
    fig.tight_layout()
    return fig
