"""Assemble the report: numbers, figures, then the HTML, Markdown and JSON files (written atomically)."""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from dncsim.analysis.report.figures import FigureContext, captions, figure_jobs, figures_in, render
from dncsim.analysis.report.graph import interference_communities
from dncsim.analysis.report.paper import paper_claims, paper_findings
from dncsim.analysis.report.render import environment, figure_embedder, fmt, pct
from dncsim.analysis.report.summary import _jsonable, prop42_points, run_summary
from dncsim.common import DncsimError, WriteFailed, atomic_write_bytes, csv_text, json_text, not_a_regular_file
from dncsim.rundir import RunData, RunLock, is_run_directory, load_run

__all__ = ["build_report"]


def _figures(ctx: FigureContext) -> Dict[str, bytes]:
    """``{name: PNG bytes}`` of every registered figure that applies, each drawn once (the HTML embeds
    the bytes, the Markdown links the files written from them), by forked worker processes where that
    pays (``figures.pool``)."""
    return render(figure_jobs(ctx))


#: the per-task values the comparison sets side by side: (field, label, where in a task summary)
COMPARE_METRICS = (("final_acc", "final accuracy"), ("gain_over_init", "gain over init (when learned)"),
                   ("forgetting_max", "forgetting"), ("dir_cdnv_final", "dir-CDNV final"))


