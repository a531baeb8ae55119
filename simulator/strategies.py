"""Continual strategies on Avalanche's SupervisedTemplate, trained by any objective.

``DncsimStrategy`` hands the batch (and views) to the objective, which returns the loss; it slices
batches from tensors (``TensorBatches``), builds the optimizer once, and calls per-iteration hooks
only on plugins that implement them. ``training.precision`` ``bf16``/``fp16`` autocasts forward and loss.

Strategies: ``naive``, ``replay``, ``ewc`` / ``mas`` / ``si``, ``distill``, ``cumulative``, ``joint``.
"""
from __future__ import annotations

import contextlib
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
    from avalanche.core import BasePlugin, BaseSGDPlugin, SupervisedPlugin
    from avalanche.evaluation import PluginMetric
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.templates import SupervisedTemplate
    from avalanche.training.utils import trigger_plugins

# The config classes live in simulator/parts_config.py (torch-free, so that validating a config stays
# fast) and are re-exported here.
__all__ = ["NaiveConfig", "ReplayConfig", "RegularizerConfig", "DistillConfig", "CumulativeConfig", "JointConfig",
           "StrategyConfig", "STRATEGIES", "SimModel", "TensorBatches", "DncsimStrategy", "TensorReplay",
           "ParameterImportance", "FeatureDistillation", "build_plugins", "StatefulPlugin", "stateful_plugins",
           "TrainingDiverged", "NonFiniteGuard", "BatchFeatures", "penalty_input", "frozen_copy", "ITERATION_EVENTS",
           "iteration_hooks", "AUTOCAST_DTYPES"]

Tensors = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: ``training.precision`` -> the autocast dtype of the training steps (fp32: no autocast)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
            hint = "training.lr" + (", or training.precision: bf16" if getattr(strategy, "precision", "") == "fp16"
                                    else "")
            raise TrainingDiverged(f"training diverged: loss {record['loss']} at experience {record['experience']}, "
                                   f"epoch {record['epoch']}, iteration {record['iteration']} (try a lower "
                                   f"{hint}); the last checkpoint is kept", record)


# --- the per-iteration callbacks ---------------------------------------------------------------------

#: the callbacks Avalanche's training loop fires on every iteration, in order
ITERATION_EVENTS = ("before_training_iteration", "before_forward", "after_forward", "before_backward",
                    "after_backward", "before_update", "after_update", "after_training_iteration")
_NO_OPS = {e: {getattr(c, e) for c in (BasePlugin, BaseSGDPlugin, SupervisedPlugin) if hasattr(c, e)}
           for e in ITERATION_EVENTS}


def _listens(plugin, event: str) -> bool:
    """Whether calling ``plugin``'s ``event`` callback can do anything: not the plugin base classes' no-op,
    and for Avalanche's evaluation plugin (which forwards every callback to its metrics and loggers) a metric
    that overrides ``PluginMetric``'s no-op or a logger that has the callback."""
    if isinstance(plugin, EvaluationPlugin):
        default = getattr(PluginMetric, event, None)
        return (getattr(type(plugin), event, None) is not None           # a subclass's own callback
                or any(getattr(type(m), event, None) not in (None, default) for m in plugin.metrics)
                or any(hasattr(logger, event) for logger in plugin.loggers))
    impl = getattr(type(plugin), event, None)
    if impl is None:
        return hasattr(plugin, event)                   # set on the instance
    return impl not in _NO_OPS[event]


def iteration_hooks(plugins: Sequence) -> Dict[str, list]:
    """Per event of :data:`ITERATION_EVENTS`, the bound callbacks of the ``plugins`` that listen to it, in
    plugin order: calling them is what Avalanche's ``trigger_plugins`` does, without the no-op calls."""
    return {e: [getattr(p, e) for p in plugins if _listens(p, e)] for e in ITERATION_EVENTS}


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
        x, y, t = self.x, self.y, self.t
        order = torch.randperm(len(y))                    # on the CPU's generator, whatever the device
        on_x = order.to(x.device)                         # once per epoch, not per batch
        on_y = on_x if y.device == x.device else order.to(y.device)     # x may stay on the host (too large)
        for k in range(len(self)):
            a, b = k * self.batch_size, (k + 1) * self.batch_size
            iy = on_y[a:b]
            yield [x[on_x[a:b]], y[iy], t[iy]]


