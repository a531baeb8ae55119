"""The study statistics recover a known correlation and do not invent one."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from dncsim.analysis.stats import cluster_bootstrap_spearman, compare_predictors, correlation_table, spearman, verdict


def clustered_table(rho, runs=20, per_run=4, seed=0, run_effect=0.3):
    """Gaussian (x, y) with correlation rho, rows grouped in runs sharing a random offset."""
    rng = np.random.default_rng(seed)
    n = runs * per_run
    cov = [[1, rho], [rho, 1]]
    xy = rng.multivariate_normal([0, 0], cov, size=n)
    clusters = np.repeat(np.arange(runs), per_run)
    offset = rng.normal(size=(runs, 2)) * run_effect
    xy += offset[clusters]
    return xy[:, 0], xy[:, 1], clusters


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_recovers_a_known_correlation():
    x, y, c = clustered_table(0.6, runs=30, seed=2)
    true_rho = 6 / np.pi * np.arcsin(0.6 / 2)          # Spearman of a bivariate normal with r = 0.6
    res = cluster_bootstrap_spearman(x, y, c, bootstrap=1000, permutations=1000)
    assert res.ci[0] < true_rho < res.ci[1]
    assert res.ci[0] > 0.2 and res.p < 0.01 and res.n == 120 and res.clusters == 30


def test_finds_nothing_where_there_is_nothing():
    hits = 0
    for seed in range(5):
        x, y, c = clustered_table(0.0, runs=20, seed=10 + seed)
        res = cluster_bootstrap_spearman(x, y, c, bootstrap=800, permutations=800, seed=seed)
        hits += res.ci[0] <= 0 <= res.ci[1] and res.p > 0.05
    assert hits >= 4                                    # at most one false alarm in five at alpha = 0.05


def test_seeded_and_nan_rows_dropped():
    x, y, c = clustered_table(0.3, seed=3)
    x = x.copy()
    x[[0, 5]] = np.nan
    a = cluster_bootstrap_spearman(x, y, c, bootstrap=200, permutations=200, seed=7)
    b = cluster_bootstrap_spearman(x, y, c, bootstrap=200, permutations=200, seed=7)
    assert a == b and a.n == 78


def test_paired_difference_of_two_predictors():
    rng = np.random.default_rng(4)
    c = np.repeat(np.arange(25), 4)
    good = rng.normal(size=100)
    y = good + rng.normal(size=100) * 0.5
    bad = rng.normal(size=100)
    d = compare_predictors(good, bad, y, c, bootstrap=800)
    assert d["ci_low"] > 0.3 and d["difference"] == pytest.approx(spearman(good, y) - spearman(bad, y))
    same = compare_predictors(good, good + 1e-9 * rng.normal(size=100), y, c, bootstrap=300)
    assert same["ci_low"] <= 0 <= same["ci_high"]


def test_verdict_says_plainly_when_unsupported():
    rows = [{"d": float(v), "f": float(w), "run": int(r)} for v, w, r in zip(*clustered_table(0.0, seed=21))]
    null = correlation_table(rows, "d", "f", "run", bootstrap=400, permutations=400)
    text = " ".join(verdict(null, None, None, None))
    assert "Not supported by these data" in text and "Spearman rho =" in text and "95% CI" in text
    rows = [{"d": float(v), "f": float(w), "run": int(r)} for v, w, r in zip(*clustered_table(0.7, runs=30, seed=5))]
    strong = correlation_table(rows, "d", "f", "run", bootstrap=400, permutations=400)
    assert "Supported: tasks with lower directional variability" in " ".join(verdict(strong, None, None, None))
