"""Whether each task was learned at all: "not learned" is a state, not a number."""
from __future__ import annotations

from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.metrics.probe_accuracy import ACCURACY_PRODUCT
from dncsim.analysis.names import LEARNED, LINEAR, NCC

__all__ = ["TaskLearned", "learned_threshold"]


def learned_threshold(chance: float, margin: float) -> float:
    """The accuracy a task must exceed to count as learned: chance + margin x (1 - chance)."""
    return chance + margin * (1.0 - chance)


class TaskLearned(Metric):
    """``learned`` per task, at the row of the experience in which it is learned: 1 when its probe
    accuracy right then exceeds :func:`learned_threshold` (``evaluation.learned_margin``; chance = the
    most frequent class's share of the probe-test split, 1/C when balanced), else 0. The probe that
    decides is the linear probe when measured, else NCC (at that row the refit and frozen probes are the
    same fit). Watched tasks (never learned) get no row. Stateless."""

    name = "task_learned"
    emits = (LEARNED,)
    needs = (ACCURACY_PRODUCT,)

    def __init__(self, margin: float = 0.2, probes=(NCC, LINEAR)):
        super().__init__()
        self.margin = margin
        self.probe = LINEAR if LINEAR in probes else NCC

    @classmethod
    def from_config(cls, evaluation, analysis, seed):
        return cls(evaluation.learned_margin, evaluation.probes)

    def update(self, row: Row) -> None:
        matrices = row.products.get(ACCURACY_PRODUCT)
        if matrices is None:
            raise ValueError("task_learned needs probe_accuracy earlier in the metric collection")
        R = next(m for key, m in matrices.items() if key.probe == self.probe)
        for k, task in enumerate(row.tasks):
            if task.learned_at == row.t:
                acc = float(R[row.t + 1, k])
                self.measure(row, LEARNED, float(acc > learned_threshold(task.chance, self.margin)), task=k)
