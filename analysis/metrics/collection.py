"""A collection of metric objects measured together, row after row, with one checkpointable state."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from dncsim.analysis.geometry import ClassGeometry
from dncsim.analysis.metrics.base import EvaluationTask, Features, Metric, Row
from dncsim.common import DncsimError

__all__ = ["MetricCollection", "RowResult", "order_metrics"]


def order_metrics(metrics: Sequence[Metric]) -> List[Metric]:
    """``metrics`` in an order where every metric comes after the providers of what it ``needs``: stable
    (each step takes the earliest metric whose needs are met, so an order that already holds is kept).
    DncsimError when a need has no provider in ``metrics``, or the needs form a cycle."""
    provided = {key for m in metrics for key in m.provides}
    for m in metrics:
        missing = [key for key in m.needs if key not in provided]
        if missing:
            raise DncsimError(f"metric {m.name!r} needs {missing[0]!r} (row.products), which no metric of the "
                              f"collection provides; add its provider (a metric whose provides names it)")
    pending, ordered, have = list(metrics), [], set()
    while pending:
        ready = next((m for m in pending if set(m.needs) <= have), None)
        if ready is None:
            raise DncsimError("metrics need each other in a cycle: " + ", ".join(
                f"{m.name} needs {list(m.needs)}" for m in pending))
        pending.remove(ready)
        ordered.append(ready)
        have |= set(ready.provides)
    return ordered


@dataclass(frozen=True)
class RowResult:
    """What one evaluation row produced: ``rows`` (metrics-table rows) and ``geometries`` (task index ->
    ClassGeometry of that row, for the run directory's ``geometry/row_<r>.npz``)."""

    t: int
    rows: List[dict]
    geometries: Dict[int, ClassGeometry]


class MetricCollection:
    """Runs ``metrics`` over the ``tasks`` at every evaluation row (see ``analysis.metrics.base``), in their
    order except where a metric ``needs`` what a later one ``provides`` (:func:`order_metrics`).

    ``evaluate(t, features)`` measures row t (-1 before training) and returns a :class:`RowResult`;
    ``rows`` holds every table row so far and ``done`` the rows evaluated. ``state_dict()`` holds both
    plus every metric's declared state, keyed by metric name.
    """

    def __init__(self, metrics: Sequence[Metric], tasks: Sequence[EvaluationTask], *, ddof: int = 0,
                 geometry_split: str = "test", experiences: Optional[int] = None):
        names = [m.name for m in metrics]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"metric names must be unique in a collection; repeated: {dup}")
        self.metrics = order_metrics(metrics)
        self.tasks = list(tasks)
        self.ddof, self.geometry_split = ddof, geometry_split
        self.experiences = len(self.tasks) if experiences is None else int(experiences)
        self.rows: List[dict] = []
        self.done: List[int] = []

    @property
    def emits(self) -> List[str]:
        """Every metric name the collection writes, in order."""
        return [name for m in self.metrics for name in m.emits]

    @torch.no_grad()
    def evaluate(self, t: int, features: Features) -> RowResult:
        """Measure every metric at row ``t`` on ``features(task, split) -> (n, d)``."""
        row = Row(t, self.tasks, features, ddof=self.ddof, geometry_split=self.geometry_split,
                  experiences=self.experiences)
        rows: List[dict] = []
        for metric in self.metrics:
            rows += metric(row)
        for k in range(len(self.tasks)):       # every row's geometry file holds every task
            row.geometry(k)
        self.rows += rows
        self.done.append(int(t))
        return RowResult(t=int(t), rows=rows, geometries=row.geometries)

    def state_dict(self) -> dict:
        """The rows travel as one JSON string (``rows_json``, exactly ``json.dumps(rows)``; floats as
        ``repr``, so exactly), which costs one string per checkpoint rather than O(rows) Python callbacks.
        Each row is encoded once (the table only grows between checkpoints; a row object that is not the
        one encoded at its position is encoded again)."""
        cache = self.__dict__.setdefault("_row_json", [])
        keep = 0
        while keep < min(len(cache), len(self.rows)) and cache[keep][0] is self.rows[keep]:
            keep += 1
        cache[keep:] = [(r, json.dumps(r)) for r in self.rows[keep:]]
        return {"rows_json": "[" + ", ".join(text for _, text in cache) + "]", "done": list(self.done),
                "metrics": {m.name: m.state_dict() for m in self.metrics}}

    def load_state_dict(self, state: dict, device=None) -> None:
        """Restore :meth:`state_dict` output; each metric puts what it computed from features on ``device``
        (the run's; None: where the state lies)."""
        missing = sorted(set(m.name for m in self.metrics) - set(state["metrics"]))
        if missing:
            raise ValueError(f"evaluation state has no state for metric(s) {missing}")
        rows = json.loads(state["rows_json"]) if "rows_json" in state else list(state["rows"])
        self.rows, self.done = rows, list(state["done"])
        for m in self.metrics:
            m.load_state_dict(state["metrics"][m.name], device)
