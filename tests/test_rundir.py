"""The run directory's one owner: every file type written and read back, names that need quoting,
the plan that decides what a run may do with a directory, and a class-incremental run's table."""
import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dncsim.analysis import class_geometry
from dncsim.analysis.names import ACC, DIR_CDNV, METHODS_REVISION, TABLE_COLUMNS, ProbeKey, probe_keys, table_row
from dncsim.common import DncsimError
from dncsim.rundir import (RunDirectory, accuracy_matrices, load_geometry, load_run, metrics_csv_text,
                           read_metrics_csv)

names = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                max_size=30)
values = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def tables(draw):
    """A metrics table: a few tasks with arbitrary names, accuracy and geometry rows, pair rows."""
    task_names = draw(st.lists(names, min_size=1, max_size=4))
    rows = []
    for exp in range(-1, len(task_names)):
        for k, name in enumerate(task_names):
            for key in probe_keys():
                if key.protocol == "frozen" and exp < k:
                    continue
                rows.append(table_row(exp, ACC, draw(st.floats(0, 1)), task=k, task_name=name, key=key))
            rows.append(table_row(exp, DIR_CDNV, draw(values), task=k, task_name=name))
            if k:
                rows.append(table_row(exp, "axis_cos_median", draw(values), task=0, task_name=task_names[0],
                                      task_b=k))
            rows.append(table_row(exp, "fewshot_err", draw(values), task=k, task_name=name, shots=draw(st.integers(1))))
    return task_names, rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables())
def test_metrics_and_accuracy_files_round_trip(tmp_path_factory, table):
    task_names, rows = table
    rd = RunDirectory(tmp_path_factory.mktemp("run"))
    rd.prepare(RunDirectory.FRESH)
    rd.write_metrics(rows)
    assert read_metrics_csv(rd.file("metrics.csv")) == rows
    assert [json.loads(line) for line in rd.file("metrics.jsonl").read_text().splitlines()] == rows
    with open(rd.file("metrics.csv"), newline="", encoding="utf-8") as f:
        parsed = list(csv.reader(f))
    assert parsed[0] == list(TABLE_COLUMNS) and len(parsed) == len(rows) + 1
    assert all(len(r) == len(TABLE_COLUMNS) for r in parsed)
    frame = pd.read_csv(rd.file("metrics.csv"), keep_default_na=False, dtype=str)
    assert frame.shape == (len(rows), len(TABLE_COLUMNS))
    assert list(frame["task_name"]) == ["" if r["task_name"] is None else r["task_name"] for r in rows]
    # accuracy.json is the acc rows as matrices
    keys = probe_keys()
    rd.write_accuracy(rows, task_names, keys)
    stored = json.loads(rd.file("accuracy.json").read_text())
    assert stored["tasks"] == task_names and set(stored["matrices"]) == {str(k) for k in keys}
    mats = accuracy_matrices(rows, len(task_names), keys)
    for r in rows:
        if r["metric"] == ACC:
            key = ProbeKey(r["probe"], r["protocol"])
            assert stored["matrices"][str(key)][r["exp"] + 1][r["task"]] == r["value"] == mats[key][r["exp"] + 1,
                                                                                                  r["task"]]
    assert stored["matrices"]["ncc/frozen"][0] == [None] * len(task_names)


@pytest.mark.parametrize("mean_axis_var", [True, False])
def test_geometry_files_round_trip_exactly(tmp_path, mean_axis_var):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    geoms = {0: class_geometry(x, torch.arange(60) % 3, mean_axis_var=mean_axis_var),
             2: class_geometry(x.float(), torch.arange(60) % 2, ddof=1, dtype=torch.float32)}
    rd = RunDirectory(tmp_path)
    rd.write_geometry(-1, geoms)
    back = load_geometry(tmp_path / "geometry" / "row_000.npz")
    assert sorted(back) == [0, 2]
    for k, geom in geoms.items():
        for field, value in geom.to_arrays().items():
            torch.testing.assert_close(back[k].to_arrays()[field], value, rtol=0, atol=0, equal_nan=True)
        assert (back[k].mean_axis_var is None) == (geom.mean_axis_var is None)
    with np.load(tmp_path / "geometry" / "row_000.npz") as z:
        assert z["task0/axes"].shape == (3, 5) and z["task0/pairs"].tolist() == [[0, 1], [0, 2], [1, 2]]


