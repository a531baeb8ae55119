"""The study report: tidy tables of all runs, the statistics, the verdict, and scatter plots with fits."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from dncsim.analysis.aggregate import pair_rows, rows_to_csv, task_rows  # noqa: E402
from dncsim.common import atomic_write_bytes  # noqa: E402
from dncsim.analysis.report.figures import png_bytes  # noqa: E402
from dncsim.analysis.report.render import environment, figure_embedder, fmt  # noqa: E402
from dncsim.analysis.stats import study_statistics  # noqa: E402
from dncsim.rundir import load_run  # noqa: E402

__all__ = ["build_study_report", "STUDY_FIGURES"]

STUDY_FIGURES = {
    "dir_cdnv_vs_forgetting": "Each task's directional CDNV when learned against its final forgetting, per objective; "
                              "lines: least-squares fits of forgetting on log dir-CDNV per strategy.",
    "cdnv_vs_forgetting": "The same with the classical CDNV.",
    "overlap_vs_interference": "Each task pair's axis overlap (median |cos| when the later task was learned) against "
                               "the measured interference.",
    "forgetting_by_factor": "Final forgetting per objective and strategy (every task of every run).",
}


def _scatter_by_objective(tasks: List[dict], x: str, y: str, xlabel: str, ylabel: str, title: str):
    data = [r for r in tasks if r.get(x) is not None and r.get(y) is not None and r[x] > 0]
    objectives = sorted({r["objective"] for r in data}) or ["(none)"]
    strategies = sorted({r["strategy"] for r in data})
    palette = dict(zip(strategies, sns.color_palette("tab10", max(len(strategies), 1))))
    fig, axes = plt.subplots(1, len(objectives), figsize=(4.2 * len(objectives), 3.8), squeeze=False, sharey=True)
    for ax, obj in zip(axes[0], objectives):
        for strat in strategies:
            pts = [(r[x], r[y]) for r in data if r["objective"] == obj and r["strategy"] == strat]
            if not pts:
                continue
            xs, ys = map(np.array, zip(*pts))
            ax.scatter(xs, ys, s=18, alpha=0.75, color=palette[strat], label=strat)
            if len(xs) >= 3 and np.ptp(np.log10(xs)) > 0:
                slope, icept = np.polyfit(np.log10(xs), ys, 1)
                grid = np.logspace(np.log10(xs.min()), np.log10(xs.max()), 20)
                ax.plot(grid, slope * np.log10(grid) + icept, color=palette[strat], lw=1.2)
        ax.set_xscale("log")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"objective: {obj}", fontsize=9)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel(ylabel)
    if strategies:
        axes[0][-1].legend(title="strategy", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _figures(tasks: List[dict], pairs: List[dict], stats: dict) -> Dict[str, bytes]:
    y, inter = stats["outcome"], stats["interference"]
    ylabel = f"{y.split('/')[0].replace('_', ' ')} ({y.split('/')[1]}, {y.split('/')[2]}; fraction)"
    out = {"dir_cdnv_vs_forgetting": png_bytes(_scatter_by_objective(
        tasks, "dir_cdnv_learned", y, "directional CDNV when learned (log scale)", ylabel,
        "Does low directional variability predict less forgetting?")),
        "cdnv_vs_forgetting": png_bytes(_scatter_by_objective(
            tasks, "cdnv_learned", y, "CDNV when learned (log scale)", ylabel, "The same with the classical CDNV"))}
    pts = [r for r in pairs if r.get("overlap") is not None and r.get(inter) is not None]
    fig, ax = plt.subplots(figsize=(5.4, 4))
    objectives = sorted({r["objective"] for r in pts})
    for obj, colour in zip(objectives, sns.color_palette("tab10", max(len(objectives), 1))):
        sub = [(r["overlap"], r[inter]) for r in pts if r["objective"] == obj]
        ax.scatter(*zip(*sub), s=16, alpha=0.7, color=colour, label=obj)
    if len(pts) >= 3:
        xs, ys = np.array([r["overlap"] for r in pts]), np.array([r[inter] for r in pts])
        if np.ptp(xs) > 0:
            slope, icept = np.polyfit(xs, ys, 1)
            ax.plot([xs.min(), xs.max()], [slope * xs.min() + icept, slope * xs.max() + icept], color="black",
                    lw=1, label="least-squares fit")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("axis overlap: median |cos| when the later task was learned (unitless)")
    ax.set_ylabel(f"interference ({inter.split('/')[1]} probe, frozen; accuracy drop, fraction)")
    ax.set_title("Axis overlap vs interference, per task pair")
    if pts:
        ax.legend(title="objective", fontsize=7)
    out["overlap_vs_interference"] = png_bytes(fig)
    data = [r for r in tasks if r.get(y) is not None]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if data:
        with warnings.catch_warnings():      # seaborn passes matplotlib 3.11's deprecated `vert`
            warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
            sns.boxplot(x=[r["objective"] for r in data], y=[r[y] for r in data], hue=[r["strategy"] for r in data],
                        ax=ax)
        ax.legend(title="strategy", fontsize=7)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("objective")
    ax.set_ylabel(ylabel)
    ax.set_title("Forgetting per objective and strategy")
    out["forgetting_by_factor"] = png_bytes(fig)
    return out


def build_study_report(study_dir: Path, runs: Sequence[Tuple[Path, Dict]], cfg) -> Path:
    """Aggregate the finished ``runs`` ((run directory, factors) pairs) into ``tasks.csv`` and
    ``pairs.csv``, test (``statistics.json``) and write ``report/`` (index.html, report.md, summary.json,
    figures/). Returns the report directory."""
    tasks, pairs = [], []
    for path, factors in runs:
        run = load_run(path)
        tasks += task_rows(run, factors)
        pairs += pair_rows(run, factors)
    atomic_write_bytes(study_dir / "tasks.csv", rows_to_csv(tasks).encode())
    atomic_write_bytes(study_dir / "pairs.csv", rows_to_csv(pairs).encode())
    stats = study_statistics(tasks, pairs, cfg.statistics) if tasks else \
        {"tests": [], "notes": ["no finished runs"], "primary": None, "classical": None,
         "joint": None, "pairs_primary": None, "verdict": ["No finished runs: nothing to test."],
         "outcome": None, "interference": None}
    atomic_write_bytes(study_dir / "statistics.json", (json.dumps(stats, indent=2, allow_nan=False) + "\n").encode())
    state = json.loads((study_dir / "study.json").read_text())
    summary = {"study": cfg.name, "engine": cfg.engine, "factors": cfg.factors, "runs": state["runs"],
               "rows": {"tasks": len(tasks), "pairs": len(pairs)}, "statistics": stats}
    figs = _figures(tasks, pairs, stats) if tasks else {}
    summary["figures"] = sorted(figs)
    report = study_dir / "report"
    (report / "figures").mkdir(parents=True, exist_ok=True)
    for name, png in figs.items():
        atomic_write_bytes(report / "figures" / f"{name}.png", png)
    env = environment()
    common = dict(summary=summary, fmt=fmt, statistics=cfg.statistics)
    atomic_write_bytes(report / "index.html", env.get_template("study.html.j2").render(
        figure=figure_embedder(figs, STUDY_FIGURES), **common).encode())
    atomic_write_bytes(report / "report.md", env.get_template("study.md.j2").render(**common).encode())
    atomic_write_bytes(report / "summary.json", (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode())
    return report
