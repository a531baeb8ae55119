"""The paper's three claims read from a metrics table: each verdict flips exactly at its fixed level,
on hand-made tables whose true answer is known."""
import math

import numpy as np
import pytest

from dncsim.analysis import names
from dncsim.analysis.names import table_row
from dncsim.analysis.orthogonality import random_abs_cos
from dncsim.analysis.report.paper import S1_FALL, S1_GAP, S2_RHO, S3_MAX, paper_claims, paper_findings
from dncsim.rundir import RunData

TASKS = ["color", "shape", "size"]
D = 128


class Run(RunData):
    @property
    def feature_dim(self):
        return D


def make_run(ratio_init=0.2, ratio_final=0.02, cos=0.05, bound_scale=3.0, noise=0.0, seed=0, points=5):
    rng = np.random.default_rng(seed)
    rows = []
    exps = list(range(-1, points - 1))
    for k, name in enumerate(TASKS):
        for i, e in enumerate(exps):
            frac = i / (len(exps) - 1)
            ratio = ratio_init * (ratio_final / ratio_init) ** frac
            cdnv = 4.0 * (0.5 ** frac)
            rows += [table_row(e, names.CDNV_RATIO, ratio, task=k, task_name=name),
                     table_row(e, names.DIR_CDNV, ratio * cdnv, task=k, task_name=name),
                     table_row(e, names.CDNV, cdnv, task=k, task_name=name)]
            for m in (1, 10, 20, 50):
                err = 0.3 * (1 - 0.8 * frac) / math.sqrt(m) * (1 + noise * rng.standard_normal())
                rows += [table_row(e, names.FEWSHOT_ERR, err, task=k, task_name=name, shots=m),
                         table_row(e, names.BOUND, bound_scale * 0.3 * (1 - 0.8 * frac) / math.sqrt(m), task=k,
                                   task_name=name, shots=m)]
    for a in range(3):
        for b in range(a + 1, 3):
            for e in exps:
                rows.append(table_row(e, names.AXIS_COS_MEDIAN, cos, task=a, task_name=TASKS[a], task_b=b))
    return Run(path=None, config={"training": {"epochs": 3}, "scenario": {"stream": {"type": "joint"}}},
               manifest={}, rows=rows, tasks=TASKS, matrices={})


def test_all_three_reproduce_on_a_table_that_shows_them():
    c = paper_claims(make_run())
    assert c["S1"]["fall"] == pytest.approx(10.0) and c["S1"]["gap_final"] == pytest.approx(50.0)
    assert c["S1"]["reproduced"] and c["S2"]["reproduced"] and c["S3"]["reproduced"]
    assert c["S2"]["points"] == 3 * 5 * 4                   # m = 1 counts too (extrapolated, as the paper plots it)
    assert c["S2"]["min_rho"] == pytest.approx(1.0)
    assert c["epochs_per_point"] == 3 and c["points"] == [-1, 0, 1, 2, 3]
    text = paper_findings(c)
    assert text[0].startswith("S1 (directional collapse) reproduced: ") and "fell 10-fold" in text[0]


@pytest.mark.parametrize("fall,ok", [(S1_FALL * 1.01, True), (S1_FALL * 0.99, False)])
def test_s1_flips_at_its_fall(fall, ok):
    assert paper_claims(make_run(ratio_init=0.5, ratio_final=0.5 / fall))["S1"]["reproduced"] is ok


def test_s1_needs_the_final_gap_too():
    c = paper_claims(make_run(ratio_init=2.0, ratio_final=1.0 / (S1_GAP * 0.9)))       # falls 14x, gap 7.2
    assert c["S1"]["fall"] > S1_FALL and c["S1"]["reproduced"] is False


def test_s2_fails_when_the_bound_is_below_the_error_once_or_the_correlation_is_weak():
    assert paper_claims(make_run(bound_scale=0.9))["S2"]["reproduced"] is False      # bound below error
    c = paper_claims(make_run(bound_scale=50.0, noise=2.0, seed=3))
    assert c["S2"]["min_rho"] < S2_RHO and c["S2"]["reproduced"] is False
    assert "not reproduced" in paper_findings(c)[1]


@pytest.mark.parametrize("cos,ok", [(0.11, True), (0.125, False), (S3_MAX * 1.01, False)])
def test_s3_limit_is_the_smaller_of_two_to_the_minus_three_and_twice_random(cos, ok):
    limit = min(S3_MAX, 2 * random_abs_cos(D)["median"])                  # 0.1193 at d = 128
    c = paper_claims(make_run(cos=cos))
    assert c["S3"]["thresholds"]["limit"] == pytest.approx(limit)
    assert c["S3"]["reproduced"] is ok and len(c["S3"]["pairs"]) == 3


def test_s2_computes_the_correlation_as_the_paper_did_on_its_own_numbers():
    """The authors' MAE numbers on mini-ImageNet, C' = 2, train split (documentation: Methods, The paper
    check): the paper reports rho = 0.99."""
    shots = [1, 5, 10, 20, 50]
    err = [1 - a for a in (0.8585, 0.9598, 0.9626, 0.9640, 0.9672)]
    bound = [57.437, 9.466, 4.417, 2.164, 0.9432]
    rows = []
    for m, e, b in zip(shots, err, bound):
        rows += [table_row(0, names.FEWSHOT_ERR, e, task=0, task_name="mae", shots=m),
                 table_row(0, names.BOUND, b, task=0, task_name="mae", shots=m),
                 table_row(1, names.FEWSHOT_ERR, e, task=0, task_name="mae", shots=m),
                 table_row(1, names.BOUND, b * (1 + 1e-9), task=0, task_name="mae", shots=m)]
    run = Run(path=None, config={"scenario": {"stream": {"type": "joint"}}}, manifest={}, rows=rows, tasks=["mae"],
              matrices={})
    s2 = paper_claims(run)["S2"]
    assert s2["per_attribute"][0]["rho"] == pytest.approx(0.9964, abs=5e-4)
    assert s2["per_attribute"][0]["rho_in_range"] == pytest.approx(0.9241, abs=5e-4)     # m >= 10 only
    assert s2["per_attribute"][0]["rho_per_point_min"] == pytest.approx(0.9964, abs=5e-4)  # one point at a time
    assert s2["reproduced"] is True and s2["points"] == 10 and not s2["violations"]
