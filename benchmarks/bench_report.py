"""Report generation time for a 10-task run (target: under 20 s on this 2-core machine).

Makes a small 10-task run first (scikit-learn's digits as ten labelings of the same images: the
digit, its parity, upper half, and the digit mod 3..9; a tiny convnet, one epoch each) -- that part
is not timed -- then times ``build_report`` (best of --repeats).

    python benchmarks/bench_report.py [--repeats 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from timing import best_of  # noqa: E402
from dncsim.analysis.report import build_report  # noqa: E402
from dncsim.simulator.config import run_from_mapping  # noqa: E402
from dncsim.simulator.run import run  # noqa: E402

LABELINGS = ["class", "class:parity", "class:high"] + [f"class:mod{k}" for k in range(3, 10)]


def ten_task_run(path: Path) -> Path:
    cfg = run_from_mapping({
        "name": "bench-report", "seed": 0,
        "scenario": {"source": {"name": "digits", "image_size": 16},
                     "stream": {"type": "multilabel", "labelings": LABELINGS, "allow_same_inputs": True}},
        "backbone": {"name": "convnet", "width": 8, "feature_dim": 32}, "augment": {"flip": False},
        "training": {"epochs": 1, "batch_size": 128}, "evaluation": {"linear_steps": 20},
        "analysis": {"episodes": 20}, "output": {"report": False, "tensorboard": False}})
    return run(cfg, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", default=None, help="keep the run directory here")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "run"
        print("making a 10-task run (not timed) ...", file=sys.stderr)
        ten_task_run(path)
        best = best_of(lambda: build_report(path), args.repeats)
        out = path / "report"
        figures = len(list((out / "figures").glob("*.png")))
    print(f"report of a 10-task run ({figures} figures, HTML + Markdown + JSON): {best:.2f} s "
          f"(best of {args.repeats}); target < 20 s: {'met' if best < 20 else 'MISSED'}")


if __name__ == "__main__":
    main()
