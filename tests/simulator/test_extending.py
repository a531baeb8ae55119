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


def final_accuracy_bars(ctx):
    """A new report figure (its module would hold just this): each task's final accuracy, primary
    probe and protocol, drawn from the report's summary."""
    from dncsim.analysis.report.figures.plotting import subplots
    key = ctx.summary["primary"]["key"]
    fig, ax = subplots(figsize=(4, 3))
    ax.bar([t["name"] for t in ctx.summary["tasks"]], [t["final_acc"][key] for t in ctx.summary["tasks"]])
    ax.set_ylabel("final accuracy (fraction)")
    ax.set_title("Final accuracy per task")
    return fig


def test_a_report_figure_takes_one_module_and_one_registration_line(tmp_path, monkeypatch):
    import base64
    import html

    from dncsim.analysis.report.figures import registry
    from dncsim.analysis.report.figures.registry import FigureSpec, register_figure

    monkeypatch.setattr(registry, "FIGURES", dict(registry.FIGURES))      # the registry is restored after the test
    caption = "Each task's final accuracy (primary probe & protocol) <after the last experience>."
    register_figure(FigureSpec("final_accuracy_bars", final_accuracy_bars, caption, "interference",
                               applies=lambda c: len(c.summary["tasks"]) > 1, alt="final accuracy"))
    out = run(run_from_mapping(BASE), tmp_path / "run", quiet=True)
    report = build_report(out)
    png = (report / "figures" / "final_accuracy_bars.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "final_accuracy_bars" in json.loads((report / "summary.json").read_text())["figures"]
    page = (report / "index.html").read_text()
    interference = page[page.index('<h2 id="interference">'):page.index('<h2 id="graph">')]
    shown = f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}"'
    text = html.escape(caption, quote=False)
    assert f'{shown} alt="{text}"><figcaption>{text}</figcaption>' in interference
    before = html.escape(registry.FIGURES["dircdnv_vs_forgetting"].caption, quote=False)
    assert interference.index(f"<figcaption>{before}") < interference.index(shown)    # registration order
    md = (report / "report.md").read_text()
    section = md[md.index("## Interference\n"):md.index("## Interference graph")]
    assert section.index("![dir-CDNV vs forgetting](figures/dircdnv_vs_forgetting.png)\n\n"
                         "![final accuracy](figures/final_accuracy_bars.png)\n\n") > 0
# --- a data source: one module (here, this block) and one registration line --------------------------

from typing import ClassVar, Literal  # noqa: E402

from dncsim.common import DncsimError, StrictModel  # noqa: E402
from dncsim.scenarios.registry import SOURCES, register_source  # noqa: E402


def load_ramp(cfg, seed):
    """``n`` train and ``n // 2`` test vectors: coordinate 0 encodes ``level``, coordinate 1 ``parity``."""
    from dncsim.scenarios.sources import SourceData, Split
    gen = torch.Generator().manual_seed(seed)

    def split(n):
        level, parity = torch.arange(n) % cfg.levels, (torch.arange(n) // cfg.levels) % 2
        x = 0.1 * torch.randn(n, cfg.dim, generator=gen)
        x[:, 0] += level
        x[:, 1] += parity
        return Split(x, {"level": level, "parity": parity})
    return SourceData(name="ramp", train=split(cfg.n), test=split(cfg.n // 2), default_labeling="level",
                      label_names={"level": [f"l{k}" for k in range(cfg.levels)], "parity": ["even", "odd"]})


class RampConfig(StrictModel):
    """A toy vector source with two labelings, level and parity."""

    name: Literal["ramp"] = "ramp"
    n: int = 48
    dim: int = 6
    levels: int = 3
    loader: ClassVar = load_ramp          # or a lazy "module:function" path


def test_a_data_source_takes_one_module_and_one_registration_line(tmp_path):
    ramp = {**BASE, "scenario": {"source": {"name": "ramp", "n": 60},
                                 "stream": {"type": "multilabel", "labelings": ["level", "parity"]}},
            "backbone": {"name": "mlp", "hidden": [16], "feature_dim": 8}, "training": {"epochs": 1, "batch_size": 20}}
    with pytest.raises(DncsimError, match="^scenario.source.name: 'ramp' is not one of shapes, digits, "):
        run_from_mapping(ramp)
    register_source(RampConfig)                       # the one registration line
    try:
        cfg = run_from_mapping(ramp)
        assert type(cfg.scenario.source) is RampConfig and cfg.scenario.source.n == 60
        assert SOURCES.names()[-1] == "ramp"
        with pytest.raises(DncsimError) as bad:
            run_from_mapping({**ramp, "scenario": {"source": {"name": "rampp"}}})
        assert str(bad.value) == ("scenario.source.name: 'rampp' is not one of " + ", ".join(SOURCES.names())
                                  + " (did you mean 'ramp'?)")
        with pytest.raises(DncsimError, match=r"^scenario.source: unknown key 'size'; accepted keys: name, n, dim, "
                                              r"levels$"):
            run_from_mapping({**ramp, "scenario": {"source": {"name": "ramp", "size": 3}}})
        out = run(cfg, tmp_path / "run", quiet=True)
    finally:
        SOURCES.unregister("ramp")
    acc = json.loads((out / "accuracy.json").read_text())
    assert acc["tasks"] == ["level", "parity"] and acc["learned_at"] == [0, 1]
    assert len(acc["rows"]) == 3 and all(len(m) == 3 and len(m[0]) == 2 for m in acc["matrices"].values())
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["scenario"]["source"] == {"name": "ramp", "n": 60, "dim": 6, "levels": 3}
    with pytest.raises(DncsimError, match="'ramp' is not one of"):      # unregistered again
        run_from_mapping(ramp)


# --- a stateful strategy: one module (its config, builder and plugin) and one registration line ----------

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
