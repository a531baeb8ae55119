"""The study report: tidy tables of all runs, the statistics, the verdict, and scatter plots with fits."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.aggregate import pair_rows, rows_to_csv, task_rows  # noqa: E402
from analysis.errors import DncsimError  # noqa: E402
from analysis.report.figures import png_bytes  # noqa: E402
from analysis.report.render import environment, figure_embedder, fmt, write_file  # noqa: E402
from analysis.report.rundata import load_run  # noqa: E402
from analysis.stats import compare_predictors, correlation_table, verdict  # noqa: E402

__all__ = ["study_statistics", "build_study_report", "STUDY_FIGURES"]

STUDY_FIGURES = {
    "dir_cdnv_vs_forgetting": "Each task's directional CDNV when learned against its final forgetting, per objective; "
                              "lines: least-squares fits of forgetting on log dir-CDNV per strategy.",
    "cdnv_vs_forgetting": "The same with the classical CDNV.",
    "overlap_vs_interference": "Each task pair's axis overlap (median |cos| when the later task was learned) against "
                               "the measured interference.",
    "forgetting_by_factor": "Final forgetting per objective and strategy (every task of every run).",
}


def _try(fn, *args, **kw):
    try:
        return fn(*args, **kw), None
    except DncsimError as exc:
        return None, str(exc)


def study_statistics(tasks: List[dict], pairs: List[dict], s) -> dict:
    """All tests of a study from its tables (``s``: StatisticsConfig): overall, per objective, pairwise,
    the difference dir-CDNV vs CDNV, and the verdict sentences."""
    y = f"{s.forgetting}/{s.probe}/{s.protocol}"
    inter = f"interference/{s.probe}/frozen"
    kw = dict(bootstrap=s.bootstrap, permutations=s.permutations, alpha=s.alpha, seed=s.seed)
    out = {"outcome": y, "interference": inter, "tests": [], "notes": []}

    def add(label, rows, x, yy, cluster="run"):
        res, err = _try(correlation_table, rows, x, yy, cluster, **kw)
        if res is not None:
            out["tests"].append({"label": label, **res})
        else:
            out["notes"].append(f"{label}: {err}")
        return res

    def difference(label, rows):
        col = lambda k: [np.nan if r.get(k) is None else r[k] for r in rows]  # noqa: E731
        d, err = _try(compare_predictors, col("dir_cdnv_learned"), col("cdnv_learned"), col(y), [r["run"] for r in rows],
                      names=("dir_cdnv_learned", "cdnv_learned", y), bootstrap=s.bootstrap, alpha=s.alpha, seed=s.seed)
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
    within = _within_task(tasks, ["dir_cdnv_learned", "cdnv_learned", y])
    within_main = add("within task: dir-CDNV when learned vs forgetting", within, "dir_cdnv_learned", y)
    add("within task: CDNV when learned vs forgetting", within, "cdnv_learned", y)
    pairwise = add("all runs: axis overlap vs interference (task pairs)", pairs, "overlap", inter)
    out["verdict"] = list(verdict(main, classical, out["difference"], pairwise, alpha=s.alpha)) if main is not None else \
        ["Not enough data to test the hypothesis: " + "; ".join(out["notes"])]
    if within_main is not None:
        held = within_main["p"] < s.alpha and (within_main["ci_low"] > 0 or within_main["ci_high"] < 0)
        out["verdict"].append(
            f"Within each task (task identity held fixed, ranks taken across runs): rho = {within_main['rho']:.2f} "
            f"[95% CI {within_main['ci_low']:.2f}, {within_main['ci_high']:.2f}], p = {within_main['p']:.3g}: "
            + ("the link holds beyond differences between tasks." if held else
               "beyond differences between tasks, the data show no measurable link."))
    return out


def _within_task(rows: List[dict], columns: Sequence[str]) -> List[dict]:
    """Rows with ``columns`` replaced by their centred ranks among rows of the same task name, so a
    correlation on them compares runs within a task, not one task with another (None stays None)."""
    from scipy.stats import rankdata
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
    write_file(study_dir / "tasks.csv", rows_to_csv(tasks).encode())
    write_file(study_dir / "pairs.csv", rows_to_csv(pairs).encode())
    stats = study_statistics(tasks, pairs, cfg.statistics) if tasks else \
        {"tests": [], "notes": ["no finished runs"], "difference": None, "differences": [],
         "verdict": ["No finished runs: nothing to test."],
         "outcome": None, "interference": None}
    write_file(study_dir / "statistics.json", (json.dumps(stats, indent=2, allow_nan=False) + "\n").encode())
    state = json.loads((study_dir / "study.json").read_text())
    summary = {"study": cfg.name, "engine": cfg.engine, "factors": cfg.factors, "runs": state["runs"],
               "rows": {"tasks": len(tasks), "pairs": len(pairs)}, "statistics": stats}
    figs = _figures(tasks, pairs, stats) if tasks else {}
    summary["figures"] = sorted(figs)
    report = study_dir / "report"
    (report / "figures").mkdir(parents=True, exist_ok=True)
    for name, png in figs.items():
        write_file(report / "figures" / f"{name}.png", png)
    env = environment()
    common = dict(s=summary, fmt=fmt, statistics=cfg.statistics)
    write_file(report / "index.html", env.get_template("study.html.j2").render(
        figure=figure_embedder(figs, STUDY_FIGURES), **common).encode())
    write_file(report / "report.md", env.get_template("study.md.j2").render(**common).encode())
    write_file(report / "summary.json", (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode())
    return report
