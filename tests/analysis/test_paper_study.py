"""The paper's claims over a study's runs (seeds): grouping by setting, the study's paper.json and
`dncsim stats` on a study of joint streams, from fake run directories."""
import json

import pytest

from dncsim.analysis.report import study as study_report
from dncsim.analysis.report.study import paper_over_study
from dncsim.common import DncsimError
from dncsim.simulator.stats_command import format_statistics, stats_for
from tests.support.paper_runs import make_run


@pytest.fixture
def fake_runs(monkeypatch, tmp_path):
    """Run directories whose load_run gives hand-made tables: the index falls 10x, 5x or 2.5x by seed."""
    made = {}

    def load(path):
        return made[str(path)]
    monkeypatch.setattr(study_report, "load_run", load)

    def add(name, seed, final, stream="joint"):
        run = make_run(index_final=final, seed=seed)
        run.config["scenario"]["stream"]["type"] = stream
        run.config["name"] = name
        made[str(tmp_path / "runs" / name)] = run
        return tmp_path / "runs" / name
    return add


def test_runs_are_grouped_by_the_factors_other_than_the_seed(fake_runs):
    runs = [(fake_runs(f"{obj}-{s}", s, final), {"objective.name": obj, "seed": s})
            for obj, finals in (("simclr", (2.0, 4.0, 8.0)), ("vicreg", (8.0, 8.0))) for s, final in enumerate(finals)]
    out = paper_over_study(runs)
    assert [g["setting"] for g in out["groups"]] == ["objective.name=simclr", "objective.name=vicreg"]
    simclr, vicreg = out["groups"]
    assert simclr["runs"] == ["simclr-0", "simclr-1", "simclr-2"] and len(simclr["per_run"]) == 3
    assert simclr["claims"]["S1"]["verdict"] == "reproduced in 2 of 3 runs"
    assert simclr["claims"]["S1"]["fall"]["mean"] == pytest.approx(5.0)
    assert vicreg["claims"]["S1"]["verdict"] == "not reproduced in any run"
    assert simclr["findings"][0].startswith("S1 over 3 runs")


def test_auto_checks_joint_streams_only_and_never_checks_nothing(fake_runs):
    runs = [(fake_runs("a", 0, 2.0), {"seed": 0}), (fake_runs("b", 1, 2.0, stream="factor"), {"seed": 1})]
    assert paper_over_study(runs, "auto") is None and paper_over_study(runs, "never") is None
    assert paper_over_study(runs, "always")["groups"][0]["runs"] == ["a", "b"]


def _study_dir(tmp_path, names):
    (tmp_path / "study.json").write_text(json.dumps({"name": "s", "runs": [
        {"name": n, "factors": {"seed": i}, "status": "finished", "path": f"elsewhere/{n}"} for i, n in enumerate(names)
    ] + [{"name": "broken", "factors": {"seed": 9}, "status": "failed", "path": "x"}]}))
    (tmp_path / "study.yaml").write_text("statistics: {paper: auto}\n")
    (tmp_path / "tasks.csv").write_text("run,task_name,dir_cdnv_learned\n" + "".join(
        f"{n},color,0.1\n" for n in names))
    return tmp_path


def test_stats_on_a_study_of_joint_streams_states_the_claims_over_seeds(fake_runs, tmp_path):
    names = ["000-seed=0", "001-seed=1", "002-seed=2"]
    for i, (n, final) in enumerate(zip(names, (2.0, 4.0, 8.0))):
        fake_runs(n, i, final)
    study = _study_dir(tmp_path, names)
    result = stats_for(study)                       # runs found under runs/ by name; the failed one left out
    assert result["primary"] is None and result["paper"]["groups"][0]["runs"] == names
    text = format_statistics(result)
    assert text.startswith("The paper's claims, all runs (3 runs):\n- S1 over 3 runs")
    assert "Verdict:" not in text and "a joint stream has nothing to forget" in text
    with pytest.raises(DncsimError, match="no column forgetting_max/linear/frozen"):
        stats_for(study, paper="never")
    with pytest.raises(DncsimError, match="--paper"):
        stats_for(study, paper="sometimes")