def _interval(values: List[float]) -> dict:
    """Mean and, over two or more seeds, its 95% t interval."""
    from scipy.stats import t as student
    v = np.asarray(values, dtype=float)
    out = {"value": float(v.mean()), "n": int(v.size), "low": None, "high": None}
    if v.size >= 2:
        half = float(student.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
        out["low"], out["high"] = out["value"] - half, out["value"] + half
    return out


def _task_value(t: dict, field: str, key: str):
    v = t.get(field)
    return v.get(key) if isinstance(v, dict) else v


def _comparison(runs: List[RunData], summaries: List[dict]) -> dict:
    """Runs side by side over one task set: the tasks (by name) every run has, each run-level mean over
    the tasks where every run defines the value (named, with the count and the tasks left out), and per
    task, per group of runs of one configuration (seeds), the mean with a 95% interval across seeds."""
    key = summaries[0]["primary"]["key"]
    by = [{t["name"]: t for t in s["tasks"]} for s in summaries]
    common = [n for n in by[0] if all(n in b for b in by)]
    labels = [run.label for run in runs]

    def defined(field, n, positive=False):
        vals = [_task_value(b[n], field, key) for b in by]
        return all(v is not None and (v > 0 or not positive) for v in vals)

    geo = [n for n in common if defined("dir_cdnv_final", n, True) and defined("cdnv_final", n, True)]
    learned = [n for n in common if all(b[n]["learned"] is not False for b in by)]
    acc = [n for n in learned if defined("final_acc", n)]
    forg = [n for n in learned if defined("forgetting_max", n)]
    left = []
    for n in common:
        if n not in geo:
            why: Dict[str, List[str]] = {}
            for lab, b in zip(labels, by):
                u = b[n].get("undefined", {})
                r = u.get("dir_cdnv_final") or u.get("cdnv_final")
                if r:
                    why.setdefault(r, []).append(lab)
            text = "; ".join(f"{'every run' if len(labs) == len(runs) else ', '.join(labs)}: {r}"
                             for r, labs in why.items())
            left.append({"task": n, "reason": "geometry undefined after the last experience in "
                         + (text or "some run")})
    pairs = [tuple(p["names"]) for p in summaries[0]["pairs"]
             if p["names"][0] in common and p["names"][1] in common]
    cos_of = [{tuple(p["names"]): p["axis_cos_median_final"] for p in s["pairs"]} for s in summaries]
    pairs = [p for p in pairs if all(c.get(p) is not None for c in cos_of)]
    rows = []
    for run, b, s, cos in zip(runs, by, summaries, cos_of):
        rows.append({"label": run.label, "path": str(run.path), "seed": run.seed,
                     "acc": _mean_of(_task_value(b[n], "final_acc", key) for n in acc),
                     "forgetting": _mean_of(_task_value(b[n], "forgetting_max", key) for n in forg),
                     "dir_cdnv": _geomean_of(b[n]["dir_cdnv_final"] for n in geo),
                     "cdnv": _geomean_of(b[n]["cdnv_final"] for n in geo),
                     "cos": _mean_of(cos[p] for p in pairs)})
    groups: Dict[str, List[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(run.configuration_key(), []).append(i)
    group_rows = []
    for members in groups.values():
        first = runs[members[0]]
        label = first.label if len(members) == 1 else (f"{first.objective}, {first.strategy} "
                                                       f"({len(members)} seeds: "
                                                       f"{', '.join(str(runs[i].seed) for i in members)})")
        per_task = {}
        for n in common:
            cells = {}
            for field, _ in COMPARE_METRICS:
                vals = [_task_value(by[i][n], field, key) for i in members]
                vals = [v for v in vals if v is not None]
                cell = _interval(vals) if vals else {"value": None, "n": 0, "low": None, "high": None}
                cell["unlearned"] = all(by[i][n]["learned"] is False for i in members)
                cell["reason"] = (by[members[0]][n].get("undefined", {}).get(field)
                                  if not vals and field == "dir_cdnv_final" else None)
                cells[field] = cell
            per_task[n] = cells
        group_rows.append({"label": label, "runs": len(members), "tasks": per_task})
    return {"key": key, "rows": rows, "tasks": common,
            "task_sets": {"accuracy": acc, "forgetting": forg, "geometry": geo, "pairs": [list(p) for p in pairs]},
            "left_out": left, "metrics": [{"field": f, "label": lab} for f, lab in COMPARE_METRICS],
            "groups": group_rows}


def _mean_of(values) -> Optional[float]:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _geomean_of(values) -> Optional[float]:
    v = [x for x in values if x is not None and x > 0]
    return float(np.exp(np.mean(np.log(v)))) if v else None


MEASUREMENTS_CSV = "measurements.csv"


def measurements_csv(summary: dict) -> str:
    """Every per-task scalar before training, when learned and at the end, one row per task (CSV)."""
    header = ["task", "learned_at", "learned"] + [f"{m}_{w}" for m in summary["task_scalars"]
                                                  for w in ("init", "learned", "final")]
    rows = [[t["name"], t["learned_at"], t["learned"]] + [t.get(h) for h in header[3:]] for t in summary["tasks"]]
    return csv_text(header, rows)


def compact_measurements(summary: dict) -> List[dict]:
    """The measurements transposed for the page: one row per metric, one cell per task holding
    ``before / when learned / final``."""
    return [{"metric": m, "cells": [[t.get(f"{m}_{w}") for w in ("init", "learned", "final")]
                                    for t in summary["tasks"]]} for m in summary["task_scalars"]]


def build_report(run_dir, out: Optional[Path] = None, compare: Sequence = (), *, lock: bool = True,
                 paper: Optional[bool] = None) -> Path:
    """Write ``index.html``, ``report.md`` (+ ``figures/*.png``) and ``summary.json`` for ``run_dir`` into ``out``.

    ``out`` defaults to ``<run_dir>/report``; ``compare``: other runs side by side; ``paper``: the paper
    section on/off (None: ``output.paper``). Returns the output directory. Missing files: one-line
    DncsimError. Writing into the run directory takes its lock (``lock``: False when already held).
    """
    run_path = Path(run_dir)
    out = Path(out) if out is not None else run_path / "report"
    inside = out.resolve().is_relative_to(run_path.resolve())
    writes_into_run = lock and inside and is_run_directory(run_path)
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
                 *(out / "figures" / f"{name}.png" for name in captions())]:
        kind = not_a_regular_file(path)
        if kind is not None:
            raise DncsimError(f"--out: {path} is {kind}, not a regular file; the report replaces only its own files")


def _wants_paper(run: RunData, paper: Optional[bool]) -> bool:
    if paper is not None:
        return bool(paper)
    setting = run.paper_setting
    return setting == "always" or (setting == "auto" and run.stream == "joint")


def _ordered_keys(keys: List[str], primary: str) -> List[str]:
    return sorted(keys, key=lambda k: (k != primary, k))


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
    figs = _figures(FigureContext(run, summary, communities, others, points))
    summary["figures"] = sorted(figs)
    env = environment()
    acc_keys = sorted(summary["tasks"][0]["final_acc"]) if summary["tasks"] else []
    csv = measurements_csv(summary)
    common = dict(summary=summary, fmt=fmt, pct=pct, acc_keys=_ordered_keys(acc_keys, summary["primary"]["key"]),
                  shots=[f["shots"] for f in summary["tasks"][0]["fewshot"]], communities=summary["communities"],
                  compare=comp, figures_in=figures_in, measurements=compact_measurements(summary),
                  measurements_csv=MEASUREMENTS_CSV,
                  csv_data_uri="data:text/csv;base64," + base64.b64encode(csv.encode()).decode(),
                  one_community=len(summary["communities"]) == 1 and len(summary["tasks"]) > 1,
                  story_count=sum(1 for t in summary["tasks"] if t["final_acc"]))

    html = env.get_template("report.html.j2").render(figure=figure_embedder(figs, captions()), **common)
    md = env.get_template("report.md.j2").render(**common)
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteFailed(f"{out}: cannot create the report directory ({exc.strerror or exc})",
                          {"path": str(out), "errno": exc.errno}) from None
    for name, png in figs.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    atomic_write_bytes(out / MEASUREMENTS_CSV, csv.encode())
    atomic_write_bytes(out / "summary.json", json_text(summary).encode())
    atomic_write_bytes(out / "report.md", md.encode())
    atomic_write_bytes(out / "index.html", html.encode())
    return out