def _concat(parts: Sequence[Tensors]) -> Tensors:
    """The parts' x, y and t concatenated (on the host when some part's tensor stayed there)."""
    out = []
    for k in range(3):
        vs = [p[k] for p in parts]
        if len({v.device for v in vs}) > 1:
            vs = [v.cpu() for v in vs]
        out.append(torch.cat(vs))
    return tuple(out)


# --- the template ----------------------------------------------------------------------------------

class DncsimStrategy(SupervisedTemplate):
    """SupervisedTemplate driven by an objective; see the module docstring.

    ``experience_tensors(exp) -> (x, y, t)`` gives an experience's training tensors (inputs, labels,
    task labels) without a DataLoader; ``augment(x)`` makes one random view; ``data_mode`` is
    ``current``, ``cumulative`` (all experiences so far) or ``joint`` (all of ``all_experiences``);
    ``precision`` is ``fp32``, ``bf16`` or ``fp16`` (module docstring).
    """

    def __init__(self, *, model: SimModel, optimizer, augment: nn.Module,
                 experience_tensors: Callable[[object], Tensors], train_mb_size: int, train_epochs: int,
                 device="cpu", plugins=None, evaluator=None, data_mode: str = "current",
                 all_experiences: Sequence[object] = (), precision: str = "fp32"):
        if precision not in ("fp32",) + tuple(AUTOCAST_DTYPES):
            raise ValueError(f"precision must be fp32, bf16 or fp16; got {precision!r}")
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
        self.precision = precision
        self._autocast_dtype = AUTOCAST_DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self._hooks: Optional[Dict[str, list]] = None

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
        if not self.objective.trains_backbone:        # objective 'none': a frozen random backbone
            return
        self._hooks = iteration_hooks(self.plugins)   # the plugins as they are when the epoch starts
        try:
            super().training_epoch(**kwargs)
        finally:
            self._hooks = None

    def _trigger(self, event: str, kwargs) -> None:
        if self._hooks is None:
            trigger_plugins(self, event, **kwargs)
        else:
            for callback in self._hooks[event]:
                callback(self, **kwargs)

    def _before_training_iteration(self, **kwargs):
        self._trigger("before_training_iteration", kwargs)

    def _before_forward(self, **kwargs):
        self._trigger("before_forward", kwargs)

    def _after_forward(self, **kwargs):
        self._trigger("after_forward", kwargs)

    def _before_backward(self, **kwargs):
        self._trigger("before_backward", kwargs)

    def _after_backward(self, **kwargs):
        self._trigger("after_backward", kwargs)

    def _before_update(self, **kwargs):
        self._trigger("before_update", kwargs)

    def _after_training_iteration(self, **kwargs):
        self._trigger("after_training_iteration", kwargs)

    def autocast(self):
        """The context of a training step's forward pass and loss: ``torch.autocast`` to bf16/fp16, or nothing."""
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def forward(self):
        if not self.is_training:
            return self.backbone(self.mb_x)
        self.mb_views = None
        if self.objective.uses_views:                 # the views in fp32, outside autocast
            self.mb_views = (self.augment(self.mb_x), self.augment(self.mb_x))
        with self.autocast():
            loss = self.objective.loss(self.backbone, self.mb_x, self.mb_y, self.mb_task_id, self.mb_views)
        self._objective_loss = loss.float()
        return self._objective_loss

    def backward(self):
        if self.scaler is None:
            return super().backward()
        self.scaler.scale(self.loss).backward(retain_graph=self.retain_graph)
        self.scaler.unscale_(self.optimizer)          # the plugins after backward see the true gradients

    def optimizer_step(self):
        if self.scaler is None:
            return super().optimizer_step()
        self.scaler.step(self.optimizer)              # skipped when a gradient is not finite (fp16 overflow)
        self.scaler.update()

    def precision_state(self) -> Optional[dict]:
        """What a checkpoint keeps of the precision: the gradient scaler's state (fp16), else None."""
        return None if self.scaler is None else self.scaler.state_dict()

    def load_precision_state(self, state: Optional[dict]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

    def criterion(self):
        if self.is_training:
            return self._objective_loss
        return torch.zeros((), device=self.device)

    def _after_update(self, **kwargs):
        self.objective.after_update(self.backbone)
        self._trigger("after_update", kwargs)


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
