"""Orthogonality of every pair of tasks' decision axes, and the Prop. 4.2 check."""
from __future__ import annotations

import itertools
import math

from dncsim.analysis.estimators import bootstrap_median_abs_cos
from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import (AXIS_COS2_VS_RANDOM, AXIS_COS_MAX, AXIS_COS_MEDIAN, CI_HIGH, CI_LOW,
                                   LABELS_CRAMERS_V, PROP42_FRAC, PROP42_TIGHTNESS, PROP42_VS_RANDOM)
from dncsim.analysis.orthogonality import (INDEPENDENCE_V_MAX, labeling_independence, orthogonality_summary,
                                           random_abs_cos)

__all__ = ["AxisOrthogonality"]


class AxisOrthogonality(Metric):
    """Per task pair a < b: ``axis_cos_median`` and ``axis_cos_max`` (|cos| between every axis of a and
    every one of b), ``axis_cos2_vs_random`` (mean cos^2 x d). For tasks labelling the same samples:
    ``labels_cramers_v`` (Cramer's V of their contingency table on the geometry split) and -- with
    ``bootstrap`` > 0 -- ``axis_cos_median_ci_low`` / ``_ci_high``, a 95% interval over within-(joint-)class
    resamples of those samples. For those that are also independent (V <= ``INDEPENDENCE_V_MAX``, the
    assumption of Prop. 4.2; dependent pairs such as fine and coarse classes get no Prop. 4.2 rows):
    ``prop42_frac`` (share of axis pairs under the bound -- on exactly balanced independent labelings it
    is 1 for any features, a property of the data), ``prop42_tightness`` (median bound / median observed
    |cos|: how far the bound is above what the features show) and ``prop42_bound_vs_random`` (median bound
    / random directions' median |cos| in d dimensions: below 1 the bound forces more orthogonality than
    chance). Stateless."""

    name = "axis_orthogonality"
    emits = (AXIS_COS_MEDIAN, AXIS_COS_MAX, AXIS_COS2_VS_RANDOM, LABELS_CRAMERS_V, PROP42_FRAC, PROP42_TIGHTNESS,
             PROP42_VS_RANDOM, AXIS_COS_MEDIAN + CI_LOW, AXIS_COS_MEDIAN + CI_HIGH)

    def __init__(self, seed: int = 0, bootstrap: int = 0):
        super().__init__()
        self.seed, self.bootstrap = seed, bootstrap

    @classmethod
    def from_config(cls, evaluation, analysis, seed):
        return cls(seed, analysis.bootstrap)

    def update(self, row: Row) -> None:
        for a, b in itertools.combinations(range(len(row.tasks)), 2):
            o = orthogonality_summary(row.geometry(a), row.geometry(b), seed=self.seed)
            self.measure(row, AXIS_COS_MEDIAN, o["median_abs_cos"], task=a, task_b=b)
            self.measure(row, AXIS_COS_MAX, o["max_abs_cos"], task=a, task_b=b)
            self.measure(row, AXIS_COS2_VS_RANDOM, o["cos2_vs_random"], task=a, task_b=b)
            if row.tasks[a].group == row.tasks[b].group:
                f, ya = row.geometry_data(a)
                _, yb = row.geometry_data(b)
                v = labeling_independence(ya, yb)["cramers_v"]
                self.measure(row, LABELS_CRAMERS_V, v, task=a, task_b=b)
                if v <= INDEPENDENCE_V_MAX:
                    self.measure(row, PROP42_FRAC, o["frac_under_bound"], task=a, task_b=b)
                    if o["median_abs_cos"] > 0 and math.isfinite(o["median_bound"]):
                        self.measure(row, PROP42_TIGHTNESS, o["median_bound"] / o["median_abs_cos"], task=a, task_b=b)
                    if math.isfinite(o["median_bound"]):
                        chance = random_abs_cos(row.geometry(a).d)["median"]
                        self.measure(row, PROP42_VS_RANDOM, o["median_bound"] / chance, task=a, task_b=b)
                if self.bootstrap:
                    low, high = bootstrap_median_abs_cos(f, ya, yb, resamples=self.bootstrap,
                                                         seed=self.seed * 1_000_003 + (row.t + 1) * 1009 + a * 31 + b)
                    if low == low and high == high:
                        self.measure(row, AXIS_COS_MEDIAN + CI_LOW, low, task=a, task_b=b)
                        self.measure(row, AXIS_COS_MEDIAN + CI_HIGH, high, task=a, task_b=b)
