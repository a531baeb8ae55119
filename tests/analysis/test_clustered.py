"""Cluster-robust least squares with fixed effects nested in the clusters (analysis/clustered.py): the
null rejection rate on study-shaped designs with 2 and 4 task rows per run (run and task fixed effects,
clustered by run), power against the exact homoskedastic t test, and the CR2 standard error and
Bell-McCaffrey degrees of freedom against hand computations for OLS and 2SLS."""
import numpy as np
import pytest
from scipy import stats

from dncsim.analysis.clustered import cluster_fit
from dncsim.analysis.inference import primary_analysis
from dncsim.common import DncsimError
from tests.support.inference_data import study

DATASETS = 4000                       # Monte-Carlo sd of a 5% rejection rate: 0.34 points


def simulate(runs, tasks, datasets, seed, slope=0.0):
    """Batched study-shaped data: x and y with task effects (sd 2), run effects (sd 3) and unit noise,
    y = ... + slope * x. Design columns: x, intercept, run dummies, task dummies."""
    rng = np.random.default_rng(seed)
    n = runs * tasks
    run, task = np.repeat(np.arange(runs), tasks), np.tile(np.arange(tasks), runs)
    tx, ty = rng.normal(0, 2, (datasets, tasks)), rng.normal(0, 2, (datasets, tasks))
    a, b = rng.normal(0, 3, (datasets, runs)), rng.normal(0, 3, (datasets, runs))
    x = tx[:, task] + a[:, run] + rng.normal(size=(datasets, n))
    y = ty[:, task] + b[:, run] + slope * x + rng.normal(size=(datasets, n))
    fixed = np.column_stack([np.ones(n), run[:, None] == np.arange(1, runs), task[:, None] == np.arange(1, tasks)])
    X = np.concatenate([x[..., None], np.broadcast_to(fixed, (datasets, n, fixed.shape[1]))], axis=2)
    return X, y, run


def rejection_rate(runs, tasks, seed, slope=0.0):
    X, y, run = simulate(runs, tasks, DATASETS, seed, slope)
    return float(np.mean(cluster_fit(X, y, run, terms=[0]).p_values()[:, 0] < 0.05)), X, y


@pytest.mark.parametrize("tasks", [2, 4])
def test_a_true_null_is_rejected_four_to_seven_percent_of_the_time_with_run_fixed_effects(tasks):
    rate, _, _ = rejection_rate(24, tasks, seed=tasks)
    assert 0.04 <= rate <= 0.07, rate


def test_the_study_statistics_keep_the_level_with_two_task_rows_per_run():
    """End to end through primary_analysis (CR1 counting the run dummies rejected ~1.5% here)."""
    rng = np.random.default_rng(11)
    p = [primary_analysis(study(rng, runs=24, tasks=2), "forgetting", ["dir_cdnv_learned"], permutations=0)
         ["coefficients"]["dir_cdnv_learned"]["p"] for _ in range(600)]
    assert 0.03 <= np.mean(np.array(p) < 0.05) <= 0.075, np.mean(np.array(p) < 0.05)


def test_a_true_slope_is_found_nearly_as_often_as_by_the_exact_homoskedastic_test():
    """Positive control: on the same data sets the classical OLS t test (exact here: iid normal errors)
    has the most power a level-5% test can have; the cluster-robust test may pay a few points for its
    robustness, no more."""
    for tasks, slope in ((2, 0.6), (4, 0.4)):
        rate, X, y = rejection_rate(24, tasks, seed=10 + tasks, slope=slope)
        bread = np.linalg.inv(X.transpose(0, 2, 1) @ X)
        beta = (bread @ (X.transpose(0, 2, 1) @ y[..., None]))[..., 0]
        resid_df = X.shape[1] - X.shape[2]
        s2 = ((y - (X @ beta[..., None])[..., 0]) ** 2).sum(1) / resid_df
        exact = np.mean(2 * stats.t.sf(np.abs(beta[:, 0]) / np.sqrt(s2 * bread[:, 0, 0]), resid_df) < 0.05)
        assert exact - 0.10 <= rate <= exact + 0.02, (tasks, rate, exact)
        assert rate >= (0.6 if tasks == 2 else 0.8), (tasks, rate)


