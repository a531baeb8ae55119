"""Metric objects, the torchmetrics way: declared state, one update per evaluation row, plain-tensor state.

A :class:`Row` (``t`` = experience just trained, -1 before training) carries the tasks, their features
(``row.features(k, split)``), shared class geometry and ``products`` published by earlier metrics.

Writing a metric: subclass :class:`Metric`, set ``name`` and ``emits`` (and ``needs``/``provides`` for
``row.products`` it reads/publishes), declare state with
``add_state``, implement ``update(row)`` calling ``self.measure(...)``; then register it in
``analysis/metrics/__init__.py``.
"""
from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch

from dncsim.analysis.geometry import ClassGeometry, class_geometry, class_geometry_tasks
from dncsim.common import DncsimError
from dncsim.analysis.names import ProbeKey, table_row
from dncsim.analysis.probes import LinearProbe, NCCProbe, probe_from_arrays

__all__ = ["EvaluationTask", "Row", "Metric", "pack_state", "unpack_state"]

Features = Callable[[int, str], torch.Tensor]

#: a batch's plug-in geometry is computed in one pass while N x tasks x classes stays below this
_BATCHED_GEOMETRY_ELEMENTS = 1 << 24


def _geometry_or_error(f: torch.Tensor, y: torch.Tensor, ddof: int):
    try:
        return class_geometry(f, y, ddof=ddof, mean_axis_var=True)
    except DncsimError as err:
        return err


@dataclass(frozen=True)
class EvaluationTask:
    """A labeling probed after every experience.

    ``train_labels`` / ``test_labels`` (n,) int64: class ids of its probe-train and probe-test samples;
    tasks with the same ``group`` label the same samples (Prop. 4.2 applies between them);
    ``learned_at``: the experience at whose end the task counts as learned (its frozen probe is fit and
    its geometry "when learned" taken), or None for a task that is only watched; ``labeling`` and
    ``classes``: which labeling's classes the task covers (tasks of one labeling with disjoint classes
    are the parts of a class-incremental stream).
    """

    index: int
    name: str
    train_labels: torch.Tensor
    test_labels: torch.Tensor
    group: str
    learned_at: Optional[int]
    labeling: str = ""
    classes: Tuple[int, ...] = ()

    @property
    def chance(self) -> float:
        """Accuracy of always answering the most frequent class of the probe-test split (1/C when balanced)."""
        counts = torch.bincount(self.test_labels)
        return float(counts.max()) / float(counts.sum())


