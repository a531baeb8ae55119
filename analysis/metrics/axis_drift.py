"""How far each task's decision axes have turned since the task was learned."""
from __future__ import annotations

from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import AXIS_DRIFT
from dncsim.analysis.orthogonality import axis_drift

__all__ = ["AxisDrift"]


class AxisDrift(Metric):
    """``axis_drift`` per task at rows after it was learned: mean over its class pairs of
    cos(u_ij(now), u_ij(when learned)); 1 = the axes have not moved. State: ``learned``, the task's
    geometry at the row where it was learned (by task index)."""

    name = "axis_drift"
    emits = (AXIS_DRIFT,)

    def __init__(self):
        super().__init__()
        self.add_state("learned", {})

    def update(self, row: Row) -> None:
        for k, task in enumerate(row.tasks):
            if task.learned_at is None:
                continue
            if row.t == task.learned_at:
                self.learned[k] = row.geometry(k)
            elif row.t > task.learned_at and k in self.learned:
                self.measure(row, AXIS_DRIFT, float(axis_drift(self.learned[k], row.geometry(k)).mean()), task=k)
