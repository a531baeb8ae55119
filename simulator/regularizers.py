"""Regularisers added to any objective's loss (``objective.regularizers``), as Avalanche plugins.

``dir_variance`` (:class:`DirectionalVariancePenalty`): ``weight`` x the batch's directional CDNV (ddof 0,
ordered pairs, batch means) of the current task's labelled samples' features (forward hook); classes
with < 2 labelled samples skipped; unlabelled: :func:`labelled_mask`. ``weight: 0`` installs nothing.

``axis_distill`` (:class:`AxisDistillation`): stores unit axes u_ij (i < j) and a frozen f_old after each
experience; later adds weight x (d/2) x mean ((f - f_old) . u)^2 / mean ||f_old||^2.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from typing import Callable

import torch
from avalanche.core import SupervisedPlugin

from dncsim.analysis.penalties import directional_cdnv_penalty
from dncsim.simulator.strategies import BatchFeatures, frozen_copy

__all__ = ["DirectionalVariancePenalty", "AxisDistillation", "labelled_mask", "build_regularizers",
           "labelled_fraction", "unit_axes"]


def labelled_mask(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """(N,) bool: which samples keep their label -- per class c, round(fraction x n_c) samples (at least
    min(2, n_c)), drawn with a private generator seeded by ``seed`` (the global RNG is untouched)."""
    mask = torch.zeros(len(y), dtype=torch.bool)
    if fraction >= 1:
        return mask | True
    g = torch.Generator().manual_seed(int(seed))
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        k = min(len(idx), max(2, int(round(fraction * len(idx)))))
        mask[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    return mask


def labelled_fraction(objective_cfg) -> float:
    """The labelled fraction F that the configured regularisers with a non-zero weight ask for (1: all)."""
    fractions = [r.labelled_fraction for r in getattr(objective_cfg, "regularizers", []) if r.weight > 0]
    return min(fractions) if fractions else 1.0


class DirectionalVariancePenalty(SupervisedPlugin):
    """``weight`` x batch directional CDNV of the current task's labelled samples (module docstring)."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = float(weight)
        self._features = BatchFeatures()
        self.last: Optional[float] = None          # the penalty of the last batch (before the weight)

    def before_forward(self, strategy, **kwargs):
        self._features.catch(strategy.backbone)

    def after_forward(self, strategy, **kwargs):
        self._features.release()

    def before_backward(self, strategy, **kwargs):
        _, feats = self._features.of(strategy)
        task = strategy.experience.task_labels[0]
        y = torch.where(strategy.mb_task_id == task, strategy.mb_y, torch.full_like(strategy.mb_y, -1))
        penalty = directional_cdnv_penalty(feats, y)
        self.last = float(penalty.detach())
        strategy.loss = strategy.loss + self.weight * penalty


def build_regularizers(objective_cfg) -> list:
    """The plugins of ``objective.regularizers`` (those with weight 0 are the control: none)."""
    return [DirectionalVariancePenalty(r.weight) for r in getattr(objective_cfg, "regularizers", [])
            if r.name == "dir_variance" and r.weight > 0]


@torch.no_grad()
def unit_axes(backbone: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(C(C-1)/2, d) unit decision axes u_ij, i < j in class order, from the class means of
    ``backbone``'s features of ``x`` (eval mode, float64 means; the backbone's mode is restored)."""
    was = backbone.training
    backbone.eval()
    try:
        device = next(backbone.parameters()).device
        feats = torch.cat([backbone(x[i:i + batch_size].to(device)).double() for i in range(0, len(x), batch_size)])
    finally:
        backbone.train(was)
    classes, idx = torch.unique(y.to(feats.device), return_inverse=True)
    means = torch.zeros(len(classes), feats.shape[1], dtype=feats.dtype, device=feats.device).index_add(0, idx, feats)
    means /= torch.bincount(idx, minlength=len(classes)).to(feats.dtype)[:, None]
    i, j = torch.triu_indices(len(classes), len(classes), 1, device=feats.device)
    delta = means[j] - means[i]
    return (delta / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()


class AxisDistillation(SupervisedPlugin):
    """Distillation along the stored decision axes of the tasks learned so far (module docstring).

    ``learned_tasks(k)`` gives the (x, y) probe-train data of every evaluation task learned at
    experience k (a list, possibly empty)."""

    def __init__(self, weight: float, learned_tasks: Callable[[int], Sequence[Tuple[torch.Tensor, torch.Tensor]]]):
        super().__init__()
        self.weight = float(weight)
        self.learned_tasks = learned_tasks
        self.axes: Optional[torch.Tensor] = None
        self.frozen: Optional[torch.nn.Module] = None
        self._features = BatchFeatures()

    def _active(self) -> bool:
        return self.frozen is not None and self.axes is not None and len(self.axes) > 0 and self.weight > 0

    def before_forward(self, strategy, **kwargs):
        if self._active():
            self._features.catch(strategy.backbone)

    def after_forward(self, strategy, **kwargs):
        self._features.release()

    def penalty(self, feats: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """(d / 2) x mean((f - f_old) . u)^2 over batch and axes / mean |f_old|^2 (unweighted)."""
        proj = (feats - old) @ self.axes.to(feats.device, feats.dtype).T
        return 0.5 * feats.shape[1] * proj.square().mean() / old.square().sum(1).mean().clamp_min(1e-12)

    def before_backward(self, strategy, **kwargs):
        if not self._active():
            return
        source, feats = self._features.of(strategy)
        with torch.no_grad():
            old = self.frozen(source)
        strategy.loss = strategy.loss + self.weight * self.penalty(feats, old)

    def after_training_exp(self, strategy, **kwargs):
        k = strategy.experience.current_experience
        new = [unit_axes(strategy.backbone, x, y) for x, y in self.learned_tasks(k)]
        if new:
            stored = [] if self.axes is None else [self.axes]
            self.axes = torch.cat(stored + [a.cpu() for a in new])
        self.frozen = frozen_copy(strategy.backbone)

    def state_dict(self) -> dict:
        return {"axes": self.axes, "frozen": None if self.frozen is None else self.frozen.state_dict()}

    def load_state_dict(self, state: dict, strategy) -> None:
        self.axes = state["axes"]
        self.frozen = None if state["frozen"] is None else frozen_copy(strategy.backbone, state["frozen"])
