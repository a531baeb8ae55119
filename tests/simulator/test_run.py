"""`dncsim run`: the run directory, determinism, resume after SIGKILL, protection and one-line errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dncsim.analysis import names
from dncsim.simulator.cli import main
from dncsim.simulator.config import load_run_config, run_from_mapping
from dncsim.simulator.run import run

ROOT = Path(__file__).resolve().parents[2]
TINY = """
name: tiny
seed: 3
scenario:
  source: {name: shapes, image_size: 16, train_repeats: 2, test_repeats: 2}
  stream: {type: factor, attributes: [shape, color, style]}
backbone: {name: convnet, width: 8, feature_dim: 16}
objective: {name: simclr}
training: {epochs: 2, batch_size: 64}
evaluation: {linear_steps: 20}
analysis: {shots: [1, 5, 10], episodes: 20}
output: {report: false}
"""


@pytest.fixture
def tiny_config(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return p


def cli(*args, cwd=ROOT):
    """The CLI in a fresh process, as a user runs it: (status, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "dncsim", *map(str, args)],
                       capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def cli_here(capsys, monkeypatch):
    """The CLI in this process (fast): (status, stdout, stderr); a traceback would fail the test."""
    monkeypatch.chdir(ROOT)

    def call(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return call


def read_rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def assert_same_geometry(a, b):
    """The geometry files of two run directories hold the same arrays, bit for bit (one machine)."""
    files_a, files_b = sorted((a / "geometry").glob("*.npz")), sorted((b / "geometry").glob("*.npz"))
    assert [f.name for f in files_a] == [f.name for f in files_b] and files_a
    for fa, fb in zip(files_a, files_b):
        with np.load(fa) as za, np.load(fb) as zb:
            assert za.files == zb.files
            for name in za.files:
                assert np.array_equal(za[name], zb[name], equal_nan=True), (fa.name, name)


def test_run_directory_has_every_output(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "After the last experience" in text and f"run directory: {out.resolve()}" in text
    for name in ("config.yaml", "manifest.json", "metrics.csv", "metrics.jsonl", "accuracy.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["experiences_done"] == manifest["experiences_total"] == 3
    assert manifest["seed"] == 3 and manifest["device"] == "cpu" and manifest["versions"]["torch"] == torch.__version__
    # the stored config is the resolved one and validates again
    stored = run_from_mapping(yaml.safe_load((out / "config.yaml").read_text()))
    assert stored == load_run_config(tiny_config).model_copy(update={"output": stored.output})
    # metrics: csv and jsonl hold the same rows; the columns are the contract's
    rows = read_rows(out)
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == ",".join(names.TABLE_COLUMNS) and len(csv_lines) == len(rows) + 1
    assert {r["exp"] for r in rows} == {-1, 0, 1, 2}
    metrics = {r["metric"] for r in rows}
    assert {names.ACC, names.DIR_CDNV, names.CDNV, names.CDNV_RATIO, names.MEAN_GAP, names.AXIS_DRIFT,
            names.FEWSHOT_ERR, names.BOUND, names.BOUND_LIMIT, names.AXIS_COS_MEDIAN, names.AXIS_COS_MAX,
            names.PROP42_FRAC, names.FORGETTING_MAX, names.FORGETTING_LAST, names.BWT, names.FWT,
            names.INTERFERENCE} <= metrics
    # every task measured after every experience, refit for all rows, frozen once learned
    acc = [r for r in rows if r["metric"] == names.ACC]
    assert len([r for r in acc if r["protocol"] == names.REFIT]) == 4 * 3 * 2
    assert len([r for r in acc if r["protocol"] == names.FROZEN]) == (1 + 2 + 3) * 2
    # accuracy.json is the same numbers as the acc rows
    mats = json.loads((out / "accuracy.json").read_text())["matrices"]
    for r in acc:
        assert mats[f"{r['probe']}/{r['protocol']}"][r["exp"] + 1][r["task"]] == r["value"]
    assert mats["ncc/frozen"][0] == [None, None, None]
    # the closing table says how many linear-probe solves stopped at the budget, as the rows do
    conv = [r["value"] for r in rows if r["metric"] == names.PROBE_CONVERGED]
    at_budget = sum(v == 0 for v in conv)
    assert len(conv) == 4 * 3
    assert (f"note: {at_budget} of 12 linear-probe fits stopped at the step budget" in text) == (at_budget > 0)
    # Prop 4.2 holds on the balanced independent shapes labelings (population estimator)
    assert all(r["value"] == 1.0 for r in rows if r["metric"] == names.PROP42_FRAC)
    # geometry: one npz per row with every task's class means
    npz = sorted((out / "geometry").glob("row_*.npz"))
    assert [p.name for p in npz] == ["row_000.npz", "row_001.npz", "row_002.npz", "row_003.npz"]
    with np.load(npz[-1]) as z:
        assert z["task1/means"].shape == (4, 16) and z["task2/dir_cdnv"].shape == (2, 2)
        assert z["task1/axes"].shape == (6, 16) and z["task1/pairs"].tolist()[0] == [0, 1]
        np.testing.assert_allclose(np.linalg.norm(z["task1/axes"], axis=1), 1.0, rtol=1e-5)
        delta = z["task1/means"][1] - z["task1/means"][0]
        np.testing.assert_allclose(z["task1/axes"][0], delta / np.linalg.norm(delta), rtol=1e-4, atol=1e-6)
    # the checkpoint loads with weights_only=True
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["experiences_done"] == 3 and "backbone.body.0.weight" in ck["model"]
    # TensorBoard got the plugin metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(out / "tb")).Reload()
    assert "dncsim/acc/ncc/refit/Task001" in ea.Tags()["scalars"]


def test_same_config_and_seed_give_identical_files(tiny_config, tmp_path):
    cfg = load_run_config(tiny_config)
    for name in ("a", "b"):
        run(cfg, tmp_path / name)
    for f in ("metrics.csv", "metrics.jsonl", "accuracy.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert_same_geometry(tmp_path / "a", tmp_path / "b")


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_metrics(tmp_path):
    cfg_path = tmp_path / "slow.yaml"
    cfg_path.write_text(TINY.replace("epochs: 2", "epochs: 6").replace("train_repeats: 2", "train_repeats: 4"))
    code, _, err = cli("run", cfg_path, "--out", tmp_path / "whole")
    assert code == 0, err
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dncsim",
                             "run", str(cfg_path), "--out", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            done = json.loads((killed / "manifest.json").read_text())["experiences_done"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= 1:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "running" and 1 <= manifest["experiences_done"] < 3   # killed mid-stream
    code, out, err = cli("run", cfg_path, "--out", killed)       # rerunning into it resumes
    assert code == 0, err
    assert json.loads((killed / "manifest.json").read_text())["status"] == "finished"
    for f in ("metrics.csv", "metrics.jsonl", "accuracy.json"):
        assert (killed / f).read_bytes() == (tmp_path / "whole" / f).read_bytes(), f
    assert_same_geometry(killed, tmp_path / "whole")


def test_finished_runs_are_protected_and_force_restarts(tiny_config, tmp_path, cli_here):
    out = tmp_path / "run"
    run(load_run_config(tiny_config), out)
    code, _, err = cli_here("run", tiny_config, "--out", out)
    assert code == 2 and "holds a finished run; use --force" in err and len(err.strip().splitlines()) == 1
    before = (out / "manifest.json").read_text()
    code, _, err = cli_here("run", tiny_config, "--out", out, "--force", "--set", "training.epochs=1")
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["started"] >= json.loads(before)["started"]
    assert yaml.safe_load((out / "config.yaml").read_text())["training"]["epochs"] == 1


@pytest.mark.parametrize("override,message", [
    ("device=cuda", "device: 'cuda' requested but CUDA is not available"),
    ("scenario.stream.attributes=[shape,colour]", "'colour' is not a labeling"),
])
def test_force_deletes_nothing_before_every_check_passed(tiny_config, tmp_path, cli_here, override, message):
    """--force replaces a finished run only once the new run is known to start: a device or data error
    leaves the old run exactly as it was."""
    if override.startswith("device") and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA (the error under test is CUDA being unavailable)")
    out = tmp_path / "run"
    run(load_run_config(tiny_config), out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = cli_here("run", tiny_config, "--out", out, "--force", "--set", override)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_unfinished_run_with_another_config_is_refused(tiny_config, tmp_path, cli_here):
    out = tmp_path / "run"
    run(load_run_config(tiny_config), out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = cli_here("run", tiny_config, "--out", out, "--set", "training.lr=0.01")
    assert code == 2 and "different configuration (first difference: training.lr)" in err


def test_an_unfinished_run_of_other_methods_is_refused_and_left_as_it_was(tiny_config, tmp_path, cli_here):
    out = tmp_path / "run"
    run(load_run_config(tiny_config), out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["methods_revision"] >= 1
    manifest.update(status="interrupted", methods_revision=manifest["methods_revision"] - 1)
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = cli_here("run", tiny_config, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"begun by methods revision {manifest['methods_revision']}; this dncsim computes revision" in err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("override,message", [
    ("backbone.widht=8", "backbone: unknown key 'widht' (did you mean 'width'?)"),
    ("training.epochs=0", "training.epochs: input should be greater than or equal to 1 (got 0)"),
    ("objective.name=simclrr", "objective.name: 'simclrr' is not one of simclr, vicreg, barlow_twins, byol, simsiam, "
                               "supervised, none (did you mean 'simclr'?)"),
    ("strategy.name=ewc2", "strategy.name: 'ewc2' is not one of"),
    ("device=gpu", "device: 'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ("analysis.shots=[0,5]", "analysis.shots: shot counts must be >= 1; got [0, 5]"),
    ("trainig.epochs=2", "--set trainig.epochs: unknown section 'trainig' (did you mean 'training'?)"),
    ("training", "--set expects KEY.PATH=VALUE; got 'training'"),
    ("scenario.stream.attributes=[shape,colour]", "scenario.stream.attributes[1]: 'colour' is not a labeling"),
    ("backbone.name=resnet18", "backbone: unknown key 'width'; accepted keys: name, feature_dim"),
    ("objective.temperature=0.5", None),
])
def test_bad_configs_are_one_line_exit_2_and_leave_no_directory(tiny_config, tmp_path, override, message, cli_here):
    if message is None:           # a valid override reaches the schema
        assert load_run_config(tiny_config, [override]).objective.temperature == 0.5
        return
    out = tmp_path / "never"
    code, _, err = cli_here("run", tiny_config, "--out", out, "--set", override)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_vector_source_with_a_convnet_leaves_no_directory(tmp_path):
    """In a fresh process: the user's view, exit status and a single stderr line."""
    cfg = tmp_path / "v.yaml"
    cfg.write_text("scenario: {source: {name: features, path: examples/multitask_features.npz}, "
                   "stream: {type: multilabel, labelings: [color]}}\nbackbone: {name: convnet}\n")
    code, _, err = cli("run", cfg, "--out", tmp_path / "never")
    assert code == 2 and "backbone.name: 'convnet' needs image inputs" in err
    assert not (tmp_path / "never").exists()


def test_joint_trains_once_and_none_never(tmp_path):
    base = yaml.safe_load(TINY)
    for strategy, objective in (({"name": "joint"}, "simclr"), ({"name": "naive"}, "none")):
        cfg = run_from_mapping({**base, "strategy": strategy, "objective": {"name": objective}})
        out = tmp_path / f"{strategy['name']}-{objective}"
        run(cfg, out)
        mats = json.loads((out / "accuracy.json").read_text())["matrices"]["ncc/refit"]
        assert mats[1] == mats[2] == mats[3]           # nothing changes after the first phase
        if objective == "none":
            assert mats[0] == mats[1]                  # the random backbone is never trained


def test_a_run_with_many_task_pairs_says_how_their_intervals_are_resampled():
    """Under the default ``pair_bootstrap: auto`` a run says once how many pairs of tasks on the same samples
    take the iid bootstrap (joint classes of unequal size) or the wild one (balanced, at least 20 tasks);
    nothing when every pair is balanced and resampled pair by pair. With ``joint`` or ``wild`` it says
    when some pairs are not balanced (their intervals hold random cell sizes fixed), and with ``joint``,
    from 190 balanced pairs resampled pair by pair, that they dominate and that ``wild`` exists; nothing
    without intervals. Pairs count only within a group of tasks on the same samples."""
    from types import SimpleNamespace

    from dncsim.analysis.metrics import AnalysisConfig
    from dncsim.analysis.closing import PAIR_HINT_PAIRS, pair_interval_hint

    H = torch.ones(1, 1, dtype=torch.int64)
    for _ in range(5):
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)])
    balanced = (H[:, 1:] > 0).long().T.repeat(1, 2)                  # 31 labelings, every pair balanced

    def tasks(*groups, random_=0):
        out = []
        for name, n in groups:
            for k in range(n):
                y = (torch.arange(64) % 3 == k).long() if k < random_ else balanced[k]   # unequal cells
                out.append(SimpleNamespace(group=name, test_labels=y, train_labels=y))
        return out

    auto = AnalysisConfig()
    assert auto.pair_bootstrap == "auto"
    hint = pair_interval_hint(auto, tasks(("a", 20)))
    assert hint.startswith("note: 190 task pairs share their samples") and "190 share one wild bootstrap" in hint
    assert "\n" not in hint and "iid" not in hint
    assert pair_interval_hint(auto, tasks(("a", 19))) is None
    assert pair_interval_hint(auto, tasks(("a", 19), ("b", 2))) is None           # 171 + 1 pairs, both joint
    hint = pair_interval_hint(auto, tasks(("a", 4), random_=1))                     # 3 of 6 pairs unbalanced
    assert hint.startswith("note: 6 task pairs") and "3 resample the samples (iid" in hint
    assert "3 resample within their joint classes" in hint and "wild" not in hint
    assert pair_interval_hint(auto, tasks(("a", 21), ("b", 19))).startswith("note: 381 task pairs")
    joint = AnalysisConfig(pair_bootstrap="joint")
    hint = pair_interval_hint(joint, tasks(("a", 20)))
    assert PAIR_HINT_PAIRS == 190 and hint.startswith("note: 190 task pairs share their samples")
    assert "analysis.pair_bootstrap: wild" in hint and "\n" not in hint
    assert pair_interval_hint(joint, tasks(("a", 19))) is None
    assert pair_interval_hint(joint, tasks(("a", 13), ("b", 13))) is None        # 2 x 78 pairs, none across
    assert pair_interval_hint(joint, tasks(("a", 19), ("b", 19))).startswith("note: 342 task pairs")
    assert pair_interval_hint(joint, tasks(("a", 20), ("b", 2))).startswith("note: 191 task pairs")
    hint = pair_interval_hint(joint, tasks(("a", 3), random_=1))
    assert hint.startswith("note: 2 of 3 task pairs on the same samples have joint classes of unequal size")
    assert pair_interval_hint(AnalysisConfig(pair_bootstrap="wild"), tasks(("a", 30))) is None
    assert "pair_bootstrap: wild holds" in pair_interval_hint(AnalysisConfig(pair_bootstrap="wild"),
                                                              tasks(("a", 30), random_=2))
    assert pair_interval_hint(AnalysisConfig(pair_bootstrap="iid"), tasks(("a", 30), random_=2)) is None
    assert pair_interval_hint(AnalysisConfig(bootstrap=0), tasks(("a", 30), random_=2)) is None
