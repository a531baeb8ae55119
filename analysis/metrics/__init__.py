"""Evaluation as small metric objects (torchmetrics style), run together by a MetricCollection.

``DEFAULT_METRICS``: the metric classes every run measures, in order (a metric reads what another
publishes in ``row.products`` by declaring ``needs``; the collection measures the providers first).
:func:`build_collection` builds them from ``evaluation:`` and ``analysis:``.
Names are imported on first use, so validating a config loads no torch. Register a metric by adding
its class to ``_WHERE`` and its name to ``_DEFAULT_METRICS``.
"""
from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dncsim.analysis.metrics.collection import MetricCollection
    from dncsim.analysis.metrics.settings import AnalysisConfig, EvaluationConfig

__all__ = ["DEFAULT_METRICS", "build_collection", "EvaluationTask", "Metric", "Row", "MetricCollection",
           "RowResult", "EvaluationConfig", "AnalysisConfig", "ProbeAccuracy", "TaskGeometry", "AxisDrift",
           "FewShotBound", "AxisOrthogonality", "ForgettingTransfer", "TaskLearned", "SeenClassesAccuracy",
           "AxisOverlapPre"]

_WHERE = {
    "EvaluationTask": "dncsim.analysis.metrics.base",
    "Metric": "dncsim.analysis.metrics.base",
    "Row": "dncsim.analysis.metrics.base",
    "MetricCollection": "dncsim.analysis.metrics.collection",
    "RowResult": "dncsim.analysis.metrics.collection",
    "EvaluationConfig": "dncsim.analysis.metrics.settings",
    "AnalysisConfig": "dncsim.analysis.metrics.settings",
    "ProbeAccuracy": "dncsim.analysis.metrics.probe_accuracy",
    "TaskLearned": "dncsim.analysis.metrics.task_learned",
    "SeenClassesAccuracy": "dncsim.analysis.metrics.seen_classes",
    "TaskGeometry": "dncsim.analysis.metrics.task_geometry",
    "AxisDrift": "dncsim.analysis.metrics.axis_drift",
    "FewShotBound": "dncsim.analysis.metrics.fewshot_bound",
    "AxisOrthogonality": "dncsim.analysis.metrics.axis_orthogonality",
    "ForgettingTransfer": "dncsim.analysis.metrics.forgetting_transfer",
    "AxisOverlapPre": "dncsim.analysis.metrics.axis_overlap_pre",
}

#: The metrics of every run, in the order they are measured (``DEFAULT_METRICS`` is the tuple of
#: these classes).
_DEFAULT_METRICS = ("ProbeAccuracy", "TaskLearned", "SeenClassesAccuracy", "TaskGeometry", "AxisDrift",
                    "FewShotBound", "AxisOrthogonality", "ForgettingTransfer", "AxisOverlapPre")


def __getattr__(name: str):
    if name == "DEFAULT_METRICS":
        value = tuple(__getattr__(n) for n in _DEFAULT_METRICS)
    elif name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
    else:
        raise AttributeError(f"module 'dncsim.analysis.metrics' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)


def build_collection(tasks, evaluation: EvaluationConfig, analysis: AnalysisConfig, seed: int,
                     metrics=None, *, experiences=None) -> MetricCollection:
    """The collection of ``metrics`` (classes; default ``DEFAULT_METRICS`` as it is when called) for
    ``tasks`` over a stream of ``experiences`` training experiences (default: one per task), configured
    by a run's sections and seed."""
    from dncsim.analysis.metrics.collection import MetricCollection

    metrics = sys.modules[__name__].DEFAULT_METRICS if metrics is None else metrics
    return MetricCollection([cls.from_config(evaluation, analysis, seed) for cls in metrics], tasks,
                            ddof=analysis.ddof, geometry_split=analysis.split, experiences=experiences)
