"""The paper's three claims read from a metrics table: each verdict flips exactly at its fixed level,
on hand-made tables whose true answer is known."""

import numpy as np
import pytest

from dncsim.analysis import names
from dncsim.analysis.names import table_row
from dncsim.analysis.report.paper import (S1_FALL, S2_RANK_RHO, paper_claims, paper_findings,
                                          paper_over_runs, over_runs_findings, rank_tracking)
from tests.support.paper_runs import Run, TASKS, make_run


def test_all_three_reproduce_on_a_table_that_shows_them():
    c = paper_claims(make_run())
    s1 = c["S1"]
    assert s1["index_init"] == pytest.approx(20.0) and s1["index_end"] == pytest.approx(2.0)
    assert s1["fall"] == pytest.approx(10.0) and s1["fall_ci"] == pytest.approx([10.0, 10.0])
    assert c["S1"]["reproduced"] and c["S2"]["reproduced"] and c["S3"]["reproduced"]
    assert c["S2"]["points"] == 3 * 8 * 4 and c["S2"]["shots_checked"] == 50
    assert c["S2"]["paper_statistic"]["median"] == pytest.approx(1.0)
    assert c["S2"]["tracking"]["rho"] == pytest.approx(1.0) and c["S2"]["tracking"]["p"] <= 0.01
    assert c["last_points"] == [2, 3, 4, 5, 6] and c["epochs_per_point"] == 3
    text = paper_findings(c)
    assert text[0].startswith("S1 (directional collapse) reproduced: ") and "fell 10-fold" in text[0]
    assert text[2].startswith("S3 (near-orthogonality) reproduced: 3 of 3 attribute pairs")


@pytest.mark.parametrize("fall,ok", [(S1_FALL * 1.01, True), (S1_FALL * 0.99, False)])
def test_s1_flips_at_its_fall_of_the_anisotropy_index(fall, ok):
    c = paper_claims(make_run(index_init=8.0, index_final=8.0 / fall))
    assert c["S1"]["reproduced"] is ok and c["S1"]["fall"] == pytest.approx(fall)


def test_s1_isotropic_noise_at_both_ends_fails_although_its_ratio_is_1_over_2d():
    """Isotropic noise has dir-CDNV / CDNV = 1/(2d) = 1/256 here: far below the old fixed level 1/8."""
    c = paper_claims(make_run(index_init=1.0, index_final=1.0))
    assert c["S1"]["trajectory"][-1]["ratio"] == pytest.approx(1 / 256)
    assert c["S1"]["reproduced"] is False and c["S1"]["index_end"] == pytest.approx(1.0)


def test_s1_leaves_out_attributes_without_a_positive_ratio_or_a_firmly_resolved_pair():
    run = make_run()
    last = paper_claims(run)["last_points"][-1]
    run.rows += [table_row(last, "barely_resolved_pairs", 2, task=1, task_name="shape"),   # every ordered pair
                 table_row(last, names.RESOLVED_PAIRS, 1, task=1, task_name="shape"),
                 table_row(last, "barely_resolved_pairs", 1, task=2, task_name="size"),    # one of two
                 table_row(last, names.RESOLVED_PAIRS, 1, task=2, task_name="size")]
    run.rows = [dict(r, value=-r["value"]) if (r["metric"], r["task"], r["exp"]) == (names.CDNV_RATIO, 0, -1) else r
                for r in run.rows]
    run._index = None
    s1 = paper_claims(run)["S1"]
    assert s1["left_out"] == ["color", "shape"] and s1["attributes"] == ["size"]
    assert s1["fall"] == pytest.approx(10.0)


def test_s2_fails_when_the_bound_is_below_the_error_or_does_not_rank_the_errors():
    assert paper_claims(make_run(bound_scale=0.9))["S2"]["reproduced"] is False      # bound below error
    c = paper_claims(make_run(shuffle_bounds=True, bound_scale=30.0))      # each task paired with another's bound
    assert c["S2"]["reproduced"] is False and not c["S2"]["violations"]
    c = paper_claims(make_run(noise=3.0, seed=3))
    assert c["S2"]["tracking"]["rho"] < S2_RANK_RHO and c["S2"]["reproduced"] is False
    assert "not reproduced" in paper_findings(c)[1]


