"""Every shipped config validates; those that need no external data run end to end (shrunk with --set)."""
import json
from pathlib import Path

import pytest

from dncsim.simulator.config import load_run_config
from dncsim.simulator.run import run

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("study_"))
STUDIES = sorted((ROOT / "configs").glob("study_*.yaml"))
NEEDS_DATA = {"cifar100_multilabel.yaml", "mnist_class_incremental.yaml", "dsprites_factor.yaml",
              "shapes3d_factor.yaml", "celeba_attributes.yaml", "timm_resnet18_shapes.yaml"}
SHRINK = ["training.epochs=1", "evaluation.linear_steps=5", "evaluation.probes=[ncc, linear]", "analysis.episodes=5"]


def test_the_configs_cover_every_stream_type_and_objective_family():
    cfgs = [load_run_config(p) for p in CONFIGS]
    assert {c.scenario.stream.type for c in cfgs} == {"factor", "multilabel", "joint", "class_incremental",
                                                       "task_incremental", "domain_incremental"}
    # a stream of identical inputs is shipped only with a supervised objective or said to be meant
    for c in cfgs:
        if c.scenario.stream.same_inputs:
            assert c.objective.name == "supervised" or c.scenario.stream.allow_same_inputs, c.name
    objectives = {c.objective.name for c in cfgs}
    assert {"simclr", "vicreg", "barlow_twins", "byol", "simsiam", "supervised"} <= objectives
    assert {"naive", "replay", "ewc", "si", "distill", "cumulative"} <= {c.strategy.name for c in cfgs}
    quick = load_run_config(ROOT / "configs" / "quickstart.yaml")
    twin = load_run_config(ROOT / "configs" / "quickstart_supervised.yaml")
    assert quick.objective.name == "simclr" and twin.objective.name == "supervised"
    assert quick.model_dump(exclude={"objective", "name"}) == twin.model_dump(exclude={"objective", "name"})
    paper = load_run_config(ROOT / "configs" / "paper_multitask.yaml")
    paper_twin = load_run_config(ROOT / "configs" / "paper_multitask_vicreg.yaml")
    assert (paper.objective.name, paper_twin.objective.name) == ("simclr", "vicreg")
    assert paper.model_dump(exclude={"objective", "name"}) == paper_twin.model_dump(exclude={"objective", "name"})


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name not in NEEDS_DATA], ids=lambda p: p.name)
def test_shipped_config_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_run_config(path)
    shapes = cfg.scenario.source.name == "shapes"
    extra = ["scenario.source.train_repeats=2", "scenario.source.test_repeats=2"] if shapes else []
    if cfg.scenario.stream.type in ("domain_incremental", "task_incremental"):
        extra.append("scenario.stream.experiences=2")          # digits: 1,348 images per experience
    if cfg.scenario.stream.type == "joint":
        extra.append("scenario.stream.blocks=2")
    if path.name != "quickstart.yaml":                  # one end-to-end run keeps its report
        extra.append("output.report=false")
    cfg = load_run_config(path, SHRINK + extra)
    out = run(cfg, tmp_path / "run")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["experiences_done"] == manifest["experiences_total"] >= 2
    assert (out / "metrics.csv").stat().st_size > 1000
    assert (out / "report" / "index.html").is_file() == (path.name == "quickstart.yaml")


def test_the_causal_study_randomises_the_dose_and_crosses_it_with_the_strategies(monkeypatch):
    from dncsim.simulator.study import expand_grid, load_study_config
    monkeypatch.chdir(ROOT)
    specs = expand_grid(load_study_config(ROOT / "configs" / "study_causal.yaml"))
    assert len(specs) == 36 and len({s["name"] for s in specs}) == 36
    regs = [s["config"]["objective"]["regularizers"] for s in specs]
    assert {r[0]["weight"] for r in regs} == {0, 1, 5, 25} and {r[0]["labelled_fraction"] for r in regs} == {0.5}
    assert {s["config"]["training"]["epochs"] for s in specs} == {2}
    assert {s["config"]["seed"] for s in specs} == {0, 1, 2}
    assert {s["config"]["strategy"]["name"] for s in specs} == {"naive", "distill", "axis_distill"}
    assert {s["config"]["strategy"].get("weight") for s in specs if s["config"]["strategy"]["name"] != "naive"} == {1.0}
    assert {s["config"]["objective"]["name"] for s in specs} == {"simclr"}


@pytest.mark.parametrize("path", [p for p in STUDIES if p.name not in ("study_causal.yaml", "study_paper_seeds.yaml")],
                         ids=lambda p: p.name)
def test_shipped_studies_expand_to_valid_runs(path, monkeypatch):
    from dncsim.simulator.study import expand_grid, load_study_config
    monkeypatch.chdir(ROOT)
    specs = expand_grid(load_study_config(path))
    assert len(specs) == 24 and len({s["name"] for s in specs}) == 24
    assert {s["config"]["objective"]["name"] for s in specs} == {"simclr", "vicreg", "supervised"}
    assert {s["config"]["strategy"]["name"] for s in specs} == {"naive", "replay"}
    streams = [s["config"]["scenario"]["stream"] for s in specs]
    assert {s["type"] for s in streams} == {"factor"} and {s["hold"] for s in streams} == {"one", "subset"}


def test_the_paper_seeds_study_is_the_shipped_reproduction_over_three_seeds(monkeypatch):
    from dncsim.simulator.study import expand_grid, load_study_config
    monkeypatch.chdir(ROOT)
    cfg = load_study_config(ROOT / "configs" / "study_paper_seeds.yaml")
    specs = expand_grid(cfg)
    base = load_run_config(ROOT / "configs" / "paper_multitask.yaml").model_dump(mode="json")
    assert [s["config"]["seed"] for s in specs] == [0, 1, 2] and cfg.statistics.paper == "auto"
    for s in specs:
        c = dict(s["config"])
        assert c["output"]["report"] is False and c["scenario"] == base["scenario"]
        assert {k: v for k, v in c.items() if k not in ("seed", "output", "name")} == \
            {k: v for k, v in base.items() if k not in ("seed", "output", "name")}
