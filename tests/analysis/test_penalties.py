"""The directional-variance penalty is class_geometry's directional CDNV, differentiably."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dncsim.analysis.geometry import class_geometry
from dncsim.analysis.penalties import directional_cdnv_penalty


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.integers(2, 6), per=st.integers(2, 9), d=st.integers(1, 12),
       ddof=st.sampled_from([0, 1]), spread=st.floats(0.1, 5.0))
def test_equals_class_geometry_on_the_same_batch(seed, classes, per, d, ddof, spread):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per)[torch.randperm(classes * per, generator=g)]
    x = torch.randn(len(y), d, generator=g, dtype=torch.float64) + spread * torch.randn(classes, d, generator=g,
                                                                                         dtype=torch.float64)[y]
    expected = class_geometry(x, y, ddof=ddof).summary()["dir_cdnv"]
    assert float(directional_cdnv_penalty(x, y, ddof=ddof)) == pytest.approx(expected, rel=1e-9)


def test_unlabelled_samples_and_classes_with_one_sample_are_left_out():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0] * 10 + [1] * 10 + [2] * 1 + [-1] * 9)
    keep = (y == 0) | (y == 1)
    expected = class_geometry(x[keep], y[keep]).summary()["dir_cdnv"]
    assert float(directional_cdnv_penalty(x, y)) == pytest.approx(expected, rel=1e-12)


def test_fewer_than_two_classes_give_an_exact_zero_that_still_backpropagates():
    x = torch.randn(8, 3, requires_grad=True)
    for y in (torch.zeros(8, dtype=torch.long), torch.full((8,), -1), torch.tensor([0] * 7 + [1])):
        p = directional_cdnv_penalty(x, y)
        assert float(p.detach()) == 0.0
        p.backward()
        assert x.grad is not None and float(x.grad.abs().sum()) == 0.0
        x.grad = None


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    offset = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)[y]
    x = torch.randn(10, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    for ddof in (0, 1):
        assert torch.autograd.gradcheck(lambda z: directional_cdnv_penalty(z + offset, y, ddof=ddof), (x,))


def test_only_the_variance_along_the_axis_is_penalised():
    """Two classes separated along e1: spreading them along e2 leaves the penalty unchanged; along e1 it grows."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200, 2, generator=g, dtype=torch.float64) * 0.1
    y = torch.tensor([0] * 100 + [1] * 100)
    base = base - torch.stack([base[y == c].mean(0) for c in (0, 1)])[y]          # exact class means
    shift = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)[y]
    p0 = float(directional_cdnv_penalty(base + shift, y))
    orth = base * torch.tensor([1.0, 10.0], dtype=torch.float64)
    along = base * torch.tensor([10.0, 1.0], dtype=torch.float64)
    assert float(directional_cdnv_penalty(orth + shift, y)) == pytest.approx(p0, rel=1e-12)
    assert float(directional_cdnv_penalty(along + shift, y)) == pytest.approx(100 * p0, rel=1e-12)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="features must be"):
        directional_cdnv_penalty(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="ddof must be"):
        directional_cdnv_penalty(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), ddof=2)
