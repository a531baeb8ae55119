"""Deletion only of what is provably dncsim's: ``--force`` and study directories refuse folders that are
not theirs, run and study names are names (never paths), studies fail loudly and write nothing before
their scheduler answers."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from dncsim.common import DncsimError
from dncsim.rundir import RunDirectory
from dncsim.simulator.cli import main
from dncsim.simulator.run import run  # noqa: F401 - imported here, as the other run tests do, not under capsys
from tests.support.tiny import tiny_config

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def tree(directory: Path) -> dict:
    """Every file and folder under ``directory``: path -> bytes (None for a folder)."""
    return {p.relative_to(directory).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def precious(tmp_path) -> Path:
    folder = tmp_path / "precious"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("thesis\n")
    (folder / "sub" / "data.bin").write_bytes(bytes(range(256)))
    return folder


@pytest.fixture
def refused(monkeypatch):
    """A run that gets as far as being built fails the test at once (every case here must be refused before)."""
    import dncsim.simulator.run

    def started(*args, **kwargs):
        raise AssertionError("the run started")
    monkeypatch.setattr(dncsim.simulator.run, "build_run", started)


@pytest.fixture
def study_refused(monkeypatch):
    """A study that gets as far as running its runs fails the test at once."""
    import dncsim.simulator.study

    class Started:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the study started")
    monkeypatch.setattr(dncsim.simulator.study, "_executor", Started)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- --force deletes only run directories -----------------------------------------------------------------

def test_force_never_deletes_a_folder_that_is_not_a_run_directory(tmp_path, capsys, refused):
    """The issue's case: `dncsim run configs/quickstart.yaml --out precious --force`."""
    folder = precious(tmp_path)
    before = tree(folder)
    for extra in ([], ["--force"]):
        assert main(["run", str(QUICKSTART), "--out", str(folder), *extra]) == 2
        err = one_line_error(capsys)
        assert f"{folder} exists and is not a dncsim run directory; choose another --out" in err
        assert "--force" not in err
        assert tree(folder) == before


@pytest.mark.parametrize("manifest", ['{"name": "my web app", "version": 3}', "[1, 2]", '{"status": "draft"}',
                                      "not json"])
def test_a_manifest_that_is_not_a_run_manifest_is_no_proof(tmp_path, capsys, refused, manifest):
    folder = precious(tmp_path)
    (folder / "manifest.json").write_text(manifest)
    (folder / "config.yaml").write_text("mine: true\n")
    before = tree(folder)
    assert main(["run", str(QUICKSTART), "--out", str(folder), "--force"]) == 2
    err = one_line_error(capsys)
    assert "is not a dncsim run directory" in err and "--force" not in err
    assert tree(folder) == before


def test_force_on_a_study_directory_deletes_nothing(tmp_path, capsys, refused):
    study = tmp_path / "study"
    (study / "runs" / "000-seed=0").mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({"name": "s", "runs": []}))
    (study / "tasks.csv").write_text("run,task\n")
    before = tree(study)
    assert main(["run", str(QUICKSTART), "--out", str(study), "--force"]) == 2
    assert "is not a dncsim run directory" in one_line_error(capsys)
    assert tree(study) == before


