"""Continual strategies on Avalanche's SupervisedTemplate, trained by any objective (SSL or supervised).

``DncsimStrategy`` is a SupervisedTemplate whose forward pass hands the batch (and two augmented
views when the objective wants them) to the objective, which returns the loss. Everything else --
the loop, callbacks, plugins, loggers -- is Avalanche's. Two things are replaced for speed and
correctness:

* the data loader: mini-batches are sliced from tensors (``TensorBatches``) instead of collated
  sample by sample from Avalanche datasets, which keeps per-iteration overhead out of the hot path;
* the optimizer is built once over the model's trainable parameters and never re-created
  (Avalanche's ``make_optimizer`` would re-register every parameter).

Strategies (``StrategyConfig``): ``naive`` (sequential fine-tuning), ``replay`` (a buffer of past
inputs mixed into every batch), ``ewc`` / ``mas`` / ``si`` (a quadratic anchor on the backbone whose
importances come from the objective actually trained: Avalanche's EWC calls the loss with labels
and crashes under an SSL loss, and its SI is a silent no-op on CPU), ``distill`` (CaSSLe-style
feature distillation through a predictor from current to frozen previous features),
``cumulative`` (all data seen so far) and ``joint`` (all experiences at once, trained at the first
experience; later experiences only evaluate: the non-continual upper bound).
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch
from torch import nn

from dncsim.common import RunFailed
from dncsim.simulator.parts_config import (STRATEGIES, CumulativeConfig, DistillConfig, JointConfig, NaiveConfig,
                                           RegularizerConfig, ReplayConfig, StrategyConfig)

with warnings.catch_warnings():          # qpsolvers / jaxopt import-time warnings
    warnings.simplefilter("ignore")
    from avalanche.core import SupervisedPlugin
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.templates import SupervisedTemplate

# The config classes live in simulator/parts_config.py (torch-free, so that validating a config stays
# fast) and are re-exported here.
__all__ = ["NaiveConfig", "ReplayConfig", "RegularizerConfig", "DistillConfig", "CumulativeConfig", "JointConfig",
           "StrategyConfig", "STRATEGIES", "SimModel", "TensorBatches", "DncsimStrategy", "TensorReplay",
           "ParameterImportance", "FeatureDistillation", "build_plugins", "StatefulPlugin", "stateful_plugins",
           "TrainingDiverged", "NonFiniteGuard", "BatchFeatures", "penalty_input", "frozen_copy"]

Tensors = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


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


# --- divergence ---------------------------------------------------------------------------------------

class TrainingDiverged(RunFailed):
    """Training produced a non-finite loss (or non-finite features): the run stops there; ``record`` has
    the experience, epoch, iteration and the loss value."""


class NonFiniteGuard(SupervisedPlugin):
    """Stops training at the first non-finite loss, before the optimizer applies its gradient (so the
    last good weights -- and the last checkpoint -- are never overwritten by NaN)."""

    def before_update(self, strategy, **kwargs):
        loss = strategy.loss.detach()
        if not bool(torch.isfinite(loss).all()):
            clock = strategy.clock
            record = {"stage": "training", "experience": int(strategy.experience.current_experience),
                      "epoch": int(clock.train_exp_epochs), "iteration": int(clock.train_exp_iterations),
                      "loss": str(float(loss))}          # 'nan', 'inf' or '-inf' (JSON has no such numbers)
            raise TrainingDiverged(f"training diverged: loss {record['loss']} at experience {record['experience']}, "
                                   f"epoch {record['epoch']}, iteration {record['iteration']} (try a lower "
                                   "training.lr); the last checkpoint is kept", record)


# --- model and data --------------------------------------------------------------------------------

class SimModel(nn.Module):
    """The trained model: ``backbone`` (the representation under study), ``objective`` (its heads and
    loss) and ``extra`` (strategy-owned modules such as the distillation predictor). ``forward(x)``
    returns backbone features (B, feature_dim)."""

    def __init__(self, backbone: nn.Module, objective: nn.Module, extra: Optional[Dict[str, nn.Module]] = None):
        super().__init__()
        self.backbone = backbone
        self.objective = objective
        self.extra = nn.ModuleDict(extra or {})

    def forward(self, x):
        return self.backbone(x)


class TensorBatches:
    """Shuffled mini-batches [x, y, t] sliced from tensors; the last incomplete batch is dropped when there
    is at least one full batch (small trailing batches destabilise batch-norm and contrastive losses).
    Shuffling draws from torch's global RNG, so a seeded run is reproducible."""

    def __init__(self, tensors: Tensors, batch_size: int):
        self.x, self.y, self.t = tensors
        self.batch_size = batch_size

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if n >= self.batch_size else 1

    def __iter__(self):
        order = torch.randperm(len(self.y))
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield [self.x[idx], self.y[idx], self.t[idx]]


def _concat(parts: Sequence[Tensors]) -> Tensors:
    return tuple(torch.cat([p[k] for p in parts]) for k in range(3))


# --- the template ----------------------------------------------------------------------------------

