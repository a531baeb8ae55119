"""Regularisers added to any objective's loss (``objective.regularizers``), as Avalanche plugins.

``dir_variance`` / ``orth_variance`` (:class:`PenaltyPlugin`): the experience's weight x the batch's
directional CDNV, or orthogonal variance (``analysis.penalties``; ddof 0, ordered pairs, batch means), of
the current task's labelled samples' features (forward hook); classes with < 2 labelled samples skipped;
unlabelled: :func:`labelled_mask`. The weight is ``weight`` in every experience, or with ``doses`` the dose
of the task the experience teaches. ``placebo``: the labels are permuted among those samples first
(private generator seeded by the run seed, experience and batch). A spec with no weight > 0 installs nothing.

Each regulariser config names its builder (``builder`` in simulator/parts_config.py, registered in
``REGULARIZERS_REGISTRY``): ``(spec, weights, placebo_seed) -> plugin``.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, List, Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin

from dncsim.analysis.penalties import directional_cdnv_penalty, orthogonal_variance_penalty
from dncsim.common import DncsimError
from dncsim.scenarios.sources import derived_seed
from dncsim.simulator.plugins import BatchFeatures
from dncsim.simulator.registry import REGULARIZERS_REGISTRY

__all__ = ["PenaltyPlugin", "DirectionalVariancePenalty", "labelled_mask", "build_regularizers", "penalty_plugin",
           "experience_weights", "labelled_fraction", "build_dir_variance", "build_orth_variance"]


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
    """The labelled fraction F that the configured regularisers applied anywhere ask for (1: all)."""
    fractions = [r.labelled_fraction for r in getattr(objective_cfg, "regularizers", []) if r.active]
    return min(fractions) if fractions else 1.0


class PenaltyPlugin(SupervisedPlugin):
    """``weights[k]`` x ``penalty`` of the current task's labelled samples in experience k (module docstring).

    ``weights``: one float per experience (an experience beyond the list gets the last). ``placebo_seed``:
    None for the real labels, else the seed of the label permutation (with the experience and batch)."""

    def __init__(self, penalty: Callable, weights: Sequence[float], placebo_seed: Optional[int] = None):
        super().__init__()
        self.penalty = penalty
        self.weights = [float(w) for w in weights]
        self.placebo_seed = placebo_seed
        self.weight = 0.0                           # the current experience's
        self._batch = 0
        self._features = BatchFeatures()
        self.last: Optional[float] = None          # the penalty of the last batch (before the weight)

    def before_training_exp(self, strategy, **kwargs):
        k = strategy.experience.current_experience
        self.weight = self.weights[min(k, len(self.weights) - 1)]
        self._batch = 0

    def before_forward(self, strategy, **kwargs):
        if self.weight > 0:
            self._features.catch(strategy.backbone)

    def after_forward(self, strategy, **kwargs):
        self._features.release()

    def labels(self, strategy) -> torch.Tensor:
        """The labels the penalty reads: the current task's labelled samples (others -1), permuted among
        themselves for a placebo."""
        task = strategy.experience.task_labels[0]
        y = torch.where(strategy.mb_task_id == task, strategy.mb_y, torch.full_like(strategy.mb_y, -1))
        if self.placebo_seed is not None:
            y = permute_labelled(y, derived_seed(self.placebo_seed, "placebo", strategy.experience.current_experience,
                                                 self._batch))
        self._batch += 1
        return y

    def before_backward(self, strategy, **kwargs):
        if self.weight <= 0:
            return
        _, feats = self._features.of(strategy)
        penalty = self.penalty(feats, self.labels(strategy))
        self.last = float(penalty.detach())
        strategy.loss = strategy.loss + self.weight * penalty


class DirectionalVariancePenalty(PenaltyPlugin):
    """``weight`` x batch directional CDNV of the current task's labelled samples in every experience."""

    def __init__(self, weight: float):
        super().__init__(directional_cdnv_penalty, [weight])


def permute_labelled(y: torch.Tensor, seed: int) -> torch.Tensor:
    """``y`` with its labels >= 0 permuted at random among those positions (class sizes kept; -1 stay);
    a private generator seeded by ``seed`` (the global RNG is untouched)."""
    pos = torch.nonzero(y >= 0).flatten()
    perm = torch.randperm(len(pos), generator=torch.Generator().manual_seed(int(seed))).to(pos.device)
    out = y.clone()
    out[pos] = y[pos[perm]]
    return out


def experience_weights(spec, learned: Sequence[Sequence[str]], key: str = "objective.regularizers") -> List[float]:
    """The weight of regulariser ``spec`` in each experience; ``learned[k]``: the names of the tasks that
    experience k teaches. A dose naming no taught task, or two tasks of one experience with different
    doses, is a :class:`DncsimError`."""
    if spec.doses is None:
        return [spec.weight] * max(1, len(learned))
    taught = [name for names in learned for name in names]
    for task in spec.doses:
        if task not in taught:
            raise DncsimError(f"{key}.doses: {task!r} is not a task taught by this stream (tasks: "
                              f"{', '.join(taught) or 'none'})")
    weights = []
    for k, names in enumerate(learned):
        doses = {spec.doses[n] for n in names if n in spec.doses}
        if len(doses) > 1:
            raise DncsimError(f"{key}.doses: experience {k} teaches {', '.join(names)}, which have different doses; "
                              "give them one")
        weights.append(doses.pop() if doses else 0.0)
    return weights


def build_regularizers(objective_cfg, learned: Sequence[Sequence[str]] = (), seed: int = 0) -> list:
    """The plugins of ``objective.regularizers`` (those applied in no experience are the control: none);
    ``learned[k]``: the names of the tasks experience k teaches (needed by ``doses``); ``seed``: the run's."""
    plugins = []
    for i, r in enumerate(getattr(objective_cfg, "regularizers", [])):
        if not r.active:
            continue
        weights = experience_weights(r, learned, key=f"objective.regularizers[{i}]")
        plugins.append(REGULARIZERS_REGISTRY.build(r, weights, derived_seed(seed, r.name) if r.placebo else None))
    return plugins


def penalty_plugin(name: str, weights: Sequence[float], placebo_seed: Optional[int] = None):
    """The plugin of regulariser ``name`` with per-experience ``weights`` (a spec of default settings)."""
    spec = REGULARIZERS_REGISTRY.config_class(name)(weight=0.0)
    return REGULARIZERS_REGISTRY.build(spec, weights, placebo_seed)


# --- the builders the regulariser configs name: (spec, weights, placebo_seed) -> plugin ----------------
# a penalty: features (B, d), labels (B,) with -1 for unlabelled -> scalar

def build_dir_variance(spec, weights: Sequence[float], placebo_seed: Optional[int] = None) -> PenaltyPlugin:
    return PenaltyPlugin(directional_cdnv_penalty, weights, placebo_seed)


def build_orth_variance(spec, weights: Sequence[float], placebo_seed: Optional[int] = None) -> PenaltyPlugin:
    return PenaltyPlugin(partial(orthogonal_variance_penalty, matched=True), weights, placebo_seed)
