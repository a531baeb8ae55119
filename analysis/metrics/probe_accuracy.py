"""Probe accuracy of every task after every experience, under the refit and frozen protocols."""
from __future__ import annotations

from typing import Dict, Optional

import torch

from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.names import ACC, FROZEN, LINEAR, LINEAR_STEPS, NCC, PROBE_CONVERGED, REFIT, ProbeKey, probe_keys
from dncsim.analysis.probes import fit_linear, fit_linear_tasks, fit_ncc, fit_ncc_tasks

__all__ = ["ProbeAccuracy", "ACCURACY_PRODUCT", "probe_train_subset", "fit_probe", "probe_convergence",
           "convergence_finding"]

#: ``row.products[ACCURACY_PRODUCT]``: {"<probe>/<protocol>": (T+1, T) float64 accuracy matrix R}
ACCURACY_PRODUCT = "accuracy"


def probe_train_subset(k: int, n: int, max_samples: Optional[int], seed: int) -> Optional[torch.Tensor]:
    """The seeded subset of task k's n probe-train samples that its probes fit on (sorted indices; None
    when all are used, i.e. ``max_samples`` is None or at least n)."""
    if max_samples is None or n <= max_samples:
        return None
    g = torch.Generator().manual_seed(seed * 7919 + k)
    return torch.randperm(n, generator=g)[:max_samples].sort().values


def probe_convergence(rows, learned_at=None) -> Optional[dict]:
    """How a table's linear-probe solves ended, from its ``probe_converged`` rows, or None without them.

    ``fits`` (task x row solves), ``at_budget`` (stopped at ``evaluation.linear_steps``),
    ``tasks_at_budget`` {task name: count} and ``frozen_at_budget`` (tasks whose frozen probe, fit at
    ``learned_at`` -- by task index, None: unknown -- is such a solve), in task order.
    """
    fits = [r for r in rows if r["metric"] == PROBE_CONVERGED]
    if not fits:
        return None
    stopped = sorted((r for r in fits if not r["value"]), key=lambda r: r["task"])   # in task order
    by_task: Dict[str, int] = {}
    for r in stopped:
        by_task[r["task_name"]] = by_task.get(r["task_name"], 0) + 1
    frozen = [] if learned_at is None else [
        r["task_name"] for r in stopped if r["task"] < len(learned_at) and learned_at[r["task"]] == r["exp"]]
    return {"fits": len(fits), "at_budget": len(stopped), "tasks_at_budget": by_task, "frozen_at_budget": frozen}


def convergence_finding(stats: Optional[dict]) -> Optional[str]:
    """The sentence a report and a run's closing table print when linear-probe solves stopped at their
    budget (None when every solve converged or none was recorded)."""
    if not stats or not stats["at_budget"]:
        return None
    tasks = list(stats["tasks_at_budget"])
    named = ", ".join(tasks[:6]) + (f" and {len(tasks) - 6} more" if len(tasks) > 6 else "")
    return (f"{stats['at_budget']} of {stats['fits']} linear-probe fits stopped at the step budget "
            f"(evaluation.linear_steps) before converging, in {len(tasks)} task(s) ({named}): "
            "their accuracies are those of the budgeted solve and a larger budget can move them by a point or "
            "more (docs, Methods, Linear probe).")


def fit_probe(probe: str, features: torch.Tensor, labels: torch.Tensor, *, linear_steps: int = LINEAR_STEPS,
              linear_weight_decay: float = 1e-4):
    """An NCC or linear probe fit on (features (n, d), labels (n,))."""
    if probe == NCC:
        return fit_ncc(features, labels)
    return fit_linear(features, labels, steps=linear_steps, weight_decay=linear_weight_decay)


