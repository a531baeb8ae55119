"""Runs over the new streams: the refusal of identical experiences for label-free objectives, what the
manifest and report say about the training inputs, watched tasks and class-incremental accuracy."""
import json

import pytest
import yaml

from dncsim.analysis.report import build_report
from dncsim.simulator.cli import main
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.run import run

SOURCE = {"name": "shapes", "image_size": 16, "train_repeats": 1, "probe_repeats": 1, "test_repeats": 2}
SMALL = {"backbone": {"name": "convnet", "width": 4, "feature_dim": 8}, "training": {"epochs": 1, "batch_size": 48},
         "evaluation": {"linear_steps": 5}, "analysis": {"shots": [1], "episodes": 4},
         "output": {"report": False, "tensorboard": False, "checkpoints": False}}


def config(stream, objective="simclr", **extra):
    return {"scenario": {"source": SOURCE, "stream": stream}, "objective": {"name": objective}, **SMALL, **extra}


@pytest.mark.parametrize("stream,objective", [
    ({"type": "multilabel", "labelings": ["shape", "color"]}, "simclr"),
    ({"type": "factor", "hold": "none"}, "vicreg"),
    ({"type": "multilabel", "labelings": ["color", "size"]}, "byol"),
    ({"type": "joint", "blocks": 3}, "simclr"),
])
def test_identical_experiences_for_a_label_free_objective_are_refused(tmp_path, stream, objective, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(stream, objective)))
    out = tmp_path / "never"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("dncsim run: error: scenario.stream: every experience of this stream")
    assert f"objective '{objective}' never reads labels" in err and "use type: factor" in err
    assert not out.exists()


@pytest.mark.parametrize("stream,objective", [
    ({"type": "multilabel", "labelings": ["shape", "color"], "allow_same_inputs": True}, "simclr"),
    ({"type": "multilabel", "labelings": ["shape", "color"]}, "supervised"),
    ({"type": "multilabel", "labelings": ["color"]}, "simclr"),             # one experience repeats nothing
    ({"type": "factor", "hold": "none", "allow_same_inputs": True}, "vicreg"),
    ({"type": "factor", "hold": "one"}, "simclr"),
    ({"type": "joint", "blocks": 3, "allow_same_inputs": True}, "simclr"),
    ({"type": "joint", "blocks": 1}, "vicreg"),                            # one block repeats nothing
    ({"type": "joint", "blocks": 3}, "supervised"),
])
def test_streams_that_mean_it_are_accepted(stream, objective):
    assert run_from_mapping(config(stream, objective)).scenario.stream.type == stream["type"]


def test_the_manifest_and_report_say_whether_the_inputs_differed(tmp_path):
    same = run(run_from_mapping(config({"type": "multilabel", "labelings": ["color", "style"]}, "supervised")),
               tmp_path / "same", quiet=True)
    differ = run(run_from_mapping(config({"type": "factor", "attributes": ["color", "style"]}, "simclr")),
                 tmp_path / "differ", quiet=True)
    inputs = {p.name: json.loads((p / "manifest.json").read_text())["training_inputs"] for p in (same, differ)}
    assert inputs["same"]["inputs_differ"] is False and inputs["differ"]["inputs_differ"] is True
    digests = [e["inputs_digest"] for e in inputs["same"]["experiences"]]
    assert len(digests) == 2 and digests[0] == digests[1]
    exp0 = inputs["differ"]["experiences"][0]
    assert exp0["varying"] == "color" and list(exp0["held"]) == ["style"] and exp0["train_samples"] == 96
    html = (build_report(same) / "index.html").read_text()
    assert "the same in every experience" in html
    html = (build_report(differ) / "index.html").read_text()
    assert "differ between the 2 experiences" in html and "exp 0: color varies, held style=" in html


