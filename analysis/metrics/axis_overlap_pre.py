"""Pairwise axis overlap measured before the later task trains (pre-treatment for it)."""
from __future__ import annotations

import torch

from dncsim.analysis.medians import true_median
from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import AXIS_COS_PRE
from dncsim.analysis.orthogonality import cross_task_cosines, sample_axis_pairs

__all__ = ["AxisOverlapPre"]


class AxisOverlapPre(Metric):
    """``axis_cos_pre`` for every pair of learned tasks a, b with a learned before b (``task`` = a,
    ``task_b`` = b), at the row just before b's experience (t = learned_at(b) - 1): the true median |cos|
    between a's unit decision axes fixed at the row where a was learned and b's axes in this row's
    features, over all axis pairs (at most ``max_axes`` seeded axes per task, as ``orthogonality_summary``).
    State: ``learned``, each task's geometry at the row where it was learned (by task index)."""

    name = "axis_overlap_pre"
    emits = (AXIS_COS_PRE,)

    def __init__(self, seed: int = 0, max_axes: int = 2048):
        super().__init__()
        self.seed, self.max_axes = int(seed), int(max_axes)
        self.add_state("learned", {})

    @classmethod
    def from_config(cls, evaluation, analysis, seed):
        return cls(seed)

    def update(self, row: Row) -> None:
        tasks = row.tasks
        for k, task in enumerate(tasks):
            if task.learned_at == row.t:
                self.learned[k] = row.geometry(k)
        for b, task_b in enumerate(tasks):
            Lb = task_b.learned_at
            if Lb is None or row.t != Lb - 1:
                continue
            for a, task_a in enumerate(tasks):
                La = task_a.learned_at
                if a == b or La is None or La > row.t or a not in self.learned:
                    continue
                then, now = self.learned[a], row.geometry(b)
                gen = torch.Generator().manual_seed(self.seed)
                pa = sample_axis_pairs(then, self.max_axes, gen)
                pb = sample_axis_pairs(now, self.max_axes, gen)
                cos = cross_task_cosines(then, now, pairs_a=pa, pairs_b=pb)
                self.measure(row, AXIS_COS_PRE, float(true_median(cos.flatten())), task=a, task_b=b)
