"""The descriptive correlations of a study recover a known correlation and do not invent one; their
permutation test moves whole runs, and their interval needs enough runs."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from dncsim.analysis.stats import MIN_CLUSTERS_FOR_INTERVAL, cluster_bootstrap_spearman, correlation_table, spearman


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


def test_the_permutation_moves_whole_runs_and_keeps_its_level():
    """Run effects in both variables (sd 3) made the old row-shuffling test reject 25% of null data sets."""
    rejected = 0
    for seed in range(200):
        x, y, c = clustered_table(0.0, runs=18, seed=100 + seed, run_effect=3.0)
        res = cluster_bootstrap_spearman(x, y, c, bootstrap=0, permutations=199, seed=seed)
        rejected += res.p < 0.05
    assert rejected / 200 <= 0.08, rejected / 200


def test_too_few_runs_give_no_interval():
    x, y, c = clustered_table(0.5, runs=MIN_CLUSTERS_FOR_INTERVAL - 4, seed=8)
    res = cluster_bootstrap_spearman(x, y, c, bootstrap=200, permutations=200)
    assert res.ci == (None, None) and res.p is not None and res.clusters == MIN_CLUSTERS_FOR_INTERVAL - 4


def test_correlation_table_strata_keep_runs_of_other_designs_apart():
    rows = [{"d": float(v), "f": float(w), "run": int(r), "objective": "a" if r < 10 else "b", "strategy": "s",
             "task_name": f"t{i % 4}"} for i, (v, w, r) in enumerate(zip(*clustered_table(0.0, runs=20, seed=9)))]
    res = correlation_table(rows, "d", "f", bootstrap=200, permutations=200)
    assert res["clusters"] == 20 and 0 < res["p"] <= 1 and res["ci_low"] <= res["rho"] <= res["ci_high"]
