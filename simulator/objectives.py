"""Training objectives: a mini-batch (and, when ``uses_views``, two augmented views) -> a scalar loss.

``simclr``, ``vicreg``, ``barlow_twins``, ``byol``, ``simsiam`` (self-supervised, with heads),
``supervised`` (one linear head per task label), ``none`` (frozen random backbone, zero loss,
``trains_backbone`` False). The caller owns the backbone and passes it to every call; call
``after_update(backbone)`` after each step. Call ``prepare_tasks({task: classes})`` before moving to a
device, building the optimizer or loading a state.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Dict, Iterator, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity, NTXentLoss, VICRegLoss
from lightly.models.modules import (BarlowTwinsProjectionHead, BYOLPredictionHead, BYOLProjectionHead,
                                    SimCLRProjectionHead, SimSiamPredictionHead, SimSiamProjectionHead)
from lightly.models.modules.heads import VICRegProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import Tensor, nn

from dncsim.common import DncsimError
from dncsim.simulator.registry import OBJECTIVES_REGISTRY
from dncsim.simulator.parts_config import (LABEL_FREE_OBJECTIVES, OBJECTIVES, BarlowTwinsConfig, BYOLConfig,
                                           NoneConfig, ObjectiveConfig, SimCLRConfig, SimSiamConfig,
                                           SupervisedConfig, VICRegConfig)

# The config classes live in simulator/parts_config.py (torch-free, so that validating a config stays
# fast) and are re-exported here.
__all__ = ["SimCLRConfig", "VICRegConfig", "BarlowTwinsConfig", "BYOLConfig", "SimSiamConfig",
           "SupervisedConfig", "NoneConfig", "ObjectiveConfig", "OBJECTIVES", "LABEL_FREE_OBJECTIVES", "Objective",
           "ProjectionObjective", "SimSiamObjective", "BYOLObjective", "SupervisedObjective",
           "FrozenObjective", "build_objective"]

Views = Optional[Tuple[Tensor, Tensor]]


# -------------------------------------------------------------------------------------- objectives

class Objective(nn.Module, ABC):
    """Turns a mini-batch into a scalar loss; every trainable part is a submodule."""

    uses_views: bool = True
    trains_backbone: bool = True

    @abstractmethod
    def loss(self, backbone: nn.Module, x: Tensor, y: Tensor, t: Tensor, views: Views) -> Tensor:
        """The scalar loss of one mini-batch; ``views`` is ``(v1, v2)`` or None."""

    def after_update(self, backbone: nn.Module) -> None:
        """Called after every optimizer step (no-op unless overridden)."""

    def prepare_tasks(self, classes_per_task: Dict[int, int]) -> None:
        """Called once before training with every task label of the stream (no-op unless overridden)."""


def _two_views(views: Views) -> Tuple[Tensor, Tensor]:
    if views is None:
        raise ValueError("a self-supervised objective needs two augmented views (uses_views is True), got None")
    v1, v2 = views
    return v1, v2


class ProjectionObjective(Objective):
    """A criterion between the projections of the two views (SimCLR, VICReg, Barlow Twins)."""

    def __init__(self, projector: nn.Module, criterion: nn.Module):
        super().__init__()
        self.projector = projector
        self.criterion = criterion

    def loss(self, backbone, x, y, t, views):
        v1, v2 = _two_views(views)
        return self.criterion(self.projector(backbone(v1)), self.projector(backbone(v2)))


class _PredictionObjective(Objective):
    """Negative cosine between the prediction of one view and the target of the other, symmetrised."""

    def __init__(self, projector: nn.Module, predictor: nn.Module):
        super().__init__()
        self.projector = projector
        self.predictor = predictor
        self.criterion = NegativeCosineSimilarity()

    def loss(self, backbone, x, y, t, views):
        v1, v2 = _two_views(views)
        z1, z2 = self.projector(backbone(v1)), self.projector(backbone(v2))
        target1, target2 = self._target(v1, z1), self._target(v2, z2)
        return 0.5 * (self.criterion(self.predictor(z1), target2) + self.criterion(self.predictor(z2), target1))

    @abstractmethod
    def _target(self, view: Tensor, projection: Tensor) -> Tensor:
        """The gradient-free regression target of ``view`` whose online projection is ``projection``."""


class SimSiamObjective(_PredictionObjective):
    """SimSiam: the target is the online projection itself, with the gradient stopped."""

    def _target(self, view, projection):
        return projection.detach()


class BYOLObjective(_PredictionObjective):
    """BYOL: the target is an EMA copy of backbone and projection head, moved only in ``after_update``."""

    def __init__(self, projector: nn.Module, predictor: nn.Module, backbone: nn.Module, momentum: float):
        super().__init__(projector, predictor)
        self.momentum = momentum
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(projector)
        deactivate_requires_grad(self.target_backbone)
        deactivate_requires_grad(self.target_projector)

    def _target(self, view, projection):
        with torch.no_grad():
            return self.target_projector(self.target_backbone(view))

    def after_update(self, backbone):
        update_momentum(backbone, self.target_backbone, self.momentum)
        update_momentum(self.projector, self.target_projector, self.momentum)


class SupervisedObjective(Objective):
    """Cross-entropy through one linear head per task label (``heads[str(task)]``)."""

    uses_views = False

    def __init__(self, feature_dim: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.heads = nn.ModuleDict()

    def prepare_tasks(self, classes_per_task):
        """Create a ``Linear(feature_dim, K)`` head per task; a task already prepared keeps its head."""
        for task, classes in sorted(classes_per_task.items()):
            if classes < 1:
                raise DncsimError(f"task {task}: a classification head needs at least 1 class, got {classes}")
            head = self.heads[str(task)] if str(task) in self.heads else None
            if head is None:
                self.heads[str(task)] = nn.Linear(self.feature_dim, classes)
            elif head.out_features != classes:
                raise DncsimError(f"task {task}: its head has {head.out_features} classes, asked for {classes}")

    def _groups(self, t: Tensor) -> Iterator[Tuple[int, nn.Linear, Tensor]]:
        """(task, head, mask of its samples) for every task label present in ``t``."""
        for task in t.unique().tolist():
            if str(task) not in self.heads:
                known = ", ".join(sorted(self.heads.keys(), key=int)) or "none"
                raise DncsimError(f"task label {task} in the batch has no classification head "
                                  f"(prepared tasks: {known})")
            yield task, self.heads[str(task)], t == task

    def loss(self, backbone, x, y, t, views):
        features = backbone(x)
        total = features.new_zeros(())
        for task, head, mask in self._groups(t):
            labels = y[mask]
            if labels.min() < 0 or labels.max() >= head.out_features:
                raise DncsimError(f"task {task}: class labels must be in 0..{head.out_features - 1}, "
                                  f"got {labels.min().item()}..{labels.max().item()}")
            total = total + F.cross_entropy(head(features[mask]), labels, reduction="sum")
        return total / len(x)   # = the per-task mean losses weighted by the tasks' shares of the batch

    def logits(self, features: Tensor, t: Union[Tensor, int]) -> Tensor:
        """Each sample's scores under its own task's head, ``(B, K)`` with K the largest class count of the
        tasks present; the columns past a task's own classes are ``-inf`` (argmax and softmax ignore them).
        ``t`` is one task label per sample or a single task label for the whole batch."""
        t = torch.as_tensor(t, device=features.device)
        t = t.expand(len(features)) if t.dim() == 0 else t
        groups = list(self._groups(t))
        out = features.new_full((len(features), max((head.out_features for _, head, _ in groups), default=0)),
                                float("-inf"))
        for _, head, mask in groups:
            out[mask, :head.out_features] = head(features[mask])
        return out


class FrozenObjective(Objective):
    """``none``: no parameters, nothing trains; the loss is a constant zero without a graph."""

    uses_views = False
    trains_backbone = False

    def loss(self, backbone, x, y, t, views):
        return torch.zeros((), device=x.device)


# -------------------------------------------------------------------------------------------- build

# each config class names its builder (``builder`` in simulator/parts_config.py): (cfg, backbone) -> Objective

def build_simclr(cfg: SimCLRConfig, backbone: nn.Module) -> Objective:
    return ProjectionObjective(SimCLRProjectionHead(backbone.feature_dim, cfg.hidden_dim, cfg.projection_dim),
                               NTXentLoss(temperature=cfg.temperature))


def build_vicreg(cfg: VICRegConfig, backbone: nn.Module) -> Objective:
    return ProjectionObjective(VICRegProjectionHead(backbone.feature_dim, cfg.hidden_dim, cfg.projection_dim),
                               VICRegLoss(lambda_param=cfg.lambda_param, mu_param=cfg.mu_param, nu_param=cfg.nu_param))


def build_barlow_twins(cfg: BarlowTwinsConfig, backbone: nn.Module) -> Objective:
    return ProjectionObjective(BarlowTwinsProjectionHead(backbone.feature_dim, cfg.hidden_dim, cfg.projection_dim),
                               BarlowTwinsLoss(lambda_param=cfg.lambda_param))


def build_byol(cfg: BYOLConfig, backbone: nn.Module) -> Objective:
    return BYOLObjective(BYOLProjectionHead(backbone.feature_dim, cfg.hidden_dim, cfg.projection_dim),
                         BYOLPredictionHead(cfg.projection_dim, cfg.hidden_dim, cfg.projection_dim), backbone,
                         cfg.momentum)


def build_simsiam(cfg: SimSiamConfig, backbone: nn.Module) -> Objective:
    return SimSiamObjective(SimSiamProjectionHead(backbone.feature_dim, cfg.hidden_dim, cfg.projection_dim),
                            SimSiamPredictionHead(cfg.projection_dim, cfg.hidden_dim, cfg.projection_dim))


def build_supervised(cfg: SupervisedConfig, backbone: nn.Module) -> Objective:
    return SupervisedObjective(backbone.feature_dim)


def build_none(cfg: NoneConfig, backbone: nn.Module) -> Objective:
    return FrozenObjective()


def build_objective(cfg: ObjectiveConfig, backbone: nn.Module) -> Objective:
    """The objective of ``cfg`` (its class's registered builder), heads sized from ``backbone.feature_dim``
    (BYOL copies the backbone)."""
    return OBJECTIVES_REGISTRY.build(cfg, backbone)
