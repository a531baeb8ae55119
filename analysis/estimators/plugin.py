"""The plug-in estimate (the numbers of ``class_geometry``), batched over weightings."""
from __future__ import annotations

import torch

from dncsim.analysis.estimators.core import (F64, _check_counts, _gaps, _means, _nan_diagonal, _prepare,
                                             _residual_moments)
from dncsim.analysis.estimators.result import GeometryEstimate

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


def plugin_geometry(features, labels, *, ddof: int = 0, device=None) -> GeometryEstimate:
    """The plug-in estimate (the same numbers as ``class_geometry(...).summary()``) as a GeometryEstimate."""
    x, idx, classes = _prepare(features, labels, device)
    W = torch.ones(1, x.shape[0], dtype=F64, device=x.device)
    dir_cdnv, cdnv, d2, var = _plugin_batch(x, idx, classes, W, ddof)
    return GeometryEstimate(classes=classes, counts=torch.bincount(idx, minlength=classes.numel()), var=var[0],
                            d2=d2[0], cdnv=cdnv[0], dir_cdnv=dir_cdnv[0], estimator="plugin")
