"""`dncsim scenario`: the shipped configs, the summary and PNG, and one-line errors."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dncsim.scenarios import build_scenario, load_scenario_config
from dncsim.simulator.config import load_run_config
from dncsim.simulator.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("study_"))
NEEDS_DATA = {"cifar100_multilabel.yaml", "mnist_class_incremental.yaml", "dsprites_factor.yaml",
              "shapes3d_factor.yaml", "celeba_attributes.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_builds_when_its_data_is_here(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_scenario_config(path)
    assert load_run_config(path).scenario == cfg
    if path.name in NEEDS_DATA:
        assert not (ROOT / "data").exists()
        return
    sc = build_scenario(cfg)
    assert len(sc.experiences) == len(list(sc.benchmark.train_stream)) >= 2


def test_scenario_command_prints_summary_and_writes_png(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    png = tmp_path / "grid.png"
    assert main(["scenario", "configs/digits_task_incremental.yaml", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "source digits: images 1x32x32" in out and "stream task_incremental: 5 experiences (seed 0)" in out
    rows = re.findall(r"^\s+(\d)\s+(\d)\s+class\s+2\s+(\d), (\d)\s+\d+\s+\d+$", out, flags=re.M)
    assert [(int(a), int(b)) for a, b, _, _ in rows] == [(t, t) for t in range(5)]     # exp index = task label
    assert sorted(int(c) for r in rows for c in r[2:]) == list(range(10))
    assert f"wrote {png}" in out
    assert png.stat().st_size > 10_000


def test_vector_source_has_no_grid(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    png = tmp_path / "g.png"
    assert main(["scenario", "configs/features_factor.yaml", "--png", str(png)]) == 0
    assert "inputs are vectors: no example images" in capsys.readouterr().out and not png.exists()


@pytest.mark.parametrize("text,message", [
    ("scenario:\n  source: {name: shapes, colour: [red, blue]}\n", "scenario.source: unknown key 'colour' (did you "
                                                                   "mean 'colors'?)"),
    ("scenario:\n  stream: {type: class_incremental, experiences: 3, labeling: shape}\n", "cannot be split evenly into "
                                                                                          "3 experiences"),
    ("scenario:\n  source: {name: mnist, data_root: /nonexistent}\n", "/nonexistent"),
])
def test_bad_scenario_is_one_line_exit_2_and_writes_nothing(tmp_path, text, message, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    png = tmp_path / "out.png"
    assert main(["scenario", str(cfg), "--png", str(png)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not png.exists()


def test_bad_scenario_in_a_real_process(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("scenario:\n  source: {name: shapes, colour: [red, blue]}\n")
    p = subprocess.run([sys.executable, "-m", "dncsim", "scenario", str(cfg)], capture_output=True, text=True,
                       cwd=ROOT)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
