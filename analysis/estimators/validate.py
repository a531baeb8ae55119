"""Checks at the estimators' boundary: inputs (tensors, arrays or lists) converted and validated once,
settings checked with one DncsimError each."""
from __future__ import annotations

import math

import numpy as np
import torch

from dncsim.analysis.inputs import as_features, as_labels
from dncsim.common import DncsimError

ESTIMATORS = ("plugin", "crossfit", "debiased")
DEFAULT_ESTIMATOR = "debiased"
F64 = torch.float64


def check_estimator(name) -> str:
    if name not in ESTIMATORS:
        raise DncsimError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {name!r}")
    return name


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 < float(alpha) < 1) \
            or math.isnan(float(alpha)):
        raise DncsimError(f"alpha must be a number in (0, 1) (0.05: 95% intervals); got {alpha!r}")
    return float(alpha)


def check_count(value, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < least:
        raise DncsimError(f"{name} must be an integer >= {least}; got {value!r}")
    return int(value)


def centred_tasks(features, labels):
    """(x (N, d) float64 centred, TaskLabels) for T tasks labelling the same features (``labels`` (T, N))."""
    from dncsim.analysis.task_batch import task_labels

    x = as_features(features).to(F64)
    y = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    lab = task_labels(y.to(x.device), x.shape[0])
    return x - x.mean(dim=0, keepdim=True), lab


def centred_task(features, labels):
    """The one-task case of :func:`centred_tasks` for class labels (N,) of any integer values."""
    from dncsim.analysis.task_batch import task_labels

    x = as_features(features).to(F64)
    y = as_labels(labels, x.shape[0], device=x.device)
    idx = torch.unique(y, return_inverse=True)[1]
    lab = task_labels(idx[None], x.shape[0])
    classes = torch.unique(y)
    lab = type(lab)(idx=lab.idx, classes=classes[None], mask=lab.mask, counts=lab.counts)
    return x - x.mean(dim=0, keepdim=True), lab


def strata_keys(strata, n: int):
    """``strata`` as an int64 (L, n) matrix (one row per labeling; (n,) keys are one row), or None."""
    if strata is None:
        return None
    s = strata if isinstance(strata, torch.Tensor) else torch.as_tensor(np.asarray(strata))
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[1] != n:
        raise DncsimError(f"strata must be (N,) keys or an (L, N) matrix of labelings with N = {n}; "
                          f"got shape {tuple(s.shape)}")
    if torch.is_floating_point(s) and not torch.equal(s, s.round()):
        raise DncsimError("strata must be integers")
    return s.to(torch.int64)
