"""Differentiable batch estimates of the geometry, for use as training penalties.

Tensors in, a scalar tensor out, gradients through means, axes and residuals. Same conventions as
:func:`dncsim.analysis.geometry.class_geometry`: ``directional_cdnv_penalty(f, y)`` equals
``class_geometry(f, y, ddof=ddof).summary()["dir_cdnv"]``, the mean over ordered pairs of class i's
variance along u_ij over d2_ij; ``orthogonal_variance_penalty`` the same mean of class i's variance per
dimension orthogonal to the span of all class-mean differences. Classes with fewer than ``min_count``
samples are left out; with fewer than two classes the result is a zero still connected to ``features``.
Accumulates in the features' dtype.
"""
from __future__ import annotations

import torch

__all__ = ["directional_cdnv_penalty", "orthogonal_variance_penalty"]


def directional_cdnv_penalty(features: torch.Tensor, labels: torch.Tensor, *, ddof: int = 0,
                             min_count: int = 2) -> torch.Tensor:
    """Directional CDNV of a batch as a differentiable scalar (module docstring for the conventions).

    ``features`` (B, d) float, ``labels`` (B,) int (negative labels mark samples without a label and
    are ignored), ``ddof`` 0 or 1, ``min_count`` >= 2 the fewest samples a class needs to count.
    """
    prepared = _classes(features, labels, ddof, min_count)
    if prepared is None:
        return features.sum() * 0.0
    x, idx, n, means, centred, d2 = prepared
    c = len(n)
    resid = x - means[idx]
    proj = resid @ centred.T                                            # r_n . mu_j (centred)
    pd = proj - proj.gather(1, idx[:, None])                            # r_n . (mu_j - mu_{y_n})
    q = torch.zeros(c, c, dtype=x.dtype, device=x.device).index_add(0, idx, pd * pd)
    off = ~torch.eye(c, dtype=torch.bool, device=x.device)
    denom = (n - ddof)[:, None] * d2 * d2
    return (q[off] / denom[off]).mean()


def orthogonal_variance_penalty(features: torch.Tensor, labels: torch.Tensor, *, ddof: int = 0,
                                min_count: int = 2, matched: bool = False) -> torch.Tensor:
    """Within-class variance orthogonal to the decision axes, per dimension, over the squared mean gap.

    With P the orthogonal projector onto the span (rank r) of the counted classes' mean differences:
    mean over ordered pairs i != j of sum_{n in i} |(I - P)(f_n - mu_i)|^2 / ((n_i - ddof)(d - r)) / d2_ij.
    ``matched``: times (d - r) / r (the total orthogonal variance per axis dimension), which puts the
    gradient pressure per direction equal to the directional penalty's per axis. P comes from a QR
    factorisation of linearly independent mean differences (chosen without gradient), so the value is
    differentiable. Zero (connected to ``features``) when r = d. Otherwise as :func:`directional_cdnv_penalty`.
    """
    prepared = _classes(features, labels, ddof, min_count)
    if prepared is None:
        return features.sum() * 0.0
    x, idx, n, means, centred, d2 = prepared
    c, d = len(n), x.shape[1]
    basis = _span(means[1:] - means[:1])                               # (d, r) orthonormal columns
    r = basis.shape[1]
    if r >= d:
        return features.sum() * 0.0
    resid = x - means[idx]
    orth = (resid - (resid @ basis) @ basis.T).square().sum(1)          # |(I - P) r_n|^2
    per = r if matched else d - r
    s = torch.zeros(c, dtype=x.dtype, device=x.device).index_add(0, idx, orth) / ((n - ddof) * per)
    off = ~torch.eye(c, dtype=torch.bool, device=x.device)
    return (s[:, None].expand(c, c)[off] / d2[off]).mean()


def _span(diffs: torch.Tensor) -> torch.Tensor:
    """(d, r) orthonormal basis of the span of the rows of ``diffs`` (m, d): reduced QR of a maximal
    linearly independent subset of the rows, picked greedily in order (no gradient through the choice)."""
    with torch.no_grad():
        scale = float(diffs.norm(dim=1).max()) if diffs.numel() else 0.0
        tol = max(diffs.shape) * torch.finfo(diffs.dtype).eps * 10 * scale
        kept, q = [], torch.zeros(diffs.shape[1], 0, dtype=diffs.dtype, device=diffs.device)
        for k in range(diffs.shape[0]):
            v = diffs[k] - q @ (q.T @ diffs[k])
            v = v - q @ (q.T @ v)                                          # twice is enough
            if scale > 0 and float(v.norm()) > tol and q.shape[1] < diffs.shape[1]:
                kept.append(k)
                q = torch.cat([q, (v / v.norm())[:, None]], 1)
    if not kept:
        return diffs.new_zeros(diffs.shape[1], 0)
    basis, _ = torch.linalg.qr(diffs[kept].T, mode="reduced")
    return basis


def _classes(features: torch.Tensor, labels: torch.Tensor, ddof: int, min_count: int):
    """The labelled samples of the classes with >= ``min_count`` of them: (x, class index, counts, means,
    centred means, squared mean gaps), or None when fewer than two classes count. Validates the input."""
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be (B, d) and labels (B,); got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if ddof not in (0, 1) or min_count < 2:
        raise ValueError(f"ddof must be 0 or 1 and min_count >= 2; got ddof={ddof}, min_count={min_count}")
    keep = labels >= 0
    x, y = features[keep], labels[keep]
    if y.numel() == 0:
        return None
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    ok = counts >= min_count
    if int(ok.sum()) < 2:
        return None
    remap = torch.full((len(classes),), -1, dtype=torch.long, device=y.device)
    remap[ok] = torch.arange(int(ok.sum()), device=y.device)
    idx = remap[inverse]
    sel = idx >= 0
    x, idx, n = x[sel], idx[sel], counts[ok].to(x.dtype)
    c = len(n)
    means = torch.zeros(c, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, idx, x) / n[:, None]
    centred = means - means.mean(0, keepdim=True)                       # a common shift cancels in the gaps
    gram = centred @ centred.T
    d2 = gram.diagonal()[:, None] + gram.diagonal()[None, :] - 2 * gram  # |mu_i - mu_j|^2
    return x, idx, n, means, centred, d2
