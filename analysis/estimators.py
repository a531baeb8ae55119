"""Estimators of the geometry summaries with less bias than the plug-in, and bootstrap intervals.

**Crossfit** (:func:`crossfit_geometry`): classes split in halves ``splits`` times; axes from one half,
variance along them from the other (ddof 1); squared gap debiased,
D2_ij = |mu^_i - mu^_j|^2 - v_i/n_i - v_j/n_j. Pairs with D2 <= 0 are NaN (``undefined_pairs``).

**Bootstrap** (:func:`bootstrap_summaries`, :func:`bootstrap_median_abs_cos`): resampling within classes
(or joint classes), batched as weightings (B, N), float64; percentile intervals. See docs, Methods.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from dncsim.analysis.geometry import UndefinedGeometry
from dncsim.analysis.inputs import as_features, as_labels
from dncsim.analysis.medians import true_median
from dncsim.common import DncsimError

__all__ = ["GeometryEstimate", "crossfit_geometry", "plugin_estimate", "estimate_geometry", "bootstrap_summaries",
           "bootstrap_median_abs_cos", "ESTIMATORS"]

ESTIMATORS = ("plugin", "crossfit")
_CHUNK = 1 << 21          # elements per temporary (rows x columns), as in analysis.geometry
F64 = torch.float64


@dataclass(frozen=True)
class GeometryEstimate:
    """Summary geometry from an estimator: ``dir_cdnv`` (C, C) ordered, ``cdnv`` and ``d2`` (C, C)
    symmetric (NaN diagonal and where undefined), ``var`` (C,), ``classes``, ``counts``; ``estimator``
    names it. :meth:`summary` gives the scalar means, as ``ClassGeometry.summary`` does."""

    classes: torch.Tensor
    counts: torch.Tensor
    var: torch.Tensor
    d2: torch.Tensor
    cdnv: torch.Tensor
    dir_cdnv: torch.Tensor
    estimator: str

    @property
    def C(self) -> int:
        return int(self.classes.numel())

    def summary(self) -> dict:
        """``dir_cdnv`` (mean over ordered pairs), ``cdnv`` (mean over unordered pairs, no 1/2), ``ratio``,
        ``mean_gap`` (mean sqrt(d2) over unordered pairs), ``undefined_pairs`` (unordered pairs left out),
        ``estimator``. UndefinedGeometry when no pair is defined."""
        return _summary(self.dir_cdnv.unsqueeze(0), self.cdnv.unsqueeze(0), self.d2.unsqueeze(0), self.estimator)[0]


def _summary(dir_cdnv, cdnv, d2, estimator):
    """Per batch row: the scalar summary (plain numbers) of (B, C, C) matrices."""
    C = dir_cdnv.shape[-1]
    iu = torch.triu_indices(C, C, 1)
    off = ~torch.eye(C, dtype=torch.bool)
    out = []
    for b in range(dir_cdnv.shape[0]):
        pair_ok = torch.isfinite(cdnv[b][iu[0], iu[1]])
        if not bool(pair_ok.any()):
            raise UndefinedGeometry("no pair of classes is resolved: every squared mean gap, corrected for the "
                                    "sampling noise of the means, is not positive (too few samples or classes "
                                    "too close for this estimator)")
        c = float(cdnv[b][iu[0], iu[1]][pair_ok].mean())
        dd = dir_cdnv[b][off]
        dd = float(dd[torch.isfinite(dd)].mean())
        gap = float(d2[b][iu[0], iu[1]][pair_ok].sqrt().mean())
        out.append({"dir_cdnv": dd, "cdnv": c, "ratio": dd / c if c > 0 else float("nan"), "mean_gap": gap,
                    "undefined_pairs": int((~pair_ok).sum()), "estimator": estimator})
    return out


# --- the batched core -----------------------------------------------------------------------------------

def _prepare(features, labels, device=None):
    x = as_features(features, device=device)
    y = as_labels(labels, x.shape[0], device=x.device)
    classes, idx = torch.unique(y, return_inverse=True)
    if classes.numel() < 2:
        raise DncsimError(f"need at least 2 classes; got {classes.numel()}")
    x = x.to(F64)
    return x - x.mean(dim=0, keepdim=True), idx, classes      # a common shift changes nothing but rounding


def _class_sums(x, idx, C, W) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weighted counts (B, C) and feature sums (B, C, d) for weightings W (B, N): one (B, C, N) x (N, d)
    product for few classes, index_add over (weighting, class) keys for many."""
    B, N = W.shape
    d = x.shape[1]
    if C <= 64:
        onehot = torch.nn.functional.one_hot(idx, C).to(F64)                 # (N, C)
        wc = (W[:, :, None] * onehot[None]).transpose(1, 2)                 # (B, C, N)
        return wc.sum(-1), torch.matmul(wc, x)
    counts = torch.zeros(B * C, dtype=F64, device=x.device)
    sums = torch.zeros(B * C, d, dtype=F64, device=x.device)
    base = (torch.arange(B, device=x.device) * C)[:, None]
    rows = max(1, _CHUNK // max(1, B * d))
    for s in range(0, N, rows):
        w = W[:, s:s + rows]
        key = (base + idx[None, s:s + rows]).flatten()
        counts.index_add_(0, key, w.flatten())
        sums.index_add_(0, key, (w[:, :, None] * x[None, s:s + rows]).reshape(-1, d))
    return counts.view(B, C), sums.view(B, C, d)


def _means(x, idx, C, W):
    counts, sums = _class_sums(x, idx, C, W)
    return counts, sums / counts.clamp_min(1e-300)[..., None]


def _residual_moments(x, idx, C, W, means, axes_means):
    """For weightings W (B, N): per class i, sum_w |x - m_i|^2 (B, C) and, for every j,
    sum_w ((x - m_i) . (a_j - a_i))^2 (B, C, C), with m = ``means`` (B, C, d) the centres and
    a = ``axes_means`` (B, C, d) the means that point the axes (None: only the traces; q is None).
    No (B, N, d) temporary: residuals enter through products with the C means only (float64 keeps the
    expansion |x|^2 - 2 x.m + |m|^2 exact enough for centred features)."""
    B, N = W.shape
    sq = torch.zeros(B * C, dtype=F64, device=x.device)
    q = None if axes_means is None else torch.zeros(B * C, C, dtype=F64, device=x.device)
    base = (torch.arange(B, device=x.device) * C)[:, None]
    bidx = torch.arange(B, device=x.device)[:, None]
    mm = means.square().sum(-1)                                         # (B, C) |m_c|^2
    ma = None if axes_means is None else torch.bmm(means, axes_means.transpose(1, 2))   # (B, C, C) m_i . a_j
    rows = max(1, _CHUNK // max(1, B * C))
    for s in range(0, N, rows):
        w = W[:, s:s + rows]                                          # (B, n)
        i = idx[s:s + rows]
        xc = x[s:s + rows]
        gi = i[None, :, None].expand(B, -1, 1)
        xm = torch.einsum("nd,bcd->bnc", xc, means).gather(2, gi)[..., 0]          # x . m_y
        r2 = xc.square().sum(-1)[None] - 2 * xm + mm[bidx, i[None, :]]
        key = (base + i[None, :]).flatten()
        sq.index_add_(0, key, (w * r2.clamp_min(0)).flatten())
        if q is not None:
            p = torch.einsum("nd,bcd->bnc", xc, axes_means) - ma[bidx, i[None, :]]   # r . a_j
            p = p - p.gather(2, gi)                                               # r . (a_j - a_i)
            q.index_add_(0, key, (w[:, :, None] * p.square()).reshape(-1, C))
    return sq.view(B, C), None if q is None else q.view(B, C, C)


def _gaps(means):
    """(B, C, C) squared distances between class means (B, C, d)."""
    g = torch.bmm(means, means.transpose(1, 2))
    dg = g.diagonal(dim1=1, dim2=2)
    return (dg[:, :, None] + dg[:, None, :] - 2 * g).clamp_min(0)


def _nan_diagonal(m):
    eye = torch.eye(m.shape[-1], dtype=torch.bool, device=m.device)
    return m.masked_fill(eye, float("nan"))


def _check_counts(counts, classes, need: int):
    small = (counts.min(dim=0).values < need).nonzero().flatten()
    if small.numel():
        k = int(small[0])
        raise UndefinedGeometry(f"class {int(classes[k])} has {int(counts[:, k].min())} sample(s); this estimator "
                                f"needs at least {need} per class")


def _plugin_batch(x, idx, classes, W, ddof: int):
    """The plug-in estimate (as ``class_geometry``) for every weighting: (dir_cdnv, cdnv, d2, var)."""
    C = classes.numel()
    counts, means = _means(x, idx, C, W)
    _check_counts(counts, classes, ddof + 1)
    sq, q = _residual_moments(x, idx, C, W, means, means)
    dof = counts - ddof
    d2 = _nan_diagonal(_gaps(means))
    var = sq / dof
    dir_cdnv = q / (dof[:, :, None] * d2.square())
    cdnv = (var[:, :, None] + var[:, None, :]) / d2
    return dir_cdnv, cdnv, d2, var


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


def _estimate(x, idx, classes, W, estimator, *, ddof=0, splits=2, seed=0):
    if estimator == "plugin":
        return _plugin_batch(x, idx, classes, W, ddof)
    if estimator == "crossfit":
        gen = torch.Generator().manual_seed(int(seed))
        halves = _halves(idx, classes.numel(), splits, gen, x.device)
        if W.shape[0] == 1 and bool((W == 1).all()):
            return _crossfit_single(x, idx, classes, halves)
        return _crossfit_batch(x, idx, classes, W, halves)
    raise DncsimError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")


# --- public API -------------------------------------------------------------------------------------------

def crossfit_geometry(features, labels, *, splits: int = 2, seed: int = 0, device=None) -> GeometryEstimate:
    """The crossfit estimate (module docstring) of ``features`` (N, d) with ``labels`` (N,): axes from
    one half of each class, variances along them from the other, both ways round over ``splits``
    random splits (seeded); squared gaps corrected for the sampling noise of the means. Needs at least
    4 samples per class."""
    if splits < 1:
        raise DncsimError(f"splits must be >= 1; got {splits}")
    x, idx, classes = _prepare(features, labels, device)
    W = torch.ones(1, x.shape[0], dtype=F64, device=x.device)
    dir_cdnv, cdnv, d2, var = _estimate(x, idx, classes, W, "crossfit", splits=splits, seed=seed)
    counts = torch.bincount(idx, minlength=classes.numel())
    return GeometryEstimate(classes=classes, counts=counts, var=var[0], d2=d2[0], cdnv=cdnv[0],
                            dir_cdnv=dir_cdnv[0], estimator="crossfit")


def plugin_estimate(features, labels, *, ddof: int = 0, device=None) -> GeometryEstimate:
    """The plug-in estimate (the same numbers as ``class_geometry(...).summary()``) as a GeometryEstimate."""
    x, idx, classes = _prepare(features, labels, device)
    W = torch.ones(1, x.shape[0], dtype=F64, device=x.device)
    dir_cdnv, cdnv, d2, var = _plugin_batch(x, idx, classes, W, ddof)
    return GeometryEstimate(classes=classes, counts=torch.bincount(idx, minlength=classes.numel()), var=var[0],
                            d2=d2[0], cdnv=cdnv[0], dir_cdnv=dir_cdnv[0], estimator="plugin")


def estimate_geometry(features, labels, estimator: str = "crossfit", *, ddof: int = 0, splits: int = 2,
                      seed: int = 0) -> GeometryEstimate:
    """``crossfit_geometry`` or ``plugin_estimate`` by name (``ddof`` applies to the plug-in)."""
    if estimator == "plugin":
        return plugin_estimate(features, labels, ddof=ddof)
    if estimator == "crossfit":
        return crossfit_geometry(features, labels, splits=splits, seed=seed)
    raise DncsimError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")


def _within_class_resamples(idx, C, B, gen, device) -> torch.Tensor:
    """(B, N) multinomial counts: each resample draws n_c samples with replacement within every class c."""
    N = idx.numel()
    W = torch.zeros(B, N, dtype=F64)
    idx_cpu = idx.cpu()
    for c in range(C):                                   # a loop over classes (C), not over resamples
        members = (idx_cpu == c).nonzero().flatten()
        draws = members[torch.randint(len(members), (B, len(members)), generator=gen)]
        W.scatter_add_(1, draws, torch.ones(B, len(members), dtype=F64))
    return W.to(device)


def _interval(values: torch.Tensor, alpha: float, centre: Optional[float] = None) -> Tuple[float, float]:
    """The (1 - alpha) percentile interval of the finite bootstrap ``values``; with ``centre`` (a positive
    estimate), the spread of log(values) around their median, applied to log(centre): the interval of a
    debiased estimator whose bootstrap world is centred elsewhere (module docstring)."""
    v = values[torch.isfinite(values)]
    if centre is not None:
        v = v[v > 0]
    if v.numel() == 0 or (centre is not None and not centre > 0):
        return float("nan"), float("nan")
    probs = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=v.dtype)
    if centre is None:
        q = torch.quantile(v, probs)
        return float(q[0]), float(q[1])
    logs = v.log()
    q = torch.quantile(logs - true_median(logs), probs)
    return float(centre * q[0].exp()), float(centre * q[1].exp())


def bootstrap_summaries(features, labels, *, estimator: str = "crossfit", resamples: int = 200, alpha: float = 0.05,
                        ddof: int = 0, splits: int = 2, seed: int = 0, chunk: int = 50) -> Dict[str, Tuple]:
    """(1 - alpha) intervals of ``dir_cdnv``, ``cdnv`` and ``ratio`` (the summary means) over ``resamples``
    within-class bootstrap resamples of the estimator: name -> (low, high). Plug-in: the percentile
    interval. Crossfit: the bootstrap world's truth is the plug-in geometry of the sample, so its
    resamples sit below the debiased estimate; the interval takes their spread on the log scale around
    their median and centres it on the estimate. Resamples are batched ``chunk`` at a time (memory),
    seeded by ``seed``."""
    x, idx, classes = _prepare(features, labels)
    C = classes.numel()
    gen = torch.Generator().manual_seed(int(seed))
    W = _within_class_resamples(idx, C, resamples, gen, x.device)
    halves = _halves(idx, C, splits, gen, x.device) if estimator == "crossfit" else None
    values = {"dir_cdnv": [], "cdnv": [], "ratio": []}
    for s in range(0, resamples, chunk):
        Wc = W[s:s + chunk]
        if estimator == "crossfit":
            dc, cd, d2, _ = _crossfit_batch(x, idx, classes, Wc, halves)
        else:
            dc, cd, d2, _ = _plugin_batch(x, idx, classes, Wc, ddof)
        iu = torch.triu_indices(C, C, 1)
        off = ~torch.eye(C, dtype=torch.bool)
        pair_c = cd[:, iu[0], iu[1]]
        mean_c = torch.nanmean(pair_c, dim=1)
        mean_d = torch.nanmean(dc[:, off], dim=1)
        values["dir_cdnv"].append(mean_d)
        values["cdnv"].append(mean_c)
        values["ratio"].append(mean_d / mean_c)
    centres = {k: None for k in values}
    if estimator == "crossfit":
        s = crossfit_geometry(features, labels, splits=splits, seed=seed).summary()
        centres = {k: s[k] for k in values}
    return {k: _interval(torch.cat(v), alpha, centres[k]) for k, v in values.items()}


def bootstrap_median_abs_cos(features, labels_a, labels_b, *, resamples: int = 200, alpha: float = 0.05,
                             seed: int = 0, scheme: str = "auto") -> Tuple[float, float]:
    """Percentile interval of the median |cos| between labeling a's and labeling b's decision axes (plug-in
    class means) of the same samples. ``scheme``: ``joint`` resamples within the joint classes (a, b),
    seeded by ``seed``; ``wild`` and ``iid`` as :func:`bootstrap_median_abs_cos_tasks` for the two
    labelings; ``auto`` (default): ``joint`` when the joint classes are an exactly balanced design
    (:func:`balanced_pairs`), else ``iid``, which lets the cells' sizes vary as random sampling does."""
    x = as_features(features).to(F64)
    ya = as_labels(labels_a, x.shape[0], device=x.device)
    yb = as_labels(labels_b, x.shape[0], device=x.device)
    resolve_pair_scheme(scheme, 2)
    if scheme != "joint":
        both = torch.stack([ya, yb])
        chosen = resolve_pair_scheme(scheme, 2, bool(balanced_pairs(both)[0, 1]))
        if chosen != "joint":
            ci = bootstrap_median_abs_cos_tasks(x, both, resamples=resamples, alpha=alpha, seed=seed, scheme=chosen)
            return float(ci[0, 1, 0]), float(ci[0, 1, 1])
    ca, ia = torch.unique(ya, return_inverse=True)
    cb, ib = torch.unique(yb, return_inverse=True)
    joint = ia * cb.numel() + ib
    _, ij = torch.unique(joint, return_inverse=True)
    gen = torch.Generator().manual_seed(int(seed))
    W = _within_class_resamples(ij, int(ij.max()) + 1, resamples, gen, x.device)
    x = x - x.mean(dim=0, keepdim=True)
    _, ma = _means(x, ia, ca.numel(), W)
    _, mb = _means(x, ib, cb.numel(), W)
    pa = torch.triu_indices(ca.numel(), ca.numel(), 1)
    pb = torch.triu_indices(cb.numel(), cb.numel(), 1)
    ua = ma[:, pa[1]] - ma[:, pa[0]]
    ub = mb[:, pb[1]] - mb[:, pb[0]]
    ua = ua / ua.norm(dim=-1, keepdim=True)
    ub = ub / ub.norm(dim=-1, keepdim=True)
    cos = torch.bmm(ua, ub.transpose(1, 2)).abs().flatten(1)
    return _interval(true_median(cos, dim=1), alpha)



# --- many tasks on the same samples at once ---------------------------------------------------------------

#: elements of the largest temporary of the task-batched crossfit (tasks are processed in chunks under it)
_TASK_CHUNK_ELEMENTS = 1 << 24


def _cell_layout(idx, halves, C):
    """Samples of every (task, split) grouped by cell k = 2 class + half, padded to the largest cell.

    idx (T, N) class index (-1: not in the task); halves (T, S, N) bool. Returns ``sample`` (T, S, 2C, n)
    int64 sample indices and ``valid`` (T, S, 2C, n) bool."""
    T, S, N = halves.shape
    cell = torch.where(idx[:, None, :] >= 0, 2 * idx[:, None, :] + halves.long(), torch.full_like(halves, 2 * C,
                                                                                                   dtype=torch.long))
    order = torch.argsort(cell, dim=2, stable=True)                      # (T, S, N) by cell, sample order within
    sizes = torch.zeros(T, S, 2 * C + 1, dtype=torch.long, device=idx.device).scatter_add_(
        2, cell, torch.ones_like(cell))[..., :2 * C]                       # (T, S, 2C)
    starts = torch.cumsum(sizes, 2) - sizes
    n = max(1, int(sizes.max()))
    slot = torch.arange(n, device=idx.device)
    valid = slot < sizes[..., None]                                      # (T, S, 2C, n)
    pos = (starts[..., None] + slot).clamp_max(N - 1)
    sample = order.gather(2, pos.flatten(2)).view(T, S, 2 * C, n)
    return sample, valid


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


def _task_chunks(T: int, per_task: int):
    step = max(1, _TASK_CHUNK_ELEMENTS // max(1, per_task))
    return [slice(s, min(T, s + step)) for s in range(0, T, step)]


def _centred_tasks(features, labels):
    from dncsim.analysis.task_batch import task_labels

    x = as_features(features).to(F64)
    lab = task_labels(labels, x.shape[0])
    return x - x.mean(dim=0, keepdim=True), lab


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


def _pair_means(dc, cd, mask):
    """Per (task, resample): mean dir-CDNV over defined ordered pairs and mean CDNV over defined unordered
    pairs of the task's real classes (NaN when none)."""
    C = mask.shape[1]
    real = mask[:, :, None] & mask[:, None, :]
    off = real & ~torch.eye(C, dtype=torch.bool, device=mask.device)
    upper = off & torch.ones(C, C, dtype=torch.bool, device=mask.device).triu(1)
    mean_d = torch.nanmean(dc.masked_fill(~off[:, None], float("nan")).flatten(2), dim=2)
    mean_c = torch.nanmean(cd.masked_fill(~upper[:, None], float("nan")).flatten(2), dim=2)
    return mean_d, mean_c


def bootstrap_summaries_tasks(features, labels, *, estimator: str = "crossfit", resamples: int = 200,
                              alpha: float = 0.05, ddof: int = 0, splits: int = 2, seeds=None,
                              centres=None) -> list:
    """:func:`bootstrap_summaries` for T tasks labelling the same ``features`` (N, d), computed together.

    ``labels`` (T, N) int (negative: not in the task); ``seeds`` (T,), each task drawing the resamples of
    the per-task call with that seed; ``centres`` (crossfit): precomputed point summaries. Returns T dicts
    name -> (low, high), equal to the per-task calls; undefined estimates give NaN intervals.
    """
    x, lab = _centred_tasks(features, labels)
    seeds = [0] * lab.T if seeds is None else list(seeds)
    nan = {k: (float("nan"), float("nan")) for k in ("dir_cdnv", "cdnv", "ratio")}
    if estimator == "plugin":
        out = []
        for t in range(lab.T):
            members = lab.idx[t] >= 0
            try:
                out.append(bootstrap_summaries(features[members], labels[t][members], estimator="plugin",
                                               resamples=resamples, alpha=alpha, ddof=ddof, seed=seeds[t]))
            except UndefinedGeometry:
                out.append(dict(nan))
        return out
    if estimator != "crossfit":
        raise DncsimError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
    if centres is None:
        centres = []
        for est in crossfit_geometry_tasks(features, labels, splits=splits, seeds=seeds):
            try:
                centres.append(None if isinstance(est, Exception) else est.summary())
            except UndefinedGeometry:
                centres.append(None)
    halves, W = _task_draws(lab, seeds, splits=splits, resamples=resamples, device=x.device)
    n_max = int(lab.counts.max())
    values = {"dir_cdnv": [], "cdnv": []}
    chunk = max(1, min(resamples, _TASK_CHUNK_ELEMENTS // (2 * splits * lab.C * lab.C * 2 * n_max)))
    per_task = 2 * splits * lab.C * lab.C * 2 * n_max * chunk + 4 * splits * (n_max * lab.C + 1) * (x.shape[1] + 2)
    for sl in _task_chunks(lab.T, per_task):
        parts = {"dir_cdnv": [], "cdnv": []}
        cells = _cell_rows(x, lab.idx[sl], halves[sl], lab.C)
        for b in range(0, resamples, chunk):
            dc, cd, _, _ = _crossfit_tasks(cells, lab.C, W[sl, b:b + chunk])
            mean_d, mean_c = _pair_means(dc, cd, lab.mask[sl])
            parts["dir_cdnv"].append(mean_d)
            parts["cdnv"].append(mean_c)
        for k in parts:
            values[k].append(torch.cat(parts[k], 1))
    mean_d, mean_c = torch.cat(values["dir_cdnv"]), torch.cat(values["cdnv"])
    series = {"dir_cdnv": mean_d, "cdnv": mean_c, "ratio": mean_d / mean_c}
    out = []
    for t in range(lab.T):
        c = centres[t]
        out.append(dict(nan) if c is None else {k: _interval(v[t], alpha, c[k]) for k, v in series.items()})
    return out


#: the pair-interval schemes of :func:`bootstrap_median_abs_cos_tasks` (``analysis.pair_bootstrap``)
PAIR_BOOTSTRAP_SCHEMES = ("auto", "joint", "wild", "iid")

#: ``scheme="auto"`` resamples the balanced pairs pair by pair (``joint``) below this many pairs of tasks on
#: the same samples (20 tasks), and uses the ``wild`` bootstrap for them from it on, where the per-pair cost
#: (T^2 / 2 pairs, each with B x N draws) would dominate the evaluation; the two cover alike on exactly
#: balanced evaluation data (tests/analysis/test_task_batch.py measures it)
AUTO_WILD_PAIRS = 190


def resolve_pair_scheme(scheme: str, tasks: int, balanced: bool = True) -> str:
    """The scheme ``bootstrap_median_abs_cos_tasks`` uses for a pair among ``tasks`` tasks on the same
    samples: ``joint``, ``wild`` or ``iid`` as given; ``auto``: ``iid`` when the pair's joint classes are
    not an exactly balanced design (``balanced`` False, see :func:`balanced_pairs`), else ``wild`` from
    ``AUTO_WILD_PAIRS`` pairs (T (T - 1) / 2) on and ``joint`` below."""
    if scheme not in PAIR_BOOTSTRAP_SCHEMES:
        raise DncsimError(f"scheme must be one of {PAIR_BOOTSTRAP_SCHEMES}; got {scheme!r}")
    if scheme == "auto":
        if not balanced:
            return "iid"
        return "wild" if tasks * (tasks - 1) // 2 >= AUTO_WILD_PAIRS else "joint"
    return scheme


def balanced_pairs(labels) -> torch.Tensor:
    """(T, T) bool for T tasks labelling the same samples (``labels`` (T, N) int, negative: not in the task):
    True where tasks a != b form an exactly balanced design on the samples both label -- every cell
    (class of a, class of b) of their classes holds the same number of samples, at least one (as the
    generated evaluation data, built as balanced factorials). False on the diagonal."""
    from dncsim.analysis.task_batch import task_labels

    y = torch.as_tensor(labels)
    lab = task_labels(y, y.shape[-1])
    T, C = lab.T, lab.C
    oh = lab.onehot().permute(0, 2, 1).reshape(T * C, -1)                 # (T C, N)
    cells = (oh @ oh.T).view(T, C, T, C).permute(0, 2, 1, 3)              # (a, b, class of a, class of b)
    real = lab.mask[:, None, :, None] & lab.mask[None, :, None, :]
    big = torch.tensor(float("inf"), dtype=cells.dtype, device=cells.device)
    low = torch.where(real, cells, big).flatten(2).amin(2)
    high = torch.where(real, cells, -big).flatten(2).amax(2)
    out = (low == high) & (low > 0)
    return out & ~torch.eye(T, dtype=torch.bool, device=out.device)


def bootstrap_median_abs_cos_tasks(features, labels, *, resamples: int = 200, alpha: float = 0.05,
                                   seed: int = 0, scheme: str = "auto", task_ids=None) -> torch.Tensor:
    """(T, T, 2) percentile intervals of the median |cos| between tasks a and b's axes, pairs a < b.

    Tasks label the same ``features`` (N, d); NaN off the upper triangle. ``scheme``: ``joint`` (pair by
    pair, seeded ``seed + 31 ids[a] + ids[b]``), ``wild`` or ``iid`` (one resampling for all pairs), or
    ``auto`` (:func:`resolve_pair_scheme`). See docs, Methods, Estimators.
    """
    from dncsim.analysis.task_batch import task_labels

    x = as_features(features).to(F64)
    lab = task_labels(labels, x.shape[0])
    T = lab.T
    resolve_pair_scheme(scheme, T)
    ids = list(range(T)) if task_ids is None else [int(i) for i in task_ids]
    if len(ids) != T:
        raise DncsimError(f"task_ids must name the {T} tasks; got {len(ids)}")
    kw = dict(resamples=int(resamples), alpha=alpha, seed=int(seed))
    pairs = list(itertools.combinations(range(T), 2))
    if scheme != "auto":
        chosen = {scheme: pairs} if pairs else {}                         # one task: no pair, all NaN
    else:
        bal = balanced_pairs(lab.idx).tolist()
        chosen: dict = {}
        for a, b in pairs:
            chosen.setdefault(resolve_pair_scheme("auto", T, bal[a][b]), []).append((a, b))
    out = torch.full((T, T, 2), float("nan"), dtype=F64, device=x.device)
    for name, these in chosen.items():
        if name == "joint":
            part = _joint_median_abs_cos_tasks(x, lab, these, ids, **kw)
        else:
            part = (_wild_median_abs_cos_tasks if name == "wild" else _iid_median_abs_cos_tasks)(x, lab, **kw)
        ia, ib = (list(v) for v in zip(*these))
        out[ia, ib] = part[ia, ib]
    return out


def _joint_median_abs_cos_tasks(x: torch.Tensor, lab, pairs, ids, *, resamples: int, alpha: float,
                                seed: int) -> torch.Tensor:
    """The ``joint`` scheme of :func:`bootstrap_median_abs_cos_tasks` for the task ``pairs`` (a, b), a < b:
    each pair resampled within its joint classes by its own generator, as the per-pair call."""
    T = lab.T
    x = x - x.mean(dim=0, keepdim=True)
    out = torch.full((T, T, 2), float("nan"), dtype=F64, device=x.device)
    B = int(resamples)
    d = x.shape[1]
    idx = lab.idx.cpu()
    everywhere = bool((idx >= 0).all())
    ones = torch.ones(B, x.shape[0], dtype=F64)
    x_pad = torch.cat([x, x.new_zeros(1, d)]) if everywhere else None  # row N: the zero dummy slot's features
    done, medians = [], []
    for a, b in pairs:                                                 # each pair its own seeded draws
        if everywhere:
            ia, ib, xp = idx[a], idx[b], x_pad
        else:
            both = (idx[a] >= 0) & (idx[b] >= 0)
            ia, ib = idx[a][both], idx[b][both]
            xp = torch.cat([x[both.to(x.device)], x.new_zeros(1, d)])
        ca, ia = torch.unique(ia, return_inverse=True)
        cb, ib = torch.unique(ib, return_inverse=True)
        Ca, Cb = ca.numel(), cb.numel()
        if Ca < 2 or Cb < 2:
            continue
        joint = ia * Cb + ib
        order = torch.argsort(joint, stable=True)                      # samples grouped by joint class
        present = torch.bincount(joint, minlength=Ca * Cb)
        cells = present.nonzero().flatten()
        sizes = present[cells].tolist()
        gen = torch.Generator().manual_seed(int(seed) + 31 * ids[a] + ids[b])
        # cell-major layout (K cells, B resamples, m_max slots + one dummy slot that padded draws point to
        # and whose features are zero), so that every cell's resampled sums come from one product
        K, mx = len(sizes), max(sizes)
        counts = torch.zeros(K, B, mx + 1, dtype=F64)
        buf = torch.empty(B * mx, dtype=torch.int64)
        if len(set(sizes)) == 1:      # equal cells: one call draws what the per-pair call draws cell by cell
            draws = torch.randint(mx, (K, B, mx), generator=gen)
            counts[:, :, :mx].scatter_add_(2, draws, ones[:, :mx].expand(K, B, mx))
        else:
            for k, m in enumerate(sizes):                             # the per-pair call's draws, cell by cell
                draws = torch.randint(m, (B, m), generator=gen, out=buf[:B * m].view(B, m))
                counts[k, :, :m].scatter_add_(1, draws, ones[:, :m])
        size_t = torch.tensor(sizes)
        slot = torch.arange(mx + 1)
        gather = torch.where(slot < size_t[:, None], (torch.cumsum(size_t, 0) - size_t)[:, None] + slot, len(order))
        rows = torch.cat([order, order.new_full((1,), len(order))])[gather]   # the dummy slot: xp's last row
        xs = xp[rows.to(x.device)]                                                          # (K, mx + 1, d)
        sums = torch.bmm(counts.to(x.device), xs).transpose(0, 1)                          # (B, K, d)
        cells = cells.to(x.device)
        ma = torch.zeros(B, Ca, d, dtype=F64, device=x.device).index_add_(1, cells // Cb, sums)
        mb = torch.zeros(B, Cb, d, dtype=F64, device=x.device).index_add_(1, cells % Cb, sums)
        ma /= torch.bincount(ia, minlength=Ca).to(device=x.device, dtype=F64)[:, None]
        mb /= torch.bincount(ib, minlength=Cb).to(device=x.device, dtype=F64)[:, None]
        pa = torch.triu_indices(Ca, Ca, 1, device=x.device)
        pb = torch.triu_indices(Cb, Cb, 1, device=x.device)
        ua = ma[:, pa[1]] - ma[:, pa[0]]
        ub = mb[:, pb[1]] - mb[:, pb[0]]
        ua = ua / ua.norm(dim=-1, keepdim=True)
        ub = ub / ub.norm(dim=-1, keepdim=True)
        cos = torch.bmm(ua, ub.transpose(1, 2)).abs().flatten(1)
        done.append((a, b))
        medians.append(true_median(cos, dim=1))
    if done:                    # every pair's percentile interval at once (_interval's: NaN medians left out)
        q = torch.nanquantile(torch.stack(medians), torch.tensor([alpha / 2, 1 - alpha / 2], dtype=F64,
                                                                  device=x.device), dim=1).T
        ia_, ib_ = zip(*done)
        out[list(ia_), list(ib_)] = q
    return out


def _class_cells(lab, device):
    """(T, C, n) sample indices of every task's class cells, padded, and their validity mask."""
    T, N = lab.idx.shape
    sample, valid = _cell_layout(lab.idx, torch.zeros(T, 1, N, dtype=torch.bool, device=device), lab.C)
    return sample[:, 0, 0::2], valid[:, 0, 0::2]


#: ``_median_cos_of_means`` takes all pairs' |cos| from one (T P) x (T P) product per resample up to this many
#: entries, and pair by pair beyond (many classes: P = C (C - 1) / 2 axes per task)
_STACKED_COS_ELEMENTS = 1 << 20


def _resampled_medians(lab, weights: torch.Tensor, values: torch.Tensor, *, to_means, nan_aware: bool):
    """(B, pairs) median |cos| of every pair of tasks a < b under B per-sample multiplier resamples:
    ``weights`` (B, N) per-sample multipliers, shared by all tasks; for chunks of resamples (50, fewer
    when the tasks have many classes, so that a chunk's temporaries stay near ``_TASK_CHUNK_ELEMENTS``),
    every class cell's weighted sums of ``values`` (N, d), (T, C, B, d), and its weight totals, (T, C, B),
    go through ``to_means`` to the resampled class means (T, C, B, d) (:func:`_median_cos_of_means`)."""
    T, C, d = lab.T, lab.C, values.shape[1]
    P = C * (C - 1) // 2
    per_resample = T * P * d + min((T * P) ** 2, _STACKED_COS_ELEMENTS) + T * C * (d + 1)
    step = int(max(1, min(50, _TASK_CHUNK_ELEMENTS // per_resample)))
    sample, valid = _class_cells(lab, values.device)                      # (T, C, n)
    cells = values[sample] * valid[..., None]                             # (T, C, n, d), zero rows on padding
    inside = valid[..., None].to(weights.dtype)                           # (T, C, n, 1)
    meds = []
    for b in range(0, weights.shape[0], step):
        w = weights[b:b + step]
        wb = w.T[sample].transpose(-1, -2)          # (T, C, B, n) without a copy; padding meets zero rows
        sums = wb @ cells                                                 # (T, C, B, d)
        mu = to_means(sums, (wb @ inside)[..., 0])                        # totals (T, C, B)
        meds.append(_median_cos_of_means(mu, lab, nan_aware=nan_aware))
    return torch.cat(meds)


def _median_cos_of_means(mu: torch.Tensor, lab, *, nan_aware: bool) -> torch.Tensor:
    """(B, pairs) median |cos| between the decision axes of every pair of tasks a < b (``triu_indices``
    order) from resampled class means ``mu`` (T, C, B, d); padded classes' axes are left out, and with
    ``nan_aware`` so are axes of a class that a resample left empty (NaN means). One (T P) x (T P)
    product of the stacked axes per resample up to ``_STACKED_COS_ELEMENTS`` entries, else pair by
    pair on each task's own axes."""
    T, C, B, d = mu.shape
    pa = torch.triu_indices(C, C, 1, device=mu.device)
    P = pa.shape[1]
    real = (lab.mask[:, pa[0]] & lab.mask[:, pa[1]])                      # (T, P)
    ta, tb = torch.triu_indices(T, T, 1, device=mu.device)
    u = mu[:, pa[1]] - mu[:, pa[0]]                                       # (T, P, B, d)
    u = u / u.norm(dim=-1, keepdim=True)
    if (T * P) ** 2 > _STACKED_COS_ELEMENTS:
        axes = [u[t][real[t]].transpose(0, 1) for t in range(T)]          # (B, P_t, d)
        out = []
        for a, b in zip(ta.tolist(), tb.tolist()):
            cos = torch.bmm(axes[a], axes[b].transpose(1, 2)).abs().flatten(1)
            med = true_median(cos, dim=1)
            out.append(med if nan_aware else med.masked_fill(cos.isnan().any(1), float("nan")))
        return torch.stack(out, 1) if out else mu.new_zeros(B, 0)
    u = u.masked_fill(~real[:, :, None, None], float("nan")).permute(2, 0, 1, 3).reshape(-1, T * P, d)
    cos = (u @ u.transpose(1, 2)).view(-1, T, P, T, P)[:, ta, :, tb].abs_()   # (pairs, B, P, P): a < b only
    cos = cos.reshape(cos.shape[0], cos.shape[1], P * P)
    med = true_median(cos, dim=-1)
    if bool(real.all()) and not nan_aware:                                # no padded axes: NaN propagates
        med = med.masked_fill(cos.isnan().any(-1), float("nan"))
    return med.T


def _pair_intervals(med: torch.Tensor, T: int, alpha: float) -> torch.Tensor:
    """(T, T, 2) percentile intervals from (B, pairs) medians (NaN resamples left out), NaN off a < b."""
    probs = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=F64, device=med.device)
    ta, tb = torch.triu_indices(T, T, 1, device=med.device)
    out = torch.full((T, T, 2), float("nan"), dtype=F64, device=med.device)
    out[ta, tb] = torch.nanquantile(med, probs, dim=0).T
    return out


def _wild_median_abs_cos_tasks(x: torch.Tensor, lab, *, resamples: int = 200, alpha: float = 0.05,
                               seed: int = 0) -> torch.Tensor:
    """The ``wild`` scheme: one wild bootstrap serves every pair.

    Samples are fitted by an additive model of all tasks' class effects; resample r shifts each class mean
    by its samples' residuals times shared Rademacher signs (scaled by sqrt(N / (N - rank))). Cost is
    linear in T. Seeded by ``seed``. ``x`` (N, d) float64, ``lab`` validated. NaN off the upper triangle.
    """
    x = x - x.mean(dim=0, keepdim=True)
    T, N = lab.idx.shape
    onehot = lab.onehot()                                                 # (T, N, C)
    design = onehot.permute(1, 0, 2).reshape(N, T * lab.C)
    coef = torch.linalg.pinv(design.T @ design, hermitian=True) @ (design.T @ x)
    rank = int(torch.linalg.matrix_rank(design.T @ design, hermitian=True))
    resid = (x - design @ coef) * math.sqrt(N / max(1, N - rank))
    counts = lab.counts.to(F64)
    means = (onehot.transpose(1, 2) @ x) / counts.clamp_min(1)[..., None]  # (T, C, d)
    gen = torch.Generator().manual_seed(int(seed))
    signs = (torch.randint(0, 2, (resamples, N), generator=gen) * 2 - 1).to(device=x.device, dtype=F64)
    med = _resampled_medians(lab, signs, resid, nan_aware=False,
                             to_means=lambda dev, _: means[:, :, None] + dev / counts.clamp_min(1)[..., None, None])
    return _pair_intervals(med, T, alpha)


#: added to ``seed`` for the ``iid`` scheme's generator, so that its draws are not the ``wild`` signs'
_IID_SEED_OFFSET = 0x9E3779B9


def _iid_median_abs_cos_tasks(x: torch.Tensor, lab, *, resamples: int = 200, alpha: float = 0.05,
                              seed: int = 0) -> torch.Tensor:
    """The ``iid`` scheme: one bootstrap of the samples (multinomial weights shared by all tasks) serves every pair.

    Class means are reweighted means, so joint cell sizes vary as between random draws. A class left empty
    drops out of that resample. Cost linear in T. Seeded by ``seed + _IID_SEED_OFFSET``. NaN off the upper
    triangle.
    """
    x = x - x.mean(dim=0, keepdim=True)
    T, N = lab.idx.shape
    gen = torch.Generator().manual_seed(int(seed) + _IID_SEED_OFFSET)
    draws = torch.randint(N, (resamples, N), generator=gen)
    weights = torch.zeros(resamples, N, dtype=F64).scatter_add_(1, draws, torch.ones(resamples, N, dtype=F64))
    weights = weights.to(x.device)
    med = _resampled_medians(lab, weights, x, nan_aware=True,             # an empty class's mean: NaN
                             to_means=lambda sums, total: sums / total[..., None])
    return _pair_intervals(med, T, alpha)
