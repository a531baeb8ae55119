"""**Crossfit** (:func:`crossfit_geometry`): classes split in halves ``splits`` times; axes from one half,
variance along them from the other (ddof 1); squared gap debiased,
D2_ij = |mu^_i - mu^_j|^2 - v_i/n_i - v_j/n_j. Pairs with D2 <= 0 are NaN (``undefined_pairs``)."""
from __future__ import annotations

import torch

from dncsim.analysis.estimators.core import (_within_class_resamples, _CHUNK, F64, _cell_layout, _centred_tasks,
                                             _check_counts, _gaps, _means, _nan_diagonal, _prepare,
                                             _residual_moments, _task_chunks)
from dncsim.analysis.estimators.result import GeometryEstimate
from dncsim.analysis.geometry import UndefinedGeometry
from dncsim.common import DncsimError

def _halves(idx, C, splits: int, gen: torch.Generator, device) -> torch.Tensor:
    """(splits, N) bool: for each split, a random half of every class (floor(n_c/2) samples) is True."""
    N = idx.numel()
    out = torch.zeros(splits, N, dtype=torch.bool, device=device)
    for s in range(splits):
        key = torch.rand(N, generator=gen).to(device)                  # random order inside each class
        order = torch.argsort(idx * 2.0 + key)                        # classes in turn, shuffled within
        sorted_idx = idx[order]
        counts = torch.bincount(idx, minlength=C)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(N, device=device) - starts[sorted_idx]
        out[s, order] = rank < (counts[sorted_idx] // 2)
    return out


def _crossfit_batch(x, idx, classes, W, halves):
    """Crossfit estimates for every weighting W (B, N) with the given half masks (S, N)."""
    C = classes.numel()
    B, S = W.shape[0], halves.shape[0]
    counts, means = _means(x, idx, C, W)
    _check_counts(counts, classes, 4)
    sq, _ = _residual_moments(x, idx, C, W, means, None)
    var = sq / (counts - 1)                                             # unbiased traces
    d2_plugin = _gaps(means)
    d2 = d2_plugin - var[:, :, None] / counts[:, :, None] - var[:, None, :] / counts[:, None, :]
    d2 = _nan_diagonal(torch.where(d2 > 0, d2, torch.full_like(d2, float("nan"))))
    # every (weighting, split, direction) as one batch of weightings: A points the axes, B measures
    mask = halves.to(F64)                                               # (S, N)
    WA = torch.cat([W[:, None] * mask[None], W[:, None] * (1 - mask[None])], 1).reshape(B * 2 * S, -1)
    WB = torch.cat([W[:, None] * (1 - mask[None]), W[:, None] * mask[None]], 1).reshape(B * 2 * S, -1)
    nA, axes_means = _means(x, idx, C, WA)
    nB, var_means = _means(x, idx, C, WB)
    _, q = _residual_moments(x, idx, C, WB, var_means, axes_means)
    axis_var = q / ((nB - 1)[:, :, None] * _nan_diagonal(_gaps(axes_means)))   # along the unit axis u^A
    # a bootstrap resample may leave a half with too few draws of a class: that estimate is dropped
    usable = (nB >= 2)[:, :, None] & (nA > 0)[:, :, None] & (nA > 0)[:, None, :]
    axis_var = torch.where(usable, axis_var, torch.full_like(axis_var, float("nan")))
    axis_var = torch.nanmean(axis_var.view(B, 2 * S, C, C), dim=1)
    return axis_var / d2, (var[:, :, None] + var[:, None, :]) / d2, d2, var


def _crossfit_single(x, idx, classes, halves):
    """The crossfit estimate of the sample itself (unit weights): the same numbers as ``_crossfit_batch``
    with W = 1, but each direction touches only its own half (one (N/2 x d)(d x C) product per half, so
    ``splits`` splits cost about ``splits`` plug-in products)."""
    C, d = classes.numel(), x.shape[1]
    counts = torch.bincount(idx, minlength=C).to(F64)
    _check_counts(counts[None], classes, 4)
    means = torch.zeros(C, d, dtype=F64, device=x.device).index_add_(0, idx, x) / counts[:, None]
    sq = torch.zeros(C, dtype=F64, device=x.device)
    rows = max(256, _CHUNK // d)
    for s in range(0, x.shape[0], rows):
        sq.index_add_(0, idx[s:s + rows], (x[s:s + rows] - means[idx[s:s + rows]]).square().sum(1))
    var = sq / (counts - 1)
    d2 = _gaps(means[None])[0] - var[:, None] / counts[:, None] - var[None, :] / counts[None, :]
    d2 = _nan_diagonal(torch.where(d2 > 0, d2, torch.full_like(d2, float("nan"))))
    total = torch.zeros(C, C, dtype=F64, device=x.device)
    for half in halves:
        for axes_rows, var_rows in ((half, ~half), (~half, half)):
            ia, ib = idx[axes_rows], idx[var_rows]
            na = torch.bincount(ia, minlength=C).to(F64)
            nb = torch.bincount(ib, minlength=C).to(F64)
            ma = torch.zeros(C, d, dtype=F64, device=x.device).index_add_(0, ia, x[axes_rows]) / na[:, None]
            mb = torch.zeros(C, d, dtype=F64, device=x.device).index_add_(0, ib, x[var_rows]) / nb[:, None]
            ma_c = ma - ma.mean(dim=0, keepdim=True)
            xb = x[var_rows]
            q = torch.zeros(C, C, dtype=F64, device=x.device)
            rows = max(256, _CHUNK // max(C, d))
            for s in range(0, xb.shape[0], rows):
                i = ib[s:s + rows]
                p = (xb[s:s + rows] - mb[i]) @ ma_c.T                       # r . a_j
                p.sub_(p.gather(1, i[:, None]))                             # r . (a_j - a_i)
                q.index_add_(0, i, p.square_())
            total += q / ((nb - 1)[:, None] * _nan_diagonal(_gaps(ma[None])[0]))
    axis_var = total / (2 * halves.shape[0])
    return (axis_var / d2)[None], ((var[:, None] + var[None, :]) / d2)[None], d2[None], var[None]


def crossfit_geometry(features, labels, *, splits: int = 2, seed: int = 0, device=None) -> GeometryEstimate:
    """The crossfit estimate (module docstring) of ``features`` (N, d) with ``labels`` (N,): axes from
    one half of each class, variances along them from the other, both ways round over ``splits``
    random splits (seeded); squared gaps corrected for the sampling noise of the means. Needs at least
    4 samples per class."""
    if splits < 1:
        raise DncsimError(f"splits must be >= 1; got {splits}")
    x, idx, classes = _prepare(features, labels, device)
    gen = torch.Generator().manual_seed(int(seed))
    halves = _halves(idx, classes.numel(), splits, gen, x.device)
    dir_cdnv, cdnv, d2, var = _crossfit_single(x, idx, classes, halves)
    counts = torch.bincount(idx, minlength=classes.numel())
    return GeometryEstimate(classes=classes, counts=counts, var=var[0], d2=d2[0], cdnv=cdnv[0],
                            dir_cdnv=dir_cdnv[0], estimator="crossfit")


def _class_var_and_gaps(counts, sums, sq_sums):
    """From per-class weighted counts (.., C), feature sums (.., C, d) and sums of |x|^2 (.., C): the
    unbiased traces v (.., C) and the squared gaps corrected for the noise of the means,
    |m_i - m_j|^2 - v_i/n_i - v_j/n_j (.., C, C; NaN on the diagonal and where not positive)."""
    means = sums / counts.clamp_min(1e-300)[..., None]
    var = (sq_sums - counts * means.square().sum(-1)).clamp_min(0) / (counts - 1)
    g = means @ means.transpose(-1, -2)
    dg = g.diagonal(dim1=-2, dim2=-1)
    d2 = (dg[..., :, None] + dg[..., None, :] - 2 * g).clamp_min(0)
    d2 = d2 - var[..., :, None] / counts[..., :, None] - var[..., None, :] / counts[..., None, :]
    return var, _nan_diagonal(torch.where(d2 > 0, d2, torch.full_like(d2, float("nan"))))


def _cell_rows(x, idx, halves, C):
    """The gathered cells of :func:`_cell_layout` as rows [x, |x|^2, 1] (zero rows on padding):
    (sample (T, S, 2C, n), valid, rows (T, S, 2C, n, d + 2)). Built once and reused for every weighting."""
    sample, valid = _cell_layout(idx, halves, C)
    xg = x[sample] * valid[..., None]
    return sample, valid, torch.cat([xg, xg.square().sum(-1, keepdim=True), valid[..., None].to(F64)], -1)


def _crossfit_tasks(cells, C, W):
    """Crossfit estimates (as ``_crossfit_batch``) for T tasks on the same centred samples, from their
    gathered ``cells`` (:func:`_cell_rows`) and weights W (T, B, N).

    Returns dir_cdnv, cdnv, d2 (T, B, C, C) and var (T, B, C). One batched product of the weights with
    the cells' rows [x, |x|^2, 1] gives every cell's weighted count, sum and sum of squares; one of the
    axis directions a_j - a_i (j != i, with -m_i . (a_j - a_i) in the last column) with the rows gives
    every residual's projection r . (a_j - a_i) directly."""
    sample, valid, xa = cells
    T, B, N = W.shape
    S, n, d = sample.shape[1], sample.shape[-1], xa.shape[-1] - 2
    wg = W.gather(2, sample.view(T, 1, -1).expand(T, B, -1)).view(T, B, S, 2 * C, n)
    wk = wg.permute(0, 2, 3, 1, 4) * valid[:, :, :, None]                 # (T, S, 2C, B, n)
    mom = wk @ xa                                                         # (T, S, 2C, B, d + 2)
    cnt, sums, s2 = mom[..., d + 1], mom[..., :d], mom[..., d]
    # full sample, from split 0's two halves of each class
    cf = cnt[:, 0].reshape(T, C, 2, B).sum(2).transpose(1, 2)             # (T, B, C)
    sf = sums[:, 0].reshape(T, C, 2, B, d).sum(2).transpose(1, 2)         # (T, B, C, d)
    s2f = s2[:, 0].reshape(T, C, 2, B).sum(2).transpose(1, 2)
    var, d2 = _class_var_and_gaps(cf, sf, s2f)
    # cells (task, split, class i, half h): centre m_i from half h, axes a_j (j != i) from the other half
    mc = (sums / cnt.clamp_min(1e-300)[..., None]).view(T, S, C, 2, B, d)
    nc = cnt.view(T, S, C, 2, B)
    others = torch.tensor([[j for j in range(C) if j != i] for i in range(C)], device=W.device)   # (C, C-1)
    axes = mc.flip(3)                                                     # a_* of each cell's other half
    v = axes[:, :, others] - axes[:, :, :, None]                          # (T, S, i, C-1, h, B, d): a_j - a_i
    c = (mc[:, :, :, None] * v).sum(-1)                                   # m_i . (a_j - a_i)
    va = torch.cat([v, torch.zeros_like(c)[..., None], -c[..., None]], -1)   # (T, S, i, C-1, h, B, d + 2)
    va = va.permute(0, 1, 2, 4, 5, 3, 6).reshape(T, S, C, 2, B * (C - 1), d + 2)
    r = va @ xa.view(T, S, C, 2, n, d + 2).transpose(-1, -2)             # (T, S, i, h, B (C-1), n)
    r.square_()
    w = wk.view(T, S, C, 2, B, n)
    q = (r.view(T, S, C, 2, B, C - 1, n) @ w[..., None])[..., 0]         # (T, S, i, h, B, C-1)
    gaps = v.square().sum(-1).permute(0, 1, 2, 4, 5, 3)                   # (T, S, i, h, B, C-1) |a_j - a_i|^2
    na = nc.flip(3)                                                       # axes half counts (T, S, j, h, B)
    na_j = na.permute(0, 1, 3, 4, 2)[..., others].permute(0, 1, 4, 2, 3, 5)   # (T, S, i, h, B, C-1)
    axis_var = q / ((nc - 1)[..., None] * gaps)
    usable = (nc >= 2)[..., None] & (na > 0)[..., None] & (na_j > 0)
    axis_var = torch.where(usable, axis_var, torch.full_like(axis_var, float("nan")))
    axis_var = torch.nanmean(axis_var.permute(0, 4, 1, 3, 2, 5).reshape(T, B, 2 * S, C, C - 1), dim=2)
    full = torch.full((T, B, C, C), float("nan"), dtype=F64, device=W.device)
    full.scatter_(3, others.expand(T, B, C, C - 1), axis_var)
    return full / d2, (var[..., :, None] + var[..., None, :]) / d2, d2, var


def _crossfit_point(x, idx, C, halves):
    """The crossfit estimate of every task itself (unit weights; the numbers of ``_crossfit_tasks`` with
    W = 1) without gathering cells: cell sums from one product of the cell memberships with [x, |x|^2, 1],
    every sample's projections onto every cell mean from one (N x d)(d x T S 2C) product, and the residual
    projections r . (a_j - a_i) expanded through them. x (N, d) centred; idx (T, N); halves (T, S, N)."""
    T, S, N = halves.shape
    d = x.shape[1]
    inside = idx >= 0
    cell = torch.where(inside[:, None], 2 * idx[:, None] + halves.long(), torch.full_like(halves, 2 * C,
                                                                                           dtype=torch.long))
    oh = torch.nn.functional.one_hot(cell, 2 * C + 1)[..., :2 * C].to(F64)   # (T, S, N, 2C)
    xa = torch.cat([x, x.square().sum(1, keepdim=True), torch.ones(N, 1, dtype=F64, device=x.device)], 1)
    mom = oh.transpose(-1, -2) @ xa                                       # (T, S, 2C, d + 2)
    cnt, sums, s2 = mom[..., d + 1], mom[..., :d], mom[..., d]
    cf, sf, s2f = cnt[:, 0].view(T, C, 2).sum(2), sums[:, 0].view(T, C, 2, d).sum(2), s2[:, 0].view(T, C, 2).sum(2)
    var, d2 = _class_var_and_gaps(cf, sf, s2f)
    mc = (sums / cnt.clamp_min(1e-300)[..., None]).view(T, S, C, 2, d)    # cell means m[t, s, class, half]
    nc = cnt.view(T, S, C, 2)
    proj = (x @ mc.reshape(-1, d).T).view(N, T, S, C, 2)                 # x . m of every cell
    cls, half = idx.clamp_min(0).T, halves.long().permute(2, 0, 1)        # (N, T), (N, T, S)
    other = proj.gather(4, (1 - half)[..., None, None].expand(N, T, S, C, 1))[..., 0]   # x . a_j, (N, T, S, C)
    own_a = other.gather(3, cls[:, :, None, None].expand(N, T, S, 1))     # x . a_i
    axes = mc.flip(3)                                                     # a_j of each half's other half
    ci = mc.permute(0, 1, 3, 2, 4)                                        # (T, S, h, i, d) centres
    ah = axes.permute(0, 1, 3, 2, 4)                                      # (T, S, h, j, d) axes for half h
    c = ci @ ah.transpose(-1, -2)                                         # (T, S, h, i, j): m_i . a_j
    c = c - c.diagonal(dim1=-2, dim2=-1)[..., :, None]                    # m_i . (a_j - a_i)
    tt, ss = torch.arange(T, device=x.device)[None, :, None], torch.arange(S, device=x.device)[None, None, :]
    cn = c[tt, ss, half, cls[:, :, None]]                                 # (N, T, S, j) for each sample's cell
    r2 = (other - own_a - cn).square() * inside.T[:, :, None, None]
    q = torch.einsum("tsnk,ntsj->tskj", oh, r2).view(T, S, C, 2, C)      # (T, S, i, h, j)
    gaps = (ah[:, :, :, None] - ah[:, :, :, :, None]).square().sum(-1)   # (T, S, h, i, j) |a_j - a_i|^2
    gaps = _nan_diagonal(gaps).permute(0, 1, 3, 2, 4)                     # (T, S, i, h, j)
    na = nc.flip(3)
    usable = (nc >= 2)[..., None] & (na > 0)[..., None] & (na.permute(0, 1, 3, 2) > 0)[:, :, None]
    axis_var = q / ((nc - 1)[..., None] * gaps)
    axis_var = torch.where(usable, axis_var, torch.full_like(axis_var, float("nan")))
    axis_var = torch.nanmean(axis_var.permute(0, 1, 3, 2, 4).reshape(T, 2 * S, C, C), dim=1)
    out = axis_var / d2, (var[..., :, None] + var[..., None, :]) / d2, d2, var
    return tuple(v[:, None] for v in out)


def _task_draws(lab, seeds, *, splits: int, resamples: int, device):
    """Per task, the random draws of the per-task functions with that task's seed, embedded in the shared
    sample axis: halves (T, S, N) bool and, when ``resamples``, within-class weights (T, B, N) drawn
    first from the same generator (as :func:`bootstrap_summaries`). One short loop over tasks draws the
    numbers (the arithmetic is batched); each task's draws equal those of the per-task call."""
    T, N = lab.idx.shape
    halves = torch.zeros(T, splits, N, dtype=torch.bool, device=device)
    W = torch.zeros(T, resamples, N, dtype=F64, device=device) if resamples else None
    for t in range(T):
        members = (lab.idx[t] >= 0).nonzero().flatten()
        it = lab.idx[t, members]
        c = int(lab.mask[t].sum())
        gen = torch.Generator().manual_seed(int(seeds[t]))
        if resamples:
            W[t][:, members] = _within_class_resamples(it, c, resamples, gen, device)
        halves[t][:, members] = _halves(it, c, splits, gen, device)
    return halves, W


def _estimates_from(lab, out, estimator: str):
    dir_cdnv, cdnv, d2, var = out
    res = []
    for t, c in enumerate(lab.mask.sum(1).tolist()):
        counts = lab.counts[t, :c]
        if int(counts.min()) < 4 and estimator == "crossfit":
            k = int(counts.argmin())
            res.append(UndefinedGeometry(f"class {int(lab.classes[t, k])} has {int(counts[k])} sample(s); this "
                                         "estimator needs at least 4 per class"))
            continue
        res.append(GeometryEstimate(classes=lab.classes[t, :c], counts=counts, var=var[t, 0, :c],
                                    d2=d2[t, 0, :c, :c], cdnv=cdnv[t, 0, :c, :c], dir_cdnv=dir_cdnv[t, 0, :c, :c],
                                    estimator=estimator))
    return res


def crossfit_geometry_tasks(features, labels, *, splits: int = 2, seeds=None) -> list:
    """:func:`crossfit_geometry` for T tasks labelling the same ``features`` (N, d), computed together.

    ``labels`` (T, N) int (negative: not in the task); ``seeds`` (T,) the per-task seeds (default 0 for
    all). Task t's result equals ``crossfit_geometry(features[in t], labels[t][in t], seed=seeds[t])`` to
    float64 rounding: a GeometryEstimate, or the UndefinedGeometry that call would raise (returned)."""
    if splits < 1:
        raise DncsimError(f"splits must be >= 1; got {splits}")
    x, lab = _centred_tasks(features, labels)
    seeds = [0] * lab.T if seeds is None else list(seeds)
    halves, _ = _task_draws(lab, seeds, splits=splits, resamples=0, device=x.device)
    parts = [_crossfit_point(x, lab.idx[sl], lab.C, halves[sl])
             for sl in _task_chunks(lab.T, 4 * splits * x.shape[0] * (lab.C + 2))]
    return _estimates_from(lab, [torch.cat(p) for p in zip(*parts)], "crossfit")
