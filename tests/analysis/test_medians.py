"""True medians: the mean of the two middle values for an even count, wherever dncsim reports a median."""
import warnings

import numpy as np
import pytest
import torch

from dncsim.analysis.geometry import class_geometry
from dncsim.analysis.medians import true_median
from dncsim.analysis.orthogonality import cross_task_cosines, orthogonality_summary, orthogonality_tasks


def test_even_counts_give_the_mean_of_the_two_middle_values():
    assert float(true_median(torch.tensor([4.0, 1.0, 3.0, 2.0]))) == 2.5          # torch.median gives 2
    assert float(true_median(torch.tensor([1.0, 2.0, 3.0]))) == 2.0
    rows = torch.tensor([[1.0, 2.0, float("nan"), 10.0], [5.0, float("nan"), 7.0, float("nan")]])
    assert true_median(rows, dim=1).tolist() == [2.0, 6.0]                           # NaN left out
    assert true_median(rows, dim=0).tolist() == [3.0, 2.0, 7.0, 10.0]
    assert true_median(torch.full((3,), float("nan"))).isnan() and true_median(torch.empty(0)).isnan()
    assert float(true_median(torch.tensor([1.0, float("inf")]))) == float("inf")
    big = torch.tensor([1e308, 1.7e308], dtype=torch.float64)
    assert float(true_median(big)) == pytest.approx(1.35e308)                       # no overflow
    with pytest.raises(TypeError):
        true_median(torch.tensor([1, 2]))


def test_true_median_is_numpy_nanmedian_on_random_tensors():
    g = np.random.default_rng(0)
    for shape in [(8,), (7,), (4, 6), (3, 5, 2)]:
        a = g.normal(size=shape)
        a[g.random(shape) < 0.3] = np.nan
        for dim in range(len(shape)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")                  # all-NaN slices
                want = np.nanmedian(a, axis=dim)
            np.testing.assert_allclose(true_median(torch.tensor(a), dim=dim).numpy(), want, rtol=0, atol=1e-15)


def test_orthogonality_medians_are_true_medians_for_an_even_count_of_axis_pairs():
    """3 and 4 classes: 3 x 6 = 18 axis pairs, an even count."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(120, 7, generator=g, dtype=torch.float64)
    ga = class_geometry(x, torch.arange(120) % 3)
    gb = class_geometry(x, (torch.arange(120) // 3) % 4)
    cos = cross_task_cosines(ga, gb).flatten().sort().values
    assert cos.numel() == 18
    want = float(cos[8] + cos[9]) / 2
    assert float(cos[8]) != float(cos[9])
    assert orthogonality_summary(ga, gb)["median_abs_cos"] == pytest.approx(want, abs=1e-15)
    assert float(orthogonality_tasks([ga, gb])["median_abs_cos"][0, 1]) == pytest.approx(want, abs=1e-15)
