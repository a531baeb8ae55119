"""Evaluation as small metric objects (torchmetrics style), run together by a MetricCollection.

``DEFAULT_METRICS`` is the registration: the metric classes every run measures, in order (a metric
may read what an earlier one published, as ``forgetting_transfer`` reads ``probe_accuracy``'s
matrices). :func:`build_collection` instantiates them from a run's ``evaluation:`` and ``analysis:``
sections. Pure analysis: tensors in, table rows out; the simulator adapts it to Avalanche.
"""
from dncsim.analysis.metrics.axis_drift import AxisDrift
from dncsim.analysis.metrics.axis_orthogonality import AxisOrthogonality
from dncsim.analysis.metrics.base import EvaluationTask, Metric, Row
from dncsim.analysis.metrics.collection import MetricCollection, RowResult
from dncsim.analysis.metrics.fewshot_bound import FewShotBound
from dncsim.analysis.metrics.forgetting_transfer import ForgettingTransfer
from dncsim.analysis.metrics.probe_accuracy import ProbeAccuracy
from dncsim.analysis.metrics.seen_classes import SeenClassesAccuracy
from dncsim.analysis.metrics.settings import AnalysisConfig, EvaluationConfig
from dncsim.analysis.metrics.task_geometry import TaskGeometry
from dncsim.analysis.metrics.task_learned import TaskLearned

__all__ = ["DEFAULT_METRICS", "build_collection", "EvaluationTask", "Metric", "Row", "MetricCollection",
           "RowResult", "EvaluationConfig", "AnalysisConfig", "ProbeAccuracy", "TaskGeometry", "AxisDrift",
           "FewShotBound", "AxisOrthogonality", "ForgettingTransfer", "TaskLearned", "SeenClassesAccuracy"]

#: The metrics of every run, in the order they are measured.
DEFAULT_METRICS = (ProbeAccuracy, TaskLearned, SeenClassesAccuracy, TaskGeometry, AxisDrift, FewShotBound,
                   AxisOrthogonality, ForgettingTransfer)


def build_collection(tasks, evaluation: EvaluationConfig, analysis: AnalysisConfig, seed: int,
                     metrics=None, *, experiences=None) -> MetricCollection:
    """The collection of ``metrics`` (classes; default ``DEFAULT_METRICS`` as it is when called) for
    ``tasks`` over a stream of ``experiences`` training experiences (default: one per task), configured
    by a run's sections and seed."""
    metrics = DEFAULT_METRICS if metrics is None else metrics
    return MetricCollection([cls.from_config(evaluation, analysis, seed) for cls in metrics], tasks,
                            ddof=analysis.ddof, geometry_split=analysis.split, experiences=experiences)
