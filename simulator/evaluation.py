"""The thin Avalanche adapter of the analysis's metric collection.

The measurements themselves are ``dncsim.analysis.metrics`` (pure: tensors in, table rows out).
This module supplies what they need from a run -- the evaluation tasks of a scenario and backbone
features of their samples -- and turns the collection into an Avalanche plugin metric, evaluated
once before training and after every training experience. Values reach Avalanche's loggers as
MetricValues named ``dncsim/<metric>[/<probe>/<protocol>][/m<shots>]/Task<k>[/Task<b>]`` with
x = t + 1 (the row index).
"""
from __future__ import annotations

import hashlib
import warnings
from typing import Dict, List

import torch

from dncsim.analysis.metrics import EvaluationTask, MetricCollection, RowResult
from dncsim.scenarios import Scenario
from dncsim.simulator.devices import on_device

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.evaluation import PluginMetric
    from avalanche.evaluation.metric_results import MetricValue

__all__ = ["FeatureExtractor", "evaluation_tasks", "AvalancheEvaluation", "metric_value_name"]


class FeatureExtractor:
    """``features(task, split)``: ``model.backbone``'s features (n, d) of a task's probe-train (``train``) or probe-test
    (``test``) samples, current weights, float32 (no autocast); unit L2 norm when ``normalize`` is ``"l2"``.

    Tasks without a domain shift share one feature computation per row and split; shifted tasks get
    their own. ``clear()`` drops the cache (at the start of every row).
    """

    def __init__(self, sc: Scenario, model: torch.nn.Module, device: torch.device, batch_size: int,
                 normalize: str = "none"):
        self.model, self.sc, self.device, self.batch_size = model, sc, torch.device(device), batch_size
        self.normalize = normalize
        self._cache: Dict[tuple, torch.Tensor] = {}
        self._inputs: Dict[tuple, torch.Tensor] = {}       # the device's copies of the evaluation inputs

    def clear(self) -> None:
        self._cache = {}

    def _on_device(self, key: tuple, make) -> torch.Tensor:
        """The inputs ``make()`` gives, on the device: kept for the run there (they never change), left as they
        are on the CPU (no copy to save there)."""
        if self.device.type == "cpu":
            return make()
        if key not in self._inputs:
            self._inputs[key] = on_device(make(), self.device)
        return self._inputs[key]

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                f = torch.cat([self.model.backbone(x[i:i + self.batch_size].to(self.device))
                               for i in range(0, len(x), self.batch_size)])
        finally:
            self.model.train(was_training)
        bad = ~torch.isfinite(f).all(dim=1)
        if bool(bad.any()):
            from dncsim.simulator.guard import TrainingDiverged
            raise TrainingDiverged(f"training diverged: the backbone's features of {int(bad.sum())} of {len(f)} "
                                   "evaluation samples are not finite (try a lower training.lr); the last checkpoint "
                                   "is kept", {"stage": "evaluation", "rows": int(bad.sum())})
        if self.normalize == "l2":
            f = torch.nn.functional.normalize(f, dim=1)
        return f

    def __call__(self, task: int, split: str) -> torch.Tensor:
        t = self.sc.eval_tasks[task]
        idx = t.train_idx if split == "train" else t.test_idx
        if t.shift is None:
            key = ("evaluation", split)
            if key not in self._cache:
                self._cache[key] = self._embed(self._on_device(key, lambda: self.sc.source.evaluation_split(split).x))
            return self._cache[key][idx.to(self._cache[key].device)]
        key = (task, split)
        if key not in self._cache:
            self._cache[key] = self._embed(self._on_device(key, lambda: self.sc.evaluation_data(task, split)[0]))
        return self._cache[key]


def evaluation_tasks(sc: Scenario) -> List[EvaluationTask]:
    """The analysis's view of the scenario's evaluation tasks (labels of their probe-train and
    probe-test samples, when each is learned); tasks measured on the same probe-test samples (same
    shift, same indices) share a ``group``."""
    tasks = []
    for k, t in enumerate(sc.eval_tasks):
        digest = hashlib.sha1(t.test_idx.numpy().tobytes()).hexdigest()[:12]
        tasks.append(EvaluationTask(index=k, name=t.name, train_labels=sc.evaluation_labels(k, "train"),
                                    test_labels=sc.evaluation_labels(k, "test"),
                                    group=f"{t.shift_name or 'none'}:{digest}", learned_at=t.learned_at,
                                    labeling=t.labeling, classes=tuple(t.classes)))
    return tasks


def metric_value_name(row: dict) -> str:
    """The logger name of a metrics-table row: ``dncsim/<metric>[/<probe>/<protocol>][/m<shots>]/Task<k>...``."""
    parts = [row["metric"]] + ([row["probe"], row["protocol"]] if row["probe"] else [])
    parts += [f"m{row['shots']}"] if row["shots"] is not None else []
    parts += [f"Task{row['task']:03d}"] if row["task"] is not None else ["Stream"]
    parts += [f"Task{row['task_b']:03d}"] if row["task_b"] is not None else []
    return "dncsim/" + "/".join(parts)


class AvalancheEvaluation(PluginMetric[float]):
    """The collection as an Avalanche plugin metric: evaluates row -1 before the first training
    experience and row t after training experience t. Results wait in ``pending`` until the run
    writes them (:meth:`drain`)."""

    def __init__(self, collection: MetricCollection, features: FeatureExtractor):
        super().__init__()
        self.collection, self.features = collection, features
        self.pending: List[RowResult] = []

    def reset(self) -> None:
        pass

    def result(self):
        return None

    def __str__(self):
        return "dncsim"

    def _evaluate(self, t: int) -> List[MetricValue]:
        self.features.clear()                       # the previous row's features are stale
        result = self.collection.evaluate(t, self.features)
        self.pending.append(result)
        return [MetricValue(self, metric_value_name(r), r["value"], t + 1) for r in result.rows]

    def before_training(self, strategy) -> List[MetricValue]:
        return self._evaluate(-1) if -1 not in self.collection.done else []

    def after_training_exp(self, strategy) -> List[MetricValue]:
        return self._evaluate(strategy.experience.current_experience)

    def drain(self) -> List[RowResult]:
        """The row results not yet written, oldest first (and forget them)."""
        out, self.pending = self.pending, []
        return out
