"""Accuracy-matrix arithmetic: forgetting, backward and forward transfer (docs, Methods, Metrics).

``R`` (E+1, T): row 0 before training, row t+1 after experience t; column k is task k; NaN is undefined.
``learned_at``: per task, the experience it is learned in (default k; None: watched, no forgetting).
Every function takes ``t``, the experience just trained; a task not yet learned, or learned at ``t``,
has no forgetting (NaN).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

__all__ = ["forgetting_max", "forgetting_last", "normalised_forgetting", "backward_transfer", "forward_transfer",
           "learned_accuracy"]


def _rows(R, t: int) -> torch.Tensor:
    return torch.as_tensor(R, dtype=torch.float64)[: t + 2]


def _learned_at(T: int, learned_at: Optional[Sequence[Optional[int]]]):
    return list(range(T)) if learned_at is None else list(learned_at)


def forgetting_max(R, t: int, learned_at=None) -> torch.Tensor:
    """(T,) for every task learned at L < t: max over rows L+1..t (after learning it, before now) of
    R[., k], minus R[t+1, k] (Chaudhry et al.)."""
    rows = _rows(R, t)
    T = rows.shape[1]
    out = torch.full((T,), float("nan"), dtype=torch.float64)
    for k, L in enumerate(_learned_at(T, learned_at)):     # a loop over tasks (T), not over class pairs
        if L is not None and L < t:
            out[k] = rows[L + 1: t + 1, k].max() - rows[t + 1, k]
    return out


def learned_accuracy(R, t: int, learned_at=None) -> torch.Tensor:
    """(T,) R[L+1, k], the accuracy right after task k's experience L, for tasks learned at L <= t."""
    rows = _rows(R, t)
    T = rows.shape[1]
    out = torch.full((T,), float("nan"), dtype=torch.float64)
    for k, L in enumerate(_learned_at(T, learned_at)):
        if L is not None and L <= t:
            out[k] = rows[L + 1, k]
    return out


def forgetting_last(R, t: int, learned_at=None) -> torch.Tensor:
    """(T,) for every task learned at L < t: R[L+1, k] (just after learning it) minus R[t+1, k]."""
    rows = _rows(R, t)
    out = learned_accuracy(R, t, learned_at) - rows[t + 1]
    for k, L in enumerate(_learned_at(rows.shape[1], learned_at)):
        if L is None or L >= t:
            out[k] = float("nan")
    return out


def normalised_forgetting(R, t: int, chance: Sequence[float], learned_at=None) -> torch.Tensor:
    """(T,) ``forgetting_last`` over what was learned above chance: (R[L+1, k] - R[t+1, k]) /
    (R[L+1, k] - chance_k); 1 = back to chance, 0 = nothing lost. NaN unless learned above chance."""
    learned = learned_accuracy(R, t, learned_at)
    above = learned - torch.as_tensor(list(chance), dtype=torch.float64)
    out = forgetting_last(R, t, learned_at) / above
    out[~(above > 0)] = float("nan")
    return out


def backward_transfer(R, t: int, learned_at=None) -> float:
    """Mean over tasks learned before t of R[t+1, k] - R[L+1, k] (= -mean forgetting_last); NaN if none
    (Lopez-Paz & Ranzato)."""
    f = forgetting_last(R, t, learned_at)
    f = f[~torch.isnan(f)]
    return float(-f.mean()) if len(f) else float("nan")


def forward_transfer(R, t: int, learned_at=None) -> torch.Tensor:
    """(T,) for every task learned at 1 <= L <= t: R[L, k] (after experience L-1, just before learning it)
    minus R[0, k] (the untrained backbone)."""
    rows = _rows(R, t)
    T = rows.shape[1]
    out = torch.full((T,), float("nan"), dtype=torch.float64)
    for k, L in enumerate(_learned_at(T, learned_at)):
        if L is not None and 1 <= L <= t:
            out[k] = rows[L, k] - rows[0, k]
    return out
