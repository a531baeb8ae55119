"""Directional CDNV, CDNV, their ratio and the mean gap of every task's classes, with bootstrap intervals."""
from __future__ import annotations

from dncsim.analysis.estimators import bootstrap_summaries_tasks, crossfit_geometry_tasks
from dncsim.analysis.geometry import UndefinedGeometry
from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import CDNV, CDNV_RATIO, CI_HIGH, CI_LOW, DIR_CDNV, MEAN_GAP, RESOLVED_PAIRS

__all__ = ["TaskGeometry"]

_FIELDS = ((DIR_CDNV, "dir_cdnv"), (CDNV, "cdnv"), (CDNV_RATIO, "ratio"), (MEAN_GAP, "mean_gap"))


class TaskGeometry(Metric):
    """Per task, on the geometry split: ``dir_cdnv`` (ordered pairs), ``cdnv`` (unordered, no 1/2),
    ``cdnv_ratio``, ``mean_gap``, by the ``plugin`` or ``crossfit`` estimator (then also
    ``resolved_pairs``; summaries absent while none is resolved). With ``bootstrap`` > 0:
    ``<metric>_ci_low`` / ``_ci_high``, 95% percentile intervals. Seeds derive from (seed, row, task).
    Stateless. See docs, Methods.
    """

    name = "task_geometry"
    emits = tuple(m for m, _ in _FIELDS) + (RESOLVED_PAIRS,) + tuple(
        m + suffix for m, _ in _FIELDS[:3] for suffix in (CI_LOW, CI_HIGH))

    def __init__(self, estimator: str = "plugin", splits: int = 2, bootstrap: int = 0, ddof: int = 0, seed: int = 0):
        super().__init__()
        self.estimator, self.splits, self.bootstrap, self.ddof, self.seed = estimator, splits, bootstrap, ddof, seed

    @classmethod
    def from_config(cls, evaluation, analysis, seed):
        return cls(analysis.estimator, analysis.crossfit_splits, analysis.bootstrap, analysis.ddof, seed)

    def _seed(self, row: Row, k: int) -> int:
        return self.seed * 1_000_003 + (row.t + 1) * 1009 + k

    def _batch(self, row: Row, ks, f):
        """(summaries or None, intervals or None) of tasks ``ks`` sharing geometry-split features ``f``."""
        labels = row.batch_labels(ks, row.geometry_split)
        seeds = [self._seed(row, k) for k in ks]
        if self.estimator == "plugin":
            summaries = [row.geometry(k).summary() for k in ks]
        else:
            summaries = []
            for est in crossfit_geometry_tasks(f, labels, splits=self.splits, seeds=seeds):
                try:
                    summaries.append(None if isinstance(est, Exception) else est.summary())
                except UndefinedGeometry:       # no pair resolved yet (e.g. an untrained backbone)
                    summaries.append(None)
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
            for metric, field in _FIELDS:
                self.measure(row, metric, summary[field], task=k)
            if intervals is not None:
                for metric, field in _FIELDS[:3]:
                    low, high = intervals[field]
                    if low == low and high == high:
                        self.measure(row, metric + CI_LOW, low, task=k)
                        self.measure(row, metric + CI_HIGH, high, task=k)
