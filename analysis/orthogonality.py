"""Orthogonality of decision axes across labelings (Prop. 4.2) and drift of a labeling's axes.

Axes are the unit vectors u_ij = (mu_j - mu_i)/|mu_j - mu_i| over the unordered class pairs i < j of
a labeling, in the row-major order of ``ClassGeometry.pairs()``.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from dncsim.analysis.bounds import _axis_variance, orthogonality_bound
from dncsim.common import DncsimError
from dncsim.analysis.geometry import ClassGeometry
from dncsim.analysis.medians import true_median

__all__ = ["cross_task_cosines", "orthogonality_summary", "axis_drift", "random_abs_cos", "labeling_independence",
           "INDEPENDENCE_V_MAX", "orthogonality_tasks", "labeling_independence_tasks", "MAX_STACKED_AXES",
           "permutation_null_tasks", "sample_axis_pairs"]

#: labelings of the same samples whose Cramer's V exceeds this are treated as dependent: Prop. 4.2's
#: assumption fails and they are left out of its checks
INDEPENDENCE_V_MAX = 0.1


def random_abs_cos(d: int) -> dict:
    """Reference levels of |cos| between two independent uniformly random unit vectors in d >= 2 dims.

    cos^2 then follows Beta(1/2, (d - 1)/2), so ``median`` = sqrt of that distribution's median
    (exact, from scipy; about 0.674/sqrt(d) for large d) -- the level to set beside a *median* |cos| --
    and ``rms`` = sqrt(E cos^2) = 1/sqrt(d), the level of a root-mean-square (and of ``cos2_vs_random``).
    """
    from scipy.special import betaincinv    # = scipy.stats.beta.median, without scipy.stats' second of imports

    if int(d) < 2:
        raise DncsimError(f"random directions need d >= 2 dimensions; got {d}")
    d = int(d)
    return {"median": float(math.sqrt(betaincinv(0.5, (d - 1) / 2, 0.5))), "rms": 1.0 / math.sqrt(d)}


def _pair_deltas_gram(ma: torch.Tensor, mb: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """(P_a, P_b) inner products (mu^a_j - mu^a_i) . (mu^b_l - mu^b_k) from ONE (K_a x K_b) product.

    Each labeling's means are centred by their own mean first (a shift of one labeling's means
    leaves its differences unchanged), which keeps the four-term combination well conditioned.
    """
    ma = ma - ma.mean(dim=0, keepdim=True)
    mb = mb - mb.mean(dim=0, keepdim=True)
    g = ma @ mb.T                                                     # (K_a, K_b)
    i, j = pa[:, 0, None], pa[:, 1, None]          # task a's pair (i, j)
    p, q = pb[None, :, 0], pb[None, :, 1]          # task b's pair (p, q)
    return g[j, q] - g[j, p] - g[i, q] + g[i, p]


def cross_task_cosines(geom_a: ClassGeometry, geom_b: ClassGeometry, *, pairs_a: Optional[torch.Tensor] = None,
                       pairs_b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """|u_a . u_b| for every class-pair axis of labeling a (rows) against every one of b (columns).

    Returns a (P_a, P_b) float64 tensor, P = K(K-1)/2, rows in ``geom_a.pairs()`` order and columns
    in ``geom_b.pairs()`` order (or the (P, 2) row-index pairs ``pairs_a`` / ``pairs_b``). Computed
    from one K_a x K_b matrix product of the class means, not from the P x d axis matrices. Both
    geometries must share the feature space (same d).
    """
    if geom_a.d != geom_b.d:
        raise DncsimError(f"the two labelings have feature dimensions {geom_a.d} and {geom_b.d}")
    f64 = torch.float64
    dev = geom_a.means.device
    ma, mb = geom_a.means.to(f64), geom_b.means.to(device=dev, dtype=f64)
    pa = geom_a.pairs() if pairs_a is None else pairs_a.to(dev)
    pb = (geom_b.pairs() if pairs_b is None else pairs_b).to(dev)
    dots = _pair_deltas_gram(ma, mb, pa, pb)
    da = geom_a.d2.to(f64)[pa[:, 0], pa[:, 1]].sqrt()
    db = geom_b.d2.to(device=dev, dtype=f64)[pb[:, 0], pb[:, 1]].sqrt()
    return (dots / (da[:, None] * db[None, :])).abs().clamp_max(1.0)


def sample_axis_pairs(geom: ClassGeometry, max_axes: int, gen: torch.Generator) -> torch.Tensor:
    """(P', 2) class-index pairs of ``geom``'s axes: all of them (``geom.pairs()``) when there are at most
    ``max_axes``, else a uniform sample of ``max_axes`` drawn with ``gen``, in ``pairs()`` order."""
    pairs = geom.pairs()
    if len(pairs) <= max_axes:
        return pairs
    keep = torch.randperm(len(pairs), generator=gen)[:max_axes].sort().values
    return pairs[keep.to(pairs.device)]


def orthogonality_summary(geom_a: ClassGeometry, geom_b: ClassGeometry, *, form: str = "k_class",
                          variance: str = "class_average", max_axes: int = 2048, seed: int = 0) -> dict:
    """How orthogonal labeling a's decision axes are to labeling b's, and the Prop. 4.2 check.

    Keys (plain numbers): ``axis_pairs``, ``median_abs_cos``, ``max_abs_cos``, ``mean_cos2``, ``random_cos2``
    (1/d), ``cos2_vs_random`` (1 = as random), ``median_bound``, ``frac_under_bound`` (|cos| <= bound),
    ``form`` and ``variance`` (``analysis.bounds.orthogonality_bound``), ``axes_sampled``: True when a
    labeling has more than ``max_axes`` axes and a seeded uniform sample of them is used.
    """
    gen = torch.Generator().manual_seed(int(seed))
    pa, pb = sample_axis_pairs(geom_a, max_axes, gen), sample_axis_pairs(geom_b, max_axes, gen)
    cos = cross_task_cosines(geom_a, geom_b, pairs_a=pa, pairs_b=pb).flatten()
    rhs = orthogonality_bound(geom_a, geom_b, form=form, variance=variance, pairs_a=pa, pairs_b=pb).flatten()
    cos2 = float(cos.square().mean())
    return {
        "axis_pairs": int(cos.numel()),
        "axes_sampled": bool(len(pa) < geom_a.C * (geom_a.C - 1) // 2 or len(pb) < geom_b.C * (geom_b.C - 1) // 2),
        "median_abs_cos": float(true_median(cos)),
        "max_abs_cos": float(cos.max()),
        "mean_cos2": cos2,
        "random_cos2": 1.0 / geom_a.d,
        "cos2_vs_random": cos2 * geom_a.d,
        "median_bound": float(true_median(rhs)),
        "frac_under_bound": float((cos <= rhs).to(torch.float64).mean()),
        "form": form,
        "variance": variance,
    }


def axis_drift(geom_then: ClassGeometry, geom_now: ClassGeometry) -> torch.Tensor:
    """Signed cos(u_ij(now), u_ij(then)) for every class pair of one labeling measured twice: (P,).

    1 means the decision axis did not move, 0 that it turned orthogonal, negative that it flipped.
    Both geometries must have the same classes and feature dimension.
    """
    if not torch.equal(geom_then.classes.cpu(), geom_now.classes.cpu()) or geom_then.d != geom_now.d:
        raise DncsimError("axis drift needs two geometries of the same classes in the same feature space")
    f64 = torch.float64
    mt = geom_then.means.to(device=geom_now.means.device, dtype=f64)
    mn = geom_now.means.to(f64)
    g = (mt - mt.mean(dim=0, keepdim=True)) @ (mn - mn.mean(dim=0, keepdim=True)).T   # (K, K)
    i, j = geom_now.pairs().unbind(1)
    dots = g[j, j] - g[j, i] - g[i, j] + g[i, i]
    dt = geom_then.pair_values(geom_then.d2).to(device=i.device, dtype=f64).sqrt()
    dn = geom_now.pair_values(geom_now.d2).to(f64).sqrt()
    return (dots / (dt * dn)).clamp(-1.0, 1.0)


def labeling_independence(a, b) -> dict:
    """How far two labelings of the same samples are from Prop. 4.2's assumption.

    ``balanced_a``/``balanced_b``: every class has the same count; ``independent``: the contingency
    table equals the product of its margins exactly (n_ab N = n_a n_b for every cell);
    ``cramers_v``: Cramer's V of the table (0 = independent, 1 = one labeling determines the other),
    sqrt(chi^2 / (N (min(K_a, K_b) - 1))) with Pearson's chi^2 (no continuity correction), as
    ``scipy.stats.contingency.association(table, method="cramer")`` computes it, to the bit.
    """
    a, b = np.asarray(torch.as_tensor(a).cpu()), np.asarray(torch.as_tensor(b).cpu())
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    ra, rb, n = table.sum(1), table.sum(0), table.sum()
    independent = bool((table * n == np.outer(ra, rb)).all())
    v = 0.0
    if not independent:
        expected = np.outer(ra, rb).astype(np.float64) / n
        chi2 = float(((table - expected) ** 2 / expected).sum())
        v = math.sqrt(chi2 / n / (min(table.shape) - 1))
    return {"balanced_a": bool((ra == ra[0]).all()), "balanced_b": bool((rb == rb[0]).all()),
            "independent": independent, "cramers_v": v}


#: ``orthogonality_tasks`` stacks every task's axes into one (T P) x (T P) product up to this many axes in all
MAX_STACKED_AXES = 4096


def _stacked_axes(geoms, variance: str, form: str):
    """Unit axes (T, P, d) zero-padded, validity (T, P), pair distances and normalised axis variances
    (T, P), and class counts K (T,) of T geometries."""
    T = len(geoms)
    P = max(g.C * (g.C - 1) // 2 for g in geoms)
    d = geoms[0].d
    f64 = torch.float64
    dev = geoms[0].means.device
    U = torch.zeros(T, P, d, dtype=f64, device=dev)
    dist = torch.ones(T, P, dtype=f64, device=dev)
    var = torch.zeros(T, P, dtype=f64, device=dev)
    valid = torch.zeros(T, P, dtype=torch.bool, device=dev)
    for t, g in enumerate(geoms):        # gathers the T small per-task tables (O(C^2) each)
        pr = g.pairs()
        p = len(pr)
        m = g.means.to(f64)
        dt = g.d2.to(f64)[pr[:, 0], pr[:, 1]].sqrt()
        U[t, :p] = (m[pr[:, 1]] - m[pr[:, 0]]) / dt[:, None]
        dist[t, :p] = dt
        var[t, :p] = _axis_variance(g, variance, pr)
        valid[t, :p] = True
    K = torch.tensor([2.0 if form == "binary" else float(g.C) for g in geoms], dtype=f64, device=dev)
    return U, valid, dist, var, K


def orthogonality_tasks(geoms, *, form: str = "k_class", variance: str = "class_average") -> dict:
    """:func:`orthogonality_summary` for every pair of T geometries, from one product of stacked unit axes.

    Returns (T, T) float64 tensors of the summary's numeric keys; read the upper triangle a < b (the bound
    is asymmetric; the diagonal is meaningless). Equal to the pairwise calls to float64 rounding (true
    medians). Needs T x P <= ``MAX_STACKED_AXES``, else DncsimError (use the pairwise call).
    """
    if form not in ("k_class", "binary"):
        raise DncsimError(f"form must be 'k_class' or 'binary'; got {form!r}")
    if len({g.d for g in geoms}) != 1:
        raise DncsimError(f"the labelings have different feature dimensions {sorted({g.d for g in geoms})}")
    if form == "binary" and any(g.C != 2 for g in geoms):
        raise DncsimError("the binary form needs 2-class labelings")
    T = len(geoms)
    P = max(g.C * (g.C - 1) // 2 for g in geoms)
    if T * P > MAX_STACKED_AXES:
        raise DncsimError(f"{T} tasks x {P} axes exceed {MAX_STACKED_AXES} stacked axes")
    U, valid, dist, var, K = _stacked_axes(geoms, variance, form)
    d = geoms[0].d
    cos = (U.reshape(T * P, d) @ U.reshape(T * P, d).T).abs().clamp_max(1.0).view(T, P, T, P)
    left = (dist[:, :, None, None] / dist[None, None]) * (2 * K[None, None, :, None] * var[:, :, None, None]).sqrt()
    right = (dist[None, None] / dist[:, :, None, None]) * (2 * K[:, None, None, None] * var[None, None]).sqrt()
    rhs = torch.minimum(left, right)
    ok = (valid[:, :, None, None] & valid[None, None]).permute(0, 2, 1, 3).reshape(T, T, P * P)
    cos = cos.permute(0, 2, 1, 3).reshape(T, T, P * P)
    rhs = rhs.permute(0, 2, 1, 3).reshape(T, T, P * P)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=cos.device)
    n = ok.sum(-1).to(torch.float64)
    cos2 = torch.where(ok, cos.square(), 0.0).sum(-1) / n
    return {
        "median_abs_cos": true_median(torch.where(ok, cos, nan), dim=-1),
        "max_abs_cos": torch.where(ok, cos, -1.0).amax(-1),
        "mean_cos2": cos2,
        "cos2_vs_random": cos2 * d,
        "median_bound": true_median(torch.where(ok, rhs, nan), dim=-1),
        "frac_under_bound": ((cos <= rhs) & ok).sum(-1).to(torch.float64) / n,
    }


def labeling_independence_tasks(labels) -> torch.Tensor:
    """(T, T) Cramer's V between every pair of T labelings of the same samples (``labels`` (T, N) int, all
    non-negative), as :func:`labeling_independence` computes it (0 exactly when the contingency table is
    the product of its margins), from one product of the one-hot label matrices."""
    from dncsim.analysis.task_batch import task_labels

    y = torch.as_tensor(labels)
    lab = task_labels(y, y.shape[1], min_classes=1)
    oh = lab.onehot().to(torch.float64)                                   # (T, N, C)
    T, N, C = oh.shape
    table = (oh.permute(0, 2, 1).reshape(T * C, N) @ oh.permute(1, 0, 2).reshape(N, T * C))
    table = table.view(T, C, T, C).permute(0, 2, 1, 3)                    # (T, T, Ca, Cb) counts
    ra, rb = table.sum(3), table.sum(2)                                   # (T, T, Ca), (T, T, Cb)
    outer = ra[..., :, None] * rb[..., None, :]
    independent = (table * N == outer).all(-1).all(-1)
    expected = outer / N
    real = (lab.mask[:, None, :, None] & lab.mask[None, :, None, :])
    cells = (table - expected).square() / expected.clamp_min(1e-300)
    chi2 = torch.where(real & (expected > 0), cells, 0.0).sum((-1, -2))
    kmin = torch.minimum(lab.mask.sum(1)[:, None], lab.mask.sum(1)[None, :]).to(torch.float64)
    v = (chi2 / N / (kmin - 1)).sqrt()
    return torch.where(independent, torch.zeros_like(v), v)


#: elements of the largest temporary of :func:`permutation_null_tasks` (draws are processed in chunks under it)
_NULL_CHUNK_ELEMENTS = 1 << 24


def _relabeling_orders(idx: torch.Tensor, draws: int, gen: torch.Generator):
    """``(home, order)``: (N,) the positions of the samples sorted by task membership (their stratum), and
    (draws, N) a uniformly random order within each stratum per draw; :func:`_relabel` applies them."""
    _, pattern = torch.unique((idx >= 0).T.cpu(), dim=0, return_inverse=True)      # (N,) membership stratum
    pattern = pattern.to(torch.float64)
    home = pattern.argsort(stable=True)
    order = (pattern + torch.rand(draws, idx.shape[1], generator=gen, dtype=torch.float64)).argsort(dim=-1)
    return home.to(idx.device), order.to(idx.device)


def _relabel(idx: torch.Tensor, home: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """(B, T, N): the label tuples (columns of ``idx``) at ``order`` moved to ``home``, one draw per row of order."""
    out = torch.empty(order.shape[0], *idx.shape, dtype=idx.dtype, device=idx.device)
    out[:, :, home] = idx[:, order].transpose(0, 1)
    return out


def _relabelings(idx: torch.Tensor, draws: int, gen: torch.Generator) -> torch.Tensor:
    """(draws, T, N) class indices: the samples' label tuples (columns of ``idx`` (T, N), -1 outside a task)
    permuted among the samples of the same task membership, one permutation per draw shared by all tasks
    (every task keeps its samples and class sizes, and every pair of tasks its contingency table)."""
    return _relabel(idx, *_relabeling_orders(idx, draws, gen))


def permutation_null_tasks(features, labels, *, draws: int = 200, alpha: float = 0.05, seed: int = 0) -> dict:
    """Median |cos| between every pair of tasks' decision axes, against a permutation null of the features.

    ``features`` (N, d); ``labels`` (T, N) int, negative: not in the task. Axes: unit differences of plug-in
    class means, all class pairs. Null: ``draws`` seeded joint relabelings (label tuples permuted among
    samples of equal task membership). (T, T) float64, NaN off a < b and for pairs without common samples:
    ``median_abs_cos``, ``null_median_abs_cos``, ``null_q05`` (``alpha`` quantile), ``null_p`` = (1 + #null
    <= observed)/(1 + draws), ``random_level`` (a reference); bool ``beyond_null`` = null_p <= alpha.
    """
    from dncsim.analysis.inputs import as_features
    from dncsim.analysis.task_batch import task_labels

    if int(draws) < 1:
        raise DncsimError(f"draws must be at least 1; got {draws}")
    if not 0 < float(alpha) < 1:
        raise DncsimError(f"alpha must lie in (0, 1); got {alpha}")
    f64 = torch.float64
    x = as_features(features).to(f64)
    N, d = x.shape
    lab = task_labels(torch.as_tensor(labels).to(x.device), N)
    T, C = lab.T, lab.C
    x = x - x.mean(dim=0, keepdim=True)
    inside = (lab.idx >= 0).to(f64)
    common = (inside @ inside.T) > 0                                                   # (T, T)
    pa = torch.triu_indices(C, C, 1, device=x.device)
    P = pa.shape[1]
    real = lab.mask[:, pa[0]] & lab.mask[:, pa[1]]                                     # (T, P)
    ta, tb = torch.triu_indices(T, T, 1, device=x.device)
    keep = common[ta, tb]
    ta, tb = ta[keep], tb[keep]
    counts = lab.counts.to(f64).clamp_min(1)[:, :, None]                               # (T, C, 1)
    gen = torch.Generator().manual_seed(int(seed))
    home, order = _relabeling_orders(lab.idx, int(draws), gen)
    order = torch.cat([home[None], order])                           # draw 0: the identity, i.e. the observed
    stacked = (T * P) ** 2 <= _NULL_CHUNK_ELEMENTS // 4
    per_draw = T * C * (N + d) + 2 * T * N + T * P * d + ((T * P) ** 2 if stacked else P * P)
    step = max(1, _NULL_CHUNK_ELEMENTS // per_draw)
    meds = []
    for s in range(0, order.shape[0], step):                                           # chunks of draws
        part = _relabel(lab.idx, home, order[s:s + step])
        B = part.shape[0]
        oh = x.new_zeros(B, T, C, N).scatter_(2, part.clamp_min(0)[:, :, None], (part >= 0)[:, :, None].to(f64))
        mu = (oh.view(B * T * C, N) @ x).view(B, T, C, d) / counts                     # (B, T, C, d): one GEMM
        u = mu[:, :, pa[1]] - mu[:, :, pa[0]]                                          # (B, T, P, d)
        u = u / u.norm(dim=-1, keepdim=True)
        u = u.masked_fill(~real[None, :, :, None], float("nan"))
        if stacked:
            flat = u.reshape(B, T * P, d)
            cos = (flat @ flat.transpose(1, 2)).view(B, T, P, T, P)[:, ta, :, tb]     # (pairs, B, P, P)
            meds.append(true_median(cos.abs().flatten(2), dim=-1).T)                   # (B, pairs)
        else:
            meds.append(torch.stack([true_median((u[:, a] @ u[:, b].transpose(1, 2)).abs().flatten(1), dim=-1)
                                     for a, b in zip(ta.tolist(), tb.tolist())], 1) if len(ta)
                        else x.new_zeros(B, 0))
    med = torch.cat(meds)                                                              # (1 + draws, pairs)
    obs, null = med[0], med[1:]
    nan = torch.full((T, T), float("nan"), dtype=f64, device=x.device)

    def table(v):
        out = nan.clone()
        out[ta, tb] = v
        return out

    p = (1 + (null <= obs).sum(0)).to(f64) / (1 + int(draws))
    beyond = torch.zeros(T, T, dtype=torch.bool, device=x.device)
    beyond[ta, tb] = p <= alpha
    return {"median_abs_cos": table(obs), "null_median_abs_cos": table(true_median(null, dim=0)),
            "null_q05": table(torch.nanquantile(null, float(alpha), dim=0)) if len(ta) else nan.clone(),
            "null_p": table(p), "beyond_null": beyond,
            "random_level": table(torch.full_like(obs, random_abs_cos(d)["median"]))}