def test_cr2_with_run_fixed_effects_is_hc2_of_the_within_run_differences():
    """Two rows per run, run and task fixed effects: the within estimator is OLS of the runs' differences
    dy = c + b dx, and CR2 is that regression's HC2, sum_g w_g^2 u_g^2 / (1 - h_g) with its leverages;
    Bell-McCaffrey df = tr(M)^2 / tr(M^2), M = D (I - H) D, D = diag(w_g / sqrt(1 - h_g))."""
    x = np.array([[0.3, 1.1], [2.0, 0.4], [-1.0, 0.5], [0.7, 0.6], [1.5, -0.2]])
    y = np.array([[1.0, 0.2], [0.5, 1.9], [-0.3, 0.8], [2.2, 1.0], [0.1, 0.4]])
    runs = len(x)
    dx, dy = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    D = np.column_stack([np.ones(runs), dx])
    DtD_inv = np.linalg.inv(D.T @ D)
    b = DtD_inv @ D.T @ dy
    u = dy - D @ b
    H = D @ DtD_inv @ D.T
    h = np.diag(H)
    w = D @ DtD_inv[:, 1]                                         # row g's weight in the slope
    var = np.sum(w ** 2 * u ** 2 / (1 - h))
    M = np.diag(w / np.sqrt(1 - h)) @ (np.eye(runs) - H) @ np.diag(w / np.sqrt(1 - h))
    df = np.trace(M) ** 2 / np.trace(M @ M)

    run, task = np.repeat(np.arange(runs), 2), np.tile([0, 1], runs)
    X = np.column_stack([x.ravel(), np.ones(2 * runs), run[:, None] == np.arange(1, runs), task == 1])
    fit = cluster_fit(X, y.ravel(), run, terms=[0])
    assert fit.params[0] == pytest.approx(b[1], rel=1e-12)
    assert fit.se[0] == pytest.approx(np.sqrt(var), rel=1e-10)
    assert fit.df[0] == pytest.approx(df, rel=1e-10)
    assert fit.se[0] == pytest.approx(0.4764935356004028, rel=1e-10)  # the numbers above, by hand
    assert fit.df[0] == pytest.approx(2.2859183959787863, rel=1e-10)
    assert fit.n_clusters == runs and np.isnan(fit.df[1:]).all()


def test_two_stage_least_squares_cr2_by_hand():
    """Just-identified 2SLS, 4 clusters of 3: b = (Z'X)^-1 Z'y; CR2 from the projected design Xh = P_Z X,
    cluster by cluster with (I - Xh_g (Xh'Xh)^-1 Xh_g')^(-1/2) applied to the 2SLS residuals."""
    rng = np.random.default_rng(0)
    n, clusters = 12, np.repeat(np.arange(4), 3)
    z = rng.normal(size=n)
    x = 0.8 * z + rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    X, Z = np.column_stack([np.ones(n), x]), np.column_stack([np.ones(n), z])
    b = np.linalg.solve(Z.T @ X, Z.T @ y)
    e = y - X @ b
    Xh = Z @ np.linalg.solve(Z.T @ Z, Z.T @ X)
    bread = np.linalg.inv(Xh.T @ Xh)
    meat = np.zeros((2, 2))
    for g in range(4):
        rows = clusters == g
        w, V = np.linalg.eigh(np.eye(3) - Xh[rows] @ bread @ Xh[rows].T)
        score = Xh[rows].T @ (V @ np.diag(w ** -0.5) @ V.T) @ e[rows]
        meat += np.outer(score, score)
    se = np.sqrt(np.diag(bread @ meat @ bread))
    fit = cluster_fit(X, y, clusters, instruments=Z)
    assert fit.params == pytest.approx(b, rel=1e-10)
    assert fit.se == pytest.approx(se, rel=1e-10)
    assert np.all((fit.df > 0) & (fit.df <= 4))
    lo, hi = fit.interval(0.05)
    assert hi[1] - lo[1] == pytest.approx(2 * stats.t.ppf(0.975, fit.df[1]) * se[1], rel=1e-10)


def test_designs_that_cannot_be_fitted_are_one_clear_error():
    X = np.column_stack([np.ones(6), np.arange(6.0), 2 * np.arange(6.0)])
    with pytest.raises(DncsimError, match="rank-deficient"):
        cluster_fit(X, np.arange(6.0), np.repeat([0, 1, 2], 2))
    with pytest.raises(DncsimError, match="at least 2"):
        cluster_fit(X[:, :2], np.arange(6.0), np.zeros(6, int))
