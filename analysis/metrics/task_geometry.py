"""Directional CDNV, CDNV, their ratio and the mean gap of every task's classes."""
from __future__ import annotations

from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import CDNV, CDNV_RATIO, DIR_CDNV, MEAN_GAP

__all__ = ["TaskGeometry"]


class TaskGeometry(Metric):
    """Per task, from ``ClassGeometry.summary()`` on the geometry split (README, Conventions):
    ``dir_cdnv`` (mean over ordered class pairs), ``cdnv`` (mean over unordered pairs, no factor 1/2),
    ``cdnv_ratio`` and ``mean_gap`` (mean distance between class means). Stateless."""

    name = "task_geometry"
    emits = (DIR_CDNV, CDNV, CDNV_RATIO, MEAN_GAP)

    def update(self, row: Row) -> None:
        for k in range(len(row.tasks)):
            summary = row.geometry(k).summary()
            for metric, field in ((DIR_CDNV, "dir_cdnv"), (CDNV, "cdnv"), (CDNV_RATIO, "ratio"),
                                  (MEAN_GAP, "mean_gap")):
                self.measure(row, metric, summary[field], task=k)
