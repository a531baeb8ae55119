"""Extending dncsim touches only the new piece: a per-task metric registered in DEFAULT_METRICS reaches
the metrics table, the report's summary and the study tables; a stateful strategy plugin survives an
interrupted run and its resume, with no change to the run code."""
import json

import numpy as np
import pytest
import torch
import yaml

import dncsim.analysis.metrics as metrics
from dncsim.simulator.template import SupervisedPlugin  # Avalanche's plugin base, imported quietly
from dncsim.analysis.aggregate import task_rows
from dncsim.analysis.metrics import Metric
from dncsim.analysis.report import build_report
from dncsim.rundir import load_run
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.run import run

BASE = yaml.safe_load("""
seed: 2
scenario:
  source: {name: shapes, image_size: 16, train_repeats: 1, test_repeats: 2}
  stream: {type: multilabel, labelings: [shape, color, style]}
backbone: {name: convnet, width: 8, feature_dim: 16}
objective: {name: supervised}
training: {epochs: 1, batch_size: 48}
evaluation: {linear_steps: 10}
analysis: {shots: [1, 5], episodes: 10}
output: {report: false, tensorboard: false}
""")


class FeatureNorm(Metric):
    """A new per-task scalar: the mean squared norm of the task's features on the geometry split."""

    name = "feature_norm"
    emits = ("feature_norm",)

    def update(self, row):
        for k in range(len(row.tasks)):
            f, _ = row.geometry_data(k)
            self.measure(row, "feature_norm", float(f.double().square().sum(1).mean()), task=k)