class Row:
    """The inputs of one evaluation row, and products shared between the metrics that measure it.

    ``t``: the experience just trained (-1 before training); ``experiences``: how many the stream has.
    ``features(k, split)`` -> (n, d) backbone features of task k's ``split`` ("train" = probe-train,
    "test" = probe-test); ``geometry(k)`` -> the task's :class:`ClassGeometry` on the ``split`` the
    analysis is configured for, with ``ddof`` (computed at most once per row); ``products``: values a
    metric publishes for later metrics of the same collection.
    """

    def __init__(self, t: int, tasks: Sequence[EvaluationTask], features: Features, *, ddof: int = 0,
                 geometry_split: str = "test", experiences: Optional[int] = None):
        self.t = int(t)
        self.tasks = list(tasks)
        #: number of training experiences of the stream (the accuracy matrices have experiences + 1 rows)
        self.experiences = len(self.tasks) if experiences is None else int(experiences)
        self._features = features
        self.ddof, self.geometry_split = ddof, geometry_split
        self._geometry: Dict[int, object] = {}
        self._batches: Dict[tuple, list] = {}
        self.products: Dict[str, object] = {}

    def features(self, k: int, split: str) -> torch.Tensor:
        return self._features(k, split)

    def batches(self, split: str) -> List[Tuple[List[int], torch.Tensor]]:
        """The tasks grouped by identical ``split`` features: [(task indices, features (n, d))], each group
        measured together by the batched functions (``analysis.task_batch``); groups in order of their first
        task. Tasks of one evaluation group share their samples, so there is usually one batch per group."""
        key = ("batches", split)
        if key not in self._batches:
            groups: List[Tuple[List[int], torch.Tensor]] = []
            buckets: Dict[tuple, List[int]] = {}
            for k in range(len(self.tasks)):
                f = self.features(k, split)
                tag = (tuple(f.shape), f.dtype, float(f.double().sum()) if f.numel() else 0.0)
                for g in buckets.get(tag, []):
                    if torch.equal(groups[g][1], f):
                        groups[g][0].append(k)
                        break
                else:
                    buckets.setdefault(tag, []).append(len(groups))
                    groups.append(([k], f))
            self._batches[key] = groups
        return self._batches[key]

    def batch_labels(self, ks: Sequence[int], split: str) -> torch.Tensor:
        """(len(ks), n) labels of tasks ``ks`` on ``split`` (the label matrix of a batch)."""
        return torch.stack([self.tasks[k].test_labels if split == "test" else self.tasks[k].train_labels
                            for k in ks])

    def geometry_data(self, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(features (n, d), labels (n,)) of task k on the geometry split."""
        task = self.tasks[k]
        labels = task.test_labels if self.geometry_split == "test" else task.train_labels
        return self.features(k, self.geometry_split), labels

    def learned_here(self) -> Optional[int]:
        """The task learned at this row's experience (the first one, when several), or None."""
        return next((k for k, task in enumerate(self.tasks) if task.learned_at == self.t), None)

    def geometry(self, k: int) -> ClassGeometry:
        """Task k's plug-in geometry on the geometry split (its whole batch is computed at the first call)."""
        if k not in self._geometry:
            for ks, f in self.batches(self.geometry_split):
                if k in ks:
                    labels = self.batch_labels(ks, self.geometry_split)
                    C = int(labels.max()) + 1
                    if f.shape[0] * len(ks) * C <= _BATCHED_GEOMETRY_ELEMENTS:
                        results = class_geometry_tasks(f, labels, ddof=self.ddof, mean_axis_var=True)
                    else:                       # many classes: (N, T, C) temporaries would be too large
                        results = [_geometry_or_error(f[y >= 0], y[y >= 0], self.ddof) for y in labels]
                    self._geometry.update(zip(ks, results))
                    break
        result = self._geometry[k]
        if isinstance(result, Exception):
            raise result
        return result

    @property
    def geometries(self) -> Dict[int, ClassGeometry]:
        """The geometries computed for this row so far, by task index."""
        return {k: g for k, g in sorted(self._geometry.items()) if not isinstance(g, Exception)}


# --- state as plain data (loads with torch.load(weights_only=True)) ----------------------------------

def pack_state(value):
    """``value`` as plain tensors, numbers, strings, lists and dicts; ClassGeometry and probes become
    tagged dicts of tensors (:func:`unpack_state` restores them)."""
    if isinstance(value, ClassGeometry):
        return {"__type__": "ClassGeometry", "arrays": value.to_arrays()}
    if isinstance(value, (NCCProbe, LinearProbe)):
        return {"__type__": "probe", "arrays": value.to_arrays()}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: pack_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [pack_state(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"metric state of type {type(value).__name__} cannot be checkpointed")


def _on(arrays: dict, device) -> dict:
    if device is None or torch.device(device).type == "cpu":
        return arrays
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in arrays.items()}


def unpack_state(value, device=None):
    """The inverse of :func:`pack_state`. The ClassGeometry and probes (computed from features, which live on
    the run's device) are rebuilt on ``device`` (None: where the state lies); everything else stays there."""
    if isinstance(value, dict):
        kind = value.get("__type__")
        if kind == "ClassGeometry":
            return ClassGeometry.from_arrays(_on(value["arrays"], device))
        if kind == "probe":
            return probe_from_arrays(_on(value["arrays"], device))
        return {k: unpack_state(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [unpack_state(v, device) for v in value]
    if isinstance(value, torch.Tensor):
        return value.clone()
    return value


class Metric(abc.ABC):
    """A measurement taken at every evaluation row (see the module docstring).

    Class attributes: ``name`` (unique in a collection; the key of its checkpointed state), ``emits``
    (the metric names of the table rows it writes), ``provides`` (the ``row.products`` keys it publishes)
    and ``needs`` (the ``row.products`` keys it reads; the collection measures their providers first).
    """

    name: ClassVar[str]
    emits: ClassVar[Tuple[str, ...]] = ()
    needs: ClassVar[Tuple[str, ...]] = ()
    provides: ClassVar[Tuple[str, ...]] = ()

    def __init__(self):
        self._defaults: Dict[str, object] = {}
        self._latest: List[dict] = []

    @classmethod
    def from_config(cls, evaluation, analysis, seed: int) -> "Metric":
        """The metric for a run's ``evaluation:`` and ``analysis:`` sections and seed (default: no settings)."""
        return cls()

    def add_state(self, name: str, default) -> None:
        """Declare ``name`` as state: set to a copy of ``default`` now and on :meth:`reset`, and saved by
        :meth:`state_dict`."""
        self._defaults[name] = default
        setattr(self, name, copy.deepcopy(default))

    def reset(self) -> None:
        """Every declared state back to its default."""
        for name, default in self._defaults.items():
            setattr(self, name, copy.deepcopy(default))

    def measure(self, row: Row, metric: str, value, *, task: Optional[int] = None, task_b: Optional[int] = None,
                key: Optional[ProbeKey] = None, shots: Optional[int] = None) -> None:
        """Record one measurement of ``row`` (a metrics-table row; ``metric`` must be in ``emits``)."""
        if metric not in self.emits:
            raise ValueError(f"metric {self.name!r} does not declare {metric!r} in emits")
        name = None if task is None else row.tasks[task].name
        self._latest.append(table_row(row.t, metric, value, task=task, task_name=name, task_b=task_b, key=key,
                                      shots=shots))

    def __call__(self, row: Row) -> List[dict]:
        """``update(row)`` then ``compute()``: the measurements of this row."""
        self._latest = []
        self.update(row)
        return self.compute()

    @abc.abstractmethod
    def update(self, row: Row) -> None:
        """Measure ``row``: update the declared state and :meth:`measure` this row's values."""

    def compute(self) -> List[dict]:
        """The table rows measured by the latest :meth:`update`."""
        return list(self._latest)

    def state_dict(self) -> dict:
        """The declared state as plain data (tensors on the CPU)."""
        return {name: pack_state(getattr(self, name)) for name in self._defaults}

    def load_state_dict(self, state: dict, device=None) -> None:
        """Restore :meth:`state_dict` output (what was computed from features onto ``device``, see
        :func:`unpack_state`); a missing or unexpected entry is an error."""
        if set(state) != set(self._defaults):
            raise ValueError(f"metric {self.name!r}: state has {sorted(state)}, expected {sorted(self._defaults)}")
        for name, value in state.items():
            setattr(self, name, unpack_state(value, device))
