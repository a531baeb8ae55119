"""Compose a run's parts: the scenario's data, the backbone, objective, augmentation and strategy."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from analysis.errors import DncsimError
from scenarios.streams import Scenario
from simulator.augment import build_augment
from simulator.models import build_backbone
from simulator.objectives import build_objective
from simulator.strategies import DncsimStrategy, SimModel, build_plugins

__all__ = ["resolve_device", "classes_per_task", "ExperienceTensors", "build_optimizer", "build_strategy"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA device is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DncsimError(f"device: '{name}' requested but CUDA is not available here (use auto or cpu)")
    return torch.device(name)


def classes_per_task(sc: Scenario) -> Dict[int, int]:
    """Task label -> number of classes its head must cover (the largest labeling seen with that label)."""
    out: Dict[int, int] = {}
    for e in sc.experiences:
        lab = next(l for l in sc.labelings if l.spec == e.labeling)
        out[e.task_label] = max(out.get(e.task_label, 0), lab.num_classes)
    return out


class ExperienceTensors:
    """``(x, y, t)`` training tensors of an Avalanche experience of ``sc``, by direct indexing (cached)."""

    def __init__(self, sc: Scenario, split: str = "train"):
        self.sc, self.split = sc, split
        self._cache: Dict[int, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, experience) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = experience if isinstance(experience, int) else experience.current_experience
        if k not in self._cache:
            x, y = self.sc.experience_data(k, self.split)
            t = torch.full_like(y, self.sc.experiences[k].task_label)
            self._cache[k] = (x, y, t)
        return self._cache[k]


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer over every trainable parameter of ``model`` (a frozen model gets a no-op one)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:               # objective 'none': nothing trains; Avalanche still wants an optimizer
        params = [torch.nn.Parameter(torch.zeros(1))]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_strategy(cfg, sc: Scenario, device: torch.device, *, evaluator=None, extra_plugins=()) -> DncsimStrategy:
    """The Avalanche strategy of a run config over scenario ``sc``: seeded model, objective with its task
    heads, augmentation, strategy plugins and optimizer, on ``device``."""
    torch.manual_seed(cfg.seed)
    shape = sc.source.input_shape
    backbone = build_backbone(cfg.backbone, shape)
    objective = build_objective(cfg.objective, backbone)
    objective.prepare_tasks(classes_per_task(sc))
    plugins, extra, data_mode = build_plugins(cfg.strategy, backbone.feature_dim)
    model = SimModel(backbone, objective, extra).to(device)
    return DncsimStrategy(
        model=model, optimizer=build_optimizer(cfg.training, model), augment=build_augment(cfg.augment, shape).to(device),
        experience_tensors=ExperienceTensors(sc), train_mb_size=cfg.training.batch_size,
        train_epochs=cfg.training.epochs, device=device, plugins=list(plugins) + list(extra_plugins),
        evaluator=evaluator, data_mode=data_mode, all_experiences=list(sc.benchmark.train_stream))
