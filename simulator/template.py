"""The strategy template: Avalanche's SupervisedTemplate driven by an objective.

``DncsimStrategy`` hands the batch (and views) to the objective, which returns the loss; it slices
batches from tensors (``TensorBatches``), builds the optimizer once, and calls per-iteration hooks
only on plugins that implement them. ``training.precision`` ``bf16``/``fp16`` autocasts forward and loss.
What a strategy adds (replay, anchors, distillation) are plugins (simulator/plugins.py), chosen by
the strategy registry (simulator/strategies.py).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

with warnings.catch_warnings():          # qpsolvers / jaxopt import-time warnings
    warnings.simplefilter("ignore")
    from avalanche.core import BasePlugin, BaseSGDPlugin, SupervisedPlugin
    from avalanche.evaluation import PluginMetric
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.templates import SupervisedTemplate
    from avalanche.training.utils import trigger_plugins

__all__ = ["SimModel", "TensorBatches", "DncsimStrategy", "ITERATION_EVENTS", "iteration_hooks", "AUTOCAST_DTYPES",
           "Tensors", "concat_tensors", "SupervisedPlugin", "EvaluationPlugin"]

Tensors = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: ``training.precision`` -> the autocast dtype of the training steps (fp32: no autocast)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def concat_tensors(parts: Sequence[Tensors]) -> Tensors:
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
            data = concat_tensors([self.experience_tensors(e) for e in self.all_experiences]) if first else None
        elif self.data_mode == "cumulative":
            data = concat_tensors(self.seen + [current])
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