def test_a_registered_per_task_metric_appears_everywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "DEFAULT_METRICS", metrics.DEFAULT_METRICS + (FeatureNorm,))
    out = run(run_from_mapping(BASE), tmp_path / "run", quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    mine = {(r["exp"], r["task"]): r["value"] for r in rows if r["metric"] == "feature_norm"}
    assert sorted(mine) == [(e, k) for e in range(-1, 3) for k in range(3)]
    summary = json.loads((build_report(out) / "summary.json").read_text())
    assert "feature_norm" in summary["task_scalars"]
    for k, task in enumerate(summary["tasks"]):
        assert (task["feature_norm_init"], task["feature_norm_learned"], task["feature_norm_final"]) == \
            (mine[(-1, k)], mine[(k, k)], mine[(2, k)])
    html = (out / "report" / "index.html").read_text()
    assert '<td class="text">feature_norm</td>' in html          # a row of the per-task measurements view
    header = (out / "report" / "measurements.csv").read_text().splitlines()[0].split(",")
    assert {"feature_norm_init", "feature_norm_learned", "feature_norm_final"} <= set(header)
    table = task_rows(load_run(out), {"seed": 2})
    assert [r["feature_norm_learned"] for r in table] == [mine[(k, k)] for k in range(3)]
    assert [r["feature_norm_final"] for r in table] == [mine[(2, k)] for k in range(3)]
    # the linear probe's solves, in the same table: the learned row's flag and the count at the budget
    conv = {(r["exp"], r["task"]): r["value"] for r in rows if r["metric"] == "probe_converged"}
    assert sorted(conv) == sorted(mine)
    assert [r["probe_converged_learned"] for r in table] == [conv[(k, k)] for k in range(3)]
    assert [r["probe_at_budget"] for r in table] == [sum(conv[(e, k)] == 0 for e in range(-1, 3)) for k in range(3)]


class Interrupt(RuntimeError):
    pass


class BatchLedger(SupervisedPlugin):
    """A toy stateful strategy plugin: per experience, the number of training batches and the sum of
    their first pixels (so it depends on the shuffling), kept as tensors. ``fail_at`` interrupts the
    run when that experience starts."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.fail_at = fail_at
        self.batches, self.pixels = [], []

    def before_training_exp(self, strategy, **kwargs):
        if strategy.experience.current_experience == self.fail_at:
            raise Interrupt("simulated kill")
        self.batches.append(torch.zeros((), dtype=torch.int64))
        self.pixels.append(torch.zeros((), dtype=torch.float64))

    def after_training_iteration(self, strategy, **kwargs):
        self.batches[-1] += 1
        self.pixels[-1] += strategy.mb_x[:, 0, 0, 0].double().sum()

    def state_dict(self):
        return {"batches": list(self.batches), "pixels": list(self.pixels)}

    def load_state_dict(self, state, strategy):
        self.batches, self.pixels = list(state["batches"]), list(state["pixels"])


def test_a_stateful_plugin_survives_interrupt_and_resume(tmp_path):
    cfg = run_from_mapping({**BASE, "strategy": {"name": "replay", "mem_size": 60}})
    whole = BatchLedger()
    run(cfg, tmp_path / "whole", quiet=True, plugins=[whole])
    with pytest.raises(Interrupt):
        run(cfg, tmp_path / "cut", quiet=True, plugins=[BatchLedger(fail_at=1)])
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["experiences_done"] == 1
    resumed = BatchLedger()
    run(cfg, tmp_path / "cut", quiet=True, plugins=[resumed])
    assert [int(b) for b in resumed.batches] == [int(b) for b in whole.batches] and len(whole.batches) == 3
    assert [float(p) for p in resumed.pixels] == [float(p) for p in whole.pixels]
    for name in ("metrics.csv", "metrics.jsonl", "accuracy.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert [p["class"] for p in ck["plugins"]] == ["TensorReplay", "BatchLedger"]
    for a, b in zip(sorted((tmp_path / "cut" / "geometry").glob("*.npz")),
                    sorted((tmp_path / "whole" / "geometry").glob("*.npz"))):
        with np.load(a) as za, np.load(b) as zb:
            assert za.files == zb.files and all(np.array_equal(za[f], zb[f], equal_nan=True) for f in za.files)


# --- a stateful strategy: one module (its config, builder and plugin) and one registration line ----------

from typing import ClassVar, Literal  # noqa: E402 - this block's imports, kept with it

from dncsim.common import DncsimError, StrictModel  # noqa: E402
from dncsim.simulator.registry import STRATEGIES_REGISTRY  # noqa: E402
from dncsim.simulator.strategies import StrategyParts  # noqa: E402


class AnchorConfig(StrictModel):
    """A toy strategy ``l2_anchor``: strength/2 x |theta - theta_prev|^2 on the backbone after the first
    experience (theta_prev: the weights at the end of the previous one)."""

    name: Literal["l2_anchor"] = "l2_anchor"
    builder: ClassVar[str] = f"{__name__}:build_l2_anchor"
    strength: float = 50.0


class L2Anchor(SupervisedPlugin):
    """The anchor (tensors) and the number of training batches per experience: its checkpointed state."""

    def __init__(self, strength):
        super().__init__()
        self.strength, self.anchor, self.batches = strength, {}, []

    def before_training_exp(self, strategy, **kwargs):
        self.batches.append(torch.zeros((), dtype=torch.int64))

    def before_backward(self, strategy, **kwargs):
        self.batches[-1] += 1
        drift = [(p - self.anchor[n]).square().sum() for n, p in strategy.backbone.named_parameters()
                 if n in self.anchor]
        if drift:
            strategy.loss = strategy.loss + 0.5 * self.strength * torch.stack(drift).sum()

    def after_training_exp(self, strategy, **kwargs):
        self.anchor = {n: p.detach().clone() for n, p in strategy.backbone.named_parameters()}

    def state_dict(self):
        return {"anchor": self.anchor, "batches": list(self.batches)}

    def load_state_dict(self, state, strategy):
        self.anchor = {n: v.to(strategy.device) for n, v in state["anchor"].items()}
        self.batches = list(state["batches"])


def build_l2_anchor(cfg, ctx):
    return StrategyParts(plugins=[L2Anchor(cfg.strength)])


class StopAt(SupervisedPlugin):
    """Interrupts the run when experience ``k`` starts."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def before_training_exp(self, strategy, **kwargs):
        if strategy.experience.current_experience == self.k:
            raise Interrupt("simulated kill")


def test_a_stateful_strategy_takes_one_module_and_one_registration_line(tmp_path):
    two = {"type": "multilabel", "labelings": ["shape", "color"]}
    mapping = {**BASE, "scenario": {**BASE["scenario"], "stream": two},
               "strategy": {"name": "l2_anchor", "strength": 50.0}}
    with STRATEGIES_REGISTRY.registered(AnchorConfig):
        cfg = run_from_mapping(mapping)
        assert isinstance(cfg.strategy, AnchorConfig) and "l2_anchor" in STRATEGIES_REGISTRY.names
        run(cfg, tmp_path / "whole", quiet=True)
        with pytest.raises(Interrupt):
            run(cfg, tmp_path / "cut", quiet=True, plugins=[StopAt(1)])
        assert json.loads((tmp_path / "cut" / "manifest.json").read_text())["experiences_done"] == 1
        run(cfg, tmp_path / "cut", quiet=True)
    with pytest.raises(DncsimError, match="l2_anchor"):          # outside the block the name is unknown again
        run_from_mapping(mapping)
    whole, cut = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("whole", "cut"))
    assert [p["class"] for p in cut["plugins"]] == ["L2Anchor"] and cut["experiences_done"] == 2
    a, b = whole["plugins"][0]["state"], cut["plugins"][0]["state"]
    assert [int(n) for n in b["batches"]] == [int(n) for n in a["batches"]] and len(a["batches"]) == 2
    assert sorted(a["anchor"]) == sorted(b["anchor"]) and all(torch.equal(a["anchor"][n], b["anchor"][n])
                                                              for n in a["anchor"])
    # the anchor restored at the resume shaped experience 1's training exactly as in the uninterrupted run
    for name in ("metrics.csv", "metrics.jsonl", "accuracy.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
