"""Shared pieces of the estimators: input preparation, weighted class moments, task layouts."""
from __future__ import annotations

from typing import Tuple

import torch

from dncsim.analysis.geometry import UndefinedGeometry
from dncsim.analysis.inputs import as_features, as_labels
from dncsim.common import DncsimError

F64 = torch.float64
_CHUNK = 1 << 21          # elements per temporary (rows x columns), as in analysis.geometry
#: elements of the largest temporary of the task-batched kernels (tasks are processed in chunks under it)
_TASK_CHUNK_ELEMENTS = 1 << 24


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


def _task_chunks(T: int, per_task: int):
    step = max(1, _TASK_CHUNK_ELEMENTS // max(1, per_task))
    return [slice(s, min(T, s + step)) for s in range(0, T, step)]


def _centred_tasks(features, labels):
    from dncsim.analysis.task_batch import task_labels

    x = as_features(features).to(F64)
    lab = task_labels(labels, x.shape[0])
    return x - x.mean(dim=0, keepdim=True), lab


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


def pair_masks(mask: torch.Tensor):
    """From the real classes ``mask`` (T, C): ordered pairs of distinct real classes (T, C, C) and the
    unordered ones, i < j (T, C, C)."""
    C = mask.shape[1]
    off = mask[:, :, None] & mask[:, None, :] & ~torch.eye(C, dtype=torch.bool, device=mask.device)
    return off, off & torch.ones(C, C, dtype=torch.bool, device=mask.device).triu(1)
