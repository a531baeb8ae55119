"""Avalanche task streams from a SourceData: class-, task- and domain-incremental, multilabel and factor.

The **training stream** is an Avalanche benchmark whose datasets carry ``targets``, task labels and
``sample_idx``, plus an :class:`ExperienceInfo` per experience. The **evaluation tasks**
(:class:`EvaluationTaskInfo`) are the labelings probed on the evaluation split after every experience,
each with the experience it is learned in (or none: watched only, ``watch``).

Streams: ``multilabel``, ``joint``, ``factor``, ``class_incremental``, ``task_incremental``,
``domain_incremental``: one builder ``(cfg, source, seed) -> Scenario`` each, named by its config
class (``scenarios/config.py``) and found through ``scenarios/registry.py``.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dncsim.common import DncsimError
from dncsim.scenarios.config import (DomainIncrementalStream, FactorStream, JointStream, MultilabelStream,
                                     ScenarioConfig)
from dncsim.scenarios.labelings import Labeling, resolve_labeling
from dncsim.scenarios.registry import STREAMS
from dncsim.scenarios.sources import SourceData, Split, derived_seed

__all__ = ["ExperienceInfo", "EvaluationTaskInfo", "Scenario", "build_stream", "experience_dataset", "factor_stream",
           "class_incremental_stream", "task_incremental_stream", "domain_stream", "multilabel_stream", "joint_stream"]

Shift = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ExperienceInfo:
    """One training experience: its labeling, classes, task label and where its samples come from.

    ``train_idx`` (n,) int64 indexes its ``pool`` (rendered afresh) or the source's train split;
    ``test_idx`` the source's test split. ``shift`` (domain streams) maps source inputs to this
    experience's. Factor streams: ``varying`` attribute, and ``held`` (attribute -> allowed value names).
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
    pool: Optional[Split] = None
    varying: Optional[str] = None
    held: Dict[str, List[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationTaskInfo:
    """A labeling probed after every experience on the evaluation data.

    ``train_idx`` / ``test_idx`` (n,) int64 index the probe-train / probe-test split
    (``SourceData.evaluation_split``); ``classes`` the labeling's class ids it covers; ``learned_at`` the
    experience in which it is learned (None: only watched); ``shift`` as for the experience.
    """

    index: int
    name: str
    labeling: str
    classes: List[int]
    class_names: List[str]
    learned_at: Optional[int]
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    shift: Optional[Shift] = None
    shift_name: str = ""


@dataclass
class Scenario:
    """A built scenario: the Avalanche ``benchmark``, a description of each experience, and the
    evaluation tasks (see the module docstring)."""

    config: ScenarioConfig
    source: SourceData
    stream_type: str
    experiences: List[ExperienceInfo]
    labelings: List[Labeling]
    benchmark: object
    eval_tasks: List[EvaluationTaskInfo] = field(default_factory=list)

    def _labeling(self, spec: str) -> Labeling:
        return next(lab for lab in self.labelings if lab.spec == spec)

    def labeling_of(self, index: int) -> Labeling:
        """The labeling that experience ``index`` trains."""
        return self._labeling(self.experiences[index].labeling)

    def experience_data(self, index: int, split: str = "train") -> Tuple[torch.Tensor, torch.Tensor]:
        """(x (n, ...), y (n,)) of experience ``index``: its training data (``train``) or its part of the
        source's test split (``test``), by direct indexing (shift applied, no DataLoader)."""
        e = self.experiences[index]
        lab = self.labeling_of(index)
        if split == "train" and e.pool is not None:
            x, y = e.pool.x[e.train_idx], lab.apply(e.pool.labels[lab.base])[e.train_idx]
        else:
            idx = e.train_idx if split == "train" else e.test_idx
            x, y = self.source.split(split).x[idx], lab.on(split)[idx]
        return (e.shift(x) if e.shift else x), y

    def evaluation_data(self, task: int, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """(x (n, ...), y (n,)) of evaluation task ``task`` on the probe-train (``train``) or probe-test
        (``test``) split, shift applied."""
        t = self.eval_tasks[task]
        idx = t.train_idx if split == "train" else t.test_idx
        x = self.source.evaluation_split(split).x[idx]
        return (t.shift(x) if t.shift else x), self._labeling(t.labeling).evaluation(split)[idx]

    def evaluation_labels(self, task: int, split: str) -> torch.Tensor:
        """(n,) class ids of evaluation task ``task`` on the probe-train or probe-test split."""
        t = self.eval_tasks[task]
        return self._labeling(t.labeling).evaluation(split)[t.train_idx if split == "train" else t.test_idx]

    @property
    def same_inputs(self) -> bool:
        """Every experience trains on the same inputs (multilabel, joint, or factor with ``hold: none``)."""
        return bool(getattr(self.config.stream, "same_inputs", False))

    def input_digests(self) -> List[str]:
        """Per experience, a SHA-1 of its training inputs' bytes (first 16 hex digits): equal digests
        mean identical training inputs."""
        out = []
        for k in range(len(self.experiences)):
            x, _ = self.experience_data(k, "train")
            out.append(hashlib.sha1(x.contiguous().numpy().tobytes()).hexdigest()[:16])
        return out


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


def _all(n: int) -> torch.Tensor:
    return torch.arange(n)


def _where(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    return torch.isin(labels, torch.as_tensor(list(classes))).nonzero().flatten()


def _full_task(index: int, lab: Labeling, source: SourceData, learned_at: Optional[int], name: Optional[str] = None,
               shift: Optional[Shift] = None, shift_name: str = "") -> EvaluationTaskInfo:
    """An evaluation task of every class of ``lab`` on all the evaluation data."""
    return EvaluationTaskInfo(index=index, name=name or lab.spec, labeling=lab.spec,
                              classes=list(range(lab.num_classes)), class_names=list(lab.names),
                              learned_at=learned_at, train_idx=_all(len(source.evaluation_split("train"))),
                              test_idx=_all(len(source.test)), shift=shift, shift_name=shift_name)


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


def class_incremental_stream(cfg, source: SourceData, seed: int) -> Scenario:
    """New classes per experience, one label space, task label 0."""
    return _class_split(cfg, source, seed, task_labels=False)


def task_incremental_stream(cfg, source: SourceData, seed: int) -> Scenario:
    """New classes per experience, the experience index as task label."""
    return _class_split(cfg, source, seed, task_labels=True)


def _class_split(cfg, source: SourceData, seed: int, task_labels: bool) -> Scenario:
    av = avalanche_benchmarks()
    lab = resolve_labeling(source, cfg.labeling or source.default_labeling, key="scenario.stream.labeling")
    order = _class_order(cfg, lab, seed)
    full = {s: experience_dataset(source.split(s).x, lab.on(s), torch.arange(len(source.split(s))), 0)
            for s in ("train", "test")}
    bm = av.class_incremental_benchmark(dict(full), class_order=order, num_experiences=cfg.experiences)
    if task_labels:
        bm = av.with_classes_timeline(av.task_incremental_benchmark(bm, reset_task_labels=True))
    per = len(order) // cfg.experiences
    infos, tasks = [], []
    for t, (tr, te) in enumerate(zip(bm.train_stream, bm.test_stream)):
        classes = sorted(order[t * per:(t + 1) * per])
        names = [lab.names[c] for c in classes]
        name = "classes " + ", ".join(names)
        infos.append(ExperienceInfo(
            index=t, name=name, labeling=lab.spec, classes=classes, class_names=names,
            task_label=t if task_labels else 0, train_idx=torch.as_tensor(list(tr.dataset.sample_idx)),
            test_idx=torch.as_tensor(list(te.dataset.sample_idx))))
        tasks.append(EvaluationTaskInfo(index=t, name=name, labeling=lab.spec, classes=classes, class_names=names,
                                        learned_at=t, train_idx=_where(lab.probe, classes),
                                        test_idx=_where(lab.test, classes)))
    return Scenario(config=None, source=source, stream_type=cfg.type, experiences=infos, labelings=[lab],
                    benchmark=bm, eval_tasks=tasks)


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


def domain_stream(cfg: DomainIncrementalStream, source: SourceData, seed: int) -> Scenario:
    av = avalanche_benchmarks()
    lab = resolve_labeling(source, cfg.labeling or source.default_labeling, key="scenario.stream.labeling")
    shifts = _domain_shifts(cfg, source, seed)
    idx = {s: torch.arange(len(source.split(s))) for s in ("train", "test")}
    data = {s: [experience_dataset(f(source.split(s).x), lab.on(s), idx[s], 0) for _, f in shifts]
            for s in ("train", "test")}
    bm = av.with_classes_timeline(av.benchmark_from_datasets(train=data["train"], test=data["test"]))
    classes = list(range(lab.num_classes))
    infos = [ExperienceInfo(index=t, name=name, labeling=lab.spec, classes=classes, class_names=list(lab.names),
                            task_label=0, train_idx=idx["train"], test_idx=idx["test"], shift=f, shift_name=name)
             for t, (name, f) in enumerate(shifts)]
    tasks = [_full_task(t, lab, source, t, name=name, shift=f, shift_name=name) for t, (name, f) in enumerate(shifts)]
    return Scenario(config=None, source=source, stream_type=cfg.type, experiences=infos, labelings=[lab],
                    benchmark=bm, eval_tasks=tasks)


def multilabel_stream(cfg: MultilabelStream, source: SourceData, seed: int) -> Scenario:
    av = avalanche_benchmarks()
    labs = [resolve_labeling(source, spec, key=f"scenario.stream.labelings[{k}]")
            for k, spec in enumerate(cfg.labelings)]
    idx = {s: torch.arange(len(source.split(s))) for s in ("train", "test")}
    data = {s: [experience_dataset(source.split(s).x, lab.on(s), idx[s], t) for t, lab in enumerate(labs)]
            for s in ("train", "test")}
    bm = av.with_classes_timeline(av.with_task_labels(av.benchmark_from_datasets(train=data["train"],
                                                                                test=data["test"])))
    infos = [ExperienceInfo(index=t, name=lab.spec, labeling=lab.spec, classes=list(range(lab.num_classes)),
                            class_names=list(lab.names), task_label=t, train_idx=idx["train"], test_idx=idx["test"])
             for t, lab in enumerate(labs)]
    tasks = [_full_task(t, lab, source, t) for t, lab in enumerate(labs)]
    return Scenario(config=None, source=source, stream_type=cfg.type, experiences=infos, labelings=labs,
                    benchmark=bm, eval_tasks=tasks)


def joint_stream(cfg: JointStream, source: SourceData, seed: int) -> Scenario:
    """``blocks`` identical experiences over the whole training split (task label 0, the first labeling's
    classes) and every labeling watched on the evaluation data."""
    av = avalanche_benchmarks()
    specs = cfg.labelings or source.labelings
    labs = [resolve_labeling(source, spec, key=f"scenario.stream.labelings[{k}]") for k, spec in enumerate(specs)]
    first = labs[0]
    idx = {s: torch.arange(len(source.split(s))) for s in ("train", "test")}
    train = [experience_dataset(source.train.x, first.train, idx["train"], 0) for _ in range(cfg.blocks)]
    test = [experience_dataset(source.test.x, first.test, idx["test"], 0) for _ in range(cfg.blocks)]
    bm = av.with_classes_timeline(av.with_task_labels(av.benchmark_from_datasets(train=train, test=test)))
    infos = [ExperienceInfo(index=b, name=f"block {b + 1} of {cfg.blocks}", labeling=first.spec,
                            classes=list(range(first.num_classes)), class_names=list(first.names), task_label=0,
                            train_idx=idx["train"], test_idx=idx["test"]) for b in range(cfg.blocks)]
    tasks = [_full_task(k, lab, source, None) for k, lab in enumerate(labs)]
    return Scenario(config=None, source=source, stream_type=cfg.type, experiences=infos, labelings=labs,
                    benchmark=bm, eval_tasks=tasks)


# --- the factor stream -------------------------------------------------------------------------------

def _allowed_values(cfg: FactorStream, labs: List[Labeling], k: int, rng: np.random.Generator) -> Dict[str, List[int]]:
    """Attribute -> the class ids experience k may show: all for the varying attribute k; for each other
    attribute one value (``one``), a random part (``subset``) or all (``none``)."""
    out = {}
    for j, lab in enumerate(labs):
        K = lab.num_classes
        if j == k or cfg.hold == "none":
            out[lab.spec] = list(range(K))
        elif cfg.hold == "one":
            out[lab.spec] = [int(rng.integers(K))]
        else:
            m = min(K - 1, max(1, int(math.floor(cfg.hold_fraction * K + 0.5))))
            out[lab.spec] = sorted(int(v) for v in rng.choice(K, size=m, replace=False))
    return out


def _factor_design(source: SourceData, allowed: Dict[str, List[int]], varying: str, n: int,
                   rng: np.random.Generator) -> Dict[str, torch.Tensor]:
    """n label vectors (every labeling of the source) drawn from the allowed cells: every cell
    floor(n / cells) times, the remainder spread evenly over the varying attribute's values, shuffled.
    Exactly balanced in the varying attribute (n must be a multiple of its number of values)."""
    names = source.labelings
    values = [allowed.get(name, list(range(source.num_classes(name)))) for name in names]
    grid = np.stack(np.meshgrid(*[np.asarray(v) for v in values], indexing="ij"), axis=-1).reshape(-1, len(names))
    cells = len(grid)
    vi = names.index(varying)
    rows = [np.repeat(grid, n // cells, axis=0)]
    extra = n - (n // cells) * cells
    if extra:
        K = len(values[vi])
        for v in values[vi]:
            same = np.flatnonzero(grid[:, vi] == v)
            rows.append(grid[rng.choice(same, size=extra // K, replace=False)])
    design = np.concatenate(rows)[rng.permutation(n)]
    return {name: torch.from_numpy(design[:, i].astype(np.int64)) for i, name in enumerate(names)}


def factor_stream(cfg: FactorStream, source: SourceData, seed: int) -> Scenario:
    av = avalanche_benchmarks()
    if cfg.hold == "none" and cfg.samples_per_experience not in (None, len(source.train)):
        raise DncsimError(f"scenario.stream.samples_per_experience: with hold: none every experience trains on the "
                          f"source's {len(source.train)} training samples; leave it unset")
    specs = cfg.attributes or source.labelings
    if len(specs) < 2:
        raise DncsimError(f"scenario.stream.attributes: a factor stream needs at least 2 attributes; source "
                          f"'{source.name}' has {', '.join(source.labelings)}")
    labs = []
    for i, spec in enumerate(specs):
        if ":" in spec:
            raise DncsimError(f"scenario.stream.attributes[{i}]: a factor stream varies plain labelings of the source "
                              f"('{spec.split(':')[0]}'), not derived ones ('{spec}')")
        labs.append(resolve_labeling(source, spec, key=f"scenario.stream.attributes[{i}]"))
    rng = np.random.default_rng(derived_seed(seed, "factor-hold"))
    n = cfg.samples_per_experience or len(source.train)
    infos, train_sets, test_sets = [], [], []
    test_idx = _all(len(source.test))
    for k, lab in enumerate(labs):
        allowed = _allowed_values(cfg, labs, k, rng)
        held = {o.spec: [o.names[v] for v in allowed[o.spec]] for o in labs if o.spec != lab.spec}
        design_rng = np.random.default_rng(derived_seed(seed, "factor-design", k))
        if cfg.hold == "none":                  # everything varies: the source's training data, every time
            pool, train_idx = None, _all(len(source.train))
            y = lab.train
        elif source.render is not None:
            if n % lab.num_classes:
                raise DncsimError(f"scenario.stream.samples_per_experience: {n} images cannot be split evenly over "
                                  f"the {lab.num_classes} values of '{lab.spec}' (use a multiple of "
                                  f"{math.lcm(*(o.num_classes for o in labs))})")
            labels = _factor_design(source, allowed, lab.spec, n, design_rng)
            pool = Split(source.render(labels, derived_seed(seed, "factor-render", k)), labels)
            train_idx, y = _all(n), labels[lab.spec]
        else:
            pool, train_idx = None, _select(cfg, source, labs, allowed, lab, k, design_rng)
            y = lab.train[train_idx]
        x = pool.x if pool is not None else source.train.x[train_idx]
        train_sets.append(experience_dataset(x, y, train_idx, k))
        test_sets.append(experience_dataset(source.test.x, lab.test, test_idx, k))
        infos.append(ExperienceInfo(index=k, name=lab.spec, labeling=lab.spec, classes=list(range(lab.num_classes)),
                                    class_names=list(lab.names), task_label=k, train_idx=train_idx, test_idx=test_idx,
                                    pool=pool, varying=lab.spec, held=held if cfg.hold != "none" else {}))
    bm = av.with_classes_timeline(av.with_task_labels(av.benchmark_from_datasets(train=train_sets, test=test_sets)))
    tasks = [_full_task(k, lab, source, k) for k, lab in enumerate(labs)]
    return Scenario(config=None, source=source, stream_type=cfg.type, experiences=infos, labelings=labs,
                    benchmark=bm, eval_tasks=tasks)


def _select(cfg: FactorStream, source: SourceData, labs: List[Labeling], allowed: Dict[str, List[int]],
            lab: Labeling, k: int, rng: np.random.Generator) -> torch.Tensor:
    """A source read from disk: the training samples whose held attributes take allowed values, cut to
    the same count for every value of the varying attribute (sorted indices into the train split)."""
    keep = torch.ones(len(source.train), dtype=torch.bool)
    for other in labs:
        if other.spec != lab.spec:
            keep &= torch.isin(other.train, torch.as_tensor(allowed[other.spec]))
    held = ", ".join(f"{o.spec}={'/'.join(o.names[v] for v in allowed[o.spec])}" for o in labs if o.spec != lab.spec)
    per_value = [(keep & (lab.train == v)).nonzero().flatten() for v in range(lab.num_classes)]
    counts = [len(p) for p in per_value]
    fewest = int(np.argmin(counts))
    if counts[fewest] < cfg.min_samples_per_class:
        raise DncsimError(f"scenario.stream: experience {k} (varying '{lab.spec}', holding {held or 'nothing'}) "
                          f"leaves {counts[fewest]} training samples of {lab.spec}={lab.names[fewest]} (at least "
                          f"{cfg.min_samples_per_class} needed: use hold: subset or none, or lower "
                          f"scenario.stream.min_samples_per_class)")
    m = counts[fewest]
    chosen = [p[torch.from_numpy(rng.permutation(len(p))[:m])] for p in per_value]
    return torch.cat(chosen).sort().values


# --- building ------------------------------------------------------------------------------------------

def _watch(sc: Scenario, watch: Sequence[str]) -> None:
    """Append a watched (never learned) evaluation task for every labeling spec in ``watch``."""
    known = {t.labeling for t in sc.eval_tasks if len(t.classes) == sc._labeling(t.labeling).num_classes
             and t.shift is None}
    for i, spec in enumerate(watch):
        lab = resolve_labeling(sc.source, spec, key=f"evaluation.watch[{i}]")
        if spec in known:
            raise DncsimError(f"evaluation.watch[{i}]: '{spec}' is already an evaluation task of the stream")
        if lab.spec not in {x.spec for x in sc.labelings}:
            sc.labelings.append(lab)
        sc.eval_tasks.append(_full_task(len(sc.eval_tasks), lab, sc.source, None, name=f"{spec} (watched)"))


def build_stream(config: ScenarioConfig, source: SourceData, *, watch: Sequence[str] = ()) -> Scenario:
    """The scenario of ``config.stream`` over ``source`` (plus watched labelings ``watch``); DncsimError
    naming the key when the stream does not fit the data (unknown labeling, indivisible class split,
    shift for the wrong inputs, too few samples for a factor experience)."""
    sc = STREAMS.builder(config.stream)(config.stream, source, config.seed)
    sc.config = config
    _watch(sc, watch)
    return sc