def test_config_manifest_and_checkpoint_round_trip(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    assert rd.plan({"a": 1}, resume=False, force=False) == RunDirectory.FRESH and not rd.path.exists()
    rd.prepare(RunDirectory.FRESH)
    config = {"name": "x, \"y\"", "seed": 3, "scenario": {"source": {"name": "shapes"}}, "lists": [1, [2, 3]]}
    rd.write_config(config)
    rd.write_manifest({"status": "running", "é": None})
    assert rd.stored_config() == config and rd.manifest() == {"status": "running", "é": None}
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "rows": [table_row(0, ACC, 0.5)],
             "experiences_done": 1}
    records = rd.save_checkpoint(state)
    assert [(r["file"], r["experiences_done"]) for r in records] == [("checkpoint.pt", 1)]
    back, note = rd.load_checkpoint(records)
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["rows"] == state["rows"] and note is None
    records = rd.save_checkpoint({**state, "experiences_done": 2}, records)       # a second generation
    assert [(r["file"], r["experiences_done"]) for r in records] == [("checkpoint.pt", 2),
                                                                     ("checkpoint.previous.pt", 1)]
    assert rd.load_checkpoint(records)[0]["experiences_done"] == 2
    rd.file("checkpoint.pt").write_bytes(rd.file("checkpoint.pt").read_bytes()[:50])     # truncated on disk
    back, note = rd.load_checkpoint(records)
    assert back["experiences_done"] == 1 and "checkpoint.pt does not match any checksum" in note
    assert "resuming from the previous generation, after experience 0" in note
    rd.file("checkpoint.previous.pt").write_bytes(b"\0" * 100)
    with pytest.raises(DncsimError, match="no usable checkpoint .*; use --force to start the run over"):
        rd.load_checkpoint(records)


