"""Evaluation cost against the number of tasks: one evaluation row batched across tasks, and whole runs.

Rows: T in {4, 16, 64} tasks of 4 classes labelling the same N = 6,000 precomputed 64-d vectors (4,500
probe-train, 1,500 probe-test, as the ``features`` source splits them), embedded by an MLP backbone to
d = 64 and d = 512, measured with the default ``evaluation:`` and ``analysis:`` settings (linear and NCC
probes, refit and frozen; crossfit geometry with 100 bootstrap resamples; few-shot episodes and the
Theorem 4.1 bound; orthogonality of every task pair with its bootstrap interval). For each it prints the
time of one evaluation row (embedding pass + every metric), the time of the embedding pass plus one
batched linear-probe fit for all tasks, and their ratio; at T=16 also the per-task path -- the same
measurements by the per-task public functions, one task (or pair) at a time -- and its ratio to the
batched row. Targets (2 cores): row at T=16, d=64 <= 0.8 s; row time T=64 / T=16 <= 4.5.

With ``--runs``: whole runs of T = 4, 8, 16 supervised tasks on those vectors (MLP backbone, 2 epochs per
experience, default evaluation; T + 1 evaluation rows each), timed in this process (``run()``) and as the
command ``dncsim run`` (wall clock with the process's start and imports, best of 2), and the ratio
T=16 / T=4 of each (target <= 2.5).

    python benchmarks/bench_evaluation.py [--tasks 4,16,64] [--dims 64,512] [--repeats 2] [--runs | --runs-only]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from dncsim.analysis.bounds import ncc_error_bound  # noqa: E402
from dncsim.analysis.estimators import (bootstrap_median_abs_cos, bootstrap_summaries,  # noqa: E402
                                        crossfit_geometry)
from dncsim.analysis.fewshot import ncc_fewshot_error  # noqa: E402
from dncsim.analysis.geometry import class_geometry  # noqa: E402
from dncsim.analysis.metrics import AnalysisConfig, EvaluationConfig, EvaluationTask, build_collection  # noqa: E402
from dncsim.analysis.orthogonality import labeling_independence, orthogonality_summary  # noqa: E402
from dncsim.analysis.probes import fit_linear, fit_ncc  # noqa: E402

N, N_TRAIN, D_IN, CLASSES = 6000, 4500, 64, 4


def vectors(T: int, seed: int = 0):
    """(N, 64) float32 inputs whose T labelings of 4 classes each shift them along random directions."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (T, N), generator=g)
    shifts = torch.randn(T, CLASSES, D_IN, generator=g) * (1.5 / max(1.0, T ** 0.5))
    x = torch.randn(N, D_IN, generator=g) + shifts[torch.arange(T)[:, None], labels].sum(0)
    return x.float(), labels


def backbone(d: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D_IN, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, d)).eval()


def embed(model, x):
    with torch.no_grad():
        return torch.cat([model(x[i:i + 1024]) for i in range(0, len(x), 1024)])


def tasks_of(labels):
    return [EvaluationTask(index=k, name=f"task{k}", train_labels=labels[k, :N_TRAIN].clone(),
                           test_labels=labels[k, N_TRAIN:].clone(), group="g", learned_at=k, labeling=f"l{k}",
                           classes=tuple(range(CLASSES))) for k in range(len(labels))]


def batched_row(model, x, tasks, t, pair_bootstrap="auto"):
    """One evaluation row as a run measures it: the embedding pass, then every default metric (with
    ``analysis.pair_bootstrap`` as given; ``auto`` is the default: the labels here are drawn at random, so no
    pair is an exactly balanced design and auto takes ``iid`` for every pair)."""
    col = build_collection(tasks, EvaluationConfig(), AnalysisConfig(pair_bootstrap=pair_bootstrap), seed=0,
                           experiences=len(tasks))
    f = embed(model, x)
    split = {"train": f[:N_TRAIN], "test": f[N_TRAIN:]}
    col.evaluate(t, lambda k, s: split[s])


def per_task_row(model, x, tasks, t, an=AnalysisConfig(), ev=EvaluationConfig()):
    """The same measurements one task (or pair) at a time with the per-task public functions."""
    f = embed(model, x)
    ftr, fte = f[:N_TRAIN], f[N_TRAIN:]
    geoms = []
    for k, task in enumerate(tasks):
        seed = (t + 1) * 1009 + k
        fit_ncc(ftr, task.train_labels).score(fte, task.test_labels)
        fit_linear(ftr, task.train_labels, steps=ev.linear_steps).score(fte, task.test_labels)
        g = class_geometry(fte, task.test_labels, mean_axis_var=True)
        geoms.append(g)
        c = crossfit_geometry(fte, task.test_labels, splits=an.crossfit_splits, seed=seed).summary()
        bootstrap_summaries(fte, task.test_labels, resamples=an.bootstrap, splits=an.crossfit_splits, seed=seed)
        fs = ncc_fewshot_error(fte, task.test_labels, shots=an.shots, ways=an.ways, episodes=an.episodes, seed=seed)
        ncc_error_bound(g, an.shots, classes=fs.classes, extrapolate=True)
        del c
    for a, b in itertools.combinations(range(len(tasks)), 2):
        orthogonality_summary(geoms[a], geoms[b])
        labeling_independence(tasks[a].test_labels, tasks[b].test_labels)
        bootstrap_median_abs_cos(fte, tasks[a].test_labels, tasks[b].test_labels, resamples=an.bootstrap,
                                 seed=(t + 1) * 1009 + a * 31 + b)


