"""The instrumental analysis recovers a known causal effect through a confounder that fools OLS, keeps
its coverage under the null, and says 'weak instrument' when the dose does not move the mediator."""
import math

import numpy as np
import pytest

from dncsim.analysis.causal import DOSE_COLUMN, causal_sentences, instrumental_analysis, strategy_table
from dncsim.common import DncsimError

LEVELS = [0.0, 0.3, 3.0, 30.0]


def study(seed, effect=0.05, first=-0.5, runs_per_level=6, tasks=3, confound=1.0):
    """Runs with a randomised dose; a run-level confounder u raises both log2 dir-CDNV and forgetting."""
    rng = np.random.default_rng(seed)
    rows = []
    for level_index, w in enumerate(LEVELS):
        for r in range(runs_per_level):
            u = rng.normal()
            strategy = ["naive", "distill"][r % 2]
            for k in range(tasks):
                x = 1.0 + 0.3 * k + first * level_index + confound * u + 0.3 * rng.normal()
                y = 0.2 + effect * x + 0.1 * confound * u + 0.02 * rng.normal()
                rows.append({"run": f"{level_index}-{r}", "task": k, "task_name": f"t{k}", "strategy": strategy,
                             DOSE_COLUMN: w, "dir_cdnv_learned": 2.0 ** x, "forgetting": y, "acc": 0.9})
    return rows


def test_recovers_the_causal_effect_that_ols_overstates():
    rows = study(0)
    res = instrumental_analysis(rows, "forgetting")
    assert res["n_runs"] == 24 and res["n_rows"] == 72 and res["levels"] == LEVELS
    fs = res["first_stage"]
    assert fs["ci_low"] < -0.5 < fs["ci_high"] and fs["ci_high"] < 0 and not res["weak_instrument"]
    assert res["causal"]["ci_low"] < 0.05 < res["causal"]["ci_high"]
    x = np.log2([r["dir_cdnv_learned"] for r in rows])
    ols = np.polyfit(x, [r["forgetting"] for r in rows], 1)[0]
    assert ols > 0.1                          # the confounder doubles the naive slope; the instrument does not
    words = causal_sentences(res)
    assert "to the next of the weights " + ", ".join(f"{v:g}" for v in LEVELS) in words[0]
    assert "Causal estimate (2SLS)" in words[1]
    assert ("tasks made to have higher directional CDNV forget more." in words[1]) == (res["causal"]["ci_low"] > 0)
    flipped = dict(res, causal=dict(res["causal"], estimate=-0.05, ci_low=-0.10, ci_high=0.001))
    assert "the point estimate says lowering it increases forgetting" in causal_sentences(flipped)[1]
    decided = dict(res, causal=dict(res["causal"], estimate=-0.05, ci_low=-0.10, ci_high=-0.01))
    assert "lowering directional CDNV makes them forget more" in causal_sentences(decided)[1]


def test_coverage_under_the_null_and_weak_instrument_flag():
    hits, n = 0, 150
    for s in range(n):
        res = instrumental_analysis(study(100 + s, effect=0.0), "forgetting")
        hits += res["causal"]["ci_low"] <= 0.0 <= res["causal"]["ci_high"]
    assert hits / n >= 0.90, hits / n
    weak = instrumental_analysis(study(7, first=0.0), "forgetting")
    assert weak["weak_instrument"] and "weak instrument" in causal_sentences(weak)[0]


def test_one_dose_level_or_too_few_runs_is_one_clear_error():
    rows = [r for r in study(1) if r[DOSE_COLUMN] == 3.0]
    with pytest.raises(DncsimError, match="one level"):
        instrumental_analysis(rows, "forgetting")
    with pytest.raises(DncsimError, match="no task row has"):
        instrumental_analysis(rows, "nothing")


def test_strategy_table_means_over_runs_of_earlier_tasks():
    rows = study(2)
    table = strategy_table(rows, "forgetting", "acc")
    assert [t["strategy"] for t in table] == ["distill", "naive"] and all(t["runs"] == 12 for t in table)
    naive = [r for r in rows if r["strategy"] == "naive" and r["task"] < 2]
    per_run = {}
    for r in naive:
        per_run.setdefault(r["run"], []).append(r["forgetting"])
    expect = np.mean([np.mean(v) for v in per_run.values()])
    assert table[1]["forgetting"]["mean"] == pytest.approx(expect)
    assert table[1]["forgetting"]["ci_low"] < expect < table[1]["forgetting"]["ci_high"]
    assert table[1]["accuracy"]["mean"] == pytest.approx(0.9) and not math.isnan(table[1]["accuracy"]["ci_low"])


def test_study_statistics_adds_the_dose_response_when_the_weight_is_a_factor(tmp_path):
    from dncsim.analysis.stats import study_statistics
    from dncsim.analysis.study import StatisticsConfig
    rows = []
    for r in study(3):
        rows.append({**r, "objective": "simclr", "learned": True, "learned_at": r["task"],
                     "cdnv_learned": 4 * r["dir_cdnv_learned"] ** 0.2, "forgetting_max/linear/frozen": r["forgetting"],
                     "acc_learned/linear/frozen": r["acc"]})
    out = study_statistics(rows, [], StatisticsConfig(permutations=100, bootstrap=100))
    c = out["causal"]
    assert c["directional"]["n_runs"] == 24 and c["classical"]["n_runs"] == 24
    assert [s["strategy"] for s in c["strategies"]] == ["distill", "naive"]
    assert sum(v.startswith("First stage:") for v in out["verdict"]) == 2
    assert not [r for r in rows if DOSE_COLUMN not in r]
    plain = study_statistics([{k: v for k, v in r.items() if k != DOSE_COLUMN} for r in rows], [],
                             StatisticsConfig(permutations=100, bootstrap=100))
    assert "causal" not in plain
