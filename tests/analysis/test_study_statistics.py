"""study_statistics on synthetic study tables: every test present, the verdict follows the data."""
import numpy as np

from dncsim.analysis.stats import study_statistics
from dncsim.simulator.study import StatisticsConfig


def tables(effect, seed=0, runs_per_objective=8, tasks=3):
    rng = np.random.default_rng(seed)
    task_rows, pair_rows = [], []
    for obj in ("simclr", "supervised"):
        for r in range(runs_per_objective):
            run = f"{obj}-{r}"
            for k in range(tasks):
                d = float(np.exp(rng.normal()))
                c = float(np.exp(rng.normal()))
                f = effect * np.log(d) + rng.normal() * 0.5
                task_rows.append({"run": run, "objective": obj, "strategy": "naive", "task_name": f"t{k}",
                                  "dir_cdnv_learned": d, "cdnv_learned": c, "forgetting_max/linear/frozen": float(f)})
            for a in range(tasks):
                for b in range(a + 1, tasks):
                    o = float(rng.uniform())
                    pair_rows.append({"run": run, "objective": obj, "overlap": o,
                                      "interference/linear/frozen": effect * o + float(rng.normal()) * 0.3})
    return task_rows, pair_rows


def test_all_tests_and_a_supported_verdict_when_the_effect_is_there():
    t, p = tables(effect=1.0)
    s = study_statistics(t, p, StatisticsConfig(bootstrap=300, permutations=300))
    labels = [x["label"] for x in s["tests"]]
    assert labels == ["all runs: dir-CDNV when learned vs forgetting", "all runs: CDNV when learned vs forgetting",
                      "simclr: dir-CDNV when learned vs forgetting", "simclr: CDNV when learned vs forgetting",
                      "supervised: dir-CDNV when learned vs forgetting", "supervised: CDNV when learned vs forgetting",
                      "within task: dir-CDNV when learned vs forgetting", "within task: CDNV when learned vs "
                                                                          "forgetting",
                      "all runs: axis overlap vs interference (task pairs)"]
    assert [d["label"] for d in s["differences"]] == ["all runs: rho(dir-CDNV) - rho(CDNV)",
                                                      "simclr: rho(dir-CDNV) - rho(CDNV)",
                                                      "supervised: rho(dir-CDNV) - rho(CDNV)"]
    main = s["tests"][0]
    assert main["rho"] > 0.5 and main["ci_low"] > 0 and main["n"] == 48 and main["clusters"] == 16
    text = " ".join(s["verdict"])
    assert "Supported" in text and "directional CDNV predicts forgetting better" in text
    assert "the link holds beyond differences between tasks" in text


def test_verdict_is_plain_when_there_is_no_effect():
    t, p = tables(effect=0.0, seed=3)
    s = study_statistics(t, p, StatisticsConfig(bootstrap=300, permutations=300))
    text = " ".join(s["verdict"])
    assert "Not supported by these data" in text and "No measurable link between axis overlap" in text
    assert "the data show no measurable link" in text


def test_within_task_ranks_remove_differences_between_tasks():
    from dncsim.analysis.stats import within_task_ranks as _within_task
    rows = [{"task_name": t, "x": x, "y": y} for t, x, y in
            [("a", 1.0, 10.0), ("a", 2.0, 20.0), ("b", 100.0, 0.5), ("b", 200.0, 0.1)]]
    w = _within_task(rows, ["x", "y"])
    assert [r["x"] for r in w] == [-0.5, 0.5, -0.5, 0.5] and [r["y"] for r in w] == [-0.5, 0.5, 0.5, -0.5]
