"""The primary test on study-shaped tables whose tasks differ by objective, strategy and hold: 24 runs of a
3 x 2 x 2 x 2 grid (objective, strategy, hold, seed), 2-3 learned tasks per run in a random order, task x
factor interactions shared by the predictor and the outcome. Holding those interactions fixed keeps the
test's level without a true effect and its coverage with one; the model without them (run, task and
position fixed effects only) rejects far more often on the same tables (the negative control)."""
import itertools

import numpy as np
import pytest

from dncsim.analysis.inference import build_design, primary_analysis, run_factors
from dncsim.common import DncsimError

Y, X = "forgetting_max/linear/frozen", "dir_cdnv_learned"
STUDIES = 300
OBJECTIVES, STRATEGIES = ("simclr", "vicreg", "supervised"), ("naive", "replay")
HOLDS, SEEDS = ("one", "subset"), (0, 1)


def grid_table(rng, slope=0.0, interaction_sd=0.3, tasks=4):
    """One study's task rows. Per (task, factor level) an interaction effect g ~ N(0, interaction_sd), the
    same in log x and in y (they confound); run effects in both; noise sd 0.5; y = ... + slope * log x."""
    tx, ty = rng.normal(0, 1, tasks), rng.normal(0, 1, tasks)
    g = {f: rng.normal(0, interaction_sd, (tasks, n)) for f, n in (("objective", 3), ("strategy", 2), ("hold", 2))}
    rows = []
    for r, (o, s, h, seed) in enumerate(itertools.product(range(3), range(2), range(2), range(2))):
        a, b = rng.normal(0, 2), rng.normal(0, 2)
        order = rng.permutation(tasks)[:rng.integers(2, 4)]            # 2 or 3 learned tasks, random order
        for position, t in enumerate(order):
            inter = g["objective"][t, o] + g["strategy"][t, s] + g["hold"][t, h]
            logx = a + tx[t] + inter + rng.normal(0, 0.5)
            y = b + ty[t] + inter + slope * logx + rng.normal(0, 0.5)
            rows.append({"run": f"{r:03d}", "objective.name": OBJECTIVES[o], "strategy.name": STRATEGIES[s],
                         "scenario.stream.hold": HOLDS[h], "seed": SEEDS[seed], "objective": OBJECTIVES[o],
                         "strategy": STRATEGIES[s], "task": int(t), "task_name": f"t{t}", "learned_at": position,
                         "learned": True, X: float(np.exp(logx)), Y: float(y)})
    return rows


def fit(rows, **kw):
    return primary_analysis(rows, Y, [X], permutations=0, **kw)["coefficients"][X]


def test_run_factors_are_the_study_factors_once_each_without_the_seed():
    rows = grid_table(np.random.default_rng(0))
    assert run_factors(rows) == ["objective.name", "strategy.name", "scenario.stream.hold"]
    d = build_design(rows, Y, [X])
    assert d.factors["task identity x objective.name"] == 3 * 2
    assert d.factors["task identity x strategy.name"] == 3 and d.factors["task identity x scenario.stream.hold"] == 3
    assert d.sd_basis == "within-run" and 0 < d.sd[X] < np.log([r[X] for r in rows]).std() / 2


def rates(slope, seed):
    rng = np.random.default_rng(seed)
    new_reject = old_reject = covered = 0
    for _ in range(STUDIES):
        rows = grid_table(rng, slope=slope)
        c = fit(rows)
        old = fit(rows, interactions=())
        new_reject += c["p"] < 0.05
        old_reject += old["p"] < 0.05
        covered += c["ci_low"] <= slope * c["sd_within"] <= c["ci_high"]   # the truth per within-run sd
    return new_reject / STUDIES, old_reject / STUDIES, covered / STUDIES


def test_no_effect_is_rejected_at_most_seven_percent_while_the_model_without_interactions_is_not():
    new, old, _ = rates(0.0, seed=11)
    assert new <= 0.07, new
    assert old >= 0.40, old                 # negative control: the same tables, interactions not held fixed


def test_a_true_effect_is_covered_at_least_ninety_percent_of_the_time():
    _, _, covered = rates(0.3, seed=12)
    assert covered >= 0.90, covered


def test_a_design_the_interactions_saturate_says_the_slope_is_not_identified():
    """6 runs (3 objectives x 2 strategies) of the same 2 tasks: 12 rows, 11 terms; one residual df is no slope."""
    rows = [r for r in grid_table(np.random.default_rng(5), tasks=2) if r["scenario.stream.hold"] == "one"
            and r["seed"] == 0]
    assert len({r["run"] for r in rows}) == 6 and len(rows) == 12
    with pytest.raises(DncsimError, match="not identified"):
        fit(rows)
    assert np.isfinite(fit(rows, interactions=())["estimate"])      # without them it would give a number