def test_a_class_incremental_run_with_watched_labelings(tmp_path):
    cfg = run_from_mapping(config({"type": "class_incremental", "labeling": "shape", "experiences": 2}, "simclr",
                                  evaluation={"linear_steps": 5, "watch": ["color", "size"]}))
    out = run(cfg, tmp_path / "ci", quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    acc = json.loads((out / "accuracy.json").read_text())
    assert acc["learned_at"] == [0, 1, None, None] and acc["tasks"][2:] == ["color (watched)", "size (watched)"]
    assert len(acc["matrices"]["linear/refit"]) == 3 and len(acc["matrices"]["linear/refit"][0]) == 4

    def of(task, metric):
        return [r for r in rows if r["task"] == task and r["metric"] == metric]
    for watched in (2, 3):
        assert {r["protocol"] for r in of(watched, "acc")} == {"refit"} and len(of(watched, "acc")) == 3 * 2
        assert not of(watched, "learned") and not of(watched, "forgetting_max") and of(watched, "dir_cdnv")
    assert [r["exp"] for r in of(0, "learned")] == [0] and [r["exp"] for r in of(1, "learned")] == [1]
    seen = [(r["exp"], r["probe"], r["protocol"]) for r in rows if r["metric"] == "acc_seen"]
    assert seen == [(0, "ncc", "refit"), (0, "linear", "refit"), (1, "ncc", "refit"), (1, "linear", "refit")]
    pairs = {(r["task"], r["task_b"]) for r in rows if r["metric"] == "axis_cos_median" and r["exp"] == 1}
    assert {(0, 2), (1, 2), (0, 3), (2, 3)} <= pairs                 # watched axes against the stream's
    assert [(r["task"], r["task_b"]) for r in rows if r["metric"] == "interference"] == [(0, 1), (0, 1)]
    summary = json.loads((build_report(out) / "summary.json").read_text())
    assert summary["learned"]["undecided"] == ["color (watched)", "size (watched)"]
    assert [p["exp"] for p in summary["acc_seen"]["ncc"]] == [0, 1]


def test_a_joint_run_measures_every_labeling_along_training_and_checks_the_paper(tmp_path):
    """joint: successive blocks over the same data, every labeling watched after every block (nothing
    is learned at one experience, so nothing is forgotten), and the paper section in the report."""
    cfg = run_from_mapping(config({"type": "joint", "labelings": ["color", "shape", "size"], "blocks": 3,
                                   "allow_same_inputs": True}, "simclr",
                                  analysis={"shots": [1, 10], "episodes": 4}))
    out = run(cfg, tmp_path / "joint", quiet=True)
    acc = json.loads((out / "accuracy.json").read_text())
    assert acc["learned_at"] == [None, None, None] and acc["tasks"] == ["color", "shape", "size"]
    assert len(acc["matrices"]["linear/refit"]) == 4                      # before training + 3 blocks
    manifest = json.loads((out / "manifest.json").read_text())
    digests = {e["inputs_digest"] for e in manifest["training_inputs"]["experiences"]}
    assert manifest["training_inputs"]["inputs_differ"] is False and len(digests) == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r["metric"].startswith("forgetting")]
    assert {r["exp"] for r in rows if r["metric"] == "axis_cos_median"} == {-1, 0, 1, 2}
    report = build_report(out)
    s = json.loads((report / "summary.json").read_text())
    assert "paper_claims" in s["figures"] and set(s["paper"]) >= {"S1", "S2", "S3", "paper", "findings"}
    assert [f.split(" ")[0] for f in s["paper"]["findings"]] == ["S1", "S2", "S3"]
    assert len(s["paper"]["S3"]["pairs"]) == 3 and s["paper"]["points"] == [-1, 0, 1, 2]
    assert '<h2 id="paper">The paper\'s claims' in (report / "index.html").read_text()
    # --paper on a run of another kind adds the section; output.paper: never (or auto) leaves it out
    factor = run(run_from_mapping(config({"type": "factor", "attributes": ["color", "style"]}, "simclr")),
                 tmp_path / "factor", quiet=True)
    assert "paper" not in json.loads((build_report(factor) / "summary.json").read_text())
    assert main(["report", str(factor), "--paper", "--out", str(tmp_path / "rep")]) == 0
    assert "paper" in json.loads((tmp_path / "rep" / "summary.json").read_text())
