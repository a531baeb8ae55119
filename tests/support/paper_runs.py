"""Shared by test modules (and used by test_paper_claims.py)."""
import math

import numpy as np

from dncsim.analysis import names
from dncsim.analysis.names import table_row
from dncsim.analysis.report.paper import (LAST_POINTS)
from dncsim.rundir import RunData

TASKS = ["color", "shape", "size"]


D = 128


class Run(RunData):
    @property
    def feature_dim(self):
        return D


def make_run(index_init=20.0, index_final=2.0, cos=0.05, q05=0.08, bound_scale=3.0, noise=0.0, seed=0, points=8,
             shuffle_bounds=False):
    """Tasks of different difficulty (errors scale with 1 + k); the bound is ``bound_scale`` x the
    error-free curve; the last ``LAST_POINTS`` points sit at ``index_final``."""
    rng = np.random.default_rng(seed)
    rows = []
    exps = list(range(-1, points - 1))
    level = (1 + np.arange(3)) * (1 + 0.3 * rng.standard_normal((len(exps), 3)) ** 2)   # geometry per point
    for k, name in enumerate(TASKS):
        for i, e in enumerate(exps):
            frac = min(1.0, i / (len(exps) - LAST_POINTS))
            index = index_init * (index_final / index_init) ** frac
            ratio = index / (2 * D)
            cdnv = 4.0 * (0.5 ** frac)
            rows += [table_row(e, names.CDNV_RATIO, ratio, task=k, task_name=name),
                     table_row(e, names.DIR_CDNV, ratio * cdnv, task=k, task_name=name),
                     table_row(e, names.CDNV, cdnv, task=k, task_name=name)]
            kb = (k + 1) % 3 if shuffle_bounds else k                           # another task's geometry
            for m in (1, 10, 20, 50):
                clean = 0.1 * level[i, k] * (1 - 0.8 * frac) / math.sqrt(m)
                err = clean * (1 + noise * rng.standard_normal())
                bound = bound_scale * 0.1 * level[i, kb] * (1 - 0.8 * frac) / math.sqrt(m)
                rows += [table_row(e, names.FEWSHOT_ERR, err, task=k, task_name=name, shots=m),
                         table_row(e, names.BOUND, bound, task=k, task_name=name, shots=m)]
    for a in range(3):
        for b in range(a + 1, 3):
            for e in exps:
                rows += [table_row(e, names.AXIS_COS_MEDIAN, cos, task=a, task_name=TASKS[a], task_b=b),
                         table_row(e, names.AXIS_COS_NULL_Q05, q05, task=a, task_name=TASKS[a], task_b=b),
                         table_row(e, names.AXIS_COS_NULL_MEDIAN, q05 * 1.3, task=a, task_name=TASKS[a], task_b=b),
                         table_row(e, names.AXIS_COS_NULL_P, 0.01 if cos < q05 else 0.5, task=a, task_name=TASKS[a],
                                   task_b=b)]
    return Run(path=None, config={"training": {"epochs": 3}, "scenario": {"stream": {"type": "joint"}}},
               manifest={}, rows=rows, tasks=TASKS, matrices={})
