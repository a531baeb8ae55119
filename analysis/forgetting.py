"""Accuracy-matrix arithmetic: forgetting, backward and forward transfer (README, "Metrics").

``R`` is a (T+1, T) matrix: row 0 is measured before any training, row t+1 after experience t;
column k is task k; NaN marks an undefined entry (e.g. a frozen probe before its task was learned).
All functions take the prefix ``R[: t + 2]`` view implicitly through ``t`` (the experience just
trained) so that values "so far" can be tracked along the stream; tasks not yet learned, or learned
at ``t`` itself, have no forgetting (NaN).
"""
from __future__ import annotations

import torch

__all__ = ["forgetting_max", "forgetting_last", "backward_transfer", "forward_transfer"]


def _rows(R: torch.Tensor, t: int) -> torch.Tensor:
    return torch.as_tensor(R, dtype=torch.float64)[: t + 2]


def forgetting_max(R, t: int) -> torch.Tensor:
    """(T,) for task k < t: max over rows k+1..t (after learning k, before now) of R[., k] minus R[t+1, k]."""
    rows = _rows(R, t)
    T = rows.shape[1]
    out = torch.full((T,), float("nan"), dtype=torch.float64)
    for k in range(min(t, T)):                 # a loop over tasks (T), not over class pairs
        earlier = rows[k + 1: t + 1, k]
        out[k] = earlier.max() - rows[t + 1, k]
    return out


def forgetting_last(R, t: int) -> torch.Tensor:
    """(T,) for task k < t: R[k+1, k] (just after learning k) minus R[t+1, k]."""
    rows = _rows(R, t)
    T = rows.shape[1]
    out = torch.full((T,), float("nan"), dtype=torch.float64)
    k = torch.arange(min(t, T))
    out[k] = rows[k + 1, k] - rows[t + 1, k]
    return out


def backward_transfer(R, t: int) -> float:
    """Mean over tasks k < t of R[t+1, k] - R[k+1, k] (= -mean forgetting_last); NaN when t = 0."""
    f = forgetting_last(R, t)
    f = f[~torch.isnan(f)]
    return float(-f.mean()) if len(f) else float("nan")


def forward_transfer(R, t: int) -> torch.Tensor:
    """(T,) for task 1 <= k <= t: R[k, k] (after experience k-1, before learning k) minus R[0, k]
    (the untrained backbone)."""
    rows = _rows(R, t)
    T = rows.shape[1]
    out = torch.full((T,), float("nan"), dtype=torch.float64)
    k = torch.arange(1, min(t, T - 1) + 1)
    out[k] = rows[k, k] - rows[0, k]
    return out
