"""The crossfit estimator removes the plug-in's bias where it is large, and the bootstrap intervals keep
their coverage: measured by simulation on classes whose population values are known."""
import math

import pytest
import torch

from dncsim.analysis import UndefinedGeometry, class_geometry
from dncsim.analysis import estimators as E


def isotropic(n, d, C, gap2, g):
    """C isotropic unit-variance Gaussian classes with every pair of means at squared distance gap2:
    population dir-CDNV 1/gap2 for every ordered pair, CDNV 2d/gap2."""
    means = torch.zeros(C, d, dtype=torch.float64)
    for c in range(C):
        means[c, c] = math.sqrt(gap2 / 2)
    return torch.randn(n * C, d, generator=g, dtype=torch.float64) + means.repeat_interleave(n, 0), \
        torch.arange(C).repeat_interleave(n)


def test_the_plugin_estimate_is_class_geometry():
    g = torch.Generator().manual_seed(0)
    x, y = isotropic(30, 8, 4, 9.0, g)
    x = x + 50.0                                         # a common offset changes nothing
    for ddof in (0, 1):
        a, b = class_geometry(x, y, ddof=ddof).summary(), E.plugin_estimate(x, y, ddof=ddof).summary()
        for k in ("dir_cdnv", "cdnv", "ratio", "mean_gap"):
            assert b[k] == pytest.approx(a[k], rel=1e-10), k


def test_crossfit_is_unbiased_where_the_plugin_is_far_off():
    """samples per class / d = 0.25 (d = 64, 16 per class), means close to their sampling noise."""
    d, n, C, gap2 = 64, 16, 4, 16.0
    g = torch.Generator().manual_seed(1)
    plug, cross, plug_c, cross_c = [], [], [], []
    for r in range(200):
        x, y = isotropic(n, d, C, gap2, g)
        p, c = class_geometry(x, y).summary(), E.crossfit_geometry(x, y, seed=r).summary()
        plug.append(p["dir_cdnv"])
        cross.append(c["dir_cdnv"])
        plug_c.append(p["cdnv"])
        cross_c.append(c["cdnv"])
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert mean(plug) / (1 / gap2) - 1 < -0.20                      # the plug-in: off by more than 20%
    assert abs(mean(cross) / (1 / gap2) - 1) < 0.05                  # crossfit: within 5%
    assert mean(plug_c) / (2 * d / gap2) - 1 < -0.20 and abs(mean(cross_c) / (2 * d / gap2) - 1) < 0.05


@pytest.mark.parametrize("n,d,gap2", [(16, 16, 16.0), (32, 16, 16.0)])
def test_bootstrap_intervals_keep_their_coverage(n, d, gap2):
    C, hits_d, hits_c, R = 3, 0, 0, 200
    g = torch.Generator().manual_seed(5)
    for r in range(R):
        x, y = isotropic(n, d, C, gap2, g)
        ci = E.bootstrap_summaries(x, y, resamples=200, seed=r)
        hits_d += ci["dir_cdnv"][0] <= 1 / gap2 <= ci["dir_cdnv"][1]
        hits_c += ci["cdnv"][0] <= 2 * d / gap2 <= ci["cdnv"][1]
    assert 0.90 <= hits_d / R <= 1.0 and 0.90 <= hits_c / R <= 1.0, (hits_d / R, hits_c / R)


def test_the_batched_and_single_crossfit_agree_and_unresolved_pairs_are_counted():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(120, 6, generator=g, dtype=torch.float64)
    y = torch.arange(120) % 3
    x[y == 1, 0] += 4.0                                   # classes 0 and 2 share their mean: unresolvable
    from dncsim.analysis.estimators import crossfit as CF
    from dncsim.analysis.estimators.core import _prepare

    xx, idx, classes = _prepare(x, y)
    halves = CF._halves(idx, 3, 3, torch.Generator().manual_seed(1), xx.device)
    single = CF._crossfit_single(xx, idx, classes, halves)
    batch = CF._crossfit_batch(xx, idx, classes, torch.ones(1, 120, dtype=torch.float64), halves)
    for a, b in zip(single, batch):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
    est = E.crossfit_geometry(x, y, splits=3, seed=1)
    s = est.summary()
    assert s["undefined_pairs"] + int(torch.isfinite(est.cdnv[0, 2])) == 1   # pair (0, 2) is at noise level
    z = torch.randn(20, 5, generator=g, dtype=torch.float64)
    with pytest.raises(UndefinedGeometry, match="no pair of classes is resolved"):    # the same samples twice
        E.crossfit_geometry(torch.cat([z, z]), torch.arange(40) // 20).summary()
    with pytest.raises(UndefinedGeometry, match="needs at least 4 per class"):
        E.crossfit_geometry(x[:9], y[:9])


def test_the_median_cos_interval_covers_the_axes_angle():
    """Two labelings of the same samples whose mean-difference axes meet at a known angle (far apart classes:
    the plug-in |cos| shrinks towards 0 by about the noise of the means, negligible here)."""
    g = torch.Generator().manual_seed(3)
    ya, yb = torch.arange(400) % 2, (torch.arange(400) // 2) % 2
    angle = 0.3
    x = torch.randn(400, 12, generator=g, dtype=torch.float64)
    x[:, 0] += 20 * ya
    x[:, 0] += 20 * math.cos(angle) * yb
    x[:, 1] += 20 * math.sin(angle) * yb
    low, high = E.bootstrap_median_abs_cos(x, ya, yb, resamples=300)
    assert low <= math.cos(angle) <= high and high - low < 0.02
    narrow = E.bootstrap_median_abs_cos(torch.cat([x] * 4), torch.cat([ya] * 4), torch.cat([yb] * 4), resamples=300)
    assert narrow[1] - narrow[0] < 0.7 * (high - low)          # more samples, a narrower interval
