"""True medians of torch tensors: the mean of the two middle values for an even count, NaN left out.

``torch.median`` and ``torch.nanmedian`` return the lower of the two middle values; every median that
dncsim reports goes through :func:`true_median` instead.
"""
from __future__ import annotations

import torch

__all__ = ["true_median"]


def true_median(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Median of floating ``x`` along ``dim`` (removed), NaN entries left out; NaN where all are NaN.

    For an even count of finite-or-infinite entries it is the mean of the two middle ones, as
    ``numpy.nanmedian`` computes it."""
    if not torch.is_floating_point(x):
        raise TypeError(f"true_median needs a floating tensor; got {x.dtype}")
    if x.shape[dim] == 0:
        return torch.full_like(x.sum(dim=dim), float("nan"))
    s = x.sort(dim=dim).values                                 # NaN sorts last
    n = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    lo = s.gather(dim, ((n - 1).clamp_min(0)) // 2)
    hi = s.gather(dim, (n // 2).clamp_max(s.shape[dim] - 1))
    med = lo + (hi - lo) / 2                                   # no overflow for large finite values
    med = torch.where(lo == hi, lo, med)                       # inf halves stay inf
    return torch.where(n > 0, med, torch.full_like(med, float("nan"))).squeeze(dim)
