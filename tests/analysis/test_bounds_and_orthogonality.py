"""Theorem 4.1 (vectorised, flagged outside its range), the prior bound's a*, Prop. 4.2, cosines, drift."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dncsim.analysis import (DncsimError, axis_drift, class_geometry, cross_task_cosines, ncc_error_bound,
                      ncc_error_bound_prior, ncc_fewshot_error, orthogonality_bound, orthogonality_summary)


def gaussian_classes(seed, C=5, d=8, n=60, spread=4.0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, d, generator=g, dtype=torch.float64) * spread
    y = torch.arange(C).repeat_interleave(n)
    return means[y] + torch.randn(C * n, d, generator=g, dtype=torch.float64), y


def test_bound_is_vectorised_over_shots_and_subsets():
    x, y = gaussian_classes(0)
    g = class_geometry(x, y, ddof=1)
    subsets = [list(s) for s in itertools.combinations(range(5), 3)]
    ms = [10, 20, 50, float("inf")]
    batch = ncc_error_bound(g, ms, classes=subsets)
    assert batch.value.shape == (4, len(subsets)) and batch.valid.all()
    for e, sub in enumerate(subsets):
        for s, m in enumerate(ms):
            one = ncc_error_bound(g, m, classes=sub)
            assert float(batch.value[s, e]) == pytest.approx(float(one.value[0, 0]), rel=1e-14)
    # m -> infinity leaves the leading term (1/C') sum 4 dirCDNV
    torch.testing.assert_close(batch.value[-1], batch.limit)
    sub = torch.tensor(subsets[0])
    vt = g.dir_cdnv[sub][:, sub]
    assert float(batch.limit[0]) == pytest.approx(float(4 * vt.nansum() / 3))
    # the bound decreases with m towards the limit
    assert bool((batch.value[:-1] >= batch.value[1:]).all())


def test_bound_flags_small_m_and_nonpositive_margin():
    x, y = gaussian_classes(1, C=3)
    g = class_geometry(x, y)
    res = ncc_error_bound(g, [1, 5, 10])
    assert res.below_range.tolist() == [True, True, False]
    assert torch.isnan(res.value[:2]).all() and torch.isfinite(res.value[2]).all()
    ext = ncc_error_bound(g, [1, 5, 10], extrapolate=True)
    assert torch.isfinite(ext.value).all() and ext.below_range.tolist() == [True, True, False]
    assert not ext.valid[:2].any() and ext.valid[2].all()
    # a wide class next to a tight one with a small gap: 1 + (v_j - v_i)/(m d2) < 0 for m = 10
    gen = torch.Generator().manual_seed(0)
    wide = torch.randn(400, 20, generator=gen, dtype=torch.float64) * 3.0
    tight = torch.randn(400, 20, generator=gen, dtype=torch.float64) * 0.1 + 0.5
    g2 = class_geometry(torch.cat([wide, tight]), torch.arange(2).repeat_interleave(400))
    margin = 1 + (g2.var[1] - g2.var[0]) / (10 * g2.d2[0, 1])
    assert margin < 0
    bad = ncc_error_bound(g2, [10, 10_000])
    assert bad.nonpositive_margin.tolist() == [[True], [False]]
    assert torch.isnan(bad.value[0, 0]) and torch.isfinite(bad.value[1, 0])


def test_bound_rejects_bad_subsets_and_shots():
    x, y = gaussian_classes(2, C=3)
    g = class_geometry(x, y)
    for classes, msg in [([0], "at least 2"), ([0, 7], "class 7"), ([1, 1], "twice")]:
        with pytest.raises(DncsimError, match=msg):
            ncc_error_bound(g, 10, classes=classes)
    for m in (0, 2.5, []):
        with pytest.raises(DncsimError, match="shot counts"):
            ncc_error_bound(g, m)


@pytest.mark.parametrize("ways", [2, 3])
def test_theorem_bounds_measured_fewshot_error_on_gaussians(ways):
    """An upper bound in expectation: at m >= 10 the bound is above the measured error on the same subsets."""
    x, y = gaussian_classes(3, C=5, n=80, spread=1.2)
    g = class_geometry(x, y, ddof=1)
    fs = ncc_fewshot_error(x, y, shots=[10, 20], ways=ways, episodes=300, seed=1)
    b = ncc_error_bound(g, [10, 20], classes=fs.classes)
    assert fs.error.min() > 0.01                 # a non-trivial problem
    assert bool((b.value.mean(dim=1) >= fs.error).all())


def test_prior_bound_a_star_minimises_over_admissible_a():
    for alpha, beta, m in [(0.05, 0.6, 1), (0.01, 0.3, 10), (0.2, 2.0, 50), (1e-4, 0.05, 500)]:
        best = float(ncc_error_bound_prior(alpha, beta, m))
        a = torch.linspace(5, 400, 200_000, dtype=torch.float64)
        B = 0.25 * (2 * np.sqrt(beta / m) + 2 * beta / np.sqrt(m) + beta / m)
        E = alpha * (0.5 - 2 / a - 2 ** 1.5 / (a * m)) ** -2 + B * a
        E = E[(0.5 - 2 / a - 2 ** 1.5 / (a * m)) > 0]
        assert best <= float(E.min()) * (1 + 1e-9)
        assert best == pytest.approx(float(E.min()), rel=1e-4)
    vec = ncc_error_bound_prior(0.05, 0.6, torch.tensor([1, 5, 10]))
    assert vec.shape == (3,) and bool((vec[:-1] > vec[1:]).all())


def factorial_labelings(seed, ka, kb, reps, d):
    """Exactly balanced and independent labelings: every (a, b) cell holds ``reps`` samples."""
    a = torch.arange(ka).repeat_interleave(kb * reps)
    b = torch.arange(kb).repeat_interleave(reps).repeat(ka)
    g = torch.Generator().manual_seed(seed)
    ua, ub = torch.randn(ka, d, generator=g, dtype=torch.float64), torch.randn(kb, d, generator=g, dtype=torch.float64)
    scale = torch.rand(d, generator=g, dtype=torch.float64) * 2
    noise = torch.randn(len(a), d, generator=g, dtype=torch.float64) * scale
    return ua[a] + ub[b] + noise, a, b


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 5), st.integers(2, 5), st.integers(1, 6), st.integers(2, 12))
def test_prop42_holds_on_balanced_independent_labelings(seed, ka, kb, reps, d):
    x, a, b = factorial_labelings(seed, ka, kb, reps, d)
    ga, gb = class_geometry(x, a, mean_axis_var=True), class_geometry(x, b, mean_axis_var=True)
    cos = cross_task_cosines(ga, gb)
    rhs = orthogonality_bound(ga, gb)
    assert bool((cos <= rhs * (1 + 1e-9) + 1e-12).all())
    assert orthogonality_summary(ga, gb)["frac_under_bound"] == 1.0
    if ka == 2 and kb == 2:
        torch.testing.assert_close(orthogonality_bound(ga, gb, form="binary"), rhs)
        torch.testing.assert_close(orthogonality_bound(ga, gb, variance="pooled"), rhs)


def test_class_average_variance_differs_from_pooled_for_k_above_two():
    x, a, b = factorial_labelings(0, 3, 2, 5, 6)
    ga, gb = class_geometry(x, a), class_geometry(x, b)
    assert ga.mean_axis_var is not None          # auto for small K
    assert not torch.allclose(orthogonality_bound(ga, gb), orthogonality_bound(ga, gb, variance="pooled"))
    with pytest.raises(DncsimError, match="binary form"):
        orthogonality_bound(ga, gb, form="binary")
    with pytest.raises(DncsimError, match="mean_axis_var"):
        orthogonality_bound(class_geometry(x, a, mean_axis_var=False), gb)
    with pytest.raises(DncsimError, match="variance must be"):
        orthogonality_bound(ga, gb, variance="max")


def test_cross_task_cosines_equal_explicit_axis_products():
    x, a, b = factorial_labelings(4, 4, 3, 3, 7)
    ga, gb = class_geometry(x + 100.0, a), class_geometry(x + 100.0, b)      # far from the origin
    explicit = (ga.axes() @ gb.axes().T).abs()
    torch.testing.assert_close(cross_task_cosines(ga, gb), explicit, rtol=1e-10, atol=1e-12)
    s = orthogonality_summary(ga, gb)
    assert s["axis_pairs"] == 6 * 3 and s["random_cos2"] == pytest.approx(1 / 7)
    assert s["max_abs_cos"] == pytest.approx(float(explicit.max()))
    assert s["cos2_vs_random"] == pytest.approx(float(explicit.square().mean()) * 7)


def test_axis_drift():
    x, y = gaussian_classes(5, C=4)
    g = class_geometry(x, y)
    torch.testing.assert_close(axis_drift(g, g), torch.ones(6, dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    rotated = class_geometry(x @ q, y)
    expected = (g.axes() * (rotated.axes() @ q.T)).sum(1)     # rotating back gives the same axes
    torch.testing.assert_close(expected, torch.ones(6, dtype=torch.float64))
    drift = axis_drift(g, rotated)
    torch.testing.assert_close(drift, (g.axes() * rotated.axes()).sum(1))
    with pytest.raises(DncsimError, match="same classes"):
        axis_drift(g, class_geometry(x, y % 3))


def test_summary_samples_axes_of_many_class_labelings():
    x, a, b = factorial_labelings(6, 80, 2, 2, 10)
    ga, gb = class_geometry(x, a), class_geometry(x, b)
    assert ga.mean_axis_var is None                         # K > 64: not computed by default
    full = orthogonality_summary(ga, gb, variance="pooled", max_axes=10_000)
    small = orthogonality_summary(ga, gb, variance="pooled", max_axes=200)
    assert full["axis_pairs"] == 3160 and not full["axes_sampled"]
    assert small["axis_pairs"] == 200 and small["axes_sampled"]
    assert small["max_abs_cos"] <= full["max_abs_cos"]
    assert small["median_abs_cos"] == pytest.approx(full["median_abs_cos"], rel=0.25)
    assert orthogonality_summary(ga, gb, variance="pooled", max_axes=200) == small   # seeded