def test_rank_tracking_ignores_any_curve_of_m_or_of_training_time():
    rng = np.random.default_rng(0)
    geometry = rng.lognormal(size=(12, 4))                           # 12 points, 4 attributes
    trend = np.linspace(1, 0.1, 12)[:, None]
    err = 0.3 * trend * geometry
    assert rank_tracking(err, 5 * err)["rho"] == pytest.approx(1.0)
    assert rank_tracking(err, 5 * err)["p"] < 0.01
    flat = np.broadcast_to(trend, err.shape) * 10                     # falls along training, no geometry
    assert rank_tracking(err, flat)["rho"] is None                     # no ranks within a point: cannot pass
    other = 0.3 * trend * rng.lognormal(size=(12, 4))                  # same trend, unrelated geometry
    assert rank_tracking(err, other)["p"] > 0.05


def test_s3_passes_below_the_null_and_fails_at_it_whatever_the_random_level():
    assert paper_claims(make_run(cos=0.079, q05=0.08))["S3"]["reproduced"] is True
    c = paper_claims(make_run(cos=0.081, q05=0.08))
    assert c["S3"]["reproduced"] is False and c["S3"]["worst_over_null"] == pytest.approx(0.081 / 0.08)
    c = paper_claims(make_run(cos=0.02, q05=0.015))                    # far below 2^-3 and the random level
    assert c["S3"]["random_median"] > 0.05 and c["S3"]["reproduced"] is False


def test_s3_without_a_null_is_not_measured():
    run = make_run()
    run.rows = [r for r in run.rows if r["metric"] != names.AXIS_COS_NULL_Q05]
    c = paper_claims(run)
    assert c["S3"]["reproduced"] is None and "no permutation null" in paper_findings(c)[2]


def test_s2_reports_the_papers_statistic_on_its_own_numbers():
    """The authors' MAE numbers on mini-ImageNet, C' = 2, train split (documentation: Methods, The paper
    check): the paper reports rho = 0.99 across m; one attribute has no within-point ranks to check."""
    shots = [1, 5, 10, 20, 50]
    err = [1 - a for a in (0.8585, 0.9598, 0.9626, 0.9640, 0.9672)]
    bound = [57.437, 9.466, 4.417, 2.164, 0.9432]
    rows = []
    for m, e, b in zip(shots, err, bound):
        rows += [table_row(0, names.FEWSHOT_ERR, e, task=0, task_name="mae", shots=m),
                 table_row(0, names.BOUND, b, task=0, task_name="mae", shots=m)]
    run = Run(path=None, config={"scenario": {"stream": {"type": "joint"}}}, manifest={}, rows=rows, tasks=["mae"],
              matrices={})
    s2 = paper_claims(run)["S2"]
    assert s2["paper_statistic"]["median"] == pytest.approx(0.9964, abs=5e-4)
    assert s2["reproduced"] is None and s2["points"] == 5 and not s2["violations"]
    assert s2["nonvacuous_share"] == pytest.approx(1.0)               # m = 50: 0.943 < 1


def test_medians_are_true_medians():
    run = make_run(points=8)
    c = paper_claims(run)
    rhos = [q["rho"] for p in c["S2"]["per_attribute"] for q in p["rho_by_point"]]
    assert c["S2"]["paper_statistic"]["median"] == pytest.approx(float(np.median(rhos)))


def test_claims_over_runs_count_and_average():
    runs = [paper_claims(make_run(index_final=f, seed=s)) for s, f in enumerate((2.0, 4.0, 8.0))]
    agg = paper_over_runs(runs, ["s0", "s1", "s2"])
    assert agg["S1"]["fall"]["values"] == pytest.approx([10.0, 5.0, 2.5])
    assert agg["S1"]["fall"]["mean"] == pytest.approx(5.0)                        # geometric mean
    assert agg["S1"]["reproduced"] == 2 and agg["S1"]["verdict"] == "reproduced in 2 of 3 runs"
    assert agg["S3"]["verdict"] == "reproduced in every run" and len(agg["S3"]["pairs"]) == 3
    lo, hi = agg["S1"]["fall"]["ci"]
    assert lo < 5.0 < hi
    text = over_runs_findings(agg)
    assert text[0].startswith("S1 over 3 runs (means over runs [95% t intervals]): reproduced in 2 of 3 runs; "
                              "anisotropy index fell 5")


def test_a_run_without_measurements_is_not_measured():
    run = Run(path=None, config={"scenario": {"stream": {"type": "joint"}}}, manifest={}, rows=[], tasks=TASKS,
              matrices={})
    c = paper_claims(run)
    assert (c["S1"]["reproduced"], c["S2"]["reproduced"], c["S3"]["reproduced"]) == (None, None, None)
    assert [f.split(":")[0] for f in paper_findings(c)] == ["S1 (directional collapse) not measured",
                                                            "S2 (Theorem 4.1) not measured",
                                                            "S3 (near-orthogonality) not measured"]
