"""The design of a study (simulator/design.py): orthogonal Latin squares, balanced blocks, seeded draws,
the plain grid by default, per-run seeds, treatments applied to the run configs, one-line errors, the
tasks table's treatment columns and the report's Design section."""
import copy
import itertools
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from dncsim.analysis.aggregate import task_rows
from dncsim.analysis.report.study import build_study_report, design_section
from dncsim.analysis.study import study_products
from dncsim.rundir import load_run
from dncsim.simulator.cli import main
from dncsim.simulator.config import run_from_mapping, set_values
from dncsim.simulator.design import (DesignConfig, block_squares, design_runs, design_summary, orthogonal_pair,
                                     per_run_seeds)
from dncsim.simulator.study import StudyConfig, expand_grid, load_study_config
from tests.forge import finished_run

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["color", "size", "shape", "style"]
BASE = {"scenario": {"source": {"name": "shapes", "image_size": 16},
                     "stream": {"type": "factor", "attributes": TASKS}},
        "objective": {"name": "simclr", "regularizers": [{"name": "dir_variance", "weight": 1}]}}
CELLS = [{"dir_variance": 0, "orth_variance": 0}, {"dir_variance": 5, "orth_variance": 0},
         {"dir_variance": 0, "orth_variance": 5}, {"dir_variance": 5, "orth_variance": 5}]


def is_latin(square):
    T = len(square)
    return all(sorted(line) == list(range(T)) for m in (square, square.T) for line in m)


@pytest.mark.parametrize("T", [3, 4, 5, 7, 8, 9])
def test_the_pairs_are_orthogonal_latin_squares(T):
    a, b = orthogonal_pair(T)
    assert is_latin(a) and is_latin(b)
    assert len(set(zip(a.ravel().tolist(), b.ravel().tolist()))) == T * T      # every ordered pair once


@pytest.mark.parametrize("T", [2, 6, 10])
def test_orders_without_a_built_in_pair_are_refused(T):
    with pytest.raises(Exception, match=f"order {T}"):
        orthogonal_pair(T)


@pytest.mark.parametrize("T", [3, 4, 5, 7])
def test_a_block_balances_task_position_and_cell(T):
    for seed in range(3):
        order, cell = block_squares(T, True, True, np.random.default_rng(seed))
        assert order.shape == cell.shape == (T, T)
        at = np.array([[cell[r, order[r, c]] for c in range(T)] for r in range(T)])   # cell by (run, position)
        assert is_latin(order)                                                       # task x position once
        assert is_latin(cell)                                                        # task x cell, run x cell
        assert is_latin(at)                                                          # position x cell
        assert len(set(zip(order.ravel().tolist(), at.ravel().tolist()))) == T * T   # orthogonal


def test_one_randomised_square_alone_is_latin_and_the_draw_is_seeded():
    order, cell = block_squares(4, True, False, np.random.default_rng(1))
    assert is_latin(order) and not cell.any()
    order, cell = block_squares(4, False, True, np.random.default_rng(1))
    assert (order == np.arange(4)).all() and is_latin(cell)
    draws = [block_squares(5, True, True, np.random.default_rng(s)) for s in range(6)]
    again = block_squares(5, True, True, np.random.default_rng(3))
    assert all((x == y).all() for x, y in zip(draws[3], again))
    assert len({(o.tobytes(), c.tobytes()) for o, c in draws}) == 6                 # different seeds, other squares


def plain_grid(cfg):
    """The grid as before the design section: the cartesian product, named NNN-factor=value-..."""
    from dncsim.simulator.design import run_label
    base = yaml.safe_load((ROOT / cfg.base).read_text()) if not isinstance(cfg.base, dict) else dict(cfg.base)
    keys, specs = list(cfg.factors), []
    for i, values in enumerate(itertools.product(*(cfg.factors[k] for k in keys))):
        factors = dict(zip(keys, values))
        name = f"{i:03d}-" + "-".join(run_label(k, v) for k, v in factors.items())
        data = set_values(json.loads(json.dumps(base)), copy.deepcopy({**cfg.set, **factors, "name": name}))
        specs.append({"name": name, "factors": factors, "config": run_from_mapping(data).model_dump(mode="json")})
    return specs


@pytest.mark.parametrize("study", ["study_interference.yaml", "study_causal.yaml", "study_paper_seeds.yaml"])
def test_without_a_design_the_grid_is_unchanged(study, monkeypatch):
    """The shipped studies' base, set and factors with the design left at its defaults give the plain grid."""
    monkeypatch.chdir(ROOT)
    cfg = load_study_config(ROOT / "configs" / study)
    cfg = cfg.model_copy(update={"design": type(cfg.design)()})
    assert not cfg.design.active
    specs = expand_grid(cfg)
    assert json.dumps(specs, sort_keys=True) == json.dumps(plain_grid(cfg), sort_keys=True)
    assert len(specs) == math.prod(len(v) for v in cfg.factors.values())
    assert all("design" not in s for s in specs)