def probe_floor(model, x, tasks):
    """The embedding pass plus one batched linear-probe fit for every task: the row's irreducible part."""
    from dncsim.analysis.probes import fit_linear_tasks

    f = embed(model, x)
    labels = torch.stack([task.train_labels for task in tasks])
    fit_linear_tasks(f[:N_TRAIN], labels)


def rows(args):
    print(f"one evaluation row, N={N} ({N_TRAIN} probe-train / {N - N_TRAIN} probe-test), {CLASSES} classes "
          f"per task, default evaluation, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("  row: default evaluation (analysis.pair_bootstrap: auto -- the labels are drawn at random, so the "
          "pairs' joint classes are of unequal size and auto takes the iid bootstrap of the samples); joint / "
          "wild: the same with analysis.pair_bootstrap: joint / wild, the schemes auto takes for exactly "
          "balanced pairs (joint below 20 tasks, wild from 20 on)")
    print(f"  {'d':>4} {'T':>4} {'row s':>8} {'joint s':>8} {'wild s':>7} {'embed+probe s':>14} {'ratio':>6} "
          f"{'per-task s':>11} {'speed-up':>9}")
    times, joint_times, wild_times = {}, {}, {}
    for d in args.dims:
        model = backbone(d)
        for T in args.tasks:
            x, labels = vectors(T)
            tasks = tasks_of(labels)
            batched_row(model, x, tasks, 0)                              # warm-up
            row = best_of(lambda: batched_row(model, x, tasks, 0), args.repeats)
            joint = best_of(lambda: batched_row(model, x, tasks, 0, "joint"), args.repeats)
            wild = best_of(lambda: batched_row(model, x, tasks, 0, "wild"), args.repeats)
            floor = best_of(lambda: probe_floor(model, x, tasks), args.repeats)
            times[d, T], joint_times[d, T], wild_times[d, T] = row, joint, wild
            extra = ""
            if T == 16 and not args.skip_per_task:
                per = best_of(lambda: per_task_row(model, x, tasks, 0), 1)
                extra = f"{per:11.2f} {per / row:8.1f}x"
            print(f"  {d:>4} {T:>4} {row:8.2f} {joint:8.2f} {wild:7.2f} {floor:14.2f} {row / floor:6.2f} {extra}",
                  flush=True)
    for name, tab in (("default", times), ("joint", joint_times), ("wild", wild_times)):
        if (64, 16) in tab:
            t16 = tab[64, 16]
            print(f"  {name}: row at T=16, d=64: {t16:.2f} s (target <= 0.8 s: {'met' if t16 <= 0.8 else 'MISSED'})")
        for d in args.dims:
            if (d, 16) in tab and (d, 64) in tab:
                g = tab[d, 64] / tab[d, 16]
                print(f"  {name}: d={d}: row time T=64 / T=16 = {g:.2f} "
                      f"(target <= 4.5: {'met' if g <= 4.5 else 'MISSED'})")


def runs(args):
    import subprocess

    import yaml

    from dncsim.simulator.config import run_from_mapping
    from dncsim.simulator.run import run

    print(f"whole runs: T supervised tasks on {N} vectors, MLP backbone, 2 epochs per experience, default "
          "evaluation; in this process (run()) and as the command `dncsim run` (wall clock, with the process's "
          "start and imports, as a user waits for it)")
    seconds, command = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for T in (4, 8, 16):
            x, labels = vectors(T)
            path = Path(tmp) / f"vectors{T}.npz"
            np.savez(path, features=x.numpy(), **{f"l{k}": labels[k].numpy() for k in range(T)})
            mapping = {
                "name": f"bench-T{T}", "seed": 0, "threads": args.threads,
                "scenario": {"source": {"name": "features", "path": str(path)},
                             "stream": {"type": "multilabel", "labelings": [f"l{k}" for k in range(T)]}},
                "objective": {"name": "supervised"}, "backbone": {"name": "mlp"}, "augment": {"enabled": False},
                "training": {"epochs": 2, "batch_size": 256},
                "output": {"report": False, "tensorboard": False}}
            start = time.perf_counter()
            run(run_from_mapping(mapping), Path(tmp) / f"run{T}")
            seconds[T] = time.perf_counter() - start
            cfg = Path(tmp) / f"bench{T}.yaml"
            out = dict(mapping["output"], dir=str(Path(tmp) / f"cli{T}"))
            cfg.write_text(yaml.safe_dump(dict(mapping, output=out)))
            times = []
            for rep in range(2):                      # best of 2: the first start may read a cold disk cache
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "dncsim", "run", str(cfg), "--force"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times.append(time.perf_counter() - start)
            command[T] = min(times)
            print(f"  T={T:>2}: {seconds[T]:7.1f} s in process, {command[T]:7.1f} s as a command  ({T + 1} evaluation "
                  "rows)", flush=True)
    for name, tab in (("in process", seconds), ("as a command", command)):
        r = tab[16] / tab[4]
        print(f"  {name}: T=16 / T=4 = {r:.2f} (target <= 2.5: {'met' if r <= 2.5 else 'MISSED'})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="4,16,64")
    ap.add_argument("--dims", default="64,512")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-per-task", action="store_true", help="do not time the per-task path at T=16")
    ap.add_argument("--runs", action="store_true", help="also time whole runs of T = 4, 8, 16 tasks")
    ap.add_argument("--runs-only", action="store_true", help="only the whole runs (also works on older dncsim)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    args.tasks = [int(v) for v in args.tasks.split(",")]
    args.dims = [int(v) for v in args.dims.split(",")]
    torch.set_num_threads(args.threads)
    if not args.runs_only:
        rows(args)
    if args.runs or args.runs_only:
        runs(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
