"""Forgetting, backward and forward transfer and pairwise interference, from the accuracy matrices."""
from __future__ import annotations

from dncsim.analysis.forgetting import (backward_transfer, forgetting_last, forgetting_max, forward_transfer,
                                        normalised_forgetting)
from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.metrics.probe_accuracy import ACCURACY_PRODUCT
from dncsim.analysis.names import (BWT, FORGETTING_LAST, FORGETTING_MAX, FORGETTING_NORM, FROZEN, FWT, INTERFERENCE,
                                   REFIT)

__all__ = ["ForgettingTransfer"]


class ForgettingTransfer(Metric):
    """From the accuracy matrices R that :class:`ProbeAccuracy` publishes (it must come earlier in the
    collection), at every row t >= 0 and for every probe and protocol: ``forgetting_max``,
    ``forgetting_last`` and ``forgetting_norm`` per task learned before t (watched tasks have none),
    ``bwt`` (when some task was learned before t), ``fwt`` of the task learned next (refit), and the
    ``interference`` of experience t on every task learned earlier (frozen; ``task_b`` is the task
    learned in experience t). Definitions: docs, Methods, Metrics. Stateless."""

    name = "forgetting_transfer"
    emits = (FORGETTING_MAX, FORGETTING_LAST, FORGETTING_NORM, BWT, FWT, INTERFERENCE)
    needs = (ACCURACY_PRODUCT,)

    def update(self, row: Row) -> None:
        t = row.t
        if t < 0:
            return
        if ACCURACY_PRODUCT not in row.products:
            raise ValueError("forgetting_transfer needs probe_accuracy earlier in the metric collection")
        learned_at = [task.learned_at for task in row.tasks]
        chance = [task.chance for task in row.tasks]
        earlier = [k for k, L in enumerate(learned_at) if L is not None and L < t]
        upcoming = [k for k, L in enumerate(learned_at) if L == t + 1]
        here = row.learned_here()
        for key, R in row.products[ACCURACY_PRODUCT].items():
            for metric, values in ((FORGETTING_MAX, forgetting_max(R, t, learned_at)),
                                   (FORGETTING_LAST, forgetting_last(R, t, learned_at)),
                                   (FORGETTING_NORM, normalised_forgetting(R, t, chance, learned_at))):
                for k, v in enumerate(values.tolist()):
                    if v == v:                                   # NaN: not learned before t
                        self.measure(row, metric, v, task=k, key=key)
            if earlier:
                self.measure(row, BWT, backward_transfer(R, t, learned_at), key=key)
            if key.protocol == REFIT and upcoming:
                fwt = forward_transfer(R, t + 1, learned_at)
                for k in upcoming:                               # just before it is learned
                    if fwt[k] == fwt[k]:
                        self.measure(row, FWT, fwt[k], task=k, key=key)
            if key.protocol == FROZEN and here is not None:
                before, after = R[t], R[t + 1]                   # rows around experience t
                for a in earlier:
                    drop = float(before[a] - after[a])
                    if drop == drop:
                        self.measure(row, INTERFERENCE, drop, task=a, task_b=here, key=key)