class DncsimStrategy(SupervisedTemplate):
    """SupervisedTemplate driven by an objective; see the module docstring.

    ``experience_tensors(exp) -> (x, y, t)`` gives an experience's training tensors (inputs, labels,
    task labels) without a DataLoader; ``augment(x)`` makes one random view; ``data_mode`` is
    ``current``, ``cumulative`` (all experiences so far) or ``joint`` (all of ``all_experiences``).
    """

    def __init__(self, *, model: SimModel, optimizer, augment: nn.Module,
                 experience_tensors: Callable[[object], Tensors], train_mb_size: int, train_epochs: int,
                 device="cpu", plugins=None, evaluator=None, data_mode: str = "current",
                 all_experiences: Sequence[object] = ()):
        if evaluator is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")       # "no loggers": the run writes its own metrics
                evaluator = EvaluationPlugin(loggers=[])
        super().__init__(model=model, optimizer=optimizer, criterion=nn.Identity(), train_mb_size=train_mb_size,
                         train_epochs=train_epochs, eval_mb_size=train_mb_size, device=device,
                         plugins=list(plugins or []), evaluator=evaluator)
        self.augment = augment
        self.experience_tensors = experience_tensors
        self.data_mode = data_mode
        self.all_experiences = list(all_experiences)
        self.seen: List[Tensors] = []
        self.mb_views = None
        self._objective_loss = None

    @property
    def backbone(self):
        return self.model.backbone

    @property
    def objective(self):
        return self.model.objective

    def restore_progress(self, experiences_done: int) -> None:
        """Set the strategy's counters as if ``experiences_done`` experiences had been trained (resume):
        the data seen so far (cumulative training reads it) and Avalanche's experience counter."""
        self.seen = [self.experience_tensors(i) for i in range(experiences_done)]
        self.clock.train_exp_counter = experiences_done

    def make_optimizer(self, **kwargs):
        """No-op: the optimizer is built once by the caller (Avalanche would re-register every parameter)."""

    def model_adaptation(self, model=None):
        return model if model is not None else self.model

    def make_train_dataloader(self, **kwargs):
        current = self.experience_tensors(self.experience)
        if self.data_mode == "joint":           # one phase on everything, at the first experience only
            first = self.experience.current_experience == 0
            data = _concat([self.experience_tensors(e) for e in self.all_experiences]) if first else None
        elif self.data_mode == "cumulative":
            data = _concat(self.seen + [current])
        else:
            data = current
        self.seen.append(current)
        self.dataloader = [] if data is None else TensorBatches(data, self.train_mb_size)

    def training_epoch(self, **kwargs):
        if self.objective.trains_backbone:            # objective 'none': a frozen random backbone
            super().training_epoch(**kwargs)

    def forward(self):
        if not self.is_training:
            return self.backbone(self.mb_x)
        self.mb_views = None
        if self.objective.uses_views:
            self.mb_views = (self.augment(self.mb_x), self.augment(self.mb_x))
        self._objective_loss = self.objective.loss(self.backbone, self.mb_x, self.mb_y, self.mb_task_id,
                                                   self.mb_views)
        return self._objective_loss

    def criterion(self):
        if self.is_training:
            return self._objective_loss
        return torch.zeros((), device=self.device)

    def _after_update(self, **kwargs):
        self.objective.after_update(self.backbone)
        super()._after_update(**kwargs)


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
        return _concat(self.parts) if self.parts else None

    def before_training_iteration(self, strategy, **kwargs):
        if not self.parts:
            return
        x, y, t = self._buffer_cache
        k = min(len(y), self.replay_batch_size or len(strategy.mb_y))
        idx = torch.randperm(len(y))[:k]
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
        self.parts = [tuple(p) for p in state["parts"]]


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
        self.importance, self.anchor = dict(state["importance"]), dict(state["anchor"])


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
        return source, (strategy.backbone(source) if feats is None else feats)


def penalty_input(strategy) -> torch.Tensor:
    """The input a feature penalty reads: the first view, or the clean batch for view-free objectives."""
    return strategy.mb_views[0] if strategy.mb_views is not None else strategy.mb_x


def frozen_copy(backbone: nn.Module, state: Optional[dict] = None) -> nn.Module:
    """A copy of ``backbone`` in eval mode whose parameters do not require grad (``state`` loaded into it)."""
    frozen = copy.deepcopy(backbone).eval()
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


def build_plugins(cfg, feature_dim: int) -> Tuple[list, Dict[str, nn.Module], str]:
    """(plugins, extra modules for SimModel, data_mode) for a strategy config."""
    if isinstance(cfg, ReplayConfig):
        return [TensorReplay(cfg.mem_size, cfg.replay_batch_size)], {}, "current"
    if isinstance(cfg, RegularizerConfig):
        plugin = ParameterImportance(cfg.name, cfg.strength, cfg.importance_batches, cfg.decay, cfg.si_damping)
        return [plugin], {}, "current"
    if isinstance(cfg, DistillConfig):
        return ([FeatureDistillation(cfg.weight)],
                {"distill_predictor": distill_predictor(feature_dim, cfg.predictor_hidden)}, "current")
    if isinstance(cfg, CumulativeConfig):
        return [], {}, "cumulative"
    if isinstance(cfg, JointConfig):
        return [], {}, "joint"
    return [], {}, "current"