def study(design, factors=None, **extra):
    return StudyConfig.model_validate({"name": "d", "base": copy.deepcopy(BASE), "design": design,
                                       "factors": factors or {"strategy.name": ["naive", "replay"]}, **extra})


def test_latin_order_and_per_run_seeds_end_to_end():
    specs = expand_grid(study({"order": "latin_square", "seeds": "per_run", "replicates": 2, "seed": 7}))
    assert len(specs) == 2 * 2 * 4
    assert [s["name"] for s in specs[:5]] == ["000-strategy=naive-b0r0", "001-strategy=naive-b0r1",
                                              "002-strategy=naive-b0r2", "003-strategy=naive-b0r3",
                                              "004-strategy=naive-b1r0"]
    seeds = [(s["config"]["seed"], s["config"]["scenario"]["seed"]) for s in specs]
    assert len({a for a, _ in seeds}) == len({b for _, b in seeds}) == 16
    assert seeds[5] == per_run_seeds(7, 5) and specs[5]["design"]["scenario_seed"] == seeds[5][1]
    for k in range(4):                                   # per grid point and block: every task at every position
        block = specs[4 * k:4 * k + 4]
        orders = [s["config"]["scenario"]["stream"]["attributes"] for s in block]
        assert orders == [s["design"]["order"] for s in block]
        assert all(sorted(o) == sorted(TASKS) for o in orders)
        assert all(len({o[p] for o in orders}) == 4 for p in range(4))
    again = expand_grid(study({"order": "latin_square", "seeds": "per_run", "replicates": 2, "seed": 7}))
    assert again == specs
    other = expand_grid(study({"order": "latin_square", "replicates": 2, "seed": 8}))
    assert [s["design"]["order"] for s in other] != [s["design"]["order"] for s in specs]


def test_treatments_are_applied_per_task_on_a_graeco_latin_square():
    d = DesignConfig.model_validate({"order": "latin_square", "seed": 3, "replicates": 2,
                                     "treatments": {"cells": CELLS, "placebo": [False, True]}})
    base = copy.deepcopy(BASE)
    base["objective"]["regularizers"].append({"name": "orth_variance", "weight": 2})
    runs = list(design_runs(d, [({"strategy.name": "naive"}, base)]))
    assert len(runs) == 2 * 2 * 4                                                   # arms x blocks x tasks
    assert [suffix for suffix, *_ in runs[:5]] == ["-b0r0", "-b0r1", "-b0r2", "-b0r3", "-b1r0"]
    assert runs[8][0] == "-b0r0-placebo"
    task_cell, pos_cell = Counter(), Counter()
    for suffix, factors, data, rec in runs:
        regs = {r["name"]: r for r in data["objective"]["regularizers"]}
        assert data["scenario"]["stream"]["attributes"] == rec["order"]
        assert regs["dir_variance"]["weight"] == regs["orth_variance"]["weight"] == 0
        for pos, task in enumerate(rec["order"]):
            cell = (regs["dir_variance"]["doses"][task], regs["orth_variance"]["doses"][task])
            assert rec["doses"][task] == {"dir_variance": cell[0], "orth_variance": cell[1]}
            task_cell[task, cell] += 1
            pos_cell[pos, cell] += 1
        assert {tuple(regs[n]["doses"][t] for n in ("dir_variance", "orth_variance")) for t in TASKS} == \
            {(0, 0), (5, 0), (0, 5), (5, 5)}                                         # every cell once per run
        assert all(r.get("placebo") is (True if rec["placebo"] else None) for r in regs.values())
        assert suffix.endswith("-placebo") == rec["placebo"]
    assert set(task_cell.values()) == {4} and len(task_cell) == 16                  # 2 blocks x 2 arms each
    assert set(pos_cell.values()) == {4} and len(pos_cell) == 16
    active, placebo = runs[:8], runs[8:]                                            # the arms share the squares
    assert [r[3]["order"] for r in active] == [r[3]["order"] for r in placebo]
    assert [r[3]["doses"] for r in active] == [r[3]["doses"] for r in placebo]
    assert "16 runs" in design_summary(d, 1, 16, 4) and "Graeco-Latin" in design_summary(d, 1, 16, 4)