def test_the_plan_never_touches_the_directory(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    with pytest.raises(DncsimError, match="--resume: .* does not exist"):
        rd.plan({}, resume=True, force=False)
    rd.prepare(RunDirectory.FRESH)
    rd.write_config({"seed": 1, "output": {"dir": "a"}})
    rd.write_manifest({"status": "running", "methods_revision": METHODS_REVISION})
    assert rd.plan({"seed": 1, "output": {"dir": "b"}}, resume=False, force=False) == RunDirectory.RESUME
    with pytest.raises(DncsimError, match=r"different configuration \(first difference: seed\)"):
        rd.plan({"seed": 2}, resume=False, force=False)
    assert rd.plan({"seed": 2}, resume=False, force=True) == RunDirectory.REPLACE
    rd.write_manifest({"status": "finished"})
    with pytest.raises(DncsimError, match="holds a finished run"):
        rd.plan({"seed": 1}, resume=False, force=False)
    assert sorted(p.name for p in rd.path.iterdir()) == ["config.yaml", "manifest.json"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DncsimError, match="is not a dncsim run directory"):
        RunDirectory(other).plan({}, resume=False, force=False)
    rd.prepare(RunDirectory.REPLACE)
    assert list(rd.path.iterdir()) == []


def test_a_run_begun_under_other_methods_is_not_resumed(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    rd.prepare(RunDirectory.FRESH)
    rd.write_config({"seed": 1})
    for began, says in ((None, "begun by a dncsim from before methods revisions were recorded"),
                        (METHODS_REVISION - 1, f"begun by methods revision {METHODS_REVISION - 1}"),
                        (METHODS_REVISION + 1, f"begun by methods revision {METHODS_REVISION + 1}")):
        manifest = {"status": "interrupted", "git_commit": "0123abc"}
        if began is not None:
            manifest["methods_revision"] = began
        rd.write_manifest(manifest)
        with pytest.raises(DncsimError, match=f"{says}; this dncsim computes revision {METHODS_REVISION}, .*"
                                              r"use --force to start over, .* \(0123abc\)$"):
            rd.plan({"seed": 1}, resume=False, force=False)
        assert rd.plan({"seed": 1}, resume=False, force=True) == RunDirectory.REPLACE
    rd.write_manifest({"status": "finished"})                 # a finished run is read, never resumed
    with pytest.raises(DncsimError, match="holds a finished run"):
        rd.plan({"seed": 1}, resume=False, force=False)


def test_a_run_killed_before_its_first_manifest_starts_afresh_and_its_temporary_files_go(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    rd.prepare(RunDirectory.FRESH)
    (rd.path / ".dncsim.lock").write_text("")
    (rd.path / ".config.yaml.k3j2_x.tmp").write_text("seed: ")            # a write the kill cut short
    assert rd.plan({"seed": 1}, resume=False, force=False) == RunDirectory.FRESH
    rd.write_config({"seed": 1, "output": {"dir": "a"}})
    (rd.path / ".manifest.json.q1w2e3.tmp").write_text("{")
    assert rd.plan({"seed": 1, "output": {"dir": "b"}}, resume=False, force=False) == RunDirectory.FRESH
    with pytest.raises(DncsimError, match="is not a dncsim run directory"):    # not this run's config
        rd.plan({"seed": 2}, resume=False, force=False)
    (rd.path / "geometry").mkdir()
    (rd.path / "geometry" / ".row_000.npz.abc123.tmp").write_bytes(b"PK")
    (rd.path / "geometry" / "notes.tmp").write_text("not ours")            # not an atomic write's name
    rd.prepare(RunDirectory.FRESH)
    assert sorted(p.name for p in rd.path.rglob("*")) == [".dncsim.lock", "config.yaml", "geometry", "notes.tmp"]
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.yaml").write_text("seed: 1\n")
    (user / "train.py").write_text("")
    with pytest.raises(DncsimError, match="is not a dncsim run directory"):    # a config.yaml among other files
        RunDirectory(user).plan({"seed": 1}, resume=False, force=False)


def test_a_class_incremental_run_writes_a_table_every_reader_parses(tmp_path):
    from dncsim.simulator.config import run_from_mapping
    from dncsim.simulator.run import run
    cfg = run_from_mapping({
        "scenario": {"source": {"name": "shapes", "image_size": 16, "train_repeats": 1, "test_repeats": 1},
                     "stream": {"type": "class_incremental", "labeling": "shape", "experiences": 2}},
        "backbone": {"name": "convnet", "width": 4, "feature_dim": 8}, "objective": {"name": "supervised"},
        "evaluation": {"linear_steps": 5}, "analysis": {"shots": [1], "episodes": 2},
        "output": {"report": False, "tensorboard": False, "checkpoints": False}})
    out = run(cfg, tmp_path / "ci", quiet=True)
    jsonl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(", " in (r["task_name"] or "") for r in jsonl)           # "classes circle, square"
    assert read_metrics_csv(out / "metrics.csv") == jsonl
    with open(out / "metrics.csv", newline="") as f:
        assert {len(r) for r in csv.reader(f)} == {len(TABLE_COLUMNS)}
    frame = pd.read_csv(out / "metrics.csv")
    assert frame.shape == (len(jsonl), len(TABLE_COLUMNS))
    run_data = load_run(out)
    assert run_data.tasks == sorted({r["task_name"] for r in jsonl if r["task_name"]}, key=run_data.tasks.index)
    assert all(", " in t for t in run_data.tasks) and run_data.stream == "class_incremental"
    assert metrics_csv_text(jsonl).encode() == (out / "metrics.csv").read_bytes()


class Killed(BaseException):
    """What SIGKILL does to a process in the middle of a write: it stops there, its temporary file stays."""


def test_no_kill_in_the_saves_after_a_fallback_leaves_no_good_generation(tmp_path, monkeypatch):
    """Generations 1 and 2 saved, generation 2 damaged: the resume falls back to 1, moves 2 aside, saves 2
    and 3 again. Killed at every file operation of that (the saves and the manifests that record them), the
    next resume finds a generation that verifies, and it is the one its record names."""
    import os
    import shutil

    import dncsim.common

    def generation(n):
        return {"experiences_done": n, "w": torch.full((64,), float(n))}
    base = RunDirectory(tmp_path / "base")
    base.prepare(RunDirectory.FRESH)
    records = base.save_checkpoint(generation(1))
    records = base.save_checkpoint(generation(2), records)
    base.write_manifest({"status": "interrupted", "checkpoints": records})
    data = bytearray(base.file("checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0x10
    base.file("checkpoint.pt").write_bytes(bytes(data))

    def resume(rd):
        state, note = rd.load_checkpoint(rd.manifest()["checkpoints"])
        return state, note

    def after_fallback(rd):
        state, note = resume(rd)
        assert state["experiences_done"] == 1 and "checkpoint.pt does not match any checksum" in note
        rd.quarantine_damaged()
        records = rd.verified
        rd.write_manifest({"status": "running", "checkpoints": records})
        for n in (2, 3):
            records = rd.save_checkpoint(generation(n), records)
            rd.write_manifest({"status": "running", "checkpoints": records})

    real_replace, operations = os.replace, []
    monkeypatch.setattr(os, "replace", lambda src, dst: (operations.append(dst), real_replace(src, dst))[1])
    after_fallback(RunDirectory(shutil.copytree(base.path, tmp_path / "whole")))
    monkeypatch.undo()
    assert [p.name for p in operations] == ["checkpoint.damaged.pt", "manifest.json",       # the bad one moved aside
                                            "checkpoint.pt", "manifest.json",               # no rotation: 1 stays
                                            "checkpoint.previous.pt", "checkpoint.pt", "manifest.json"]
    for k in range(len(operations) + 1):
        rd = RunDirectory(shutil.copytree(base.path, tmp_path / f"killed-{k}"))
        calls = []

        def killing(src, dst):
            calls.append(dst)
            if len(calls) > k:
                raise Killed
            return real_replace(src, dst)
        monkeypatch.setattr(os, "replace", killing)
        monkeypatch.setattr(dncsim.common, "_remove", lambda tmp: None)
        if k < len(operations):
            with pytest.raises(Killed):
                after_fallback(rd)
        else:
            after_fallback(rd)
        monkeypatch.undo()
        state, _ = resume(RunDirectory(rd.path))
        assert state["experiences_done"] >= 1 and torch.equal(state["w"], generation(state["experiences_done"])["w"])
    assert state["experiences_done"] == 3
    assert sorted(p.name for p in rd.path.iterdir() if p.suffix == ".pt") == [
        "checkpoint.damaged.pt", "checkpoint.previous.pt", "checkpoint.pt"]


def test_a_damaged_older_generation_is_moved_aside_and_the_newest_used(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    rd.prepare(RunDirectory.FRESH)
    records = rd.save_checkpoint({"experiences_done": 1})
    records = rd.save_checkpoint({"experiences_done": 2}, records)
    rd.file("checkpoint.previous.pt").write_bytes(b"\0" * 10)
    state, note = rd.load_checkpoint(records)
    assert state["experiences_done"] == 2
    assert note.endswith("checkpoint.previous.pt does not match any checksum in manifest.json (damaged or incomplete): "
                         "resuming from the newest generation, after experience 1 (checkpoint.previous.pt kept as "
                         "checkpoint.damaged.pt)")
    assert [(r["file"], r["experiences_done"]) for r in rd.verified] == [("checkpoint.pt", 2)]
    rd.quarantine_damaged()
    assert sorted(p.name for p in rd.path.iterdir()) == ["checkpoint.damaged.pt", "checkpoint.pt"]
    records = rd.save_checkpoint({"experiences_done": 3}, rd.verified)
    assert [(r["file"], r["experiences_done"]) for r in records] == [("checkpoint.pt", 3),
                                                                     ("checkpoint.previous.pt", 2)]
    assert rd.load_checkpoint(records) == ({"experiences_done": 3}, None)


def test_run_status_is_read_from_the_manifest_by_the_run_directory_layer(tmp_path):
    from dncsim.rundir import is_run_directory, run_status
    assert run_status(tmp_path) is None and not is_run_directory(tmp_path)
    (tmp_path / "manifest.json").write_text('{"status": "running"}')
    assert run_status(tmp_path) == "running" and is_run_directory(tmp_path)
    for text in ("not json", "[1, 2]", '{"status": 3}'):
        (tmp_path / "manifest.json").write_text(text)
        assert run_status(tmp_path) is None
