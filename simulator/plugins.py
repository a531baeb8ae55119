"""The strategy plugins (Avalanche plugins on :class:`~dncsim.simulator.template.DncsimStrategy`) and
the builders that the strategy configs name (``builder`` in simulator/parts_config.py).

``replay`` (:class:`TensorReplay`), ``ewc`` / ``mas`` / ``si`` (:class:`ParameterImportance`), ``distill``
(:class:`FeatureDistillation`), ``axis_distill`` (:class:`AxisDistillation`: stores unit axes u_ij (i < j)
and a frozen f_old after each experience; later adds weight x (d/2) x mean ((f - f_old) . u)^2 /
mean ||f_old||^2); ``naive``, ``cumulative`` and ``joint`` add no plugin, only a data mode.
A plugin with ``state_dict`` / ``load_state_dict`` (:class:`StatefulPlugin`) is checkpointed.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch
from torch import nn

from dncsim.simulator.parts_config import (AxisDistillConfig, CumulativeConfig, DistillConfig, JointConfig,
                                           NaiveConfig, RegularizerConfig, ReplayConfig)
from dncsim.simulator.strategies import StrategyContext, StrategyParts
from dncsim.simulator.template import Tensors, TensorBatches, concat_tensors

with warnings.catch_warnings():          # qpsolvers / jaxopt import-time warnings
    warnings.simplefilter("ignore")
    from avalanche.core import SupervisedPlugin

__all__ = ["StatefulPlugin", "stateful_plugins", "TensorReplay", "ParameterImportance", "FeatureDistillation",
           "AxisDistillation", "BatchFeatures", "penalty_input", "frozen_copy", "distill_predictor", "unit_axes",
           "build_naive", "build_replay", "build_importance", "build_distill", "build_axis_distill",
           "build_cumulative", "build_joint"]


# --- the state protocol of strategy plugins -------------------------------------------------------

@runtime_checkable
class StatefulPlugin(Protocol):
    """A strategy plugin whose state a checkpoint carries: ``state_dict()`` returns plain data (tensors,
    numbers, strings, lists, dicts: what ``torch.load(weights_only=True)`` reads back) and
    ``load_state_dict(state, strategy)`` restores it into a plugin built afresh for the same config
    (``strategy`` gives access to the model, e.g. to rebuild a frozen teacher). Every plugin of a
    strategy that has both methods is checkpointed, in order; nothing else needs to know about it."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, strategy) -> None: ...


def stateful_plugins(strategy) -> List[StatefulPlugin]:
    """The plugins of ``strategy`` that implement :class:`StatefulPlugin`, in order."""
    return [p for p in strategy.plugins if isinstance(p, StatefulPlugin)]


# --- replay ----------------------------------------------------------------------------------------

class TensorReplay(SupervisedPlugin):
    """Experience-balanced buffer of past (x, y, t): every seen experience keeps mem_size // n of its
    samples (a seeded random subset); each training batch gets ``replay_batch_size`` buffer samples
    appended (drawn at random). Inputs are stored as the model saw them (domain shifts included)."""

    def __init__(self, mem_size: int, replay_batch_size: Optional[int] = None):
        super().__init__()
        self.mem_size = mem_size
        self.replay_batch_size = replay_batch_size
        self.parts: List[Tensors] = []

    def buffer(self) -> Optional[Tensors]:
        return concat_tensors(self.parts) if self.parts else None

    def before_training_iteration(self, strategy, **kwargs):
        if not self.parts:
            return
        x, y, t = self._buffer_cache
        k = min(len(y), self.replay_batch_size or len(strategy.mb_y))
        idx = torch.randperm(len(y))[:k].to(x.device)
        mb = strategy.mbatch
        dev = mb[0].device
        strategy.mbatch = [torch.cat([mb[0], x[idx].to(dev)]), torch.cat([mb[1], y[idx].to(dev)]),
                           torch.cat([mb[2], t[idx].to(dev)])]

    def before_training_exp(self, strategy, **kwargs):
        self._buffer_cache = self.buffer()

    def after_training_exp(self, strategy, **kwargs):
        current = strategy.experience_tensors(strategy.experience)
        parts = self.parts + [current]
        quota = self.mem_size // len(parts)
        kept = []
        for x, y, t in parts:
            keep = torch.randperm(len(y))[:quota] if len(y) > quota else torch.arange(len(y))
            kept.append((x[keep], y[keep], t[keep]))
        self.parts = kept

    def state_dict(self) -> dict:
        return {"parts": [list(p) for p in self.parts]}

    def load_state_dict(self, state: dict, strategy) -> None:
        self.parts = [tuple(v.to(strategy.device) for v in p) for p in state["parts"]]


# --- importance-weighted anchors (EWC / MAS / SI) ---------------------------------------------------

