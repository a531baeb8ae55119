"""Differentiable batch estimates of the geometry, for use as training penalties.

Tensors in, a scalar tensor out, gradients through means, axes and residuals. Same conventions as
:func:`dncsim.analysis.geometry.class_geometry`: ``directional_cdnv_penalty(f, y)`` equals
``class_geometry(f, y, ddof=ddof).summary()["dir_cdnv"]``, the mean over ordered pairs of class i's
variance along u_ij over d2_ij. Classes with fewer than ``min_count`` samples are left out; with fewer
than two classes the result is a zero still connected to ``features``. Accumulates in the features' dtype.
"""
from __future__ import annotations

import torch

__all__ = ["directional_cdnv_penalty"]


def directional_cdnv_penalty(features: torch.Tensor, labels: torch.Tensor, *, ddof: int = 0,
                             min_count: int = 2) -> torch.Tensor:
    """Directional CDNV of a batch as a differentiable scalar (module docstring for the conventions).

    ``features`` (B, d) float, ``labels`` (B,) int (negative labels mark samples without a label and
    are ignored), ``ddof`` 0 or 1, ``min_count`` >= 2 the fewest samples a class needs to count.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be (B, d) and labels (B,); got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if ddof not in (0, 1) or min_count < 2:
        raise ValueError(f"ddof must be 0 or 1 and min_count >= 2; got ddof={ddof}, min_count={min_count}")
    keep = labels >= 0
    x, y = features[keep], labels[keep]
    zero = features.sum() * 0.0
    if y.numel() == 0:
        return zero
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    ok = counts >= min_count
    if int(ok.sum()) < 2:
        return zero
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
    resid = x - means[idx]
    proj = resid @ centred.T                                            # r_n . mu_j (centred)
    pd = proj - proj.gather(1, idx[:, None])                            # r_n . (mu_j - mu_{y_n})
    q = torch.zeros(c, c, dtype=x.dtype, device=x.device).index_add(0, idx, pd * pd)
    off = ~torch.eye(c, dtype=torch.bool, device=x.device)
    denom = (n - ddof)[:, None] * d2 * d2
    return (q[off] / denom[off]).mean()