def test_force_on_a_run_directory_deletes_the_run_files_and_nothing_else(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    rd.prepare(RunDirectory.FRESH)
    rd.write_config({"seed": 1})
    rd.write_manifest({"status": "finished"})
    for name in ("metrics.csv", "metrics.jsonl", "accuracy.json", "checkpoint.pt", "checkpoint.previous.pt",
                 "checkpoint.damaged.pt", ".metrics.csv.a1b2c3.tmp"):
        rd.file(name).write_bytes(b"x")
    for folder in ("geometry", "tb", "report", "wandb"):
        (rd.path / folder).mkdir()
        (rd.path / folder / "f").write_bytes(b"x")
    (rd.path / "notes.txt").write_text("the user's")
    (rd.path / "analysis").mkdir()
    (rd.path / "analysis" / "plot.py").write_text("the user's")
    (rd.path / ".dncsim.lock").write_text("")
    assert rd.plan({"seed": 2}, resume=False, force=True) == RunDirectory.REPLACE
    rd.prepare(RunDirectory.REPLACE)
    assert tree(rd.path) == {".dncsim.lock": b"", "analysis": None, "analysis/plot.py": b"the user's",
                             "notes.txt": b"the user's"}


def test_force_on_an_empty_or_new_directory_starts_fresh(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert RunDirectory(empty).plan({"seed": 1}, resume=False, force=True) == RunDirectory.FRESH
    assert RunDirectory(tmp_path / "new").plan({"seed": 1}, resume=False, force=True) == RunDirectory.FRESH
    (empty / ".dncsim.lock").write_text("")                                    # what a lock left
    (empty / ".manifest.json.x1y2z3.tmp").write_text("{")                     # what a kill left
    assert RunDirectory(empty).plan({"seed": 1}, resume=False, force=True) == RunDirectory.FRESH


# --- names are names --------------------------------------------------------------------------------------

BAD_NAMES = ["/tmp/somewhere", "../escape", "a/b", "..", ".", "a\\b", "", "  "]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_run_name_that_is_a_path_is_refused(tmp_path, monkeypatch, capsys, refused, name):
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(QUICKSTART.read_text())
    config["name"] = name
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", "c.yaml"]) == 2
    err = one_line_error(capsys)
    assert err.startswith("dncsim run: error: name: ")
    assert ("is a path" in err and "choose the location with --out or output.dir" in err) or "empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]          # no runs/ made
    if name.strip():
        assert main(["run", str(QUICKSTART), "--set", f"name={name}"]) == 2
        assert "is a path" in one_line_error(capsys)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


STUDY_BASE = tiny_config()


def study_file(tmp_path, **extra) -> Path:
    data = {"base": STUDY_BASE, "factors": {"seed": [0]}, "workers": 1,
            "statistics": {"bootstrap": 100, "permutations": 100}, **extra}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["../escape", "/tmp/somewhere", "a/b", ".."])
def test_a_study_name_that_is_a_path_is_refused(tmp_path, monkeypatch, capsys, study_refused, name):
    monkeypatch.chdir(tmp_path)
    path = study_file(tmp_path, name=name)
    assert main(["study", str(path)]) == 2
    err = one_line_error(capsys)
    assert err.startswith("dncsim study: error: name: ") and "choose the location with --out or out:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_study_never_writes_into_a_folder_that_is_not_a_study_directory(tmp_path, capsys, study_refused):
    folder = precious(tmp_path)
    (folder / "study.yaml").write_text("my own study file\n")
    before = tree(folder)
    assert main(["study", str(study_file(tmp_path, out=str(folder)))]) == 2
    err = one_line_error(capsys)
    assert f"out: {folder} exists and is not a dncsim study directory; choose another --out" in err
    assert tree(folder) == before
    (folder / "study.json").write_text("[]")
    assert main(["study", str(study_file(tmp_path, out=str(folder)))]) == 2
    assert "study.json is not a study record" in one_line_error(capsys)
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert main(["study", str(study_file(tmp_path, out=str(a_file)))]) == 2
    assert f"out: {a_file} exists and is not a directory" in one_line_error(capsys)
    assert a_file.read_text() == "x"


# --- studies: failures and schedulers ---------------------------------------------------------------------

class InProcess:
    """A study executor that runs each spec in this process, one after the other."""

    def open(self):
        pass

    def close(self):
        pass

    def map_unordered(self, fn, specs):
        for spec in specs:
            yield fn(spec)


@pytest.fixture
def in_process(monkeypatch):
    import dncsim.simulator.study as study
    threads = torch.get_num_threads()
    monkeypatch.setattr(study, "_executor", lambda cfg, out: InProcess())
    yield
    torch.set_num_threads(threads)


def test_a_study_whose_runs_failed_exits_1_and_says_how_many(tmp_path, capsys, in_process):
    out = tmp_path / "all-failed"
    path = study_file(tmp_path, out=str(out), factors={"scenario.stream.attributes": [["color", "colour"],
                                                                                        ["color", "styel"]]})
    assert main(["study", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"dncsim study: error: 2 of 2 runs failed (see {out / 'study.json'}; rerun with --retry-failed)"
    assert [r["status"] for r in json.loads((out / "study.json").read_text())["runs"]] == ["failed", "failed"]
    assert (out / "report" / "index.html").is_file()                # the report is written all the same


@pytest.mark.slow
def test_a_study_with_one_failed_run_of_two_exits_1(tmp_path, capsys, in_process):
    out = tmp_path / "one-failed"
    path = study_file(tmp_path, out=str(out), factors={"scenario.stream.attributes": [["color", "style"],
                                                                                        ["color", "colour"]]})
    assert main(["study", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"dncsim study: error: 1 of 2 runs failed (see {out / 'study.json'}; rerun with --retry-failed)"
    runs = json.loads((out / "study.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["finished", "failed"]
    assert "'colour' is not a labeling" in runs[1]["error"]


def test_an_unreachable_scheduler_writes_nothing(tmp_path, monkeypatch, capsys):
    import dncsim.simulator.study_executors as executors
    monkeypatch.setattr(executors, "SCHEDULER_TIMEOUT_S", 1)
    out = tmp_path / "dask-study"
    path = study_file(tmp_path, out=str(out), engine="dask", scheduler="tcp://127.0.0.1:1")
    assert main(["study", str(path)]) == 2
    err = one_line_error(capsys)
    assert err.startswith("dncsim study: error: scheduler: cannot connect to tcp://127.0.0.1:1")
    assert not out.exists()
    path = study_file(tmp_path, out=str(out), engine="dask", cluster={"kind": "address",
                                                                      "address": "tcp://127.0.0.1:1"})
    assert main(["study", str(path)]) == 2
    assert "scheduler: cannot connect" in one_line_error(capsys) and not out.exists()


def test_names_are_checked_by_the_config_schemas():
    from dncsim.simulator.config import run_from_mapping
    from dncsim.simulator.study import StudyConfig
    with pytest.raises(DncsimError, match=r"^name: '\.\./x' is a path"):
        run_from_mapping({"name": "../x"})
    assert run_from_mapping({"name": "tiny, run 1 (é)"}).name == "tiny, run 1 (é)"
    with pytest.raises(Exception, match="is a path"):
        StudyConfig.model_validate({"name": "a/b", "base": {}, "factors": {"seed": [0]}})
