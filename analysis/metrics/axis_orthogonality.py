"""Orthogonality of every pair of tasks' decision axes, and the Prop. 4.2 check."""
from __future__ import annotations

import itertools

from dncsim.analysis.estimators import bootstrap_median_abs_cos
from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import AXIS_COS2_VS_RANDOM, AXIS_COS_MAX, AXIS_COS_MEDIAN, CI_HIGH, CI_LOW, PROP42_FRAC
from dncsim.analysis.orthogonality import orthogonality_summary

__all__ = ["AxisOrthogonality"]


class AxisOrthogonality(Metric):
    """Per task pair a < b: ``axis_cos_median`` and ``axis_cos_max`` (|cos| between every axis of a and
    every one of b), ``axis_cos2_vs_random`` (mean cos^2 x d), and, for tasks labelling the same
    samples, ``prop42_frac`` (share of axis pairs under Prop. 4.2's bound) and -- with ``bootstrap`` > 0 --
    ``axis_cos_median_ci_low`` / ``_ci_high``, a 95% interval over within-(joint-)class resamples of those
    samples. Stateless."""

    name = "axis_orthogonality"
    emits = (AXIS_COS_MEDIAN, AXIS_COS_MAX, AXIS_COS2_VS_RANDOM, PROP42_FRAC, AXIS_COS_MEDIAN + CI_LOW,
             AXIS_COS_MEDIAN + CI_HIGH)

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
                self.measure(row, PROP42_FRAC, o["frac_under_bound"], task=a, task_b=b)
                if self.bootstrap:
                    f, ya = row.geometry_data(a)
                    _, yb = row.geometry_data(b)
                    low, high = bootstrap_median_abs_cos(f, ya, yb, resamples=self.bootstrap,
                                                         seed=self.seed * 1_000_003 + (row.t + 1) * 1009 + a * 31 + b)
                    if low == low and high == high:
                        self.measure(row, AXIS_COS_MEDIAN + CI_LOW, low, task=a, task_b=b)
                        self.measure(row, AXIS_COS_MEDIAN + CI_HIGH, high, task=a, task_b=b)
