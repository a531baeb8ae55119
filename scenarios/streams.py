"""Avalanche task streams from a SourceData: class-, task- and domain-incremental, and multilabel.

Every stream is an Avalanche benchmark (``train_stream``, ``test_stream``) whose experience
datasets carry ``targets``, task labels and ``sample_idx`` (indices into the source's master
tensors), so Avalanche's strategies, metrics and loggers work unchanged and analysis can fetch an
experience's data by indexing (``Scenario.experience_data``) instead of iterating a DataLoader.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

from dncsim.common import DncsimError
from dncsim.scenarios.config import DomainIncrementalStream, MultilabelStream, ScenarioConfig, TaskIncrementalStream
from dncsim.scenarios.labelings import Labeling, resolve_labeling
from dncsim.scenarios.sources import SourceData

__all__ = ["ExperienceInfo", "Scenario", "build_stream", "experience_dataset"]

Shift = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ExperienceInfo:
    """What one experience is: its labeling, classes, task label and where its samples come from.

    ``train_idx`` / ``test_idx`` (n,) int64 index the source's train / test tensors; ``shift`` (domain
    streams) maps source inputs (n, ...) to this experience's inputs; ``name`` is a short readable
    description (the labeling, the classes, or the shift).
    """

    index: int
    name: str
    labeling: str
    classes: List[int]
    class_names: List[str]
    task_label: int
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    shift: Optional[Shift] = None
    shift_name: str = ""


@dataclass
class Scenario:
    """A built scenario: the Avalanche ``benchmark`` plus a description of each experience."""

    config: ScenarioConfig
    source: SourceData
    stream_type: str
    experiences: List[ExperienceInfo]
    labelings: List[Labeling]
    benchmark: object

    def labeling_of(self, index: int) -> Labeling:
        """The labeling that experience ``index`` trains."""
        spec = self.experiences[index].labeling
        return next(lab for lab in self.labelings if lab.spec == spec)

    def experience_data(self, index: int, split: str = "train") -> Tuple[torch.Tensor, torch.Tensor]:
        """(x (n, ...), y (n,)) of experience ``index`` by direct indexing (shift applied, no DataLoader)."""
        e = self.experiences[index]
        idx = e.train_idx if split == "train" else e.test_idx
        x = self.source.split(split).x[idx]
        lab = self.labeling_of(index)
        y = (lab.train if split == "train" else lab.test)[idx]
        return (e.shift(x) if e.shift else x), y


def avalanche_benchmarks():
    """``avalanche.benchmarks``, imported without the third-party import-time warnings it triggers
    (qpsolvers' "no QP solver", jaxopt's deprecation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import avalanche.benchmarks as bm
        import avalanche.benchmarks.utils  # noqa: F401
    return bm


def experience_dataset(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, task: int):
    """An Avalanche classification dataset of (x, y, task) samples with ``targets``, task labels and
    ``sample_idx`` attributes (task-aware, which LwF, DER and multi-head models need)."""
    from torch.utils.data import TensorDataset
    u = avalanche_benchmarks().utils
    attrs = [u.DataAttribute(y, "targets"), u.TaskLabels(u.ConstantSequence(task, len(y))),
             u.DataAttribute(idx, "sample_idx")]
    return u.TaskAwareSupervisedClassificationDataset([TensorDataset(x, y)], data_attributes=attrs)


def _class_order(cfg, lab: Labeling, seed: int) -> List[int]:
    k = lab.num_classes
    if cfg.class_order is not None:
        if sorted(cfg.class_order) != list(range(k)):
            raise DncsimError(f"scenario.stream.class_order: must be a permutation of the class ids 0..{k - 1} "
                              f"of labeling '{lab.spec}'; got {cfg.class_order}")
        order = list(cfg.class_order)
    elif cfg.shuffle_classes:
        order = torch.randperm(k, generator=torch.Generator().manual_seed(seed)).tolist()
    else:
        order = list(range(k))
    if k % cfg.experiences:
        divisors = [t for t in range(1, k + 1) if k % t == 0]
        raise DncsimError(f"scenario.stream.experiences: {k} classes of labeling '{lab.spec}' cannot be split evenly "
                          f"into {cfg.experiences} experiences (choose one of {', '.join(map(str, divisors))})")
    return order


def _class_split(cfg, source: SourceData, seed: int, task_labels: bool) -> Scenario:
    av = avalanche_benchmarks()
    lab = resolve_labeling(source, cfg.labeling or source.default_labeling, key="scenario.stream.labeling")
    order = _class_order(cfg, lab, seed)
    full = {s: experience_dataset(source.split(s).x, getattr(lab, s), torch.arange(len(source.split(s))), 0)
            for s in ("train", "test")}
    bm = av.class_incremental_benchmark(dict(full), class_order=order, num_experiences=cfg.experiences)
    if task_labels:
        bm = av.with_classes_timeline(av.task_incremental_benchmark(bm, reset_task_labels=True))
    per = len(order) // cfg.experiences
    infos = []
    for t, (tr, te) in enumerate(zip(bm.train_stream, bm.test_stream)):
        classes = sorted(order[t * per:(t + 1) * per])
        infos.append(ExperienceInfo(
            index=t, name="classes " + ", ".join(lab.names[c] for c in classes), labeling=lab.spec,
            classes=classes, class_names=[lab.names[c] for c in classes], task_label=t if task_labels else 0,
            train_idx=torch.as_tensor(list(tr.dataset.sample_idx)),
            test_idx=torch.as_tensor(list(te.dataset.sample_idx))))
    return Scenario(config=None, source=source, stream_type=cfg.type, experiences=infos, labelings=[lab], benchmark=bm)


def _rgb_hue_rotation(degrees: float) -> torch.Tensor:
    """(3, 3) rotation of RGB colours about the grey axis (1,1,1)/sqrt(3): a hue shift that keeps grey."""
    th = math.radians(degrees)
    c, s = math.cos(th), math.sin(th)
    k = torch.full((3, 3), (1 - c) / 3, dtype=torch.float64)
    k += torch.eye(3, dtype=torch.float64) * c
    w = s / math.sqrt(3)
    k += torch.tensor([[0.0, -w, w], [w, 0.0, -w], [-w, w, 0.0]], dtype=torch.float64)
    return k.to(torch.float32)


def _domain_shifts(cfg: DomainIncrementalStream, source: SourceData, seed: int) -> List[Tuple[str, Shift]]:
    T = cfg.experiences
    first = 0 if cfg.include_identity else 1
    steps = list(range(first, first + T))
    if cfg.shift == "permute":
        shape = source.input_shape
        n = shape[-1] * shape[-2] if source.is_image else shape[0]
        gen = torch.Generator().manual_seed(seed)
        perms = [torch.arange(n) if k == 0 else torch.randperm(n, generator=gen) for k in steps]

        def permute(p):
            if source.is_image:
                return lambda x: x.flatten(2)[:, :, p].reshape(x.shape)
            return lambda x: x[:, p]
        return [("identity" if k == 0 else f"permutation {k}", permute(p)) for k, p in zip(steps, perms)]
    if not source.is_image:
        raise DncsimError(f"scenario.stream.shift: '{cfg.shift}' needs image inputs; source '{source.name}' "
                          "has vectors (use shift: permute)")
    span = (T - 1 + first) or 1
    angles = [cfg.max_rotation * k / span for k in steps]
    if cfg.shift == "rotate":
        from torchvision.transforms.v2.functional import rotate
        return [(f"rotate {a:g}°", (lambda a: lambda x: rotate(x, a))(a)) for a in angles]
    if source.input_shape[0] != 3:
        raise DncsimError(f"scenario.stream.shift: 'color' needs RGB images; source '{source.name}' has "
                          f"{source.input_shape[0]} channel(s)")
    hues = [360.0 * k / (T + first) for k in steps]

    def recolor(h):
        m = _rgb_hue_rotation(h)
        return lambda x: torch.einsum("ij,njhw->nihw", m, x).clamp_(0, 1)
    return [(f"hue {h:g}°", recolor(h)) for h in hues]


def _domain(cfg: DomainIncrementalStream, source: SourceData, seed: int) -> Scenario:
    av = avalanche_benchmarks()
    lab = resolve_labeling(source, cfg.labeling or source.default_labeling, key="scenario.stream.labeling")
    shifts = _domain_shifts(cfg, source, seed)
    idx = {s: torch.arange(len(source.split(s))) for s in ("train", "test")}
    data = {s: [experience_dataset(f(source.split(s).x), getattr(lab, s), idx[s], 0) for _, f in shifts]
            for s in ("train", "test")}
    bm = av.with_classes_timeline(av.benchmark_from_datasets(train=data["train"], test=data["test"]))
    classes = list(range(lab.num_classes))
    infos = [ExperienceInfo(index=t, name=name, labeling=lab.spec, classes=classes, class_names=list(lab.names),
                            task_label=0, train_idx=idx["train"], test_idx=idx["test"], shift=f, shift_name=name)
             for t, (name, f) in enumerate(shifts)]
    return Scenario(config=None, source=source, stream_type=cfg.type, experiences=infos, labelings=[lab], benchmark=bm)


def _multilabel(cfg: MultilabelStream, source: SourceData) -> Scenario:
    av = avalanche_benchmarks()
    labs = [resolve_labeling(source, spec, key=f"scenario.stream.labelings[{k}]")
            for k, spec in enumerate(cfg.labelings)]
    idx = {s: torch.arange(len(source.split(s))) for s in ("train", "test")}
    data = {s: [experience_dataset(source.split(s).x, getattr(lab, s), idx[s], t) for t, lab in enumerate(labs)]
            for s in ("train", "test")}
    bm = av.with_classes_timeline(av.with_task_labels(av.benchmark_from_datasets(train=data["train"],
                                                                                test=data["test"])))
    infos = [ExperienceInfo(index=t, name=lab.spec, labeling=lab.spec, classes=list(range(lab.num_classes)),
                            class_names=list(lab.names), task_label=t, train_idx=idx["train"], test_idx=idx["test"])
             for t, lab in enumerate(labs)]
    return Scenario(config=None, source=source, stream_type=cfg.type, experiences=infos, labelings=labs, benchmark=bm)


def build_stream(config: ScenarioConfig, source: SourceData) -> Scenario:
    """The Avalanche benchmark of ``config.stream`` over ``source``; DncsimError naming the key when the
    stream does not fit the data (unknown labeling, indivisible class split, shift for the wrong inputs)."""
    cfg = config.stream
    if isinstance(cfg, MultilabelStream):
        sc = _multilabel(cfg, source)
    elif isinstance(cfg, DomainIncrementalStream):
        sc = _domain(cfg, source, config.seed)
    else:
        sc = _class_split(cfg, source, config.seed, task_labels=isinstance(cfg, TaskIncrementalStream))
    sc.config = config
    return sc

