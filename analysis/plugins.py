"""The evaluation after every experience, as an Avalanche plugin metric.

``StreamEvaluation`` measures, for every task k (seen or not) after every experience t -- and once
before training (t = -1) -- on features of the frozen backbone:

* probe accuracies (NCC and linear) under two protocols: ``refit`` (probe refit on the current
  features) and ``frozen`` (probe fit right after task k was learned, then kept), collected into
  accuracy matrices R[protocol, probe] of shape (T+1, T) (row 0 = before training);
* the task's geometry: directional CDNV, CDNV, their ratio, mean gap, axis drift since it was
  learned, few-shot NCC error and the Theorem 4.1 bound at the configured shot counts;
* for every pair of tasks: median / max |cos| between their decision axes, mean cos^2 against
  random directions, and the Prop. 4.2 check when both tasks label the same samples;
* forgetting, backward and forward transfer so far, and pairwise interference.

It is pure analysis: the model enters only through ``features(task, split) -> (n, d)``, supplied
by the simulator. Values reach Avalanche's loggers as MetricValues named
``dncsim/<metric>[/<probe>/<protocol>][/m<shots>]/Task<k>[/Task<b>]`` with x = t + 1; the same
values are kept as rows of the long-format metrics table (``analysis.names.TABLE_COLUMNS``).
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

from analysis import names as N
from analysis.bounds import ncc_error_bound
from analysis.fewshot import ncc_fewshot_error
from analysis.forgetting import backward_transfer, forgetting_last, forgetting_max, forward_transfer
from analysis.geometry import ClassGeometry, class_geometry
from analysis.orthogonality import axis_drift, orthogonality_summary
from analysis.probes import LinearProbe, NCCProbe, fit_linear, fit_ncc

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.evaluation import PluginMetric
    from avalanche.evaluation.metric_results import MetricValue

__all__ = ["TaskSpec", "EvaluationSettings", "StreamEvaluation"]

Features = Callable[[int, str], torch.Tensor]


@dataclass(frozen=True)
class TaskSpec:
    """One task of the stream: ``train_labels`` / ``test_labels`` (n,) int64 class ids of its splits;
    tasks with the same ``group`` label the same samples (Prop. 4.2 applies between them)."""

    index: int
    name: str
    train_labels: torch.Tensor
    test_labels: torch.Tensor
    group: str


@dataclass(frozen=True)
class EvaluationSettings:
    """What to measure; see ``simulator.config.EvaluationConfig`` and ``AnalysisConfig``."""

    probes: Sequence[str] = (N.NCC, N.LINEAR)
    protocols: Sequence[str] = (N.REFIT, N.FROZEN)
    linear_steps: int = 100
    linear_weight_decay: float = 1e-4
    max_train_samples: Optional[int] = None
    shots: Sequence[int] = (1, 5, 10, 20)
    ways: int = 2
    episodes: int = 100
    ddof: int = 0
    geometry_split: str = "test"
    seed: int = 0


def _probe_state(p) -> dict:
    return {k: v for k, v in p.__dict__.items()}


def _geometry_state(g: ClassGeometry) -> dict:
    return {k: v for k, v in g.__dict__.items() if v is not None}


def _geometry_from_state(s: dict) -> ClassGeometry:
    return ClassGeometry(**{"mean_axis_var": None, **s})


class StreamEvaluation(PluginMetric[float]):
    """Evaluation of every task after every experience; see the module docstring."""

    def __init__(self, tasks: Sequence[TaskSpec], features: Features, settings: EvaluationSettings):
        super().__init__()
        self.tasks = list(tasks)
        self.features = features
        self.s = settings
        T = len(self.tasks)
        self.R: Dict[str, torch.Tensor] = {f"{proto}/{probe}": torch.full((T + 1, T), float("nan"), dtype=torch.float64)
                                           for proto in settings.protocols for probe in settings.probes}
        self.frozen: Dict[str, object] = {}
        self.learned: Dict[int, ClassGeometry] = {}
        self.rows: List[dict] = []
        self.done: List[int] = []              # rows evaluated so far (experience indices, -1 first)
        self.pending_geometries: Dict[int, Dict[int, ClassGeometry]] = {}   # row -> task -> geometry, until written
        self._train_subsets: Dict[int, torch.Tensor] = {}

    # --- Avalanche plumbing ---------------------------------------------------------------------
    def reset(self) -> None:
        pass

    def result(self):
        return None

    def __str__(self):
        return "dncsim"

    def before_training(self, strategy) -> List[MetricValue]:
        if -1 not in self.done:
            return self._values(self.evaluate(-1), 0)
        return []

    def after_training_exp(self, strategy) -> List[MetricValue]:
        t = strategy.experience.current_experience
        return self._values(self.evaluate(t), t + 1)

    def _values(self, rows: List[dict], x: int) -> List[MetricValue]:
        out = []
        for r in rows:
            parts = [r["metric"]] + ([r["probe"], r["protocol"]] if r["probe"] else [])
            parts += [f"m{r['shots']}"] if r["shots"] is not None else []
            parts += [f"Task{r['task']:03d}"] if r["task"] is not None else ["Stream"]
            parts += [f"Task{r['task_b']:03d}"] if r["task_b"] is not None else []
            out.append(MetricValue(self, "dncsim/" + "/".join(parts), r["value"], x))
        return out

    # --- measurement ----------------------------------------------------------------------------
    def _row(self, t, metric, value, task=None, task_b=None, probe=None, protocol=None, shots=None) -> dict:
        return {"exp": t, "task": task, "task_name": None if task is None else self.tasks[task].name,
                "task_b": task_b, "metric": metric, "probe": probe, "protocol": protocol, "shots": shots,
                "value": float(value)}

    def _fit(self, probe: str, f: torch.Tensor, y: torch.Tensor):
        if probe == N.NCC:
            return fit_ncc(f, y)
        return fit_linear(f, y, steps=self.s.linear_steps, weight_decay=self.s.linear_weight_decay)

    def _train_subset(self, k: int, n: int) -> Optional[torch.Tensor]:
        if self.s.max_train_samples is None or n <= self.s.max_train_samples:
            return None
        if k not in self._train_subsets:
            g = torch.Generator().manual_seed(self.s.seed * 7919 + k)
            self._train_subsets[k] = torch.randperm(n, generator=g)[: self.s.max_train_samples].sort().values
        return self._train_subsets[k]

    def _probe_rows(self, t: int, k: int, ftr, fte) -> List[dict]:
        task = self.tasks[k]
        ytr, yte = task.train_labels, task.test_labels
        sub = self._train_subset(k, len(ytr))
        if sub is not None:
            ftr, ytr = ftr[sub], ytr[sub]
        rows = []
        for probe in self.s.probes:
            fitted = self._fit(probe, ftr, ytr)
            if t == k:
                self.frozen[f"{probe}/{k}"] = fitted
            for proto in self.s.protocols:
                p = fitted if proto == N.REFIT else self.frozen.get(f"{probe}/{k}")
                if p is None:
                    continue
                acc = p.score(fte, yte)
                self.R[f"{proto}/{probe}"][t + 1, k] = acc
                rows.append(self._row(t, N.ACC, acc, task=k, probe=probe, protocol=proto))
        return rows

    def _geometry_rows(self, t: int, k: int, f: torch.Tensor, y: torch.Tensor) -> List[dict]:
        g = class_geometry(f, y, ddof=self.s.ddof, mean_axis_var=True)
        self.pending_geometries.setdefault(t, {})[k] = g
        s = g.summary()
        rows = [self._row(t, N.DIR_CDNV, s["dir_cdnv"], task=k), self._row(t, N.CDNV, s["cdnv"], task=k),
                self._row(t, N.CDNV_RATIO, s["ratio"], task=k), self._row(t, N.MEAN_GAP, s["mean_gap"], task=k)]
        if t == k:
            self.learned[k] = g
        if t > k and k in self.learned:
            rows.append(self._row(t, N.AXIS_DRIFT, float(axis_drift(self.learned[k], g).mean()), task=k))
        feasible = [m for m in self.s.shots if m < int(g.counts.min())]
        if feasible:
            seed = self.s.seed * 1_000_003 + (t + 1) * 1009 + k
            fs = ncc_fewshot_error(f, y, shots=feasible, ways=min(self.s.ways, g.C), episodes=self.s.episodes, seed=seed)
            b = ncc_error_bound(g, feasible, classes=fs.classes, extrapolate=True)
            for i, m in enumerate(feasible):
                rows.append(self._row(t, N.FEWSHOT_ERR, fs.error[i], task=k, shots=m))
                if not bool(b.nonpositive_margin[i].any()):
                    rows.append(self._row(t, N.BOUND, b.value[i].mean(), task=k, shots=m))
            rows.append(self._row(t, N.BOUND_LIMIT, b.limit.mean(), task=k))
        return rows

    def _pair_rows(self, t: int, geoms: Dict[int, ClassGeometry]) -> List[dict]:
        rows = []
        for a, b in itertools.combinations(sorted(geoms), 2):
            same = self.tasks[a].group == self.tasks[b].group
            o = orthogonality_summary(geoms[a], geoms[b], seed=self.s.seed)
            rows += [self._row(t, N.AXIS_COS_MEDIAN, o["median_abs_cos"], task=a, task_b=b),
                     self._row(t, N.AXIS_COS_MAX, o["max_abs_cos"], task=a, task_b=b),
                     self._row(t, N.AXIS_COS2_VS_RANDOM, o["cos2_vs_random"], task=a, task_b=b)]
            if same:
                rows.append(self._row(t, N.PROP42_FRAC, o["frac_under_bound"], task=a, task_b=b))
        return rows

    def _matrix_rows(self, t: int) -> List[dict]:
        rows = []
        if t < 0:
            return rows
        for key, R in self.R.items():
            proto, probe = key.split("/")
            for metric, values in ((N.FORGETTING_MAX, forgetting_max(R, t)), (N.FORGETTING_LAST, forgetting_last(R, t))):
                for k, v in enumerate(values.tolist()):
                    if v == v:                                   # skip NaN: not yet learned
                        rows.append(self._row(t, metric, v, task=k, probe=probe, protocol=proto))
            if t > 0:
                rows.append(self._row(t, N.BWT, backward_transfer(R, t), probe=probe, protocol=proto))
            if proto == N.REFIT and t + 1 < R.shape[1]:
                fwt = forward_transfer(R, t + 1)[t + 1]         # the next task, just before it is learned
                if fwt == fwt:
                    rows.append(self._row(t, N.FWT, fwt, task=t + 1, probe=probe, protocol=proto))
            if proto == N.FROZEN and t > 0:
                before, after = R[t], R[t + 1]                   # rows around experience t
                for a in range(t):
                    drop = float(before[a] - after[a])
                    if drop == drop:
                        rows.append(self._row(t, N.INTERFERENCE, drop, task=a, task_b=t, probe=probe, protocol=proto))
        return rows

    @torch.no_grad()
    def evaluate(self, t: int) -> List[dict]:
        """Measure everything for row t (the experience just trained; -1 before training); returns the
        new metrics-table rows (also appended to ``self.rows``)."""
        rows: List[dict] = []
        if hasattr(self.features, "clear"):
            self.features.clear()                  # features of the previous row are stale
        for k, task in enumerate(self.tasks):
            ftr, fte = self.features(k, "train"), self.features(k, "test")
            rows += self._probe_rows(t, k, ftr, fte)
            geo_f, geo_y = (fte, task.test_labels) if self.s.geometry_split == "test" else (ftr, task.train_labels)
            rows += self._geometry_rows(t, k, geo_f, geo_y)
        rows += self._pair_rows(t, self.pending_geometries[t])
        rows += self._matrix_rows(t)
        self.rows += rows
        self.done.append(t)
        return rows

    # --- checkpointing (plain tensors and containers: loads with torch.load(weights_only=True)) ---
    def state_dict(self) -> dict:
        return {"R": dict(self.R), "rows": list(self.rows), "done": list(self.done),
                "frozen": {k: {"kind": N.NCC if isinstance(p, NCCProbe) else N.LINEAR, **_probe_state(p)}
                           for k, p in self.frozen.items()},
                "learned": {k: _geometry_state(g) for k, g in self.learned.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.R = {k: v.clone() for k, v in state["R"].items()}
        self.rows, self.done = list(state["rows"]), list(state["done"])
        self.frozen = {}
        for k, p in state["frozen"].items():
            fields = {f: v for f, v in p.items() if f != "kind"}
            self.frozen[k] = NCCProbe(**fields) if p["kind"] == N.NCC else LinearProbe(**fields)
        self.learned = {int(k): _geometry_from_state(g) for k, g in state["learned"].items()}