class ParameterImportance(SupervisedPlugin):
    """A quadratic anchor on the backbone's parameters with importances from the trained objective
    (see ``RegularizerConfig``). Penalty added to the loss before every backward pass."""

    def __init__(self, mode: str, strength: float, importance_batches: int = 20, decay: float = 1.0,
                 si_damping: float = 0.1):
        super().__init__()
        if mode not in ("ewc", "mas", "si"):
            raise ValueError(f"unknown importance mode {mode!r}")
        self.mode, self.strength, self.batches = mode, strength, importance_batches
        self.decay, self.damping = decay, si_damping
        self.importance: Dict[str, torch.Tensor] = {}
        self.anchor: Dict[str, torch.Tensor] = {}
        self._omega: Dict[str, torch.Tensor] = {}
        self._start: Dict[str, torch.Tensor] = {}
        self._before: Dict[str, torch.Tensor] = {}
        self._grad: Dict[str, torch.Tensor] = {}

    @staticmethod
    def _params(strategy):
        return {n: p for n, p in strategy.backbone.named_parameters() if p.requires_grad}

    def penalty(self, strategy) -> torch.Tensor:
        total = torch.zeros((), device=strategy.device)
        for n, p in self._params(strategy).items():
            if n in self.anchor:
                total = total + (self.importance[n] * (p - self.anchor[n]).square()).sum()
        return 0.5 * self.strength * total

    def before_backward(self, strategy, **kwargs):
        if self.anchor and self.strength > 0:
            strategy.loss = strategy.loss + self.penalty(strategy)

    # SI: accumulate the path integral of -g * delta_theta during training (copies, never views)
    def before_training_exp(self, strategy, **kwargs):
        if self.mode == "si":
            params = self._params(strategy)
            self._start = {n: p.detach().clone() for n, p in params.items()}
            self._omega = {n: torch.zeros_like(p) for n, p in params.items()}

    def before_update(self, strategy, **kwargs):
        if self.mode == "si":
            for n, p in self._params(strategy).items():
                self._before[n] = p.detach().clone()
                self._grad[n] = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()

    def after_update(self, strategy, **kwargs):
        if self.mode == "si":
            for n, p in self._params(strategy).items():
                self._omega[n] -= self._grad[n] * (p.detach() - self._before[n])

    def _gradient_importance(self, strategy) -> Dict[str, torch.Tensor]:
        params = self._params(strategy)
        acc = {n: torch.zeros_like(p) for n, p in params.items()}
        loader = TensorBatches(strategy.experience_tensors(strategy.experience), strategy.train_mb_size)
        was_training = strategy.model.training
        strategy.model.eval()                       # no batch-norm statistics updates while probing
        used = 0
        try:
            for x, y, t in loader:
                if used == self.batches:
                    break
                x, y, t = x.to(strategy.device), y.to(strategy.device), t.to(strategy.device)
                views = (strategy.augment(x), strategy.augment(x)) if strategy.objective.uses_views else None
                strategy.model.zero_grad()
                with torch.enable_grad():
                    strategy.objective.loss(strategy.backbone, x, y, t, views).backward()
                for n, p in params.items():
                    if p.grad is not None:
                        acc[n] += p.grad.square() if self.mode == "ewc" else p.grad.abs()
                used += 1
        finally:
            strategy.model.zero_grad()
            strategy.model.train(was_training)
        return {n: a / max(used, 1) for n, a in acc.items()}

    def after_training_exp(self, strategy, **kwargs):
        if not strategy.objective.trains_backbone:
            return
        params = self._params(strategy)
        if not params:                          # a frozen backbone (trainable: head_only): nothing to anchor
            return
        if self.mode == "si":
            new = {n: (self._omega[n] / ((params[n].detach() - self._start[n]).square() + self.damping)).clamp_min(0)
                   for n in params}
        else:
            new = self._gradient_importance(strategy)
        mean = torch.cat([v.flatten() for v in new.values()]).mean().clamp_min(1e-30)
        for n, imp in new.items():              # normalised to mean 1: strength has one scale for all modes
            imp = imp / mean
            self.importance[n] = imp if n not in self.importance else self.decay * self.importance[n] + imp
        self.anchor = {n: p.detach().clone() for n, p in params.items()}

    def state_dict(self) -> dict:
        return {"importance": self.importance, "anchor": self.anchor}

    def load_state_dict(self, state: dict, strategy) -> None:
        params = self._params(strategy)                # on the parameters' device (checkpoints load on the CPU)

        def placed(n, v):
            return v.to(params[n].device if n in params else strategy.device)
        self.importance = {n: placed(n, v) for n, v in state["importance"].items()}
        self.anchor = {n: placed(n, v) for n, v in state["anchor"].items()}


# --- feature distillation (CaSSLe-style) ------------------------------------------------------------

def distill_predictor(feature_dim: int, hidden: int) -> nn.Module:
    """The 2-layer predictor g that maps current features to the previous backbone's features."""
    return nn.Sequential(nn.Linear(feature_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, feature_dim))


