"""Properties of class_geometry: invariances, ordering of the three variabilities, streaming = one-shot."""
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from dncsim.analysis import ClassMeans, GeometryAccumulator, class_geometry, streaming_class_geometry

FIELDS = ("cdnv", "dir_cdnv", "theta")


def random_problem(seed, n_classes, d, per_class_max=12, spread=3.0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, per_class_max, size=n_classes)
    means = rng.normal(size=(n_classes, d)) * spread
    scales = rng.uniform(0.2, 2.0, size=(n_classes, d))
    y = np.repeat(np.arange(n_classes) * 3 + 1, counts)         # non-contiguous label values
    x = np.concatenate([means[k] + rng.normal(size=(c, d)) * scales[k] for k, c in enumerate(counts)])
    perm = rng.permutation(len(y))
    return torch.from_numpy(x[perm]), torch.from_numpy(y[perm]), rng


def conditioning(*geoms):
    """(C, C) the largest (|mu_i|^2 + |mu_j|^2) / d2_ij of ``geoms``: how much float64 rounding in the means
    is amplified in a pair's d2 and in every ratio over it (large where two class means nearly coincide)."""
    out = []
    for g in geoms:
        sq = g.means.square().sum(1)
        out.append((sq[:, None] + sq[None, :]) / g.d2)
    return torch.stack(out).amax(0)


def assert_same_geometry(a, b, rtol, fields=FIELDS + ("d2",)):
    """Every (C, C) field of ``a`` and ``b`` equal to relative ``rtol``, widened by 1e-15 x the pair's
    conditioning (two computations that round differently disagree by about that much)."""
    tol = rtol + 1e-15 * conditioning(a, b)
    for f in fields:
        assert_close_within(getattr(a, f), getattr(b, f), tol, f)


def assert_close_within(x, y, tol, what=""):
    """|x - y| <= tol |x| entry by entry (tol a number or a tensor like x); NaN only where both are NaN."""
    close = ((x - y).abs() <= tol * x.abs()).logical_or(x.isnan() & y.isnan())
    assert bool(close.all()), (what, float(((x - y).abs() / x.abs()).nan_to_num(0).max()))


problems = st.tuples(st.integers(0, 2**31 - 1), st.integers(2, 7), st.integers(1, 9))


@settings(max_examples=40, deadline=None)
@given(problems, st.sampled_from([0, 1]))
def test_invariant_to_translation_scaling_rotation_and_permutation(problem, ddof):
    seed, C, d = problem
    x, y, rng = random_problem(seed, C, d)
    base = class_geometry(x, y, ddof=ddof)
    shift = torch.from_numpy(rng.normal(size=d) * 50)
    q, _ = torch.linalg.qr(torch.from_numpy(rng.normal(size=(d, d))))
    scale = float(rng.uniform(0.01, 100))
    perm = torch.from_numpy(rng.permutation(len(y)))
    assert_same_geometry(base, class_geometry(x + shift, y, ddof=ddof), 1e-8)
    scaled = class_geometry(x * scale, y, ddof=ddof)
    assert_same_geometry(base, scaled, 1e-9, fields=FIELDS)        # scale-free ratios
    assert_close_within(scaled.d2, base.d2 * scale**2, 1e-9 + 1e-15 * conditioning(base, scaled), "d2")
    assert_same_geometry(base, class_geometry(x @ q, y, ddof=ddof), 1e-8)
    assert_same_geometry(base, class_geometry(x[perm], y[perm], ddof=ddof), 1e-10)


@settings(max_examples=40, deadline=None)
@given(problems, st.sampled_from([0, 1]))
def test_directional_below_one_sided_below_cdnv(problem, ddof):
    """dir_cdnv_ij <= var_i / d2_ij <= cdnv_ij for every ordered pair."""
    seed, C, d = problem
    x, y, _ = random_problem(seed, C, d)
    g = class_geometry(x, y, ddof=ddof)
    off = ~torch.eye(C, dtype=torch.bool)
    one_sided = (g.var[:, None] / g.d2)[off]
    assert bool((g.dir_cdnv[off] <= one_sided * (1 + 1e-12)).all())
    assert bool((one_sided <= g.cdnv[off]).all())
    assert torch.isnan(g.dir_cdnv.diagonal()).all() and torch.isnan(g.cdnv.diagonal()).all()
    torch.testing.assert_close(g.cdnv, g.cdnv.T, equal_nan=True)


