"""Intervals of the debiased summaries: grouped delete-a-group jackknife.

G groups (at most ``groups`` and the smallest class's size), assigned at random (seeded) and stratified:
samples sorted by (class, stratum, random key) are dealt round-robin within each class. Replicate g is the
debiased kernel without group g, its trace terms held at the full sample's values. The (1 - alpha)
interval is estimate -/+ t_{G-1} x jackknife standard error, on the log scale when the estimate and
every replicate are positive, else on the linear scale.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from dncsim.analysis.estimators.core import F64
from dncsim.analysis.estimators.debiased import (_estimates, _pair_summaries, debiased_tasks, single_design,
                                                 task_designs)
from dncsim.analysis.estimators.validate import centred_task, centred_tasks, check_alpha, check_count

SUMMARIES = ("dir_cdnv", "cdnv", "ratio")


def _t_quantile(p: float, dof: torch.Tensor) -> torch.Tensor:
    from scipy import stats

    return torch.as_tensor(stats.t.ppf(p, dof.cpu().numpy()), dtype=F64, device=dof.device)


def jackknife_masks(lab, cells, groups: int, seeds) -> Tuple[torch.Tensor, torch.Tensor]:
    """(T, 1 + G, N) 0/1 masks (row 0: the task's samples; row g: less group g) and (T,) group counts
    G_t = min(groups, smallest class of task t); rows past G_t repeat row 0 and are not used."""
    T, N = lab.idx.shape
    inside = lab.idx >= 0
    G_t = lab.counts.masked_fill(~lab.mask, 1 << 30).min(1).values.clamp_max(groups)
    keys = torch.stack([torch.rand(N, generator=torch.Generator().manual_seed(int(s)), dtype=F64)
                        for s in seeds]).to(lab.idx.device)            # one seeded draw per task
    K = int(cells.max()) + 1
    order_key = (lab.idx.clamp_min(0) * K + cells).to(F64) + keys
    order_key = torch.where(inside, order_key, torch.full_like(order_key, float("inf")))
    order = torch.argsort(order_key, dim=1)
    cls_sorted = lab.idx.gather(1, order)
    starts = torch.cumsum(lab.counts, 1) - lab.counts                    # classes come in index order
    rank = torch.arange(N, device=lab.idx.device)[None] - starts.gather(1, cls_sorted.clamp_min(0))
    group = torch.full_like(lab.idx, -1)
    group.scatter_(1, order, torch.where(cls_sorted >= 0, rank % G_t[:, None], torch.full_like(rank, -1)))
    G = int(groups)
    g = torch.arange(G, device=lab.idx.device)
    drop = (group[:, None, :] == g[None, :, None]) & (g[None, :, None] < G_t[:, None, None])
    W = torch.cat([inside[:, None], inside[:, None] & ~drop], 1).to(F64)
    return W, G_t


def _intervals(est: torch.Tensor, reps: torch.Tensor, G_t: torch.Tensor, alpha: float) -> torch.Tensor:
    """(T, 2) intervals from estimates (T,) and replicates (T, G) of which the first G_t are used."""
    T, G = reps.shape
    used = torch.arange(G, device=reps.device)[None] < G_t[:, None]
    finite = torch.isfinite(est) & (torch.isfinite(reps) | ~used).all(1)
    pos = finite & (est > 0) & ((reps > 0) | ~used).all(1)
    out = torch.full((T, 2), float("nan"), dtype=F64, device=reps.device)
    if not bool(finite.any()):
        return out
    q = _t_quantile(1 - alpha / 2, (G_t - 1).clamp_min(1))
    gt = G_t.to(F64)
    for log in (True, False):
        rows = pos if log else finite & ~pos
        if not bool(rows.any()):
            continue
        r = reps.clamp_min(1e-300).log() if log else reps
        e = est.clamp_min(1e-300).log() if log else est
        r = torch.where(used, r, torch.zeros_like(r))
        mean = r.sum(1) / gt
        se = ((gt - 1) / gt * torch.where(used, (r - mean[:, None]).square(), torch.zeros_like(r)).sum(1)).sqrt()
        lo, hi = e - q * se, e + q * se
        if log:
            lo, hi = lo.exp(), hi.exp()
        out[rows] = torch.stack([lo, hi], 1)[rows]
    return out


def jackknife_tasks(x, lab, designs, *, groups: int = 20, alpha: float = 0.05, seeds=None):
    """(estimates, intervals) of T validated tasks on centred ``x`` with ``designs`` (as
    ``debiased_tasks``): per task a GeometryEstimate (or the UndefinedGeometry it gives) and a dict
    summary -> (low, high) (NaN when undefined)."""
    groups = check_count(groups, "groups", 2)
    alpha = check_alpha(alpha)
    seeds = [0] * lab.T if seeds is None else [int(s) for s in seeds]
    W, G_t = jackknife_masks(lab, designs[0], groups, seeds)
    out, ok = debiased_tasks(x, lab, designs, W=W)
    mean_d, mean_c, _, _ = _pair_summaries(out[0], out[1], out[2], lab.mask)
    series = {"dir_cdnv": mean_d, "cdnv": mean_c, "ratio": mean_d / mean_c}
    ivs = {k: _intervals(v[:, 0], v[:, 1:], G_t, alpha) for k, v in series.items()}
    ests = _estimates(lab, tuple(o[:, :1] for o in out), designs[1], ok)
    nan = (float("nan"), float("nan"))
    intervals = []
    for t in range(lab.T):
        if isinstance(ests[t], Exception) or int(G_t[t]) < 2:
            intervals.append({k: nan for k in SUMMARIES})
        else:
            intervals.append({k: (float(ivs[k][t, 0]), float(ivs[k][t, 1])) for k in SUMMARIES})
    return ests, intervals


def jackknife_summaries_tasks(features, labels, *, groups: int = 20, alpha: float = 0.05, design: str = "auto",
                              seeds=None) -> Tuple[List, List[Dict[str, Tuple[float, float]]]]:
    """The debiased estimates of T tasks labelling the same ``features`` (N, d) (``labels`` (T, N),
    negative: not in the task; strata as :func:`debiased_geometry_tasks`) and (1 - alpha) jackknife
    intervals of their summaries (module docstring), task t's groups seeded by ``seeds[t]`` (default 0):
    (estimates, intervals)."""
    x, lab = centred_tasks(features, labels)
    return jackknife_tasks(x, lab, task_designs(lab.idx, design), groups=groups, alpha=alpha, seeds=seeds)


def jackknife_summaries(features, labels, *, strata=None, design: str = "auto", groups: int = 20,
                        alpha: float = 0.05, seed: int = 0) -> Dict[str, Tuple[float, float]]:
    """(1 - alpha) jackknife intervals (module docstring) of the debiased ``dir_cdnv``, ``cdnv`` and ``ratio``
    of ``features`` (N, d) with ``labels`` (N,); ``strata`` and ``design`` as ``debiased_geometry``."""
    x, lab = centred_task(features, labels)
    est, ivs = jackknife_tasks(x, lab, single_design(lab, strata, design), groups=groups, alpha=alpha, seeds=[seed])
    if isinstance(est[0], Exception):
        raise est[0]
    return ivs[0]