class BatchFeatures:
    """The backbone's features of a penalty's input, as the objective computed them on this batch.

    ``catch(backbone)`` before the forward pass installs a hook, ``release()`` after it removes it, and
    ``of(strategy)`` gives the features of :func:`penalty_input` (the hook's capture, or one more pass
    when the objective did not run the backbone on that input). Shared by every plugin that adds a
    term on the batch's features, so that none needs a second forward pass."""

    def __init__(self):
        self._hook = None
        self._seen: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def catch(self, backbone: nn.Module) -> None:
        self._seen = []
        self._hook = backbone.register_forward_hook(lambda m, inp, out: self._seen.append((inp[0], out)))

    def release(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def of(self, strategy) -> Tuple[torch.Tensor, torch.Tensor]:
        """(input, features): the first view (or the clean batch for view-free objectives) and its features."""
        source = penalty_input(strategy)
        feats = next((out for inp, out in self._seen if inp is source), None)
        self._seen = []
        feats = strategy.backbone(source) if feats is None else feats
        return source, feats.float()                  # bf16/fp16 under autocast; penalties are taken in fp32


def penalty_input(strategy) -> torch.Tensor:
    """The input a feature penalty reads: the first view, or the clean batch for view-free objectives."""
    return strategy.mb_views[0] if strategy.mb_views is not None else strategy.mb_x


def frozen_copy(backbone: nn.Module, state: Optional[dict] = None) -> nn.Module:
    """A copy of ``backbone`` in eval mode whose parameters do not require grad (``state`` loaded into it)."""
    frozen = copy.deepcopy(backbone).eval()
    for m in frozen.modules():        # a deep copy would keep calling the compiled original (training.compile)
        m._compiled_call_impl = None
    if state is not None:
        frozen.load_state_dict(state)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


class FeatureDistillation(SupervisedPlugin):
    """After the first experience, adds weight * mean(1 - cos(g(f(v)), f_prev(v))) to the loss, where f is
    the current backbone, f_prev a frozen copy taken at the end of the previous experience, v the first
    view (or the clean batch for view-free objectives) and g the predictor in ``model.extra``."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight
        self.frozen: Optional[nn.Module] = None
        self._features = BatchFeatures()

    def before_forward(self, strategy, **kwargs):
        if self.frozen is not None:
            self._features.catch(strategy.backbone)

    def after_forward(self, strategy, **kwargs):
        self._features.release()

    def before_backward(self, strategy, **kwargs):
        if self.frozen is None or self.weight == 0:
            return
        source, feats = self._features.of(strategy)
        with torch.no_grad():
            target = self.frozen(source)
        pred = strategy.model.extra["distill_predictor"](feats)
        loss = (1 - nn.functional.cosine_similarity(pred, target, dim=1)).mean()
        strategy.loss = strategy.loss + self.weight * loss

    def after_training_exp(self, strategy, **kwargs):
        self.frozen = frozen_copy(strategy.backbone)

    def state_dict(self) -> dict:
        return {"frozen": None if self.frozen is None else self.frozen.state_dict()}

    def load_state_dict(self, state: dict, strategy) -> None:
        self.frozen = None if state["frozen"] is None else frozen_copy(strategy.backbone, state["frozen"])


# --- distillation along decision axes -----------------------------------------------------------------

@torch.no_grad()
def unit_axes(backbone: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
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
        self.frozen: Optional[nn.Module] = None
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


# --- the builders the strategy configs name: (cfg, StrategyContext) -> StrategyParts -----------------

def build_naive(cfg: NaiveConfig, ctx: StrategyContext) -> StrategyParts:
    return StrategyParts()


def build_replay(cfg: ReplayConfig, ctx: StrategyContext) -> StrategyParts:
    return StrategyParts(plugins=[TensorReplay(cfg.mem_size, cfg.replay_batch_size)])


def build_importance(cfg: RegularizerConfig, ctx: StrategyContext) -> StrategyParts:
    return StrategyParts(plugins=[ParameterImportance(cfg.name, cfg.strength, cfg.importance_batches, cfg.decay,
                                                      cfg.si_damping)])


def build_distill(cfg: DistillConfig, ctx: StrategyContext) -> StrategyParts:
    return StrategyParts(plugins=[FeatureDistillation(cfg.weight)],
                         extra={"distill_predictor": distill_predictor(ctx.feature_dim, cfg.predictor_hidden)})


def build_axis_distill(cfg: AxisDistillConfig, ctx: StrategyContext) -> StrategyParts:
    return StrategyParts(after_regularizers=[AxisDistillation(cfg.weight, ctx.learned_tasks)])


def build_cumulative(cfg: CumulativeConfig, ctx: StrategyContext) -> StrategyParts:
    return StrategyParts(data_mode="cumulative")


def build_joint(cfg: JointConfig, ctx: StrategyContext) -> StrategyParts:
    return StrategyParts(data_mode="joint")
