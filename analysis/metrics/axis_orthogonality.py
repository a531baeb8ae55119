"""Orthogonality of every pair of tasks' decision axes, and the Prop. 4.2 check."""
from __future__ import annotations

import itertools
import math

from dncsim.analysis.estimators import bootstrap_median_abs_cos_tasks
from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import (AXIS_BEYOND_NULL, AXIS_COS2_VS_RANDOM, AXIS_COS_MAX, AXIS_COS_MEDIAN,
                                   AXIS_COS_NULL_MEDIAN, AXIS_COS_NULL_P, AXIS_COS_NULL_Q05, CI_HIGH, CI_LOW,
                                   LABELS_CRAMERS_V, PROP42_FRAC, PROP42_TIGHTNESS, PROP42_VS_RANDOM)
from dncsim.analysis.orthogonality import (INDEPENDENCE_V_MAX, MAX_STACKED_AXES, labeling_independence,
                                           labeling_independence_tasks, orthogonality_summary, orthogonality_tasks,
                                           permutation_null_tasks, random_abs_cos)

__all__ = ["AxisOrthogonality"]


class AxisOrthogonality(Metric):
    """Per task pair a < b: ``axis_cos_median``, ``axis_cos_max``, ``axis_cos2_vs_random``; for tasks on
    the same samples ``labels_cramers_v``, with ``bootstrap`` > 0 the median's 95% interval (scheme
    ``pair_bootstrap``), with ``null_draws`` > 0 the permutation null (``permutation_null_tasks``):
    ``axis_cos_null_median``, ``axis_cos_null_q05``, ``axis_cos_null_p``, ``axis_beyond_null``; for
    independent pairs (V <= ``INDEPENDENCE_V_MAX``) ``prop42_frac``, ``prop42_tightness``,
    ``prop42_bound_vs_random``. Definitions: docs, Methods, Metrics. Stateless."""

    name = "axis_orthogonality"
    emits = (AXIS_COS_MEDIAN, AXIS_COS_MAX, AXIS_COS2_VS_RANDOM, LABELS_CRAMERS_V, PROP42_FRAC, PROP42_TIGHTNESS,
             PROP42_VS_RANDOM, AXIS_COS_MEDIAN + CI_LOW, AXIS_COS_MEDIAN + CI_HIGH, AXIS_COS_NULL_MEDIAN,
             AXIS_COS_NULL_Q05, AXIS_COS_NULL_P, AXIS_BEYOND_NULL)

    def __init__(self, seed: int = 0, bootstrap: int = 0, pair_bootstrap: str = "auto", null_draws: int = 0):
        super().__init__()
        self.seed, self.bootstrap, self.pair_bootstrap = seed, bootstrap, pair_bootstrap
        self.null_draws = int(null_draws)

    @classmethod
    def from_config(cls, evaluation, analysis, seed):
        return cls(seed, analysis.bootstrap, analysis.pair_bootstrap, analysis.null_draws)

    def _pairwise(self, row: Row) -> dict:
        """(a, b) -> orthogonality_summary-like dict for every pair a < b: from one product of all tasks'
        stacked axes when they fit (``orthogonality_tasks``), else pair by pair (axes sampled)."""
        T = len(row.tasks)
        geoms = [row.geometry(k) for k in range(T)]
        pairs = list(itertools.combinations(range(T), 2))
        P = max(g.C * (g.C - 1) // 2 for g in geoms)
        if T * P > MAX_STACKED_AXES or len({g.d for g in geoms}) != 1:
            return {(a, b): orthogonality_summary(geoms[a], geoms[b], seed=self.seed) for a, b in pairs}
        o = orthogonality_tasks(geoms)
        keys = ("median_abs_cos", "max_abs_cos", "cos2_vs_random", "median_bound", "frac_under_bound")
        table = {k: o[k].tolist() for k in keys}
        return {(a, b): {k: table[k][a][b] for k in keys} for a, b in pairs}

    def _same_samples(self, row: Row) -> dict:
        """(a, b) -> (Cramer's V, CI or None, null dict or None) for the pairs a < b of each batch of tasks on
        the same samples."""
        out = {}
        for ks, f in row.batches(row.geometry_split):
            if len(ks) < 2:
                continue
            labels = row.batch_labels(ks, row.geometry_split)
            v = labeling_independence_tasks(labels).tolist()
            ci = None
            if self.bootstrap:
                ci = bootstrap_median_abs_cos_tasks(f, labels, resamples=self.bootstrap,
                                                    seed=self.seed * 1_000_003 + (row.t + 1) * 1009,
                                                    scheme=self.pair_bootstrap, task_ids=ks).tolist()
            null = None
            if self.null_draws:
                seed = self.seed * 1_000_003 + (row.t + 1) * 1009 + 500_009 + ks[0]
                null = {key: val.tolist() for key, val in permutation_null_tasks(f, labels, draws=self.null_draws,
                                                                              seed=seed).items()}
            for i, j in itertools.combinations(range(len(ks)), 2):
                pair_null = None if null is None else {key: val[i][j] for key, val in null.items()}
                out[(ks[i], ks[j])] = (v[i][j], None if ci is None else ci[i][j], pair_null)
        return out

    def update(self, row: Row) -> None:
        summaries = self._pairwise(row)
        same = self._same_samples(row)
        chance = {}
        for a, b in itertools.combinations(range(len(row.tasks)), 2):
            o = summaries[(a, b)]
            self.measure(row, AXIS_COS_MEDIAN, o["median_abs_cos"], task=a, task_b=b)
            self.measure(row, AXIS_COS_MAX, o["max_abs_cos"], task=a, task_b=b)
            self.measure(row, AXIS_COS2_VS_RANDOM, o["cos2_vs_random"], task=a, task_b=b)
            if row.tasks[a].group != row.tasks[b].group:
                continue
            null = None
            if (a, b) in same:
                v, ci, null = same[(a, b)]
            else:                               # same group, different geometry-split samples: pairwise
                v = labeling_independence(row.geometry_data(a)[1], row.geometry_data(b)[1])["cramers_v"]
                ci = None
            if null is not None and null["null_p"] == null["null_p"]:
                self.measure(row, AXIS_COS_NULL_MEDIAN, null["null_median_abs_cos"], task=a, task_b=b)
                self.measure(row, AXIS_COS_NULL_Q05, null["null_q05"], task=a, task_b=b)
                self.measure(row, AXIS_COS_NULL_P, null["null_p"], task=a, task_b=b)
                self.measure(row, AXIS_BEYOND_NULL, float(null["beyond_null"]), task=a, task_b=b)
            self.measure(row, LABELS_CRAMERS_V, v, task=a, task_b=b)
            if v <= INDEPENDENCE_V_MAX:
                self.measure(row, PROP42_FRAC, o["frac_under_bound"], task=a, task_b=b)
                if o["median_abs_cos"] > 0 and math.isfinite(o["median_bound"]):
                    self.measure(row, PROP42_TIGHTNESS, o["median_bound"] / o["median_abs_cos"], task=a, task_b=b)
                if math.isfinite(o["median_bound"]):
                    d = row.geometry(a).d
                    if d not in chance:
                        chance[d] = random_abs_cos(d)["median"]
                    self.measure(row, PROP42_VS_RANDOM, o["median_bound"] / chance[d], task=a, task_b=b)
            if ci is not None:
                low, high = ci
                if low == low and high == high:
                    self.measure(row, AXIS_COS_MEDIAN + CI_LOW, low, task=a, task_b=b)
                    self.measure(row, AXIS_COS_MEDIAN + CI_HIGH, high, task=a, task_b=b)
