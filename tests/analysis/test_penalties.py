"""The directional-variance penalty is class_geometry's directional CDNV, differentiably."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dncsim.analysis.geometry import class_geometry
from dncsim.analysis.penalties import directional_cdnv_penalty, orthogonal_variance_penalty


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


# --- orthogonal_variance_penalty -----------------------------------------------------------------------

def _orth_reference(x, y, ddof=0, min_count=2):
    """Plain numpy float64 loops: P from an SVD of the stacked mean differences, per class the summed
    |(I - P) r_n|^2 / ((n_i - ddof)(d - r)), then the mean over ordered pairs of that over |mu_i - mu_j|^2."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    classes = [c for c in sorted(set(y.tolist())) if c >= 0 and (y == c).sum() >= min_count]
    d = x.shape[1]
    means = {c: x[y == c].mean(0) for c in classes}
    diffs = np.array([means[c] - means[classes[0]] for c in classes[1:]])
    _, s, vt = np.linalg.svd(diffs, full_matrices=False)
    r = int((s > 1e-9 * s.max()).sum())
    proj = vt[:r].T @ vt[:r]
    per = {}
    for c in classes:
        total = 0.0
        for row in x[y == c]:
            res = row - means[c]
            o = res - proj @ res
            total += float(o @ o)
        per[c] = total / (((y == c).sum() - ddof) * (d - r))
    vals = [per[i] / float((means[i] - means[j]) @ (means[i] - means[j])) for i in classes for j in classes if i != j]
    return float(np.mean(vals))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.integers(2, 5), per=st.integers(2, 8), d=st.integers(5, 12),
       ddof=st.sampled_from([0, 1]), spread=st.floats(0.5, 5.0))
def test_orthogonal_variance_equals_a_plain_loop(seed, classes, per, d, ddof, spread):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per)[torch.randperm(classes * per, generator=g)]
    x = torch.randn(len(y), d, generator=g, dtype=torch.float64) + spread * torch.randn(classes, d, generator=g,
                                                                                         dtype=torch.float64)[y]
    y = torch.cat([y, torch.tensor([-1, classes])])                     # an unlabelled sample, a singleton class
    x = torch.cat([x, torch.randn(2, d, generator=g, dtype=torch.float64)])
    got = float(orthogonal_variance_penalty(x, y, ddof=ddof))
    assert got == pytest.approx(_orth_reference(x.numpy(), y.numpy(), ddof=ddof), rel=1e-9)


