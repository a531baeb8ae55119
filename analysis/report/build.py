"""Assemble the report: numbers, figures, then the HTML, Markdown and JSON files (written atomically)."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dncsim.analysis.report import figures
from dncsim.analysis.report.graph import interference_communities
from dncsim.analysis.report.paper import paper_claims, paper_findings
from dncsim.analysis.report.render import environment, figure_embedder, fmt, pct
from dncsim.analysis.report.summary import _jsonable, prop42_points, run_summary
from dncsim.common import DncsimError, WriteFailed, atomic_write_bytes, json_text, not_a_regular_file
from dncsim.rundir import RunData, RunLock, load_run

__all__ = ["build_report", "FIGURES"]

#: figure name -> caption; the report holds each one that applies to the run
FIGURES = {
    "orthogonality_heatmap": "Median |cos| between the decision axes of every pair of tasks after the last experience.",
    "orthogonality_over_stream": "The same overlap before training and after every experience.",
    "prop42_scatter": "Observed |u_a · u_b| against the Prop. 4.2 bound, one point per pair of class-pair axes.",
    "prop42_tightness": "How tight Prop. 4.2's bound is along the stream: median bound over median observed |cos|, "
                        "and over random directions' median |cos|, per pair of independent tasks.",
    "collapse_curves": "Directional CDNV and CDNV per task along the stream, and their ratio.",
    "accuracy_heatmaps": "Accuracy matrices R[t, k] for every probe and protocol.",
    "forgetting_bars": "Forgetting per task after the last experience.",
    "dircdnv_vs_forgetting": "Each task's directional CDNV when learned against its later forgetting.",
    "interference_graph": "Tasks as nodes; edge width: interference, edge colour: axis overlap; colours: communities.",
    "fewshot_curves": "Few-shot NCC error and the Theorem 4.1 bound against shots per class.",
    "compare_collapse": "Mean directional CDNV and CDNV over tasks along the stream, per run.",
    "compare_orthogonality": "Final decision-axis overlap of each run.",
    "paper_claims": "The paper's three claims along training: dir-CDNV and CDNV (geometric means over attributes), "
                    "their ratio (S1), few-shot NCC error against the Theorem 4.1 bound at every shot count where "
                    "it is defined and point of training (S2), and the median |cos| between attributes' axes (S3).",
}


#: the figures that take longest to draw, longest first: the workers start on them (the rest keep FIGURES' order)
COSTLY_FIRST = ("orthogonality_over_stream", "paper_claims", "accuracy_heatmaps", "compare_orthogonality",
                "collapse_curves", "prop42_tightness", "fewshot_curves")


def _figure_jobs(run: RunData, summary: dict, communities, others: Sequence[RunData],
                 points: List[dict]) -> List[Tuple[str, Callable]]:
    """``(name, make)`` for every figure that applies to the run, ``make()`` drawing it; costly first."""
    jobs = {}
    if summary["pairs"]:
        jobs["orthogonality_heatmap"] = partial(figures.orthogonality_heatmap, run)
        jobs["orthogonality_over_stream"] = partial(figures.orthogonality_over_stream, run)
        jobs["interference_graph"] = partial(figures.interference_graph, summary, communities)
    if summary["prop42"]["axis_pairs"]:
        jobs["prop42_scatter"] = partial(figures.prop42_scatter, points, run)
    if any(p["tightness"] for p in summary["prop42"]["pairs"]):
        jobs["prop42_tightness"] = partial(figures.prop42_tightness, summary, run)
    jobs["collapse_curves"] = partial(figures.collapse_curves, run)
    jobs["accuracy_heatmaps"] = partial(figures.accuracy_heatmaps, run)
    jobs["forgetting_bars"] = partial(figures.forgetting_bars, summary)
    jobs["dircdnv_vs_forgetting"] = partial(figures.dircdnv_vs_forgetting, summary)
    jobs["fewshot_curves"] = partial(figures.fewshot_curves, summary)
    if others:
        runs = [run, *others]
        jobs["compare_collapse"] = partial(figures.compare_collapse, runs)
        jobs["compare_orthogonality"] = partial(figures.compare_orthogonality, runs)
    if summary.get("paper"):
        jobs["paper_claims"] = partial(figures.paper_claims_figure, summary["paper"], run)
    rank = {name: i for i, name in enumerate(COSTLY_FIRST)}
    return sorted(jobs.items(), key=lambda job: rank.get(job[0], len(rank)))


def _figures(run: RunData, summary: dict, communities, others: Sequence[RunData],
             points: List[dict]) -> Dict[str, bytes]:
    """``{name: PNG bytes}``, each figure drawn once (the HTML embeds the bytes, the Markdown links the
    files written from them), by forked worker processes where that pays (``figures.render``)."""
    return figures.render(_figure_jobs(run, summary, communities, others, points))


def _comparison(runs: List[RunData], summaries: List[dict]) -> dict:
    key = summaries[0]["primary"]["key"]
    rows = []
    for run, s in zip(runs, summaries):
        cos = [p["axis_cos_median_final"] for p in s["pairs"] if p["axis_cos_median_final"] is not None]
        accs = [t["final_acc"].get(key) for t in s["tasks"] if t["final_acc"].get(key) is not None]
        forg = [t["forgetting_max"].get(key) for t in s["tasks"] if t["forgetting_max"].get(key) is not None]
        rows.append({"label": run.label, "path": str(run.path), "acc": float(np.mean(accs)) if accs else None,
                     "forgetting": float(np.mean(forg)) if forg else None,
                     "dir_cdnv": s["stream"]["geomean_dir_cdnv_final"], "cdnv": s["stream"]["geomean_cdnv_final"],
                     "cos": float(np.mean(cos)) if cos else None})
    return {"key": key, "rows": rows}


def build_report(run_dir, out: Optional[Path] = None, compare: Sequence = (), *, lock: bool = True,
                 paper: Optional[bool] = None) -> Path:
    """Write ``index.html`` (self-contained), ``report.md`` (+ ``figures/*.png``) and ``summary.json`` for
    the run in ``run_dir`` into ``out`` (default: ``<run_dir>/report``); ``compare`` adds other runs side by
    side; ``paper`` adds (True) or leaves out (False) the section on the paper's claims (None: the run's
    ``output.paper``; auto = joint streams). Returns the output directory. A run directory missing files
    is a one-line DncsimError. Writing into the run directory takes its lock (``lock``; the run writing
    its own report already holds it), so a report is never written while a run is still changing the
    files."""
    run_path = Path(run_dir)
    out = Path(out) if out is not None else run_path / "report"
    inside = out.resolve().is_relative_to(run_path.resolve())
    writes_into_run = lock and inside and (run_path / "manifest.json").is_file()
    held = RunLock(run_path).acquire("dncsim report") if writes_into_run else None
    try:
        run = load_run(run_path)
        others = [load_run(p) for p in compare]
        if not out.parent.is_dir():
            raise DncsimError(f"--out: directory {out.parent} does not exist")
        _check_outputs(out)
        return _build(run, others, out, _wants_paper(run, paper))
    finally:
        if held is not None:
            held.release()


def _check_outputs(out: Path) -> None:
    """A DncsimError line, before anything is computed or written, when ``out`` or its ``figures``
    folder is something other than a directory (or nothing), or a file the report replaces is not a
    regular file (a symbolic link, a directory, a device...)."""
    for folder in (out, out / "figures"):
        kind = not_a_regular_file(folder) or ("a regular file" if os.path.lexists(folder) else None)
        if kind not in (None, "a directory"):
            raise DncsimError(f"--out: {folder} is {kind}, not a directory")
    for path in [out / "summary.json", out / "report.md", out / "index.html",
                 *(out / "figures" / f"{name}.png" for name in FIGURES)]:
        kind = not_a_regular_file(path)
        if kind is not None:
            raise DncsimError(f"--out: {path} is {kind}, not a regular file; the report replaces only its own files")


def _wants_paper(run: RunData, paper: Optional[bool]) -> bool:
    if paper is not None:
        return bool(paper)
    setting = (run.config.get("output") or {}).get("paper", "auto")
    return setting == "always" or (setting == "auto" and run.stream == "joint")


def _build(run: RunData, others: Sequence[RunData], out: Path, paper: bool = False) -> Path:
    points = prop42_points(run)
    summary = run_summary(run, points)
    if paper:
        summary["paper"] = _jsonable(paper_claims(run))
        summary["paper"]["findings"] = paper_findings(summary["paper"])
        summary["findings"] = summary["findings"] + summary["paper"]["findings"]
    communities = interference_communities(summary)
    summary["communities"] = [[summary["tasks"][k]["name"] for k in c] for c in communities]
    comp = None
    if others:
        summaries = [summary] + [run_summary(o) for o in others]
        comp = _comparison([run, *others], summaries)
        summary["comparison"] = comp
    figs = _figures(run, summary, communities, others, points)
    summary["figures"] = sorted(figs)
    env = environment()
    acc_keys = sorted(summary["tasks"][0]["final_acc"]) if summary["tasks"] else []
    common = dict(summary=summary, fmt=fmt, pct=pct, acc_keys=acc_keys,
                  shots=[f["shots"] for f in summary["tasks"][0]["fewshot"]], communities=summary["communities"],
                  compare=comp)

    html = env.get_template("report.html.j2").render(figure=figure_embedder(figs, FIGURES), **common)
    md = env.get_template("report.md.j2").render(**common)
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteFailed(f"{out}: cannot create the report directory ({exc.strerror or exc})",
                          {"path": str(out), "errno": exc.errno}) from None
    for name, png in figs.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    atomic_write_bytes(out / "summary.json", json_text(summary).encode())
    atomic_write_bytes(out / "report.md", md.encode())
    atomic_write_bytes(out / "index.html", html.encode())
    return out