class ProbeAccuracy(Metric):
    """``acc`` per task, probe (``ncc``, ``linear``) and protocol (``refit``, or ``frozen``: fit when learned).

    Test accuracy of a probe fit on the task's probe-train split; ``probe_converged`` per task and row (1:
    met an L-BFGS tolerance, 0: stopped at ``linear_steps``). State: ``accuracy`` (R[t + 1, k], NaN where
    undefined; published as ``row.products["accuracy"]``) and ``frozen``. Definitions: docs, Methods.
    """

    name = "probe_accuracy"
    emits = (ACC, PROBE_CONVERGED)
    provides = (ACCURACY_PRODUCT,)

    def __init__(self, probes=(NCC, LINEAR), protocols=(REFIT, FROZEN), *, linear_steps: int = LINEAR_STEPS,
                 linear_weight_decay: float = 1e-4, max_train_samples: Optional[int] = None, seed: int = 0):
        super().__init__()
        self.keys = probe_keys(tuple(probes), tuple(protocols))
        self.probes = tuple(probes)
        self.linear_steps, self.linear_weight_decay = linear_steps, linear_weight_decay
        self.max_train_samples, self.seed = max_train_samples, seed
        self.add_state("accuracy", {})
        self.add_state("frozen", {})

    @classmethod
    def from_config(cls, evaluation, analysis, seed):
        return cls(evaluation.probes, evaluation.protocols, linear_steps=evaluation.linear_steps,
                   linear_weight_decay=evaluation.linear_weight_decay,
                   max_train_samples=evaluation.max_train_samples, seed=seed)

    def _train_subset(self, k: int, n: int) -> Optional[torch.Tensor]:
        return probe_train_subset(k, n, self.max_train_samples, self.seed)

    def _fit_batch(self, row: Row, ks, f: torch.Tensor):
        """(probe name -> fitted probes of tasks ``ks`` (sharing probe-train features ``f``), fit together;
        the linear solves' ``converged`` flags (len(ks),), or None without a linear probe)."""
        labels = row.batch_labels(ks, "train").clone()
        for i, k in enumerate(ks):
            sub = self._train_subset(k, labels.shape[1])
            if sub is not None:
                keep = torch.zeros(labels.shape[1], dtype=torch.bool)
                keep[sub] = True
                labels[i, ~keep] = -1
        out, converged = {}, None
        for probe in self.probes:
            if probe == NCC:
                out[probe] = fit_ncc_tasks(f, labels)
            else:
                out[probe], info = fit_linear_tasks(f, labels, steps=self.linear_steps,
                                                    weight_decay=self.linear_weight_decay)
                converged = info["converged"].tolist()
        return out, converged

    def update(self, row: Row) -> None:
        shape = (row.experiences + 1, len(row.tasks))
        for key in self.keys:
            self.accuracy.setdefault(str(key), torch.full(shape, float("nan"), dtype=torch.float64))
        fitted: Dict[int, Dict[str, object]] = {}
        converged: Dict[int, bool] = {}
        for ks, f in row.batches("train"):
            by_probe, flags = self._fit_batch(row, ks, f)
            for probe, probes in by_probe.items():
                for k, p in zip(ks, probes):
                    fitted.setdefault(k, {})[probe] = p
            if flags is not None:
                converged.update(zip(ks, flags))
        for k, task in enumerate(row.tasks):
            fte = row.features(k, "test")
            for probe in self.probes:
                if row.t == task.learned_at:
                    self.frozen[f"{probe}/{k}"] = fitted[k][probe]
                for key in (k_ for k_ in self.keys if k_.probe == probe):
                    p = fitted[k][probe] if key.protocol == REFIT else self.frozen.get(f"{probe}/{k}")
                    if p is None:
                        continue
                    acc = p.score(fte, task.test_labels)
                    self.accuracy[str(key)][row.t + 1, k] = acc
                    self.measure(row, ACC, acc, task=k, key=key)
            if k in converged:
                self.measure(row, PROBE_CONVERGED, float(converged[k]), task=k, key=ProbeKey(LINEAR, REFIT))
        row.products[ACCURACY_PRODUCT] = self.matrices()

    def matrices(self) -> Dict[ProbeKey, torch.Tensor]:
        """ProbeKey -> (T+1, T) accuracy matrix so far, in the configured order."""
        return {key: self.accuracy[str(key)] for key in self.keys if str(key) in self.accuracy}
