"""Negative and positive controls of the verdict words `dncsim stats` prints, through ``study_statistics``
(the code the study and `dncsim stats` run): the primary test's supported / contradicted, the pairs
analysis' verdict and "carries the signal" of both predictors together.

Tables shaped like a study: 12 runs of 4 tasks, run effects in predictor and outcome. Each word must be
said in at most 10% of 50 draws of a design without the effect (all three are 5% tests), and the
supporting words in at least 90% of a design with it.
"""
import numpy as np
import pytest

from dncsim.analysis.stats import study_statistics
from dncsim.analysis.study import StatisticsConfig

DRAWS = 50
SETTINGS = StatisticsConfig(bootstrap=100, permutations=100)
Y, INTER = "forgetting_max/linear/frozen", "interference/linear/frozen"


def tables(rng, effect=0.0, pair_effect=0.0, runs=12, tasks=4, spread=(1.0,), shuffle=None):
    """Task rows (log dir-CDNV per task with sd ``spread`` per task, run effects; forgetting rises with
    its within-run deviation by ``effect`` sd) and pair rows (interference rises with overlap by
    ``pair_effect``). ``shuffle``: "labels" permutes both outcomes over all rows; "geometry" reassigns
    the tasks' dir-CDNV at random among each run's tasks."""
    task_rows, pair_rows = [], []
    sd = np.resize(np.asarray(spread, float), tasks)
    for r in range(runs):
        obj = ("simclr", "vicreg", "supervised")[r % 3]
        run = f"{obj}-{r}"
        a, b = rng.normal(0, 2), rng.normal(0, 2)
        logd = a + sd * rng.standard_normal(tasks)
        logc = rng.standard_normal(tasks)
        f = b + effect * (logd - a) / sd + rng.standard_normal(tasks)
        if shuffle == "geometry":
            logd = logd[rng.permutation(tasks)]
        for k in range(tasks):
            task_rows.append({"run": run, "objective": obj, "strategy": "naive", "task_name": f"t{k}",
                              "learned_at": k, "learned": True, "dir_cdnv_learned": float(np.exp(logd[k])),
                              "cdnv_learned": float(np.exp(logc[k])), Y: float(f[k])})
        for i in range(tasks):
            for j in range(i + 1, tasks):
                o = float(rng.uniform())
                pair_rows.append({"run": run, "objective": obj, "strategy": "naive", "name_a": f"t{i}",
                                  "name_b": f"t{j}", "learned_a": True, "learned_b": True, "overlap": o,
                                  INTER: pair_effect * o + float(rng.normal()) * 0.3})
    if shuffle == "labels":
        for rows, col in ((task_rows, Y), (pair_rows, INTER)):
            for row, v in zip(rows, rng.permutation([row[col] for row in rows])):
                row[col] = float(v)
    return task_rows, pair_rows


def said(seed, **design):
    """Share of DRAWS in which each verdict word is said."""
    rng = np.random.default_rng(seed)
    counts = {"primary": 0, "supported": 0, "pairs": 0, "carries": 0}
    for _ in range(DRAWS):
        s = study_statistics(*tables(rng, **design), SETTINGS)
        counts["primary"] += s["primary"]["verdict"] != "inconclusive"
        counts["supported"] += s["primary"]["verdict"] == "supported"
        counts["pairs"] += s["pairs_primary"]["verdict"] != "inconclusive"
        counts["carries"] += any("carries the signal" in v for v in s["verdict"])
    return {k: v / DRAWS for k, v in counts.items()}


NEGATIVE = {
    "signal-free, equal spreads": dict(),
    "signal-free, unequal spreads": dict(spread=(0.2, 1.0, 3.0, 0.5)),
    "effect, labels shuffled": dict(effect=1.0, pair_effect=1.0, shuffle="labels"),
    "effect, geometry shuffled across tasks": dict(effect=1.0, shuffle="geometry"),
}


@pytest.mark.parametrize("design", sorted(NEGATIVE))
def test_no_verdict_word_is_said_beyond_its_level_without_an_effect(design):
    rates = said(sorted(NEGATIVE).index(design) + 10, **NEGATIVE[design])
    assert rates["primary"] <= 0.10 and rates["pairs"] <= 0.10 and rates["carries"] <= 0.10, rates


def test_an_effect_is_supported_by_every_verdict_word():
    rates = said(20, effect=1.0, pair_effect=1.0)
    assert rates["supported"] >= 0.90 and rates["pairs"] >= 0.90 and rates["carries"] >= 0.90, rates
