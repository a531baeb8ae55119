"""Figures of each task's geometry along the stream: directional CDNV and CDNV (collapse), and few-shot
NCC error against the Theorem 4.1 bound."""
from __future__ import annotations

from dncsim.analysis.names import CDNV, CDNV_RATIO, DIR_CDNV
from dncsim.analysis.report.figures.plotting import (EXP_LABEL, GREY, greyed, greyed_summary, integer_ticks,
                                                     plotting, short, subplots, wrap)
from dncsim.rundir import RunData

__all__ = ["collapse_curves", "fewshot_curves"]


def _series(run: RunData, metric: str, k: int):
    s = run.series(metric, task=k)
    return [e for e, _ in s], [v for _, v in s]


def collapse_curves(run: RunData):
    """Directional CDNV and CDNV per task along the stream (log scale), and their ratio; a star where
    each task was learned; greyed tasks drawn grey; a task whose geometry is undefined at some row is
    named under the figure."""
    _, sns = plotting()
    from matplotlib.lines import Line2D
    fig, (a1, a2) = subplots(1, 2, figsize=(10, 3.8))
    palette = sns.color_palette("tab10", run.T)
    grey = greyed(run)
    rows = sorted({r["exp"] for r in run.rows})
    gaps = []
    for k in range(run.T):
        colour = GREY if grey[k] else palette[k % 10]
        tag = " (not learned)" if run.learned(k) is False else (" (watched)" if grey[k] else "")
        x, y = _series(run, DIR_CDNV, k)
        a1.plot(x, y, marker="o", color=colour, label=f"{short(run.tasks[k])}{tag} dir-CDNV")
        missing = [e for e in rows if e not in x]
        if missing:
            gaps.append(f"{run.tasks[k]}: undefined at row{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(map(str, missing))}")
        L = run.learned_at[k] if k < len(run.learned_at) else None
        if L is not None and L in x:
            a1.plot([L], [y[x.index(L)]], marker="*", ms=13, color=colour, mec="black", mew=0.8, ls="")
        x, y = _series(run, CDNV, k)
        a1.plot(x, y, marker="s", ls="--", color=colour, alpha=0.6, label=f"{short(run.tasks[k])} CDNV")
        x, y = _series(run, CDNV_RATIO, k)
        a2.plot(x, y, marker="o", color=colour, label=short(run.tasks[k]) + tag)
        if L is not None and L in x:
            a2.plot([L], [y[x.index(L)]], marker="*", ms=13, color=colour, mec="black", mew=0.8, ls="")
    for ax in (a1, a2):
        ax.set_yscale("log")
        ax.set_xlabel(EXP_LABEL)
        ax.xaxis.set_major_locator(integer_ticks())
    a1.set_ylabel("variability (unitless, log scale)")
    a1.set_title("Directional CDNV (solid) and CDNV (dashed) per task")
    a2.set_ylabel("dir-CDNV / CDNV (log scale)")
    a2.set_title("Directional collapse: ratio of the two")
    a1.legend(fontsize=6, ncol=2, loc="best")
    star = Line2D([], [], marker="*", ms=10, color="white", mec="black", ls="", label="★ the task was learned here")
    h, lab = a2.get_legend_handles_labels()
    a2.legend(handles=h + [star], labels=lab + [star.get_label()], fontsize=7)
    if gaps:
        fig.text(0.01, -0.02, wrap("Gaps: " + "; ".join(gaps) + " (no class pair resolved, or not measured: "
                                    "see the table).", 160), fontsize=7, va="top")
    fig.tight_layout()
    return fig


def fewshot_curves(summary: dict):
    """Few-shot NCC error and the Theorem 4.1 bound against shots per class, per task (final row), with
    y = 1 (a bound above it says nothing: an error is at most 1) and a note naming the tasks whose bound
    is undefined; greyed tasks drawn grey."""
    _, sns = plotting()
    fig, ax = subplots(figsize=(6.4, 4.2))
    palette = sns.color_palette("tab10", len(summary["tasks"]))
    grey = greyed_summary(summary)
    drew, undefined = False, []
    for k, t in enumerate(summary["tasks"]):
        fs = [f for f in t["fewshot"] if f["error"] is not None]
        if not fs:
            continue
        colour = GREY if grey[k] else palette[k % 10]
        tag = " (not learned)" if t.get("learned") is False else (" (watched)" if grey[k] else "")
        m = [f["shots"] for f in fs]
        ax.plot(m, [max(f["error"], 1e-4) for f in fs], marker="o", color=colour,
                label=f"{short(t['name'])}{tag} error")
        b = [(f["shots"], f["bound"]) for f in fs if f["bound"] is not None]
        if b:
            ax.plot(*zip(*b), marker="^", ls="--", color=colour, label=f"{short(t['name'])} bound")
        if len(b) < len(fs):
            gone = [f["shots"] for f in fs if f["bound"] is None]
            undefined.append(f"{t['name']} (m = {', '.join(map(str, gone))})" if b else f"{t['name']} (every m)")
        drew = True
    ax.axvspan(0.8, 10, color="grey", alpha=0.12, label="m < 10: outside the theorem")
    ax.axhline(1.0, color="black", lw=1.2, label="1: a bound above is vacuous")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("shots per class m (log scale)")
    ax.set_ylabel("NCC error (fraction, log scale)")
    ax.set_title("Few-shot error (solid) and Theorem 4.1 bound (dashed), after the last experience", fontsize=9)
    if drew:
        ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    notes = ["Every value above 1 is vacuous (an error is at most 1)."]
    if undefined:
        notes.append("Bound undefined (a class pair's margin is not positive) for: " + "; ".join(undefined) + ".")
    fig.text(0.01, -0.01, wrap(" ".join(notes), 110), fontsize=7, va="top")
    return fig
