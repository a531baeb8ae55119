"""Report generation time for a 10-task run (target: at most 5 s on this 2-core machine).

Makes a small 10-task run first (scikit-learn's digits as ten labelings of the same images: the
digit, its parity, upper half, and the digit mod 3..9; a tiny convnet, one epoch each), not timed
and in a child process, so that the process timing ``build_report`` is like ``dncsim report``'s (no
training threads left behind); then times ``build_report`` (best of --repeats; the first call also
pays the lazy imports of matplotlib and seaborn) and splits the best call's time into drawing the
figures and the rest (loading the run, the numbers, the templates, writing the files).
``--processes 1`` draws the figures in this process, serially, ``--processes 2`` in two forked
workers; by default the report decides (``figures.default_processes``: two workers on this machine
when its other CPU is free, else serially). ``--run DIR`` reports on a run made before.

    python benchmarks/bench_report.py [--repeats 3] [--keep DIR | --run DIR] [--processes N]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dncsim.analysis.report import build, build_report, figures

LABELINGS = ["class", "class:parity", "class:high"] + [f"class:mod{k}" for k in range(3, 10)]


def ten_task_run(path: Path) -> Path:
    import torch

    from dncsim.simulator.config import run_from_mapping
    from dncsim.simulator.run import run

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = run_from_mapping({
        "name": "bench-report", "seed": 0,
        "scenario": {"source": {"name": "digits", "image_size": 16},
                     "stream": {"type": "multilabel", "labelings": LABELINGS, "allow_same_inputs": True}},
        "backbone": {"name": "convnet", "width": 8, "feature_dim": 32}, "augment": {"flip": False},
        "training": {"epochs": 1, "batch_size": 128}, "evaluation": {"linear_steps": 20},
        "analysis": {"episodes": 20}, "output": {"report": False, "tensorboard": False}})
    return run(cfg, path)


def timed_calls(path: Path, repeats: int):
    """(total seconds, figure seconds, processes drawing the figures) of each of ``repeats`` calls of
    build_report."""
    draw, choose, spent, used = build._figures, figures.default_processes, [], []

    def timed_figures(*args, **kwargs):
        start = time.perf_counter()
        try:
            return draw(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    def recorded(n):
        used.append(choose(n))
        return used[-1]

    build._figures, figures.default_processes = timed_figures, recorded
    try:
        calls = []
        for _ in range(repeats):
            start = time.perf_counter()
            build_report(path)
            calls.append((time.perf_counter() - start, spent[-1], used[-1]))
        return calls
    finally:
        build._figures, figures.default_processes = draw, choose


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", default=None, help="keep the run directory here")
    ap.add_argument("--run", default=None, help="report on this run directory (made before) instead of a new one")
    ap.add_argument("--processes", type=int, default=None,
                    help="processes drawing the figures (default: the report's own choice)")
    ap.add_argument("--make-run", metavar="DIR", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_run:
        ten_task_run(Path(args.make_run))
        return
    if args.processes is not None:
        figures.default_processes = lambda n: args.processes
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.run or args.keep or Path(tmp) / "run")
        if not args.run:
            print("making a 10-task run (not timed) ...", file=sys.stderr)
            subprocess.run([sys.executable, __file__, "--make-run", str(path)], check=True, stdout=sys.stderr)
        calls = timed_calls(path, args.repeats)
        n = len(list((path / "report" / "figures").glob("*.png")))
    best, figs, processes = min(calls)
    print(f"report of a 10-task run ({n} figures, HTML + Markdown + JSON): {best:.2f} s (best of {args.repeats}: "
          f"figures {figs:.2f} s in {processes} process{'es' if processes > 1 else ''}, the rest {best - figs:.2f} s; "
          f"every call: {', '.join(f'{t:.2f} s ({k} proc.)' for t, _, k in calls)}); "
          f"target <= 5 s: {'met' if best <= 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
