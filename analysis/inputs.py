"""Validation and conversion of (features, labels) inputs, shared by analysis functions and data sources."""
from __future__ import annotations

import numpy as np
import torch

from dncsim.common import DncsimError


def as_features(features, *, name: str = "features", device=None) -> torch.Tensor:
    """Return ``features`` as a 2-D floating tensor (N, d) on ``device``, checking shape and finiteness.

    Accepts torch tensors and anything ``numpy.asarray`` accepts. Integer inputs are converted to
    float32. Raises DncsimError naming ``name`` when the array is not 2-D, is empty or holds
    NaN/inf (the message says how many rows are affected and the first one).
    """
    x = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    if device is not None:
        x = x.to(device)
    if x.ndim != 2:
        raise DncsimError(f"{name} must be a 2-D array (N, d); got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DncsimError(f"{name} is empty; got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        if x.dtype == torch.bool or x.is_complex():
            raise DncsimError(f"{name} must be real numbers; got dtype {x.dtype}")
        x = x.to(torch.float32)
    # A finite sum proves every entry finite (NaN and inf propagate); only a non-finite sum (bad
    # values, or a harmless overflow) pays for the element-wise scan.
    if torch.isfinite(x.sum()):
        return x
    bad = ~torch.isfinite(x).all(dim=1)
    n_bad = int(bad.sum())
    if n_bad:
        first = int(bad.nonzero()[0, 0])
        raise DncsimError(
            f"{name} contain NaN or inf values in {n_bad} of {x.shape[0]} rows (first at row {first})")
    return x


def as_labels(labels, n: int, *, name: str = "labels", device=None) -> torch.Tensor:
    """Return ``labels`` as a 1-D int64 tensor of length ``n``.

    Integer and boolean arrays are accepted; floating arrays are accepted only when every value is
    an integer. Raises DncsimError naming ``name`` otherwise.
    """
    y = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if device is not None:
        y = y.to(device)
    if y.ndim != 1:
        raise DncsimError(f"{name} must be a 1-D array (N,); got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise DncsimError(f"{name} has {y.shape[0]} entries but features have {n} rows")
    if torch.is_floating_point(y):
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise DncsimError(f"{name} must be integer class labels; got non-integer values")
    elif y.is_complex():
        raise DncsimError(f"{name} must be integer class labels; got dtype {y.dtype}")
    return y.to(torch.int64).contiguous()
