"""One default estimator everywhere: a run's per-task dir-CDNV and CDNV rows, the Python API's default and
`dncsim analyze --json` on the same features (the run's geometry-split features, recomputed from its final
checkpoint) give the same numbers."""
import json

import numpy as np
import pytest
import torch

import dncsim
from dncsim.analysis import names
from dncsim.rundir import RunDirectory
from dncsim.simulator.build import build_run
from dncsim.simulator.cli import main
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.run import restore, run

CONFIG = {
    "name": "agree", "seed": 1,
    "scenario": {"source": {"name": "shapes", "image_size": 16, "train_repeats": 2, "test_repeats": 3},
                 "stream": {"type": "factor", "attributes": ["color", "style"]}},
    "backbone": {"name": "convnet", "width": 8, "feature_dim": 16},
    "objective": {"name": "supervised"},
    "training": {"epochs": 1, "batch_size": 64},
    "evaluation": {"linear_steps": 20, "probes": ["ncc"], "protocols": ["refit"]},
    "analysis": {"shots": [1], "episodes": 5, "pair_bootstrap": "iid"},
    "output": {"report": False, "tensorboard": False},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("agree") / "run"
    cfg = run_from_mapping(CONFIG)
    run(cfg, out, quiet=True)
    return cfg, out


def test_a_runs_geometry_rows_the_api_and_analyze_agree(finished_run, tmp_path):
    cfg, out = finished_run
    parts = build_run(cfg, RunDirectory(out))
    state, _ = parts.directory.load_checkpoint(json.loads((out / "manifest.json").read_text()).get("checkpoints"))
    restore(parts, state)
    tasks = parts.evaluation.collection.tasks
    features = parts.evaluation.features
    f = features(0, parts.evaluation.collection.geometry_split).double()
    labels = {t.name: t.test_labels for t in tasks}
    assert all(torch.equal(features(k, "test"), features(0, "test")) for k in range(len(tasks)))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = max(r["exp"] for r in rows)
    npz = tmp_path / "features.npz"
    np.savez(npz, features=f.numpy(), **{k: v.numpy() for k, v in labels.items()})
    assert main(["analyze", str(npz), "--shots", "1", "--episodes", "5", "--json", str(tmp_path / "a.json")]) == 0
    analyzed = json.loads((tmp_path / "a.json").read_text())["labelings"]
    checked = 0
    for k, task in enumerate(tasks):
        others = np.stack([labels[t.name].numpy() for t in tasks if t.name != task.name])
        api = dncsim.estimate_geometry(f, labels[task.name], strata=others)
        assert api.estimator == "debiased" and api.design == "strata"
        s = api.summary()
        got = {r["metric"]: r["value"] for r in rows if r["exp"] == last and r["task"] == k and r["task_b"] is None}
        for metric, field in ((names.DIR_CDNV, "dir_cdnv"), (names.CDNV, "cdnv")):
            assert got[metric] == pytest.approx(s[field], rel=1e-9), (task.name, metric)
            assert analyzed[task.name][field] == pytest.approx(s[field], rel=1e-9), (task.name, metric)
        assert analyzed[task.name]["design"] == "strata"
        assert got[names.BARELY_RESOLVED_PAIRS] == s["barely_resolved_pairs"]
        assert got[names.DIR_CDNV + names.CI_LOW] < got[names.DIR_CDNV] < got[names.DIR_CDNV + names.CI_HIGH]
        checked += 1
    assert checked == 2