def study_file(tmp_path, design, **extra):
    data = {"base": BASE, "factors": {"strategy.name": ["naive"]}, "out": str(tmp_path / "s"), "design": design,
            **extra}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("design,extra,message", [
    ({"seeds": "per_run"}, {"factors": {"seed": [0, 1]}},
     "design.seeds: per_run draws each run's seed and scenario.seed; remove seed from factors"),
    ({"seeds": "per_run"}, {"set": {"scenario.seed": 3}},
     "design.seeds: per_run draws each run's seed and scenario.seed; remove scenario.seed from set"),
    ({"order": "latin_square"}, {"set": {"scenario.stream": {"type": "class_incremental", "experiences": 2}}},
     "design.order: stream type 'class_incremental' has no task list to permute"),
    ({"order": "latin_square"}, {"set": {"scenario.stream.attributes": None}},
     "design.order: needs scenario.stream.attributes listed"),
    ({"order": "latin_square", "treatments": {"cells": CELLS[:2]}}, {},
     "design: order latin_square with 2 treatment cells needs a pair of orthogonal Latin squares of order 2"),
    ({"treatments": {"cells": CELLS[:3]}}, {},
     "design.treatments.cells: 3 cells for 4 tasks (color, size, shape, style); expected exactly one cell per task"),
    ({"treatments": {"cells": CELLS}}, {},
     "design.treatments.cells: dose orth_variance needs an objective.regularizers entry named orth_variance"),
    ({"treatments": {"cells": [{"dir_varience": 1}] * 4}}, {}, "'dir_varience' is not a regulariser"),
    ({"treatments": {"cells": [{"dir_variance": 0}] * 4, "placebo": [True]}},
     {"set": {"objective.regularizers": []}}, "design.treatments.cells: dose dir_variance needs an objective"),
    ({"replicates": 0}, {}, "design.replicates"),
])
def test_bad_designs_are_one_line_exit_2(tmp_path, capsys, design, extra, message):
    assert main(["study", str(study_file(tmp_path, design, **extra))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_the_tasks_table_carries_each_tasks_treatment(tmp_path_factory, tmp_path):
    plain = load_run(finished_run(tmp_path_factory))
    rows = task_rows(plain, {})
    assert [(r["position"], r["dose_dir"], r["dose_orth"], r["placebo"]) for r in rows] == [(0, 0, 0, 0), (1, 0, 0, 0)]
    assert [r["task"] for r in rows] == [0, 1]
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run(tmp_path_factory), run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["objective"]["regularizers"] = [{"name": "dir_variance", "weight": 0, "doses": {"style": 5}},
                                        {"name": "orth_variance", "weight": 2, "placebo": True}]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = task_rows(load_run(run_dir), {"f": 1})
    assert [r["task_name"] for r in rows] == ["color", "style"]
    assert [(r["position"], r["dose_dir"], r["dose_orth"], r["placebo"]) for r in rows] == [(0, 0, 2, 1), (1, 5, 2, 1)]


def test_the_report_shows_who_got_what(tmp_path):
    records = []
    for row, (order, arm) in enumerate([(["a", "b"], False), (["b", "a"], False), (["a", "b"], True)]):
        doses = {t: {"dir_variance": 5.0 * (i == row % 2)} for i, t in enumerate(["a", "b"])}
        records.append({"name": f"00{row}-x|<b>", "factors": {"f": 1}, "status": "finished", "error": None,
                        "seconds": 1.0,
                        "design": {"block": 0, "row": row % 2, "order": order, "doses": doses, "placebo": arm,
                                   "seed": 10 + row, "scenario_seed": 20 + row}})
    D = design_section(records)
    assert D["positions"] == 2 and D["arms"] == ["active", "placebo"] and D["blocks"] == 2
    assert D["runs"][1]["positions"] == ["b (dir=5)", "a (dir=0)"]
    assert D["cells"] == ["dir=5", "dir=0"]
    assert D["task_cell"] == [{"key": "a", "counts": [2, 1]}, {"key": "b", "counts": [1, 2]}]
    assert D["position_cell"] == [{"key": "0", "counts": [3, 0]}, {"key": "1", "counts": [0, 3]}]
    assert design_section([{"name": "x", "status": "finished"}]) is None
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "study.json").write_text(json.dumps({"name": "d", "runs": records}))
    cfg = StudyConfig.model_validate({"name": "d", "base": {}, "factors": {"f": [1]}})
    report = build_study_report(study_dir, [], cfg, study_products([], cfg.statistics))
    html, md = (report / "index.html").read_text(), (report / "report.md").read_text()
    assert '<h2 id="design">Design</h2>' in html and "3 runs in 2 blocks, arms: active, placebo" in html
    assert "<td class=\"text\">001-x|&lt;b&gt;</td><td class=\"text\">active</td><td>0</td><td>1</td><td>11</td>" \
           "<td>21</td><td class=\"text\">b (dir=5)</td><td class=\"text\">a (dir=0)</td></tr>" in html
    assert "<tr><td class=\"text\">position 0</td><td>3</td><td>0</td></tr>" in html
    assert "## Design" in md and "| 002-x\\|\\<b\\> | placebo | 0 | 0 | 12 | 22 | a (dir=5) | b (dir=0) |" in md
    assert "| task b | 1 | 2 |" in md and "| runs per position and cell | dir=5 | dir=0 |" in md
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "study.json").write_text(json.dumps({"name": "p", "runs": [{"name": "x", "factors": {"f": 1},
                                                                         "status": "failed", "error": "e",
                                                                         "seconds": 1.0}]}))
    report = build_study_report(plain, [], cfg, study_products([], cfg.statistics))
    assert "Design" not in (report / "index.html").read_text() and "Design" not in (report / "report.md").read_text()


