"""One builder: a validated run config becomes the run's parts -- the scenario, the model with its
objective, the strategy with its plugins, the evaluation collection and the run directory.

:func:`build_run` is the only place where config sections meet; ``simulator.run`` only runs the
parts (train, evaluate, write, checkpoint, resume). Every check that depends on the user's input
(device, data files, labelings, backbone against input shape) happens here, before the run
directory is touched.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from dncsim.analysis.metrics import build_collection
from dncsim.analysis.names import ProbeKey, probe_keys
from dncsim.common import DncsimError
from dncsim.rundir import RunDirectory
from dncsim.scenarios import Scenario, build_scenario
from dncsim.scenarios.sources import derived_seed
from dncsim.simulator.augment import build_augment
from dncsim.simulator.config import RunConfig
from dncsim.simulator.devices import (check_precision, compile_backbone, configure_device, deterministic_environment,
                                      on_device)
from dncsim.simulator.evaluation import AvalancheEvaluation, FeatureExtractor, evaluation_tasks
from dncsim.simulator.models import build_backbone
from dncsim.simulator.objectives import build_objective
from dncsim.simulator.guard import NonFiniteGuard
from dncsim.simulator.regularizers import build_regularizers, labelled_fraction, labelled_mask
from dncsim.simulator.strategies import StrategyContext, build_plugins
from dncsim.simulator.template import DncsimStrategy, SimModel

__all__ = ["RunParts", "build_run", "resolve_device", "seed_everything", "classes_per_task", "ExperienceTensors",
           "build_optimizer", "build_strategy", "build_model", "BuiltModel"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA device is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DncsimError(f"device: '{name}' requested but CUDA is not available here (use auto or cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random`` (the run's global random state)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def classes_per_task(sc: Scenario) -> Dict[int, int]:
    """Task label -> number of classes its head must cover (the largest labeling seen with that label)."""
    out: Dict[int, int] = {}
    for e in sc.experiences:
        out[e.task_label] = max(out.get(e.task_label, 0), sc.labeling_of(e.index).num_classes)
    return out


class ExperienceTensors:
    """``(x, y, t)`` training tensors of an Avalanche experience of ``sc``, by direct indexing (cached).

    ``labelled_fraction`` < 1 hides the labels of all but a fixed, seeded, class-stratified fraction of
    each experience's samples (y = -1; ``simulator.regularizers.labelled_mask`` with a seed derived
    from ``seed`` and the experience index). The tensors are put on ``device`` once, when first asked for
    (:func:`on_device`), so that training slices its mini-batches there without a copy per batch."""

    def __init__(self, sc: Scenario, split: str = "train", labelled_fraction: float = 1.0, seed: int = 0,
                 device: Optional[torch.device] = None):
        self.sc, self.split = sc, split
        self.labelled_fraction, self.seed = float(labelled_fraction), int(seed)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self._cache: Dict[int, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, experience) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = experience if isinstance(experience, int) else experience.current_experience
        if k not in self._cache:
            x, y = self.sc.experience_data(k, self.split)
            t = torch.full_like(y, self.sc.experiences[k].task_label)
            if self.labelled_fraction < 1:
                keep = labelled_mask(y, self.labelled_fraction, derived_seed(self.seed, "labelled", k))
                y = torch.where(keep, y, torch.full_like(y, -1))
            x, y = on_device(x, self.device), on_device(y, self.device)
            self._cache[k] = (x, y, t.to(y.device))
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


class BuiltModel(NamedTuple):
    """The seeded model and what the strategy adds to it: its plugins in order (the strategy's, the
    objective's regularisers, the strategy's plugins after those) and its data mode."""

    model: SimModel
    plugins: List
    data_mode: str


def build_model(cfg: RunConfig, sc: Scenario, device: torch.device) -> BuiltModel:
    """The model of a run config over scenario ``sc`` on ``device`` (backbone, objective with its task heads,
    the strategy's modules), seeded from ``cfg.seed``, with the strategy's and regularisers' plugins."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.backbone, sc.source.input_shape)
    objective = build_objective(cfg.objective, backbone)
    objective.prepare_tasks(classes_per_task(sc))

    def learned_tasks(k: int):
        return [sc.evaluation_data(i, "train") for i, t in enumerate(sc.eval_tasks) if t.learned_at == k]
    parts = build_plugins(cfg.strategy, StrategyContext(backbone.feature_dim, learned_tasks))
    learned = [[t.name for t in sc.eval_tasks if t.learned_at == k] for k in range(len(sc.experiences))]
    plugins = (list(parts.plugins) + build_regularizers(cfg.objective, learned, cfg.seed)
               + list(parts.after_regularizers))
    model = SimModel(backbone, objective, parts.extra).to(device)
    if cfg.training.compile:
        compile_backbone(model.backbone, device)
    return BuiltModel(model, plugins, parts.data_mode)


def build_strategy(cfg: RunConfig, sc: Scenario, device: torch.device, *, evaluator=None,
                   extra_plugins: Sequence = (), built: Optional[BuiltModel] = None) -> DncsimStrategy:
    """The Avalanche strategy of a run config over scenario ``sc``: the model and plugins of ``built``
    (default: :func:`build_model`), then ``extra_plugins``, augmentation and optimizer, on ``device``."""
    model, plugins, data_mode = build_model(cfg, sc, device) if built is None else built
    tensors = ExperienceTensors(sc, labelled_fraction=labelled_fraction(cfg.objective), seed=cfg.seed, device=device)
    return DncsimStrategy(
        model=model, optimizer=build_optimizer(cfg.training, model),
        augment=build_augment(cfg.augment, sc.source.input_shape).to(device), experience_tensors=tensors,
        train_mb_size=cfg.training.batch_size, train_epochs=cfg.training.epochs, device=device,
        plugins=list(plugins) + list(extra_plugins) + [NonFiniteGuard()], evaluator=evaluator, data_mode=data_mode,
        all_experiences=list(sc.benchmark.train_stream), precision=cfg.training.precision)


@dataclass
class RunParts:
    """Everything a run is made of (see :func:`build_run`)."""

    config: RunConfig
    device: torch.device
    scenario: Scenario
    strategy: DncsimStrategy
    evaluation: AvalancheEvaluation
    directory: RunDirectory
    probe_keys: Tuple[ProbeKey, ...]

    @property
    def task_names(self):
        return [t.name for t in self.evaluation.collection.tasks]

    @property
    def learned_at(self):
        return [t.learned_at for t in self.evaluation.collection.tasks]


def _evaluation_plugin(metric: AvalancheEvaluation):
    """Avalanche's EvaluationPlugin carrying the evaluation (loggers are attached once the directory exists)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # import-time warnings; "no loggers" yet
        from avalanche.training.plugins import EvaluationPlugin
        return EvaluationPlugin(metric, loggers=[])


def build_run(cfg: RunConfig, directory: RunDirectory, *, plugins: Sequence = ()) -> RunParts:
    """The parts of the run ``cfg`` into ``directory`` (which is not touched). ``plugins``: extra
    strategy plugins, after the strategy's own (those implementing ``state_dict`` / ``load_state_dict``
    are checkpointed like any other). Seeds the global random state from ``cfg.seed``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    deterministic_environment(cfg.training.deterministic, cfg.device)      # before anything touches CUDA
    device = resolve_device(cfg.device)
    check_precision(cfg.training.precision, device)
    configure_device(device, cfg.training.deterministic)
    seed_everything(cfg.seed)
    sc = build_scenario(cfg.scenario, watch=cfg.evaluation.watch)
    collection = build_collection(evaluation_tasks(sc), cfg.evaluation, cfg.analysis, cfg.seed,
                                  experiences=len(sc.experiences))
    built = build_model(cfg, sc, device)
    features = FeatureExtractor(sc, built.model, device, cfg.evaluation.batch_size, normalize=cfg.analysis.normalize)
    evaluation = AvalancheEvaluation(collection, features)
    strategy = build_strategy(cfg, sc, device, evaluator=_evaluation_plugin(evaluation), extra_plugins=plugins,
                              built=built)
    return RunParts(config=cfg, device=device, scenario=sc, strategy=strategy, evaluation=evaluation,
                    directory=directory, probe_keys=probe_keys(cfg.evaluation.probes, cfg.evaluation.protocols))
