"""study_statistics on synthetic study tables: the primary test, its companions and the verdict."""
import numpy as np

from dncsim.analysis.stats import study_statistics, within_task_ranks
from dncsim.analysis.study import StatisticsConfig
from tests.support.study_tables import tables

SETTINGS = StatisticsConfig(bootstrap=200, permutations=200)


def test_a_real_effect_is_supported_by_the_primary_test_and_carried_by_directional_cdnv():
    t, p = tables(effect=1.0)
    s = study_statistics(t, p, SETTINGS)
    prim = s["primary"]
    assert prim["verdict"] == "supported" and prim["ci_low"] > 0 and prim["n_rows"] == 48 and prim["n_runs"] == 16
    assert {"estimate", "ci_low", "ci_high", "p", "verdict", "n_rows", "n_runs", "excluded_rows"} <= set(prim)
    assert s["classical"]["verdict"] == "inconclusive"
    assert s["joint"]["dir_cdnv_learned"]["ci_low"] > 0 and s["pairs_primary"]["verdict"] == "supported"
    text = " ".join(s["verdict"])
    assert text.startswith("Primary test") and "Supported: with run, task, position and task x run-level factor " \
                                                 "interactions held fixed" in text
    assert "directional CDNV carries the signal" in text
    labels = [x["label"] for x in s["tests"]]
    assert labels[0] == "all runs: dir-CDNV when learned vs forgetting" and "within task: dir-CDNV when learned " \
                                                                            "vs forgetting" in labels


def test_no_effect_is_inconclusive_with_the_detectable_size_said():
    t, p = tables(effect=0.0, seed=3)
    s = study_statistics(t, p, SETTINGS)
    assert s["primary"]["verdict"] == "inconclusive"
    assert "could have detected an effect of about" in " ".join(s["verdict"])


def test_unlearned_tasks_are_left_out_and_counted():
    t, p = tables(effect=1.0, unlearned=3)
    s = study_statistics(t, p, SETTINGS)
    assert s["excluded"]["task_rows"] == 6 and s["primary"]["excluded_rows"] == 6 and s["primary"]["n_rows"] == 42
    assert any("left out" in n for n in s["notes"])
    kept = study_statistics(t, p, StatisticsConfig(bootstrap=200, permutations=200, include_unlearned=True))
    assert kept["primary"]["n_rows"] == 48 and kept["excluded"]["task_rows"] == 0


def test_within_task_ranks_remove_differences_between_tasks():
    rows = [{"task_name": t, "x": x, "y": y} for t, x, y in
            [("a", 1.0, 10.0), ("a", 2.0, 20.0), ("b", 100.0, 0.5), ("b", 200.0, 0.1)]]
    w = within_task_ranks(rows, ["x", "y"])
    assert [r["x"] for r in w] == [-0.5, 0.5, -0.5, 0.5] and [r["y"] for r in w] == [-0.5, 0.5, 0.5, -0.5]


def test_linear_solves_at_the_budget_are_counted_in_a_note():
    from dncsim.analysis.stats import probe_budget_note
    t, p = tables(effect=1.0)
    assert probe_budget_note(t, "linear") is None                       # a table without the columns
    for i, r in enumerate(t):                                           # as tasks.csv reads back: text
        r["probe_at_budget"] = str(i % 3)                               # 0, 1, 2 solves at the budget
        r["probe_converged_learned"] = "0.0" if i % 6 == 2 else "1.0"
    s = study_statistics(t, p, SETTINGS)
    note = next(n for n in s["notes"] if "stopped at the step budget" in n)
    assert note.startswith("32 of 48 task rows have linear-probe solves that stopped at the step budget") \
        and "8 of them in the frozen probe" in note
    assert probe_budget_note(t, "ncc") is None
    for r in t:
        r["probe_at_budget"] = "0"
    assert probe_budget_note(t, "linear") is None


def test_holm_adjusts_step_down():
    from dncsim.analysis.stats import holm
    assert holm([0.01, 0.04]) == [0.02, 0.04]
    assert holm([0.03, 0.02]) == [0.04, 0.04]          # the larger p never gets a smaller adjusted p
    assert holm([0.6, 0.2]) == [0.6, 0.4] and holm([0.01]) == [0.01]


def test_co_primary_outcomes_are_both_tested_and_said_with_holm():
    t, p = tables(effect=1.0)
    rng = np.random.default_rng(9)
    for r in t:
        r["forgetting_norm/ncc/frozen"] = float(rng.normal())            # no effect on the second outcome
    s = study_statistics(t, p, SETTINGS)
    co = s["co_primary"]
    assert list(co) == ["forgetting_max/linear/frozen", "forgetting_norm/ncc/frozen"]
    first, second = co.values()
    assert first["estimate"] == s["primary"]["estimate"] and first["outcome"] == s["primary"]["outcome"]
    small, large = sorted([first["p"], second["p"]])
    assert sorted([first["p_holm"], second["p_holm"]]) == [2 * small, max(2 * small, large)]
    assert first["holm_verdict"] == "supported" and second["holm_verdict"] == "inconclusive"
    text = " ".join(s["verdict"])
    assert "Co-primary outcomes (Holm over the 2, family-wise 0.05): frozen-linear forgetting (max)" in text
    assert "frozen-NCC normalised forgetting" in text and "Holm p" in text
    # the unit: the within-run sd of log dir-CDNV (n - G degrees of freedom), stated in the sentence
    x = np.log([r["dir_cdnv_learned"] for r in t])
    runs = np.array([r["run"] for r in t])
    dev = np.concatenate([x[runs == g] - x[runs == g].mean() for g in dict.fromkeys(runs)])
    sd = np.sqrt((dev ** 2).sum() / (len(x) - len(set(runs))))
    assert abs(s["primary"]["sd_within"] - sd) < 1e-12
    assert f"per within-run sd of log directional CDNV ({sd:.2g} log units)" in text
    only = study_statistics(tables(effect=1.0)[0], p, SETTINGS)           # no NCC column: said in a note
    assert list(only["co_primary"]) == ["forgetting_max/linear/frozen"]
    assert any("co-primary test: the tasks table has no forgetting_norm/ncc/frozen" in n for n in only["notes"])


def test_the_pairs_analysis_uses_the_pre_treatment_overlap_when_the_table_has_it():
    t, p = tables(effect=1.0)
    rng = np.random.default_rng(4)
    pre = [dict(r, overlap_pre=float(rng.uniform())) for r in p]        # unrelated to interference
    s = study_statistics(t, pre, SETTINGS)
    assert s["pairs_overlap"] == "overlap_pre" and s["pairs_primary"]["predictor"] == "overlap_pre"
    assert "axis overlap before the later task trained" in " ".join(s["verdict"])
    old = study_statistics(t, p, SETTINGS)
    assert old["pairs_overlap"] == "overlap" and old["pairs_primary"]["verdict"] == "supported"
    assert any("pairs table has no overlap_pre" in n for n in old["notes"])
