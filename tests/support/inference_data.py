"""Shared by test modules (and used by test_inference.py)."""
import numpy as np


OBJECTIVES, STRATEGIES = ("simclr", "vicreg", "supervised"), ("naive", "replay")


def study(rng, runs=18, tasks=4, slope=0.0, run_sd=3.0, fixed_order=True):
    """x = log dir-CDNV, y = forgetting: task effects, a run effect (sd ``run_sd``) in each, noise sd 1, and
    y = ... + slope * x. Within a task, x and y (without the effect) have the same sd, so ``slope`` is the
    true within-task slope in standard deviations."""
    rows = []
    tx, ty = rng.normal(0, 2, tasks), rng.normal(0, 2, tasks)
    for r in range(runs):
        a, b = rng.normal(0, run_sd), rng.normal(0, run_sd)
        order = list(range(tasks)) if fixed_order else list(rng.permutation(tasks))
        for position, t in enumerate(order):
            x = tx[t] + a + rng.normal()
            rows.append({"run": f"r{r}", "task_name": f"t{t}", "learned_at": position,
                         "objective": OBJECTIVES[r % 3], "strategy": STRATEGIES[(r // 3) % 2],
                         "dir_cdnv_learned": float(np.exp(x)), "forgetting": ty[t] + b + slope * x + rng.normal()})
    return rows
