"""Seeded stratified picks and exactly balanced subsamples of samples labelled by several attributes.

``codes``: (N, A) int64, column a holding attribute a's ids 0..K_a-1. Each function returns sorted
int64 positions, deterministic in the given ``numpy.random.Generator``.

* :func:`stratified_take` -- k samples, every combination in proportion.
* :func:`balanced_combinations` -- equal count per combination (exact independence); needs all present.
* :func:`balanced_classes` -- every class of every attribute equally frequent (scipy MILP); joint not controlled.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from dncsim.common import DncsimError

__all__ = ["stratified_take", "take_per_cell", "cells_of", "balanced_combinations", "balanced_classes",
           "split_shares"]


def cells_of(codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(combinations present (C, A) in lexicographic order, each sample's combination (N,), counts (C,))."""
    codes = np.asarray(codes, dtype=np.int64).reshape(len(codes), -1)
    radix = tuple(int(r) for r in (codes.max(0) + 1 if len(codes) else np.ones(codes.shape[1], np.int64)))
    if len(codes) and float(np.prod(np.asarray(radix, dtype=np.float64))) < 2.0 ** 62:
        # one int64 key per row, in the rows' lexicographic order: far faster than np.unique(axis=0)
        keys, inv, counts = np.unique(np.ravel_multi_index(tuple(codes.T), radix), return_inverse=True,
                                      return_counts=True)
        return np.stack(np.unravel_index(keys, radix), 1).astype(np.int64), inv.reshape(-1), counts
    uniq, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return uniq, inv.reshape(-1), counts


