"""Cost of an evaluation row by estimator: the default ``debiased`` with its jackknife intervals against the
``crossfit`` estimator with 100 bootstrap resamples (the default before methods revision 4, unchanged code).

Rows as ``benchmarks/bench_evaluation.py`` builds them: T tasks of 4 classes labelling N = 6,000 vectors
(1,500 probe-test, the geometry split), embedded to d = 64 and 512; ``--design factorial`` labels them as a
balanced factorial instead (the debiased estimator then uses the strata). For each: the whole row (every
default metric) under ``analysis.estimator: crossfit`` and under the default, their ratio (target <= 1.3),
and the per-task geometry alone (point estimates and intervals of all tasks).

    python benchmarks/bench_row_estimators.py [--tasks 4,16] [--dims 64,512] [--design random|factorial]
"""
from __future__ import annotations

import argparse
import itertools

import torch

from bench_evaluation import CLASSES, N, N_TRAIN, backbone, embed, tasks_of, vectors  # noqa: E402
from timing import best_of  # noqa: E402
from dncsim.analysis.estimators import (bootstrap_summaries_tasks, crossfit_geometry_tasks,  # noqa: E402
                                        jackknife_summaries_tasks)
from dncsim.analysis.metrics import AnalysisConfig, EvaluationConfig, build_collection  # noqa: E402


def factorial_labels(T: int):
    """(T, N) labels of a balanced factorial of T attributes with 2 levels each (4 classes for the first
    two), shuffled over the samples, so that every task's other tasks form an exactly balanced design."""
    levels = [CLASSES if t < 2 else 2 for t in range(T)]
    cells = torch.tensor(list(itertools.product(*[range(L) for L in levels])))
    reps = -(-N // len(cells))
    lab = cells.repeat_interleave(reps, 0)[:N].T.contiguous()
    g = torch.Generator().manual_seed(0)
    train, test = torch.randperm(N_TRAIN, generator=g), N_TRAIN + torch.randperm(N - N_TRAIN, generator=g)
    return lab[:, torch.cat([train, test])]


def row(model, x, tasks, analysis: AnalysisConfig):
    col = build_collection(tasks, EvaluationConfig(), analysis, seed=0, experiences=len(tasks))
    f = embed(model, x)
    split = {"train": f[:N_TRAIN], "test": f[N_TRAIN:]}
    col.evaluate(0, lambda k, s: split[s])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="4,16")
    ap.add_argument("--dims", default="64,512")
    ap.add_argument("--design", choices=("random", "factorial"), default="random")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"threads {torch.get_num_threads()}, design {args.design}; seconds, best of {args.repeats}")
    for T, d in itertools.product(map(int, args.tasks.split(",")), map(int, args.dims.split(","))):
        x, labels = vectors(T)
        if args.design == "factorial":
            labels = factorial_labels(T)
        tasks = tasks_of(labels)
        model = backbone(d)
        old = best_of(lambda: row(model, x, tasks, AnalysisConfig(estimator="crossfit", bootstrap=100)), args.repeats)
        new = best_of(lambda: row(model, x, tasks, AnalysisConfig()), args.repeats)
        f = embed(model, x)[N_TRAIN:].double()
        lab = labels[:, N_TRAIN:]
        seeds = list(range(T))

        def crossfit_geometry():
            c = [e.summary() for e in crossfit_geometry_tasks(f, lab, seeds=seeds)]
            bootstrap_summaries_tasks(f, lab, estimator="crossfit", resamples=100, seeds=seeds, centres=c)
        g_old = best_of(crossfit_geometry, args.repeats)
        g_new = best_of(lambda: jackknife_summaries_tasks(f, lab, groups=20, seeds=seeds), args.repeats)
        print(f"T={T:3d} d={d:4d}  row: crossfit+bootstrap {old:7.3f}  debiased+jackknife {new:7.3f}  ratio "
              f"{new / old:5.2f}   geometry alone: {g_old:7.3f} -> {g_new:7.3f} (ratio {g_new / g_old:5.2f})",
              flush=True)


if __name__ == "__main__":
    main()
