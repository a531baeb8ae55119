"""Null rejection rate (and power) of run-clustered tests on study-shaped data with run and task fixed
effects: CR1 counting the run dummies as parameters (statsmodels' default), CR1 counting only the
parameters not nested in the runs, CR2 on t(G - 1), and CR2 on Bell-McCaffrey df (what dncsim uses).

    python benchmarks/bench_cluster_inference.py [--datasets 20000] [--runs 24]
"""
import argparse

import numpy as np
from scipy import stats

from dncsim.analysis.clustered import cluster_fit


def simulate(runs, tasks, datasets, seed, slope=0.0):
    """x and y with task effects (sd 2), run effects (sd 3), unit noise; y = ... + slope * x."""
    rng = np.random.default_rng(seed)
    n = runs * tasks
    run, task = np.repeat(np.arange(runs), tasks), np.tile(np.arange(tasks), runs)
    tx, ty = rng.normal(0, 2, (datasets, tasks)), rng.normal(0, 2, (datasets, tasks))
    a, b = rng.normal(0, 3, (datasets, runs)), rng.normal(0, 3, (datasets, runs))
    x = tx[:, task] + a[:, run] + rng.normal(size=(datasets, n))
    y = ty[:, task] + b[:, run] + slope * x + rng.normal(size=(datasets, n))
    fixed = np.column_stack([np.ones(n), run[:, None] == np.arange(1, runs), task[:, None] == np.arange(1, tasks)])
    return x, y, fixed, run


def rates(runs, tasks, datasets, seed, slope, chunk=2000):
    """Rejection rates at alpha 0.05 of the four corrections on the same data sets."""
    hits = np.zeros(4)
    for start in range(0, datasets, chunk):
        B = min(chunk, datasets - start)
        x, y, fixed, run = simulate(runs, tasks, B, seed + start, slope)
        n, k = x.shape[1], fixed.shape[1] + 1
        Q, _ = np.linalg.qr(fixed)
        xt, yt = x - (x @ Q) @ Q.T, y - (y @ Q) @ Q.T                  # Frisch-Waugh-Lovell
        beta = (xt * yt).sum(1) / (xt * xt).sum(1)
        e = yt - xt * beta[:, None]
        scores = np.zeros((B, runs))
        np.add.at(scores.T, run, (xt * e).T)
        cr0 = np.sqrt((scores ** 2).sum(1)) / (xt * xt).sum(1)
        crit = stats.t.ppf(0.975, runs - 1)
        for i, K in enumerate((k, k - runs)):                            # all parameters; not nested
            factor = runs / (runs - 1) * (n - 1) / (n - K)
            hits[i] += np.sum(np.abs(beta) / (np.sqrt(factor) * cr0) > crit)
        fit = cluster_fit(np.concatenate([x[..., None], np.broadcast_to(fixed, (B, n, k - 1))], axis=2), y, run,
                          terms=[0])
        hits[2] += np.sum(np.abs(fit.t[:, 0]) > crit)
        hits[3] += np.sum(fit.p_values()[:, 0] < 0.05)
    return hits / datasets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=24)
    args = ap.parse_args(argv)
    se = np.sqrt(0.05 * 0.95 / args.datasets)
    print(f"{args.runs} runs, {args.datasets} data sets per row (Monte-Carlo sd at 5%: {100 * se:.2f} points)")
    print(f"{'tasks/run':>9} {'slope':>5} {'CR1 all K':>10} {'CR1 nested':>10} {'CR2 t(G-1)':>10} {'CR2 BM df':>10}")
    for tasks in (2, 4):
        for slope in (0.0, 0.4):
            r = rates(args.runs, tasks, args.datasets, seed=100 * tasks, slope=slope)
            print(f"{tasks:>9} {slope:>5} " + " ".join(f"{100 * v:>9.2f}%" for v in r))


if __name__ == "__main__":
    main()
