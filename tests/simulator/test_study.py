"""`dncsim study`: grid, engines, resume, failures recorded, tables, statistics and report."""
import json
from pathlib import Path

import pytest
import yaml

from dncsim.analysis import DncsimError
from dncsim.simulator.cli import main
from dncsim.simulator.study import StudyFailed, expand_grid, load_study_config, run_study
from tests.support.tiny import tiny_config

BASE = tiny_config({"scenario.stream.attributes": ["shape", "color", "style"], "backbone.width": 8,
                    "backbone.feature_dim": 16, "training.batch_size": 48, "evaluation.linear_steps": 10,
                    "analysis.shots": [1, 5], "analysis.episodes": 10})


def study_file(tmp_path, name="s", **extra):
    data = {"base": BASE, "factors": {"objective.name": ["simclr", "supervised"]}, "workers": 2,
            "statistics": {"bootstrap": 200, "permutations": 200}, "out": str(tmp_path / name), **extra}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_grid_is_the_cartesian_product_and_validated(tmp_path):
    cfg = load_study_config(study_file(tmp_path, factors={"objective.name": ["simclr", "vicreg"], "seed": [0, 1, 2]}))
    specs = expand_grid(cfg)
    assert [s["name"] for s in specs][:2] == ["000-objective=simclr-seed=0", "001-objective=simclr-seed=1"]
    assert len(specs) == 6 and {s["config"]["objective"]["name"] for s in specs} == {"simclr", "vicreg"}
    assert all(s["config"]["name"] == s["name"] for s in specs)
    bad = load_study_config(study_file(tmp_path, name="b", factors={"training.epochs": [1, 0]}))
    with pytest.raises(DncsimError, match=r"study run 001-epochs=0: training.epochs: input should be greater"):
        expand_grid(bad)


@pytest.mark.parametrize("extra,message", [
    ({"engine": "spark"}, "engine: 'spark' is not one of local, dask"),
    ({"factors": {}}, "factors: at least one factor is needed"),
    ({"workerz": 2}, "unknown key 'workerz' (did you mean 'workers'?)"),
])
def test_bad_study_files_are_one_line_exit_2(tmp_path, extra, message, capsys):
    assert main(["study", str(study_file(tmp_path, **extra))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_local_study_with_a_failure_then_resume(tmp_path):
    attributes = [["shape", "color", "style"], ["shape", "colour"]]
    path = study_file(tmp_path, factors={"objective.name": ["simclr", "supervised"],
                                         "scenario.stream.attributes": attributes})
    with pytest.raises(StudyFailed, match=r"^2 of 4 runs failed \(see .*study.json; rerun with --retry-failed\)$"):
        run_study(load_study_config(path))
    out = tmp_path / "s"
    state = json.loads((out / "study.json").read_text())
    status = {r["name"]: r["status"] for r in state["runs"]}
    assert sorted(status.values()) == ["failed", "failed", "finished", "finished"]
    failed = [r for r in state["runs"] if r["status"] == "failed"]
    assert all("'colour' is not a labeling of source 'shapes'" in r["error"] for r in failed)
    tasks = (out / "tasks.csv").read_text().splitlines()
    pairs = (out / "pairs.csv").read_text().splitlines()
    assert len(tasks) == 1 + 2 * 3 and len(pairs) == 1 + 2 * 3
    header = tasks[0].split(",")
    assert {"run", "objective.name", "task", "dir_cdnv_learned", "cdnv_learned", "overlap_later",
            "forgetting_max/linear/frozen", "bwt/ncc/refit"} <= set(header)
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["outcome"] == "forgetting_max/linear/frozen" and stats["verdict"]
    labels = [t["label"] for t in stats["tests"]]
    assert "all runs: dir-CDNV when learned vs forgetting" in labels or stats["notes"]
    assert (out / "report" / "index.html").is_file()
    assert (out / "report" / "figures" / "dir_cdnv_vs_forgetting.png").is_file()
    html = (out / "report" / "index.html").read_text()
    failed_list = html.split("Failed runs", 1)[1].split("</ul>", 1)[0]
    assert failed_list.count("is not a labeling of source") == 2        # each failed run listed with its reason
    # resume: finished runs are skipped, failures are not retried unless asked
    finished = [Path(r["path"]) for r in state["runs"] if r["status"] == "finished"]
    stamps = [(p / "manifest.json").stat().st_mtime_ns for p in finished]
    with pytest.raises(StudyFailed):
        run_study(load_study_config(path))
    assert stamps == [(p / "manifest.json").stat().st_mtime_ns for p in finished]
    again = json.loads((out / "study.json").read_text())
    assert [r["status"] for r in again["runs"]] == [r["status"] for r in state["runs"]]
    with pytest.raises(StudyFailed, match="^2 of 4 runs failed"):
        run_study(load_study_config(path, {"retry_failed": True}))
    retried = json.loads((out / "study.json").read_text())
    assert sum(r["status"] == "failed" for r in retried["runs"]) == 2          # retried, failed again
    assert stamps == [(p / "manifest.json").stat().st_mtime_ns for p in finished]


@pytest.mark.slow
def test_dask_engine_gives_the_same_tables_as_local(tmp_path):
    local = run_study(load_study_config(study_file(tmp_path, name="local")))
    dask = run_study(load_study_config(study_file(tmp_path, name="dask", engine="dask")))
    assert json.loads((dask / "study.json").read_text())["engine"] == "dask"
    for study in (local, dask):          # two empty tables would also be equal: every run finished
        assert [r["status"] for r in json.loads((study / "study.json").read_text())["runs"]] == ["finished"] * 2
    for table, column in (("tasks.csv", "dir_cdnv_learned"), ("pairs.csv", "overlap")):
        lines = (local / table).read_text().splitlines()
        assert len(lines) == 1 + 2 * 3 and column in lines[0].split(",")     # 2 runs x 3 tasks (3 pairs)
        assert (local / table).read_text() == (dask / table).read_text()
