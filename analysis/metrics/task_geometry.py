"""Directional CDNV, CDNV, their ratio and the mean gap of every task's classes, with intervals."""
from __future__ import annotations

from dncsim.analysis.estimators import (bootstrap_summaries_tasks, crossfit_geometry_tasks, debiased_geometry_tasks,
                                        jackknife_summaries_tasks)
from dncsim.analysis.geometry import UndefinedGeometry
from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import (BARELY_RESOLVED_PAIRS, CDNV, CDNV_RATIO, CI_HIGH, CI_LOW, DIR_CDNV, MEAN_GAP,
                                   NEGATIVE_NUMERATOR_PAIRS, RESOLVED_PAIRS)

__all__ = ["TaskGeometry"]

_FIELDS = ((DIR_CDNV, "dir_cdnv"), (CDNV, "cdnv"), (CDNV_RATIO, "ratio"), (MEAN_GAP, "mean_gap"))


class TaskGeometry(Metric):
    """Per task, on the geometry split: ``dir_cdnv`` (ordered pairs), ``cdnv`` (unordered, no 1/2),
    ``cdnv_ratio``, ``mean_gap``, by the ``debiased`` (default; strata from the other tasks labelling the
    same samples, ``design``), ``plugin`` or ``crossfit`` estimator; all but the plug-in also
    ``resolved_pairs`` (summaries absent while none is resolved); debiased also the regime flags
    ``negative_numerator_pairs`` and ``barely_resolved_pairs``. ``<metric>_ci_low`` / ``_ci_high``: 95%
    intervals, debiased by a jackknife of ``groups`` groups, the others by ``bootstrap`` resamples (0:
    none). Seeds derive from (seed, row, task). Stateless. See docs, Methods.
    """

    name = "task_geometry"
    emits = tuple(m for m, _ in _FIELDS) + (RESOLVED_PAIRS, NEGATIVE_NUMERATOR_PAIRS, BARELY_RESOLVED_PAIRS) + tuple(
        m + suffix for m, _ in _FIELDS[:3] for suffix in (CI_LOW, CI_HIGH))

    def __init__(self, estimator: str = "debiased", splits: int = 2, bootstrap: int = 0, ddof: int = 0, seed: int = 0,
                 groups: int = 20, design: str = "auto"):
        super().__init__()
        self.estimator, self.splits, self.bootstrap, self.ddof, self.seed = estimator, splits, bootstrap, ddof, seed
        self.groups, self.design = groups, design

    @classmethod
    def from_config(cls, evaluation, analysis, seed):
        return cls(analysis.estimator, analysis.crossfit_splits, analysis.bootstrap, analysis.ddof, seed,
                   analysis.interval_groups, analysis.design)

    def _seed(self, row: Row, k: int) -> int:
        return self.seed * 1_000_003 + (row.t + 1) * 1009 + k

    @staticmethod
    def _summaries(estimates):
        out = []
        for est in estimates:
            try:
                out.append(None if isinstance(est, Exception) else est.summary())
            except UndefinedGeometry:       # no pair resolved yet (e.g. an untrained backbone)
                out.append(None)
        return out

    def _batch(self, row: Row, ks, f):
        """(summaries or None, intervals or None) of tasks ``ks`` sharing geometry-split features ``f``."""
        labels = row.batch_labels(ks, row.geometry_split)
        seeds = [self._seed(row, k) for k in ks]
        if self.estimator == "debiased":
            if self.groups:
                ests, intervals = jackknife_summaries_tasks(f, labels, groups=self.groups, design=self.design,
                                                            seeds=seeds)
                return self._summaries(ests), intervals
            return self._summaries(debiased_geometry_tasks(f, labels, design=self.design)), [None] * len(ks)
        if self.estimator == "plugin":
            summaries = [row.geometry(k).summary() for k in ks]
        else:
            summaries = self._summaries(crossfit_geometry_tasks(f, labels, splits=self.splits, seeds=seeds))
        intervals = [None] * len(ks)
        if self.bootstrap:
            intervals = bootstrap_summaries_tasks(f, labels, estimator=self.estimator, resamples=self.bootstrap,
                                                  ddof=self.ddof, splits=self.splits, seeds=seeds,
                                                  centres=summaries if self.estimator == "crossfit" else None)
        return summaries, intervals

    def update(self, row: Row) -> None:
        results = {}
        for ks, f in row.batches(row.geometry_split):
            results.update(zip(ks, zip(*self._batch(row, ks, f))))
        for k in range(len(row.tasks)):
            summary, intervals = results[k]
            if self.estimator != "plugin":
                if summary is None:
                    self.measure(row, RESOLVED_PAIRS, 0, task=k)
                    continue
                C = row.geometry(k).C
                self.measure(row, RESOLVED_PAIRS, C * (C - 1) // 2 - summary["undefined_pairs"], task=k)
            if self.estimator == "debiased":
                self.measure(row, NEGATIVE_NUMERATOR_PAIRS, summary["negative_numerator_pairs"], task=k)
                self.measure(row, BARELY_RESOLVED_PAIRS, summary["barely_resolved_pairs"], task=k)
            for metric, field in _FIELDS:
                self.measure(row, metric, summary[field], task=k)
            if intervals is not None:
                for metric, field in _FIELDS[:3]:
                    low, high = intervals[field]
                    if low == low and high == high:
                        self.measure(row, metric + CI_LOW, low, task=k)
                        self.measure(row, metric + CI_HIGH, high, task=k)
