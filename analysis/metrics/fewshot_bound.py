"""Few-shot NCC error and the Theorem 4.1 bound on the same class subsets, per task and shot count."""
from __future__ import annotations

from dncsim.analysis.bounds import ncc_error_bound
from dncsim.analysis.fewshot import ncc_fewshot_error_tasks
from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import BOUND, BOUND_LIMIT, FEWSHOT_ERR

__all__ = ["FewShotBound"]


class FewShotBound(Metric):
    """Per task: ``fewshot_err`` (``ways``-way NCC error over ``episodes`` seeded episodes) and ``bound``
    (Theorem 4.1 averaged over the same class subsets) at every shot count m smaller than the task's
    smallest class on the geometry split (a subset whose bound is undefined omits the ``bound`` row),
    and ``bound_limit`` (m -> infinity). Episodes are seeded by (seed, row, task); tasks sharing their
    samples draw theirs together (``ncc_fewshot_error_tasks``: the per-task episodes and errors). Stateless."""

    name = "fewshot_bound"
    emits = (FEWSHOT_ERR, BOUND, BOUND_LIMIT)

    def __init__(self, shots=(1, 5, 10, 20), ways: int = 2, episodes: int = 100, seed: int = 0):
        super().__init__()
        self.shots, self.ways, self.episodes, self.seed = tuple(shots), ways, episodes, seed

    @classmethod
    def from_config(cls, evaluation, analysis, seed):
        return cls(analysis.shots, analysis.ways, analysis.episodes, seed)

    def update(self, row: Row) -> None:
        results = {}
        for ks, f in row.batches(row.geometry_split):
            plans: dict = {}                    # (feasible shots, ways) -> tasks drawn together
            for k in ks:
                g = row.geometry(k)
                feasible = tuple(m for m in self.shots if m < int(g.counts.min()))
                if feasible:
                    plans.setdefault((feasible, min(self.ways, g.C)), []).append(k)
            for (feasible, ways), group in plans.items():
                seeds = [self.seed * 1_000_003 + (row.t + 1) * 1009 + k for k in group]
                labels = row.batch_labels(group, row.geometry_split)
                fs = ncc_fewshot_error_tasks(f, labels, shots=list(feasible), ways=ways, episodes=self.episodes,
                                             seeds=seeds)
                results.update({k: (list(feasible), r) for k, r in zip(group, fs)})
        for k in range(len(row.tasks)):
            if k not in results:
                continue
            feasible, fs = results[k]
            if isinstance(fs, Exception):
                raise fs
            b = ncc_error_bound(row.geometry(k), feasible, classes=fs.classes, extrapolate=True)
            for i, m in enumerate(feasible):
                self.measure(row, FEWSHOT_ERR, fs.error[i], task=k, shots=m)
                if not bool(b.nonpositive_margin[i].any()):
                    self.measure(row, BOUND, b.value[i].mean(), task=k, shots=m)
            self.measure(row, BOUND_LIMIT, b.limit.mean(), task=k)
