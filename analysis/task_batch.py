"""Tasks that label the same samples, measured together: the label layout every batched function shares.

A task batch is T labelings of N samples: a (T, N) int matrix, negative where a sample is not in the
task. :class:`TaskLabels` maps it to class indices per task (classes sorted by label value), padded to
the largest class count C with a mask, so one product serves all tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dncsim.common import DncsimError

__all__ = ["TaskLabels", "task_labels"]


@dataclass(frozen=True)
class TaskLabels:
    """``idx`` (T, N) int64 class index of each sample in each task (-1: not in the task);
    ``classes`` (T, C) int64 label values in sorted order (-1 padding); ``mask`` (T, C) bool real classes;
    ``counts`` (T, C) int64 samples per class (0 on padding)."""

    idx: torch.Tensor
    classes: torch.Tensor
    mask: torch.Tensor
    counts: torch.Tensor

    @property
    def T(self) -> int:
        return int(self.idx.shape[0])

    @property
    def C(self) -> int:
        return int(self.classes.shape[1])

    def onehot(self, dtype=torch.float64) -> torch.Tensor:
        """(T, N, C) membership of every sample in every task's classes (rows of 0 outside a task)."""
        oh = torch.nn.functional.one_hot(self.idx.clamp_min(0), self.C).to(dtype)
        return oh * (self.idx >= 0).unsqueeze(-1).to(dtype)

    def task_classes(self, t: int) -> torch.Tensor:
        """The label values of task t's classes (C_t,)."""
        return self.classes[t][self.mask[t]]


def task_labels(labels, n: int, *, min_classes: int = 2) -> TaskLabels:
    """Validate a (T, n) label matrix (negative = not in the task) and lay it out (see :class:`TaskLabels`).

    DncsimError when the matrix has the wrong shape or a task has fewer than ``min_classes`` classes."""
    y = torch.as_tensor(labels)
    if torch.is_floating_point(y):
        raise DncsimError("task labels must be integers")
    y = y.to(torch.int64)
    if y.ndim != 2 or y.shape[1] != n:
        raise DncsimError(f"task labels must be a (tasks, {n}) matrix; got shape {tuple(y.shape)}")
    inside = y >= 0
    big = int(y.max()) + 1 if y.numel() else 1
    keys = torch.where(inside, y, torch.full_like(y, big))
    srt = keys.sort(dim=1).values
    new = torch.ones_like(srt, dtype=torch.bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    new &= srt < big
    ncls = new.sum(1)
    if bool((ncls < min_classes).any()):
        k = int((ncls < min_classes).nonzero()[0, 0])
        raise DncsimError(f"need at least {min_classes} classes per task; task {k} has {int(ncls[k])}")
    C = int(ncls.max())
    slot = new.cumsum(1) - 1
    classes = torch.full((y.shape[0], C), -1, dtype=torch.int64, device=y.device)
    rows = torch.arange(y.shape[0], device=y.device)[:, None].expand_as(srt)
    classes[rows[new], slot[new]] = srt[new]
    mask = classes >= 0
    padded = torch.where(mask, classes, torch.full_like(classes, big))
    idx = torch.searchsorted(padded, keys).clamp_max(C - 1)
    idx = torch.where(inside, idx, torch.full_like(idx, -1))
    counts = torch.zeros(y.shape[0], C, dtype=torch.int64, device=y.device)
    counts.scatter_add_(1, idx.clamp_min(0), inside.to(torch.int64))
    return TaskLabels(idx=idx, classes=classes, mask=mask, counts=counts)
