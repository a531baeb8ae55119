"""Every shipped config validates; those that need no external data run end to end (shrunk with --set)."""
import json
from collections import Counter
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


def _balance(specs):
    """(task, position) and (task, cell) and (position, cell) counts over the runs' designs."""
    tp, tc, pc = Counter(), Counter(), Counter()
    for s in specs:
        d = s["design"]
        for pos, task in enumerate(d["order"]):
            cell = tuple(sorted(d["doses"].get(task, {}).items()))
            tp[task, pos] += 1
            tc[task, cell] += 1
            pc[pos, cell] += 1
    return tp, tc, pc


def test_the_causal_study_doses_each_task_on_a_graeco_latin_square_with_a_placebo_arm(monkeypatch):
    from dncsim.simulator.study import expand_grid, load_study_config
    monkeypatch.chdir(ROOT)
    specs = expand_grid(load_study_config(ROOT / "configs" / "study_causal.yaml"))
    assert len(specs) == 24 and len({s["name"] for s in specs}) == 24
    assert {s["config"]["training"]["epochs"] for s in specs} == {1}
    assert len({s["config"]["seed"] for s in specs}) == 24
    assert len({s["config"]["scenario"]["seed"] for s in specs}) == 24
    for s in specs:
        regs = {r["name"]: r for r in s["config"]["objective"]["regularizers"]}
        assert set(regs) == {"dir_variance", "orth_variance"} and {r["weight"] for r in regs.values()} == {0}
        assert {r["labelled_fraction"] for r in regs.values()} == {0.5}
        order = s["config"]["scenario"]["stream"]["attributes"]
        assert sorted(order) == ["color", "shape", "size", "style"] and order == s["design"]["order"]
        cells = sorted((regs["dir_variance"]["doses"][t], regs["orth_variance"]["doses"][t]) for t in order)
        assert cells == [(0, 0), (0, 5), (5, 0), (5, 5)]                  # every run holds every cell once
        assert all(r.get("placebo", False) == s["design"]["placebo"] for r in regs.values())
    for arm in (False, True):
        tp, tc, pc = _balance([s for s in specs if s["design"]["placebo"] is arm])
        assert set(tp.values()) == set(tc.values()) == set(pc.values()) == {3}     # 3 blocks per arm
        assert len(tp) == len(tc) == len(pc) == 16
    assert {s["config"]["scenario"]["source"]["nuisance"]["rotation"] for s in specs} == {False}
    assert {s["config"]["analysis"]["split"] for s in specs} == {"train"}


def test_the_interference_study_randomises_the_order_and_the_data_per_run(monkeypatch):
    from dncsim.simulator.study import expand_grid, load_study_config
    monkeypatch.chdir(ROOT)
    specs = expand_grid(load_study_config(ROOT / "configs" / "study_interference.yaml"))
    assert len(specs) == 24 and len({s["name"] for s in specs}) == 24
    assert {s["config"]["objective"]["name"] for s in specs} == {"simclr", "vicreg", "supervised"}
    assert {s["config"]["strategy"]["name"] for s in specs} == {"naive", "replay"}
    assert len({s["config"]["seed"] for s in specs}) == 24
    assert len({s["config"]["scenario"]["seed"] for s in specs}) == 24
    streams = [s["config"]["scenario"]["stream"] for s in specs]
    assert {s["type"] for s in streams} == {"factor"} and {s["hold"] for s in streams} == {"one"}
    by_point = {}
    for s in specs:
        by_point.setdefault((s["config"]["objective"]["name"], s["config"]["strategy"]["name"]), []).append(
            s["config"]["scenario"]["stream"]["attributes"])
    for orders in by_point.values():                                       # one Latin block per grid point
        assert len(orders) == 4 and all(len({o[p] for o in orders}) == 4 for p in range(4))
    assert {s["config"]["analysis"]["split"] for s in specs} == {"train"}


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
