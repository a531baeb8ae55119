"""The primary test keeps its promised error rates, measured by simulation on data shaped like a study:
runs of four tasks, run effects in both variables, task effects."""
import numpy as np
import pytest

from dncsim.analysis.inference import VERDICTS, build_design, primary_analysis
from dncsim.common import DncsimError
from tests.support.inference_data import study


def analyse(rows, **kw):
    return primary_analysis(rows, "forgetting", ["dir_cdnv_learned"], permutations=0, draws=99, **kw)


def test_no_effect_is_rejected_at_most_seven_percent_of_the_time():
    rng = np.random.default_rng(0)
    rejected = sum(analyse(study(rng))["coefficients"]["dir_cdnv_learned"]["p"] < 0.05 for _ in range(500))
    assert rejected / 500 <= 0.07, rejected / 500


def test_a_within_task_slope_of_half_a_standard_deviation_is_found_at_least_eighty_percent_of_the_time():
    rng = np.random.default_rng(1)
    found = 0
    for _ in range(300):
        res = analyse(study(rng, slope=0.5))
        found += res["coefficients"]["dir_cdnv_learned"]["p"] < 0.05 and res["verdict"] == "supported"
    assert found / 300 >= 0.80, found / 300


def test_the_interval_covers_the_truth_with_six_runs():
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(300):
        rows = study(rng, runs=6, slope=0.5)
        c = analyse(rows)["coefficients"]["dir_cdnv_learned"]
        truth = 0.5 * c["sd_within"]                  # the model's unit: per within-run sd of log x
        covered += c["ci_low"] <= truth <= c["ci_high"]
        assert c["wild_bootstrap_p"] is not None      # few runs: the wild bootstrap check is reported
    assert covered / 300 >= 0.90, covered / 300


def test_the_run_permutation_p_keeps_its_level():
    rng = np.random.default_rng(3)
    rejected = sum(primary_analysis(study(rng), "forgetting", ["dir_cdnv_learned"], permutations=199)
                   ["coefficients"]["dir_cdnv_learned"]["permutation_p"] < 0.05 for _ in range(200))
    assert rejected / 200 <= 0.08


def test_aliased_nuisances_are_detected_and_said():
    fixed = build_design(study(np.random.default_rng(4)), "forgetting", ["dir_cdnv_learned"])
    assert any("position in the stream" in n and "fully determined" in n for n in fixed.notes)
    assert any("objective" in n and "held fixed by the run fixed effects" in n for n in fixed.notes)
    assert "position in the stream" not in fixed.factors
    assert set(fixed.factors) == {"run", "task identity", "task identity x objective", "task identity x strategy"}
    assert fixed.factors["task identity x objective"] == 3 * 2 and fixed.factors["task identity x strategy"] == 3
    shuffled = build_design(study(np.random.default_rng(4), fixed_order=False), "forgetting", ["dir_cdnv_learned"])
    assert "position in the stream" in shuffled.factors          # orders differ: position is its own factor


def test_verdicts_follow_the_interval():
    rng = np.random.default_rng(5)
    assert analyse(study(rng, slope=1.0))["verdict"] == "supported"
    assert analyse(study(rng, slope=-1.0))["verdict"] == "contradicted"
    res = analyse(study(rng, slope=0.0, runs=6))
    assert res["verdict"] in VERDICTS and res["coefficients"]["dir_cdnv_learned"]["mde_80"] > 0


def test_too_few_runs_or_no_variation_is_one_clear_error():
    rows = study(np.random.default_rng(6), runs=2)
    with pytest.raises(DncsimError, match="2 run.*at least 3 are needed"):
        analyse(rows)
    flat = [dict(r, dir_cdnv_learned=1.0) for r in study(np.random.default_rng(6))]
    with pytest.raises(DncsimError, match="does not vary"):
        analyse(flat)
    one_task = [r for r in study(np.random.default_rng(7)) if r["task_name"] == "t0"]
    res = analyse(one_task)                                     # no within-run variation: pooled design
    assert "does not vary within runs" in res["notes"][0]
