"""Extending dncsim touches only the new piece: a per-task metric registered in DEFAULT_METRICS reaches
the metrics table, the report's summary and the study tables; a stateful strategy plugin survives an
interrupted run and its resume, with no change to the run code."""
import json

import numpy as np
import pytest
import torch
import yaml

import dncsim.analysis.metrics as metrics
from dncsim.simulator.strategies import SupervisedPlugin  # Avalanche's plugin base, imported quietly
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
