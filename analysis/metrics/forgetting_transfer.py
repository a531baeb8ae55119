"""Forgetting, backward and forward transfer and pairwise interference, from the accuracy matrices."""
from __future__ import annotations

from dncsim.analysis.forgetting import backward_transfer, forgetting_last, forgetting_max, forward_transfer
from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.metrics.probe_accuracy import ACCURACY_PRODUCT
from dncsim.analysis.names import BWT, FORGETTING_LAST, FORGETTING_MAX, FROZEN, FWT, INTERFERENCE, REFIT

__all__ = ["ForgettingTransfer"]


class ForgettingTransfer(Metric):
    """From the accuracy matrices R that :class:`ProbeAccuracy` publishes (it must come earlier in the
    collection), at every row t >= 0 and for every probe and protocol: ``forgetting_max`` and
    ``forgetting_last`` per task learned before t, ``bwt`` (t > 0), ``fwt`` of the next task (refit), and
    ``interference`` of experience t on every earlier task (frozen). Definitions: README, Metrics.
    Stateless."""

    name = "forgetting_transfer"
    emits = (FORGETTING_MAX, FORGETTING_LAST, BWT, FWT, INTERFERENCE)

    def update(self, row: Row) -> None:
        t = row.t
        if t < 0:
            return
        if ACCURACY_PRODUCT not in row.products:
            raise ValueError("forgetting_transfer needs probe_accuracy earlier in the metric collection")
        for key, R in row.products[ACCURACY_PRODUCT].items():
            for metric, values in ((FORGETTING_MAX, forgetting_max(R, t)), (FORGETTING_LAST, forgetting_last(R, t))):
                for k, v in enumerate(values.tolist()):
                    if v == v:                                   # NaN: not yet learned
                        self.measure(row, metric, v, task=k, key=key)
            if t > 0:
                self.measure(row, BWT, backward_transfer(R, t), key=key)
            if key.protocol == REFIT and t + 1 < R.shape[1]:
                fwt = forward_transfer(R, t + 1)[t + 1]         # the next task, just before it is learned
                if fwt == fwt:
                    self.measure(row, FWT, fwt, task=t + 1, key=key)
            if key.protocol == FROZEN and t > 0:
                before, after = R[t], R[t + 1]                   # rows around experience t
                for a in range(t):
                    drop = float(before[a] - after[a])
                    if drop == drop:
                        self.measure(row, INTERFERENCE, drop, task=a, task_b=t, key=key)