def take_per_cell(inv: np.ndarray, take: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``take[c]`` samples drawn uniformly (with ``rng``) from every cell c, where
    ``inv`` (N,) gives each sample's cell."""
    order = np.lexsort((rng.random(len(inv)), inv))          # by cell, then randomly within the cell
    cell = inv[order]
    starts = np.searchsorted(cell, np.arange(len(take)))
    rank = np.arange(len(order)) - starts[cell]
    return np.sort(order[rank < np.asarray(take)[cell]]).astype(np.int64)


def stratified_take(codes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``k`` of the N samples, every combination in proportion.

    A combination of n samples gives floor(k n / N) or one more: the combinations with the largest
    remainders round up, ties broken at random (not in code order, so a design of one sample per
    combination is not cut by its first attribute). ``k >= N`` gives every sample."""
    n = len(codes)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    _, inv, counts = cells_of(codes)
    take, remainder = np.divmod(counts * int(k), n)
    extra = int(k - take.sum())
    take[np.lexsort((rng.random(len(counts)), -remainder))[:extra]] += 1
    return take_per_cell(inv, take, rng)


def split_shares(total: int, sizes: Sequence[int]) -> List[int]:
    """``total`` split over parts in proportion to ``sizes`` (largest remainders round up)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    whole = int(sizes.sum())
    if whole == 0:
        return [0] * len(sizes)
    share, rem = np.divmod(sizes * int(total), whole)
    share[np.argsort(-rem, kind="stable")[:int(total - share.sum())]] += 1
    return [int(s) for s in share]


def _combination_name(code: Sequence[int], attributes: Sequence[str], names: Sequence[Sequence[str]]) -> str:
    return ", ".join(f"{a}={names[i][int(c)]}" for i, (a, c) in enumerate(zip(attributes, code)))


def balanced_combinations(codes: np.ndarray, sizes: Sequence[int], cap: Optional[int], rng: np.random.Generator,
                          *, attributes: Sequence[str], names: Sequence[Sequence[str]],
                          where: str) -> Tuple[np.ndarray, int]:
    """(sorted positions, m): m samples of every combination of the attributes, m the smallest
    combination's count (at most ``cap // prod(sizes)``). DncsimError naming ``where`` when a
    combination is absent or ``cap`` is below the number of combinations."""
    cells = int(np.prod(np.asarray(sizes, dtype=np.float64)))
    uniq, inv, counts = cells_of(codes)
    if len(uniq) < cells:
        flat = np.ravel_multi_index(tuple(uniq.T), tuple(int(s) for s in sizes)) if cells < 2 ** 62 else None
        first = (int(np.flatnonzero(flat != np.arange(len(flat)))[0]) if flat is not None and
                 (flat != np.arange(len(flat))).any() else len(uniq))
        code = np.unravel_index(first, tuple(int(s) for s in sizes)) if flat is not None else None
        missing = f" (e.g. {_combination_name(code, attributes, names)})" if code is not None else ""
        raise DncsimError(f"{where}: balance: combinations needs every combination of {', '.join(attributes)}; "
                          f"{cells - len(uniq)} of {cells} have no sample{missing}: choose fewer attributes, bin "
                          f"them, or use balance: classes")
    m = int(counts.min())
    if cap is not None:
        if cap < cells:
            raise DncsimError(f"{where}: max_samples gives {cap} samples here, fewer than the {cells} combinations "
                              f"of {', '.join(attributes)} that balance: combinations needs once each")
        m = min(m, cap // cells)
    return take_per_cell(inv, np.full(len(uniq), m), rng), m


def _solve(milp_args: dict):
    from scipy.optimize import milp
    return milp(**milp_args, options={"time_limit": 60.0, "presolve": True})


def balanced_classes(codes: np.ndarray, sizes: Sequence[int], cap: Optional[int], rng: np.random.Generator,
                     *, attributes: Sequence[str], names: Sequence[Sequence[str]], where: str) -> np.ndarray:
    """Sorted positions of the largest subsample (at most ``cap``) in which every class of every
    attribute has the same count (T / K_a for attribute a), and among those the one closest to equal
    counts per combination: two integer programs (scipy's HiGHS), n_c <= available in every combination
    c. Exact: the class counts are checked after rounding. DncsimError naming ``where`` when a class has
    no sample or nothing balanced exists."""
    from scipy.optimize import Bounds, LinearConstraint

    sizes = [int(s) for s in sizes]
    uniq, inv, counts = cells_of(codes)
    for a, (attr, k) in enumerate(zip(attributes, sizes)):
        present = set(uniq[:, a].tolist())
        absent = [names[a][v] for v in range(k) if v not in present]
        if absent:
            raise DncsimError(f"{where}: balance: classes needs samples of every class; {attr}={absent[0]} has none")
    C = len(uniq)
    rows = []
    for a, k in enumerate(sizes):
        for v in range(k):
            rows.append(np.concatenate([(uniq[:, a] == v) * float(k), [-1.0]]))
    A = np.stack(rows)
    upper = float(counts.sum() if cap is None else min(cap, counts.sum()))
    first = _solve(dict(c=np.concatenate([np.zeros(C), [-1.0]]), integrality=np.ones(C + 1),
                        constraints=LinearConstraint(A, 0.0, 0.0),
                        bounds=Bounds(np.zeros(C + 1), np.concatenate([counts.astype(float), [upper]]))))
    if first.x is None or round(first.x[-1]) < 1:
        raise DncsimError(f"{where}: balance: classes found no subsample in which every class of "
                          f"{', '.join(attributes)} is equally frequent")
    total = int(round(first.x[-1]))
    take = np.round(first.x[:C]).astype(np.int64)
    # the same total, as close as possible to total / prod(K) per combination: minimise sum |n_c - u|
    u = total / float(np.prod(np.asarray(sizes, dtype=np.float64)))
    eye = np.eye(C)
    second = _solve(dict(
        c=np.concatenate([np.zeros(C), np.ones(C)]), integrality=np.concatenate([np.ones(C), np.zeros(C)]),
        constraints=[LinearConstraint(np.hstack([A[:, :C], np.zeros((len(A), C))]), A[:, C] * -total,
                                      A[:, C] * -total),
                     LinearConstraint(np.hstack([-eye, eye]), -u, np.inf),
                     LinearConstraint(np.hstack([eye, eye]), u, np.inf)],
        bounds=Bounds(np.zeros(2 * C), np.concatenate([counts.astype(float), np.full(C, np.inf)]))))
    if second.x is not None:
        candidate = np.round(second.x[:C]).astype(np.int64)
        if _balanced(uniq, candidate, sizes, total):
            take = candidate
    if not _balanced(uniq, take, sizes, total) or (take > counts).any() or (take < 0).any():
        raise DncsimError(f"{where}: balance: classes could not balance {', '.join(attributes)} exactly "
                          f"(the solver returned an inexact solution); use balance: combinations")
    return take_per_cell(inv, take, rng)


def _balanced(uniq: np.ndarray, take: np.ndarray, sizes: Sequence[int], total: int) -> bool:
    if int(take.sum()) != total:
        return False
    for a, k in enumerate(sizes):
        per = np.bincount(uniq[:, a], weights=take, minlength=k)
        if total % k or not np.all(per == total // k):
            return False
    return True
