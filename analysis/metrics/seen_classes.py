"""Class-incremental accuracy as the field measures it: one head over every class seen so far."""
from __future__ import annotations

from typing import Dict, List

import torch

from dncsim.analysis.metrics.base import Metric, Row
from dncsim.analysis.metrics.probe_accuracy import fit_probe, probe_train_subset
from dncsim.analysis.names import ACC_SEEN, LINEAR, LINEAR_STEPS, NCC, REFIT, ProbeKey

__all__ = ["SeenClassesAccuracy", "class_split_families"]


def class_split_families(tasks) -> Dict[str, List[int]]:
    """Labeling -> indices of the learned tasks that split its classes into disjoint parts (at least two
    parts): the tasks of a class- or task-incremental stream."""
    by_labeling: Dict[str, List[int]] = {}
    for k, task in enumerate(tasks):
        if task.learned_at is not None and task.classes:
            by_labeling.setdefault(task.labeling, []).append(k)
    out = {}
    for labeling, members in by_labeling.items():
        classes = [c for k in members for c in tasks[k].classes]
        if len(members) >= 2 and len(classes) == len(set(classes)):
            out[labeling] = members
    return out


class SeenClassesAccuracy(Metric):
    """``acc_seen`` (stream-level row; probe ``ncc``/``linear``, protocol ``refit``) after every experience
    of a class- or task-incremental stream: one probe over the union of the classes of every task learned
    so far, fit on their probe-train samples and scored on their probe-test samples -- accuracy over all
    classes seen so far, with no task label given. Absent for other streams. Stateless."""

    name = "seen_classes"
    emits = (ACC_SEEN,)

    def __init__(self, probes=(NCC, LINEAR), *, linear_steps: int = LINEAR_STEPS, linear_weight_decay: float = 1e-4,
                 max_train_samples=None, seed: int = 0):
        super().__init__()
        self.probes = tuple(probes)
        self.linear_steps, self.linear_weight_decay = linear_steps, linear_weight_decay
        self.max_train_samples, self.seed = max_train_samples, seed

    @classmethod
    def from_config(cls, evaluation, analysis, seed):
        return cls(evaluation.probes, linear_steps=evaluation.linear_steps,
                   linear_weight_decay=evaluation.linear_weight_decay,
                   max_train_samples=evaluation.max_train_samples, seed=seed)

    def update(self, row: Row) -> None:
        if row.t < 0:
            return
        for members in class_split_families(row.tasks).values():
            seen = [k for k in members if row.tasks[k].learned_at <= row.t]
            if len(seen) < 1 or sum(len(row.tasks[k].classes) for k in seen) < 2:
                continue
            ftr, ytr, fte, yte = [], [], [], []
            for k in seen:
                f, y = row.features(k, "train"), row.tasks[k].train_labels
                sub = probe_train_subset(k, len(y), self.max_train_samples, self.seed)
                if sub is not None:
                    f, y = f[sub], y[sub]
                ftr.append(f)
                ytr.append(y)
                fte.append(row.features(k, "test"))
                yte.append(row.tasks[k].test_labels)
            ftr, ytr, fte, yte = torch.cat(ftr), torch.cat(ytr), torch.cat(fte), torch.cat(yte)
            for probe in self.probes:
                fitted = fit_probe(probe, ftr, ytr, linear_steps=self.linear_steps,
                                   linear_weight_decay=self.linear_weight_decay)
                self.measure(row, ACC_SEEN, fitted.score(fte, yte), key=ProbeKey(probe, REFIT))