def test_directional_cdnv_is_ordered_and_matches_a_direct_projection():
    x, y, _ = random_problem(7, 4, 5)
    g = class_geometry(x, y, ddof=0)
    for i in range(4):                       # direct, per-pair reference on a tiny problem
        for j in range(4):
            if i == j:
                continue
            xi = x[y == g.classes[i]]
            delta = g.means[j] - g.means[i]
            proj = (xi - g.means[i]) @ (delta / delta.norm())
            expected = float(proj.square().mean() / delta.square().sum())
            assert float(g.dir_cdnv[i, j]) == pytest.approx(expected, rel=1e-12)
    assert not torch.allclose(g.dir_cdnv, g.dir_cdnv.T, equal_nan=True)


@settings(max_examples=30, deadline=None)
@given(problems, st.integers(1, 6), st.sampled_from([0, 1]))
@example((284, 7, 1), 1, 0)              # two class means 2.6e-5 apart: rounding amplified 1e5-fold
def test_streaming_and_sharded_equal_one_shot(problem, n_batches, ddof):
    seed, C, d = problem
    x, y, rng = random_problem(seed, C, d)
    one = class_geometry(x, y, ddof=ddof, mean_axis_var=True)
    cuts = np.sort(rng.choice(np.arange(1, len(y)), size=min(n_batches, len(y) - 1), replace=False))
    batches = list(zip(torch.tensor_split(x, cuts.tolist()), torch.tensor_split(y, cuts.tolist())))
    streamed = streaming_class_geometry(batches, ddof=ddof, mean_axis_var=True)
    # float64 rounding of the two summation orders, amplified where two class means nearly coincide
    # (d2_ij small next to |mu_i|^2 + |mu_j|^2: a pair 2.6e-5 apart at |mu| ~ 5 differs by 1.1e-10)
    assert_same_geometry(one, streamed, 1e-10, fields=FIELDS + ("d2", "mean_axis_var"))
    # shards: merge the first pass, then build each shard's second pass from the merged means
    shards = [batches[k::2] for k in range(2)]
    parts = [ClassMeans() for _ in shards]
    for part, shard in zip(parts, shards):
        for bx, by in shard:
            part.update(bx, by)
    merged = parts[0].merge(parts[1])
    accs = [GeometryAccumulator(merged, mean_axis_var=True) for _ in shards]
    for acc, shard in zip(accs, shards):
        for bx, by in shard:
            acc.update(bx, by)
    sharded = accs[0].merge(accs[1]).compute(ddof)
    assert_same_geometry(one, sharded, 1e-10)


def test_streaming_accepts_a_function_and_rejects_a_spent_generator():
    x, y, _ = random_problem(3, 3, 4)
    g = streaming_class_geometry(lambda: ((x[k::3], y[k::3]) for k in range(3)))
    assert_same_geometry(class_geometry(x, y), g, 1e-10)
    gen = ((x[k::3], y[k::3]) for k in range(3))
    with pytest.raises(ValueError, match="second pass saw 0 samples"):
        streaming_class_geometry(gen)


def test_float32_accumulation_close_to_float64():
    x, y, _ = random_problem(11, 6, 16, per_class_max=200)
    a = class_geometry(x.float(), y, dtype=torch.float32)
    b = class_geometry(x, y)
    assert a.dir_cdnv.dtype == torch.float32
    torch.testing.assert_close(a.dir_cdnv.double(), b.dir_cdnv, rtol=1e-5, atol=0, equal_nan=True)


def test_summary_and_axes():
    x, y, _ = random_problem(5, 4, 6)
    g = class_geometry(x, y)
    s = g.summary()
    iu = torch.triu_indices(4, 4, 1)
    assert s["C"] == 4 and s["d"] == 6 and s["N"] == len(y) and s["ddof"] == 0
    assert s["cdnv"] == pytest.approx(float(g.cdnv[iu[0], iu[1]].mean()))
    assert s["dir_cdnv"] == pytest.approx(float(g.dir_cdnv[~torch.eye(4, dtype=bool)].mean()))
    assert s["ratio"] == pytest.approx(s["dir_cdnv"] / s["cdnv"])
    u = g.axes()
    assert u.shape == (6, 6)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(6, dtype=torch.float64))
    i, j = g.pairs()[2]
    torch.testing.assert_close(u[2] * g.d2[i, j].sqrt(), g.means[j] - g.means[i])
    assert g.classes.tolist() == [1, 4, 7, 10]
    assert g.axis_var.shape == (4, 4)