def test_orthogonal_variance_golden_value():
    """Two classes split along e1 in 3 dimensions: only e2, e3 count, per dimension, over d2 = 4."""
    x = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, -3.0],
                      [2.0, 0.0, 1.0], [2.0, 0.0, -1.0], [7.0, 0.0, 0.0], [-3.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # class 0: mean 0, |orth|^2 sum = 1 + 1 + 9 + 9 = 20, / (4 x 2) = 2.5; class 1: mean (2, 0, 0), orth sum
    # 1 + 1 = 2 (the spread along e1 is not counted), / (4 x 2) = 0.25; over d2 = 4: (2.5 + 0.25) / 2 / 4
    assert float(orthogonal_variance_penalty(x, y)) == pytest.approx((2.5 + 0.25) / 2 / 4, rel=1e-12)
    assert float(orthogonal_variance_penalty(x, y, ddof=1)) == pytest.approx((20 / 6 + 2 / 6) / 2 / 4, rel=1e-12)


def test_orthogonal_variance_is_shift_and_scale_invariant_and_differentiable():
    g = torch.Generator().manual_seed(5)
    y = torch.arange(4).repeat_interleave(6)
    x = torch.randn(24, 9, generator=g, dtype=torch.float64) + 3 * torch.randn(4, 9, generator=g,
                                                                              dtype=torch.float64)[y]
    p = float(orthogonal_variance_penalty(x, y))
    assert p > 0
    assert float(orthogonal_variance_penalty(x + torch.randn(1, 9, generator=g, dtype=torch.float64), y)) == \
        pytest.approx(p, rel=1e-10)
    assert float(orthogonal_variance_penalty(7.5 * x, y)) == pytest.approx(p, rel=1e-10)
    z = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: orthogonal_variance_penalty(t, y), (z,))
    assert torch.autograd.gradcheck(lambda t: orthogonal_variance_penalty(t, y, ddof=1), (z,))
    # symmetric means (an equilateral triangle: equal singular values) still give a finite gradient
    tri = torch.tensor([[1.0, 0.0], [-0.5, 3 ** 0.5 / 2], [-0.5, -(3 ** 0.5) / 2]], dtype=torch.float64)
    yt = torch.arange(3).repeat_interleave(5)
    xt = torch.cat([tri[yt], torch.zeros(15, 3, dtype=torch.float64)], 1)
    xt = (xt + 0.1 * torch.randn(15, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    orthogonal_variance_penalty(xt, yt).backward()
    assert bool(torch.isfinite(xt.grad).all()) and float(xt.grad.abs().sum()) > 0


def test_orthogonal_variance_degenerate_cases():
    x = torch.randn(8, 3, requires_grad=True)
    for y in (torch.zeros(8, dtype=torch.long), torch.full((8,), -1), torch.tensor([0] * 7 + [1])):
        p = orthogonal_variance_penalty(x, y)
        assert float(p.detach()) == 0.0
        p.backward()
        assert float(x.grad.abs().sum()) == 0.0
        x.grad = None
    # 3 classes in 2 dimensions: the mean differences span everything, nothing is orthogonal
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    x2 = torch.tensor([[0.0, 0.1], [0.0, -0.1], [1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.3, 1.0]])
    assert float(orthogonal_variance_penalty(x2, y)) == 0.0
    with pytest.raises(ValueError, match="features must be"):
        orthogonal_variance_penalty(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="ddof must be"):
        orthogonal_variance_penalty(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), ddof=2)


def _along_and_orth(x, y):
    """(class 0's variance along e1, its mean variance per dimension in e2..e_d) with two classes split along e1."""
    r = x[y == 0] - x[y == 0].mean(0)
    return float(r[:, 0].square().mean()), float(r[:, 1:].square().mean())


def test_dir_and_orth_penalties_move_different_parts_of_the_variance():
    """A gradient step on each penalty: orth lowers the variance orthogonal to the axis and leaves the
    variance along it nearly unchanged; dir the other way round."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat_interleave(50)
    x0 = torch.randn(100, 8, generator=g, dtype=torch.float64) * 0.5
    x0[:, 0] += 3.0 * y
    along0, orth0 = _along_and_orth(x0, y)
    moved = {}
    for name, fn in (("dir", directional_cdnv_penalty), ("orth", orthogonal_variance_penalty)):
        x = x0.clone().requires_grad_(True)
        fn(x, y).backward()
        step = 0.5 / float(x.grad.norm())                  # the same step length for both
        moved[name] = _along_and_orth((x - step * x.grad).detach(), y)
    along_d, orth_d = moved["dir"]
    along_o, orth_o = moved["orth"]
    assert along_d < 0.85 * along0 and abs(orth_d / orth0 - 1) < 0.001          # measured 0.820, 1.0001
    assert orth_o < 0.95 * orth0 and abs(along_o / along0 - 1) < 0.001          # measured 0.944, 0.9994


def test_the_matched_orthogonal_variance_is_the_total_over_the_axis_dimensions():
    """matched: times (d - r) / r -- here 4 classes (r = 3) in d = 10, so 7/3 of the per-dimension value."""
    g = torch.Generator().manual_seed(2)
    y = torch.arange(4).repeat_interleave(5)
    x = torch.randn(20, 10, generator=g, dtype=torch.float64) + 2 * torch.randn(4, 10, generator=g,
                                                                               dtype=torch.float64)[y]
    per_dim = float(orthogonal_variance_penalty(x, y))
    assert float(orthogonal_variance_penalty(x, y, matched=True)) == pytest.approx(7 / 3 * per_dim, rel=1e-12)