def test_treated_runs_validate_against_the_run_schema():
    base = copy.deepcopy(BASE)
    base["objective"]["regularizers"] = [{"name": "dir_variance", "weight": 0, "labelled_fraction": 0.5},
                                         {"name": "orth_variance", "weight": 0, "labelled_fraction": 0.5}]
    cfg = StudyConfig.model_validate({"name": "d", "base": base, "factors": {"strategy.name": ["naive"]},
                                      "design": {"order": "latin_square", "seeds": "per_run", "treatments": {
                                          "cells": CELLS, "placebo": [False, True]}}})
    specs = expand_grid(cfg)
    assert len(specs) == 8 and specs[4]["name"] == "004-strategy=naive-b0r0-placebo"
    for s in specs:
        regs = {r["name"]: r for r in s["config"]["objective"]["regularizers"]}
        assert {n: r["weight"] for n, r in regs.items()} == {"dir_variance": 0, "orth_variance": 0}
        assert all(r["labelled_fraction"] == 0.5 and r.get("placebo", False) is s["design"]["placebo"]
                   for r in regs.values())
        assert {t: {n: regs[n]["doses"][t] for n in regs} for t in TASKS} == s["design"]["doses"]
        assert s["config"]["scenario"]["stream"]["attributes"] == s["design"]["order"]
        assert (s["design"]["seed"], s["design"]["scenario_seed"]) == (s["config"]["seed"],
                                                                       s["config"]["scenario"]["seed"])


@pytest.mark.slow
def test_a_designed_study_records_and_reports_who_got_what(tmp_path, capsys):
    base = {"scenario": {"source": {"name": "shapes", "image_size": 16, "train_repeats": 1, "test_repeats": 2},
                         "stream": {"type": "factor", "attributes": ["color", "style"]}},
            "backbone": {"name": "convnet", "width": 8, "feature_dim": 16}, "training": {"epochs": 1, "batch_size": 48},
            "objective": {"name": "supervised", "regularizers": [{"name": "dir_variance", "weight": 0}]},
            "evaluation": {"linear_steps": 10}, "analysis": {"shots": [1], "episodes": 4},
            "output": {"report": False, "tensorboard": False, "checkpoints": False}}
    data = {"base": base, "factors": {"strategy.name": ["naive"]}, "workers": 1, "out": str(tmp_path / "s"),
            "statistics": {"bootstrap": 100, "permutations": 100},
            "design": {"seeds": "per_run", "treatments": {"cells": [{"dir_variance": 0}, {"dir_variance": 2}]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    assert main(["study", str(tmp_path / "s.yaml")]) == 0
    assert "design: 1 block(s) per grid point and arm; 2 runs per block; 2 treatment cells on a Latin square; " \
           "arms: active; seed and scenario.seed per run; 1 grid points x 1 arm(s) -> 2 runs" in capsys.readouterr().err
    state = json.loads((tmp_path / "s" / "study.json").read_text())
    given = {(r["name"], t): d["dir_variance"] for r in state["runs"] for t, d in r["design"]["doses"].items()}
    assert sorted(given.values()) == [0, 0, 2, 2]
    import csv
    rows = list(csv.DictReader((tmp_path / "s" / "tasks.csv").open()))
    assert {(r["run"], r["task_name"]): float(r["dose_dir"]) for r in rows} == given
    assert {(r["task_name"], r["position"]) for r in rows} == {("color", "0"), ("style", "1")}
    assert {r["placebo"] for r in rows} == {"0"} and {float(r["dose_orth"]) for r in rows} == {0.0}
    assert "<h2 id=\"design\">Design</h2>" in (tmp_path / "s" / "report" / "index.html").read_text()
