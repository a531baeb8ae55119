"""The study report: renders the study's products (``analysis.study``: tables, statistics), the verdict, the
paper's claims over runs, the design, and scatter plots with fits."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dncsim.common import atomic_write_bytes, json_text
from dncsim.analysis.report.figures import plotting, png_bytes, subplots
from dncsim.analysis.report.render import environment, figure_embedder, fmt
from dncsim.analysis.study import StudyProducts
from dncsim.rundir import load_run

__all__ = ["build_study_report", "STUDY_FIGURES", "paper_over_study", "SEED_FACTORS", "design_section"]

#: factors that only reseed a run: runs differing in these alone are one setting, checked over seeds
SEED_FACTORS = ("seed", "scenario.seed")

STUDY_FIGURES = {
    "dir_cdnv_vs_forgetting": ("Each task's directional CDNV when learned against its final forgetting, one panel "
                               "per objective; colour: task, marker: strategy; solid lines: least-squares fits of "
                               "forgetting on log dir-CDNV within each task; dashed black: the pooled fit over all "
                               "tasks, which mixes differences between tasks with the within-task relation; grey "
                               "crosses: tasks not learned (left out of the fits and of the primary test)."),
    "cdnv_vs_forgetting": "The same with the classical CDNV.",
    "overlap_vs_interference": "Each task pair's axis overlap (median |cos| when the later task was learned) against "
                               "the measured interference; colour: task pair, with a fit within each pair (solid) and "
                               "the pooled fit (dashed black).",
    "forgetting_by_factor": "Final forgetting per objective and strategy (every learned task of every run).",
}

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _fit_line(ax, xs, ys, *, log_x: bool, **style) -> bool:
    """Least-squares line of ys on xs (on log10 xs when ``log_x``), drawn over the range of xs."""
    u = np.log10(xs) if log_x else xs
    if len(xs) < 3 or np.ptp(u) <= 0:
        return False
    slope, icept = np.polyfit(u, ys, 1)
    grid = np.linspace(u.min(), u.max(), 20)
    ax.plot(10 ** grid if log_x else grid, slope * grid + icept, **style)
    return True


def _scatter_by_task(tasks: List[dict], x: str, y: str, xlabel: str, ylabel: str, title: str,
                     include_unlearned: bool):
    """Per objective: points coloured by task, marked by strategy, a fit within each task and a pooled
    fit labelled as such; unlearned tasks grey (and outside the fits unless ``include_unlearned``)."""
    _, sns = plotting()
    from matplotlib.lines import Line2D

    data = [r for r in tasks if r.get(x) is not None and r.get(y) is not None and r[x] > 0]
    kept = [r for r in data if include_unlearned or r.get("learned") is not False]
    dropped = [r for r in data if r not in kept]
    objectives = sorted({r["objective"] for r in data}) or ["(none)"]
    names = sorted({str(r["task_name"]) for r in kept})
    strategies = sorted({r["strategy"] for r in data})
    colour = dict(zip(names, sns.color_palette("tab10", max(len(names), 1))))
    marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(strategies)}
    fig, axes = subplots(1, len(objectives), figsize=(4.4 * len(objectives), 4.0), squeeze=False, sharey=True)
    for ax, obj in zip(axes[0], objectives):
        mine = [r for r in kept if r["objective"] == obj]
        for name in names:
            sub = [r for r in mine if str(r["task_name"]) == name]
            for strat in strategies:
                pts = [(r[x], r[y]) for r in sub if r["strategy"] == strat]
                if pts:
                    ax.scatter(*zip(*pts), s=20, alpha=0.8, color=colour[name], marker=marker[strat])
            if sub:
                _fit_line(ax, np.array([r[x] for r in sub]), np.array([r[y] for r in sub]), log_x=True,
                          color=colour[name], lw=1.3)
        if mine:
            _fit_line(ax, np.array([r[x] for r in mine]), np.array([r[y] for r in mine]), log_x=True,
                      color="black", lw=1.2, ls="--")
        gone = [(r[x], r[y]) for r in dropped if r["objective"] == obj]
        if gone:
            ax.scatter(*zip(*gone), s=20, color="0.6", marker="x")
        ax.set_xscale("log")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"objective: {obj}", fontsize=9)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel(ylabel)
    handles = [Line2D([], [], color=colour[n], marker="o", lw=1.3, label=f"task {n} (within-task fit)") for n in names]
    handles += [Line2D([], [], color="0.3", marker=marker[s], ls="", label=f"strategy {s}") for s in strategies]
    handles.append(Line2D([], [], color="black", ls="--", label="pooled fit (all tasks)"))
    if dropped:
        handles.append(Line2D([], [], color="0.6", marker="x", ls="", label="not learned (excluded)"))
    axes[0][-1].legend(handles=handles, fontsize=6, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _overlap_figure(pairs: List[dict], inter: str):
    _, sns = plotting()
    pts = [r for r in pairs if r.get("overlap") is not None and r.get(inter) is not None]
    fig, ax = subplots(figsize=(5.8, 4.2))
    names = sorted({f"{r['name_a']} / {r['name_b']}" for r in pts})
    colour = dict(zip(names, sns.color_palette("tab10", max(len(names), 1))))
    for name in names:
        sub = [r for r in pts if f"{r['name_a']} / {r['name_b']}" == name]
        xs, ys = np.array([r["overlap"] for r in sub]), np.array([r[inter] for r in sub])
        ax.scatter(xs, ys, s=16, alpha=0.75, color=colour[name], label=f"{name} (within-pair fit)")
        _fit_line(ax, xs, ys, log_x=False, color=colour[name], lw=1.2)
    if pts:
        _fit_line(ax, np.array([r["overlap"] for r in pts]), np.array([r[inter] for r in pts]), log_x=False,
                  color="black", lw=1, ls="--", label="pooled fit (all pairs)")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("axis overlap: median |cos| when the later task was learned (unitless)")
    ax.set_ylabel(f"interference ({inter.split('/')[1]} probe, frozen; accuracy drop, fraction)")
    ax.set_title("Axis overlap vs interference, per task pair")
    if pts:
        ax.legend(title="task pair", fontsize=6)
    return fig


def _figures(tasks: List[dict], pairs: List[dict], stats: dict, include_unlearned: bool) -> Dict[str, bytes]:
    import matplotlib

    _, sns = plotting()
    y, inter = stats["outcome"], stats["interference"]
    ylabel = f"{y.split('/')[0].replace('_', ' ')} ({y.split('/')[1]}, {y.split('/')[2]}; fraction)"
    out = {"dir_cdnv_vs_forgetting": png_bytes(_scatter_by_task(
        tasks, "dir_cdnv_learned", y, "directional CDNV when learned (log scale)", ylabel,
        "Does low directional variability predict less forgetting?", include_unlearned)),
        "cdnv_vs_forgetting": png_bytes(_scatter_by_task(
            tasks, "cdnv_learned", y, "CDNV when learned (log scale)", ylabel, "The same with the classical CDNV",
            include_unlearned))}
    out["overlap_vs_interference"] = png_bytes(_overlap_figure(pairs, inter))
    data = [r for r in tasks if r.get(y) is not None and (include_unlearned or r.get("learned") is not False)]
    fig, ax = subplots(figsize=(6, 3.8))
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


def paper_over_study(runs: Sequence[Tuple[Path, Dict]], setting: str = "auto") -> Optional[dict]:
    """The paper's claims over the finished ``runs`` ((run directory, factors) pairs), one group per setting
    of the factors other than ``SEED_FACTORS``: ``{"groups": [{"setting", "runs", "claims" (over runs),
    "findings", "per_run" (each run's findings)}]}``. None when ``setting`` is never, or auto and a run
    is not a joint stream."""
    from dncsim.analysis.report.paper import over_runs_findings, paper_claims, paper_findings, paper_over_runs

    if setting == "never" or not runs:
        return None
    loaded = [(load_run(path), factors) for path, factors in runs]
    if setting == "auto" and any(run.stream != "joint" for run, _ in loaded):
        return None
    groups: Dict[str, list] = {}
    for run, factors in loaded:
        key = ", ".join(f"{k}={v}" for k, v in factors.items() if k not in SEED_FACTORS) or "all runs"
        groups.setdefault(key, []).append((run, factors))
    out = []
    for key, members in groups.items():
        claims = [paper_claims(run) for run, _ in members]
        labels = [run.name for run, _ in members]
        agg = paper_over_runs(claims, labels)
        out.append({"setting": key, "runs": labels, "claims": agg, "findings": over_runs_findings(agg),
                    "per_run": [{"run": label, "findings": paper_findings(c)} for label, c in zip(labels, claims)]})
    return {"groups": out}


#: short names of the dosed regularisers in the design tables
_SHORT = {"dir_variance": "dir", "orth_variance": "orth"}


def _cell_text(doses: dict) -> str:
    return " ".join(f"{_SHORT.get(k, k)}={v:g}" for k, v in doses.items())


def design_section(records: Sequence[dict]) -> Optional[dict]:
    """Who got what, from the study.json records that carry a ``design``: ``runs`` (per run its arm, block,
    row, seeds and per position ``task (doses)``), ``cells`` (the treatment cells seen) and the balance
    counts ``task_cell`` and ``position_cell`` (rows: ``key`` and ``counts`` per cell). None without a design."""
    designed = [r for r in records if isinstance(r.get("design"), dict)]
    if not designed:
        return None
    width = max(len(r["design"].get("order") or []) for r in designed)
    runs, cells, counts = [], [], {"task_cell": {}, "position_cell": {}}
    for r in designed:
        d = r["design"]
        order, doses = d.get("order") or [], d.get("doses") or {}
        shown = []
        for pos, task in enumerate(order):
            if task in doses:
                cell = _cell_text(doses[task])
                cells += [cell] if cell not in cells else []
                for table, key in (("task_cell", task), ("position_cell", str(pos))):
                    row = counts[table].setdefault(key, {})
                    row[cell] = row.get(cell, 0) + 1
                shown.append(f"{task} ({cell})")
            else:
                shown.append(str(task))
        runs.append({"run": r.get("name"), "arm": "placebo" if d.get("placebo") else "active",
                     "block": d.get("block"), "row": d.get("row"), "seed": d.get("seed"),
                     "scenario_seed": d.get("scenario_seed"), "positions": shown + [""] * (width - len(shown))})
    table = lambda t: [{"key": k, "counts": [v.get(c, 0) for c in cells]} for k, v in counts[t].items()]  # noqa: E731
    position_cell = sorted(table("position_cell"), key=lambda row: int(row["key"]))
    return {"positions": width, "runs": runs, "cells": cells, "task_cell": table("task_cell"),
            "position_cell": position_cell, "arms": sorted({r["arm"] for r in runs}),
            "blocks": len({(json.dumps(r.get("factors"), sort_keys=True, default=str), r["design"].get("block"),
                            bool(r["design"].get("placebo"))) for r in designed})}


def build_study_report(study_dir: Path, runs: Sequence[Tuple[Path, Dict]], cfg, products: StudyProducts) -> Path:
    """Render the study's ``products`` (``analysis.study``: its tables and statistics, already written) over
    the finished ``runs`` ((run directory, factors) pairs) into ``report/`` (index.html, report.md,
    summary.json, figures/), with ``paper.json`` when the paper's claims apply. Returns the report directory."""
    tasks, pairs, stats = products.tasks, products.pairs, products.statistics
    paper = paper_over_study(runs, getattr(cfg.statistics, "paper", "auto"))
    if paper is not None:
        atomic_write_bytes(study_dir / "paper.json", json_text(paper).encode())
    state = json.loads((study_dir / "study.json").read_text())
    summary = {"study": cfg.name, "engine": cfg.engine, "factors": cfg.factors, "runs": state["runs"],
               "rows": {"tasks": len(tasks), "pairs": len(pairs)}, "statistics": stats, "paper": paper,
               "design": design_section(state["runs"])}
    figs = _figures(tasks, pairs, stats, bool(getattr(cfg.statistics, "include_unlearned", False))) if tasks else {}
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
    atomic_write_bytes(report / "summary.json", json_text(summary).encode())
    return report
