"""Figures that set runs side by side: collapse along the stream and the final axis overlap, per run."""
from __future__ import annotations

from typing import List

import numpy as np

from dncsim.analysis.names import CDNV, DIR_CDNV
from dncsim.analysis.report.figures.orthogonality import cos_matrix, overlap_heatmap, reference_legend, references
from dncsim.analysis.report.figures.plotting import EXP_LABEL, greyed, integer_ticks, plotting, short, subplots, wrap
from dncsim.rundir import RunData

__all__ = ["compare_task_set", "compare_collapse", "compare_orthogonality"]


def compare_task_set(runs: List[RunData], metrics=(DIR_CDNV, CDNV)) -> List[str]:
    """The task names every run has, with every ``metrics`` value positive at every row the run measured."""
    common = [n for n in runs[0].tasks if all(n in r.tasks for r in runs)]
    keep = []
    for name in common:
        ok = True
        for run in runs:
            k = run.tasks.index(name)
            rows = sorted({r["exp"] for r in run.rows})
            for metric in metrics:
                got = dict(run.series(metric, task=k))
                ok = ok and all(got.get(e) is not None and got[e] > 0 for e in rows)
        if ok:
            keep.append(name)
    return keep


def compare_collapse(runs: List[RunData]):
    """Geometric-mean directional CDNV and CDNV along the stream, one line per run, over one task set
    (the tasks every run defines at every row; named in the title)."""
    _, sns = plotting()
    fig, ax = subplots(figsize=(6.5, 4))
    palette = sns.color_palette("tab10", len(runs))
    names = compare_task_set(runs)
    for i, run in enumerate(runs):
        ks = [run.tasks.index(n) for n in names]
        for metric, ls in ((DIR_CDNV, "-"), (CDNV, "--")):
            series = [dict(run.series(metric, task=k)) for k in ks]
            xs = sorted(set.intersection(*(set(s) for s in series))) if series else []
            if xs:
                ax.plot(xs, [float(np.exp(np.mean([np.log(s[x]) for s in series]))) for x in xs], ls=ls,
                        marker="o", color=palette[i], label=f"{short(run.label, 40)} "
                        f"{'dir-CDNV' if metric == DIR_CDNV else 'CDNV'}")
    ax.set_yscale("log")
    ax.set_xlabel(EXP_LABEL)
    ax.xaxis.set_major_locator(integer_ticks())
    ax.set_ylabel("geometric mean over tasks (unitless, log scale)")
    over = (f"over the {len(names)} tasks every run defines throughout: {', '.join(names)}" if names
            else "no task is defined throughout in every run")
    ax.set_title(wrap("Directional CDNV (solid) and CDNV (dashed) per run, " + over, 70), fontsize=9)
    if names:
        ax.legend(fontsize=6)
    return fig


def compare_orthogonality(runs: List[RunData]):
    """The final median-|cos| heatmap of each run, side by side on one colour scale, tasks by name."""
    mats = [cos_matrix(r, r.last) for r in runs]
    refs = [references(r.feature_dim) for r in runs]
    vmax = max([np.nanmax(m) for m in mats if np.isfinite(m).any()] + [r["rms"] for r in refs]) * 1.05
    fig, axes = subplots(1, len(runs), figsize=(4.0 * len(runs), 3.8), squeeze=False)
    grey_any = False
    for ax, run, m, ref in zip(axes[0], runs, mats, refs):
        grey = greyed(run)
        grey_any = grey_any or any(grey)
        overlap_heatmap(ax, m, [short(t, 8) for t in run.tasks], vmax, ref, cbar=True, annotate=run.T <= 6, grey=grey)
        ax.set_title(wrap(run.label, 34), fontsize=8)
    fig.suptitle("Decision-axis overlap after the last experience, per run", fontsize=10)
    fig.tight_layout()
    reference_legend(fig, refs[0], grey_any, y=0.0, ncol=3 if len(runs) > 1 else 1)
    return fig
