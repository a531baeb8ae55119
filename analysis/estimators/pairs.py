"""Intervals of the median |cos| between two labelings' decision axes (class-mean differences) of the
same samples: ``joint``, ``wild`` and ``iid`` resampling schemes, batched over pairs of tasks."""
from __future__ import annotations

import itertools
import math
from typing import Tuple

import torch

from dncsim.analysis.estimators.bootstrap import _interval
from dncsim.analysis.estimators.core import _within_class_resamples
from dncsim.analysis.estimators.validate import check_alpha, check_count
from dncsim.analysis.estimators.core import _TASK_CHUNK_ELEMENTS, F64, _cell_layout, _means
from dncsim.analysis.inputs import as_features, as_labels
from dncsim.common import DncsimError

def bootstrap_median_abs_cos(features, labels_a, labels_b, *, resamples: int = 200, alpha: float = 0.05,
                             seed: int = 0, scheme: str = "auto") -> Tuple[float, float]:
    """Percentile interval of the median |cos| between labeling a's and labeling b's decision axes (plug-in
    class means) of the same samples. ``scheme``: ``joint`` resamples within the joint classes (a, b),
    seeded by ``seed``; ``wild`` and ``iid`` as :func:`bootstrap_median_abs_cos_tasks` for the two
    labelings; ``auto`` (default): ``joint`` when the joint classes are an exactly balanced design
    (:func:`balanced_pairs`), else ``iid``, which lets the cells' sizes vary as random sampling does."""
    resamples, alpha = check_count(resamples, "resamples", 1), check_alpha(alpha)
    x = as_features(features).to(F64)
    ya = as_labels(labels_a, x.shape[0], device=x.device)
    yb = as_labels(labels_b, x.shape[0], device=x.device)
    resolve_pair_scheme(scheme, 2)
    if scheme != "joint":
        both = torch.stack([ya, yb])
        chosen = resolve_pair_scheme(scheme, 2, bool(balanced_pairs(both)[0, 1]))
        if chosen != "joint":
            ci = bootstrap_median_abs_cos_tasks(x, both, resamples=resamples, alpha=alpha, seed=seed, scheme=chosen)
            return float(ci[0, 1, 0]), float(ci[0, 1, 1])
    ca, ia = torch.unique(ya, return_inverse=True)
    cb, ib = torch.unique(yb, return_inverse=True)
    joint = ia * cb.numel() + ib
    _, ij = torch.unique(joint, return_inverse=True)
    gen = torch.Generator().manual_seed(int(seed))
    W = _within_class_resamples(ij, int(ij.max()) + 1, resamples, gen, x.device)
    x = x - x.mean(dim=0, keepdim=True)
    _, ma = _means(x, ia, ca.numel(), W)
    _, mb = _means(x, ib, cb.numel(), W)
    pa = torch.triu_indices(ca.numel(), ca.numel(), 1)
    pb = torch.triu_indices(cb.numel(), cb.numel(), 1)
    ua = ma[:, pa[1]] - ma[:, pa[0]]
    ub = mb[:, pb[1]] - mb[:, pb[0]]
    ua = ua / ua.norm(dim=-1, keepdim=True)
    ub = ub / ub.norm(dim=-1, keepdim=True)
    cos = torch.bmm(ua, ub.transpose(1, 2)).abs().flatten(1)
    return _interval(cos.median(dim=1).values, alpha)


PAIR_BOOTSTRAP_SCHEMES = ("auto", "joint", "wild", "iid")

#: ``scheme="auto"`` resamples the balanced pairs pair by pair (``joint``) below this many pairs of tasks on
#: the same samples (20 tasks), and uses the ``wild`` bootstrap for them from it on, where the per-pair cost
#: (T^2 / 2 pairs, each with B x N draws) would dominate the evaluation; the two cover alike on exactly
#: balanced evaluation data (tests/analysis/test_task_batch.py measures it)
AUTO_WILD_PAIRS = 190


def resolve_pair_scheme(scheme: str, tasks: int, balanced: bool = True) -> str:
    """The scheme ``bootstrap_median_abs_cos_tasks`` uses for a pair among ``tasks`` tasks on the same
    samples: ``joint``, ``wild`` or ``iid`` as given; ``auto``: ``iid`` when the pair's joint classes are
    not an exactly balanced design (``balanced`` False, see :func:`balanced_pairs`), else ``wild`` from
    ``AUTO_WILD_PAIRS`` pairs (T (T - 1) / 2) on and ``joint`` below."""
    if scheme not in PAIR_BOOTSTRAP_SCHEMES:
        raise DncsimError(f"scheme must be one of {PAIR_BOOTSTRAP_SCHEMES}; got {scheme!r}")
    if scheme == "auto":
        if not balanced:
            return "iid"
        return "wild" if tasks * (tasks - 1) // 2 >= AUTO_WILD_PAIRS else "joint"
    return scheme


def balanced_pairs(labels) -> torch.Tensor:
    """(T, T) bool for T tasks labelling the same samples (``labels`` (T, N) int, negative: not in the task):
    True where tasks a != b form an exactly balanced design on the samples both label -- every cell
    (class of a, class of b) of their classes holds the same number of samples, at least one (as the
    generated evaluation data, built as balanced factorials). False on the diagonal."""
    from dncsim.analysis.task_batch import task_labels

    y = torch.as_tensor(labels)
    lab = task_labels(y, y.shape[-1])
    T, C = lab.T, lab.C
    oh = lab.onehot().permute(0, 2, 1).reshape(T * C, -1)                 # (T C, N)
    cells = (oh @ oh.T).view(T, C, T, C).permute(0, 2, 1, 3)              # (a, b, class of a, class of b)
    real = lab.mask[:, None, :, None] & lab.mask[None, :, None, :]
    big = torch.tensor(float("inf"), dtype=cells.dtype, device=cells.device)
    low = torch.where(real, cells, big).flatten(2).amin(2)
    high = torch.where(real, cells, -big).flatten(2).amax(2)
    out = (low == high) & (low > 0)
    return out & ~torch.eye(T, dtype=torch.bool, device=out.device)


def bootstrap_median_abs_cos_tasks(features, labels, *, resamples: int = 200, alpha: float = 0.05,
                                   seed: int = 0, scheme: str = "auto", task_ids=None) -> torch.Tensor:
    """(T, T, 2) percentile intervals of the median |cos| between tasks a and b's axes, pairs a < b.

    Tasks label the same ``features`` (N, d); NaN off the upper triangle. ``scheme``: ``joint`` (pair by
    pair, seeded ``seed + 31 ids[a] + ids[b]``), ``wild`` or ``iid`` (one resampling for all pairs), or
    ``auto`` (:func:`resolve_pair_scheme`). See docs, Methods, Estimators.
    """
    from dncsim.analysis.task_batch import task_labels

    resamples, alpha = check_count(resamples, "resamples", 1), check_alpha(alpha)
    x = as_features(features).to(F64)
    lab = task_labels(labels, x.shape[0])
    T = lab.T
    resolve_pair_scheme(scheme, T)
    ids = list(range(T)) if task_ids is None else [int(i) for i in task_ids]
    if len(ids) != T:
        raise DncsimError(f"task_ids must name the {T} tasks; got {len(ids)}")
    kw = dict(resamples=int(resamples), alpha=alpha, seed=int(seed))
    pairs = list(itertools.combinations(range(T), 2))
    if scheme != "auto":
        chosen = {scheme: pairs} if pairs else {}                         # one task: no pair, all NaN
    else:
        bal = balanced_pairs(lab.idx).tolist()
        chosen: dict = {}
        for a, b in pairs:
            chosen.setdefault(resolve_pair_scheme("auto", T, bal[a][b]), []).append((a, b))
    out = torch.full((T, T, 2), float("nan"), dtype=F64, device=x.device)
    for name, these in chosen.items():
        if name == "joint":
            part = _joint_median_abs_cos_tasks(x, lab, these, ids, **kw)
        else:
            part = (_wild_median_abs_cos_tasks if name == "wild" else _iid_median_abs_cos_tasks)(x, lab, **kw)
        ia, ib = (list(v) for v in zip(*these))
        out[ia, ib] = part[ia, ib]
    return out


def _joint_median_abs_cos_tasks(x: torch.Tensor, lab, pairs, ids, *, resamples: int, alpha: float,
                                seed: int) -> torch.Tensor:
    """The ``joint`` scheme of :func:`bootstrap_median_abs_cos_tasks` for the task ``pairs`` (a, b), a < b:
    each pair resampled within its joint classes by its own generator, as the per-pair call."""
    T = lab.T
    x = x - x.mean(dim=0, keepdim=True)
    out = torch.full((T, T, 2), float("nan"), dtype=F64, device=x.device)
    B = int(resamples)
    d = x.shape[1]
    idx = lab.idx.cpu()
    everywhere = bool((idx >= 0).all())
    ones = torch.ones(B, x.shape[0], dtype=F64)
    x_pad = torch.cat([x, x.new_zeros(1, d)]) if everywhere else None  # row N: the zero dummy slot's features
    done, medians = [], []
    for a, b in pairs:                                                 # each pair its own seeded draws
        if everywhere:
            ia, ib, xp = idx[a], idx[b], x_pad
        else:
            both = (idx[a] >= 0) & (idx[b] >= 0)
            ia, ib = idx[a][both], idx[b][both]
            xp = torch.cat([x[both.to(x.device)], x.new_zeros(1, d)])
        ca, ia = torch.unique(ia, return_inverse=True)
        cb, ib = torch.unique(ib, return_inverse=True)
        Ca, Cb = ca.numel(), cb.numel()
        if Ca < 2 or Cb < 2:
            continue
        joint = ia * Cb + ib
        order = torch.argsort(joint, stable=True)                      # samples grouped by joint class
        present = torch.bincount(joint, minlength=Ca * Cb)
        cells = present.nonzero().flatten()
        sizes = present[cells].tolist()
        gen = torch.Generator().manual_seed(int(seed) + 31 * ids[a] + ids[b])
        # cell-major layout (K cells, B resamples, m_max slots + one dummy slot that padded draws point to
        # and whose features are zero), so that every cell's resampled sums come from one product
        K, mx = len(sizes), max(sizes)
        counts = torch.zeros(K, B, mx + 1, dtype=F64)
        buf = torch.empty(B * mx, dtype=torch.int64)
        if len(set(sizes)) == 1:      # equal cells: one call draws what the per-pair call draws cell by cell
            draws = torch.randint(mx, (K, B, mx), generator=gen)
            counts[:, :, :mx].scatter_add_(2, draws, ones[:, :mx].expand(K, B, mx))
        else:
            for k, m in enumerate(sizes):                             # the per-pair call's draws, cell by cell
                draws = torch.randint(m, (B, m), generator=gen, out=buf[:B * m].view(B, m))
                counts[k, :, :m].scatter_add_(1, draws, ones[:, :m])
        size_t = torch.tensor(sizes)
        slot = torch.arange(mx + 1)
        gather = torch.where(slot < size_t[:, None], (torch.cumsum(size_t, 0) - size_t)[:, None] + slot, len(order))
        rows = torch.cat([order, order.new_full((1,), len(order))])[gather]   # the dummy slot: xp's last row
        xs = xp[rows.to(x.device)]                                                          # (K, mx + 1, d)
        sums = torch.bmm(counts.to(x.device), xs).transpose(0, 1)                          # (B, K, d)
        cells = cells.to(x.device)
        ma = torch.zeros(B, Ca, d, dtype=F64, device=x.device).index_add_(1, cells // Cb, sums)
        mb = torch.zeros(B, Cb, d, dtype=F64, device=x.device).index_add_(1, cells % Cb, sums)
        ma /= torch.bincount(ia, minlength=Ca).to(device=x.device, dtype=F64)[:, None]
        mb /= torch.bincount(ib, minlength=Cb).to(device=x.device, dtype=F64)[:, None]
        pa = torch.triu_indices(Ca, Ca, 1, device=x.device)
        pb = torch.triu_indices(Cb, Cb, 1, device=x.device)
        ua = ma[:, pa[1]] - ma[:, pa[0]]
        ub = mb[:, pb[1]] - mb[:, pb[0]]
        ua = ua / ua.norm(dim=-1, keepdim=True)
        ub = ub / ub.norm(dim=-1, keepdim=True)
        cos = torch.bmm(ua, ub.transpose(1, 2)).abs().flatten(1)
        done.append((a, b))
        medians.append(cos.median(dim=1).values)
    if done:                    # every pair's percentile interval at once (_interval's: NaN medians left out)
        q = torch.nanquantile(torch.stack(medians), torch.tensor([alpha / 2, 1 - alpha / 2], dtype=F64,
                                                                  device=x.device), dim=1).T
        ia_, ib_ = zip(*done)
        out[list(ia_), list(ib_)] = q
    return out


def _class_cells(lab, device):
    """(T, C, n) sample indices of every task's class cells, padded, and their validity mask."""
    T, N = lab.idx.shape
    sample, valid = _cell_layout(lab.idx, torch.zeros(T, 1, N, dtype=torch.bool, device=device), lab.C)
    return sample[:, 0, 0::2], valid[:, 0, 0::2]


#: ``_median_cos_of_means`` takes all pairs' |cos| from one (T P) x (T P) product per resample up to this many
#: entries, and pair by pair beyond (many classes: P = C (C - 1) / 2 axes per task)
_STACKED_COS_ELEMENTS = 1 << 20


def _resampled_medians(lab, weights: torch.Tensor, values: torch.Tensor, *, to_means, nan_aware: bool):
    """(B, pairs) median |cos| of every pair of tasks a < b under B per-sample multiplier resamples:
    ``weights`` (B, N) per-sample multipliers, shared by all tasks; for chunks of resamples (50, fewer
    when the tasks have many classes, so that a chunk's temporaries stay near ``_TASK_CHUNK_ELEMENTS``),
    every class cell's weighted sums of ``values`` (N, d), (T, C, B, d), and its weight totals, (T, C, B),
    go through ``to_means`` to the resampled class means (T, C, B, d) (:func:`_median_cos_of_means`)."""
    T, C, d = lab.T, lab.C, values.shape[1]
    P = C * (C - 1) // 2
    per_resample = T * P * d + min((T * P) ** 2, _STACKED_COS_ELEMENTS) + T * C * (d + 1)
    step = int(max(1, min(50, _TASK_CHUNK_ELEMENTS // per_resample)))
    sample, valid = _class_cells(lab, values.device)                      # (T, C, n)
    cells = values[sample] * valid[..., None]                             # (T, C, n, d), zero rows on padding
    inside = valid[..., None].to(weights.dtype)                           # (T, C, n, 1)
    meds = []
    for b in range(0, weights.shape[0], step):
        w = weights[b:b + step]
        wb = w.T[sample].transpose(-1, -2)          # (T, C, B, n) without a copy; padding meets zero rows
        sums = wb @ cells                                                 # (T, C, B, d)
        mu = to_means(sums, (wb @ inside)[..., 0])                        # totals (T, C, B)
        meds.append(_median_cos_of_means(mu, lab, nan_aware=nan_aware))
    return torch.cat(meds)


def _median_cos_of_means(mu: torch.Tensor, lab, *, nan_aware: bool) -> torch.Tensor:
    """(B, pairs) median |cos| between the decision axes of every pair of tasks a < b (``triu_indices``
    order) from resampled class means ``mu`` (T, C, B, d); padded classes' axes are left out, and with
    ``nan_aware`` so are axes of a class that a resample left empty (NaN means). One (T P) x (T P)
    product of the stacked axes per resample up to ``_STACKED_COS_ELEMENTS`` entries, else pair by
    pair on each task's own axes."""
    T, C, B, d = mu.shape
    pa = torch.triu_indices(C, C, 1, device=mu.device)
    P = pa.shape[1]
    real = (lab.mask[:, pa[0]] & lab.mask[:, pa[1]])                      # (T, P)
    ta, tb = torch.triu_indices(T, T, 1, device=mu.device)
    u = mu[:, pa[1]] - mu[:, pa[0]]                                       # (T, P, B, d)
    u = u / u.norm(dim=-1, keepdim=True)
    if (T * P) ** 2 > _STACKED_COS_ELEMENTS:
        axes = [u[t][real[t]].transpose(0, 1) for t in range(T)]          # (B, P_t, d)
        out = []
        for a, b in zip(ta.tolist(), tb.tolist()):
            cos = torch.bmm(axes[a], axes[b].transpose(1, 2)).abs().flatten(1)
            out.append((cos.nanmedian(dim=1) if nan_aware else cos.median(dim=1)).values)
        return torch.stack(out, 1) if out else mu.new_zeros(B, 0)
    u = u.masked_fill(~real[:, :, None, None], float("nan")).permute(2, 0, 1, 3).reshape(-1, T * P, d)
    cos = (u @ u.transpose(1, 2)).view(-1, T, P, T, P)[:, ta, :, tb].abs_()   # (pairs, B, P, P): a < b only
    cos = cos.reshape(cos.shape[0], cos.shape[1], P * P)
    plain = bool(real.all()) and not nan_aware                            # no padded axes: plain medians
    return (cos.median(dim=-1) if plain else cos.nanmedian(dim=-1)).values.T


def _pair_intervals(med: torch.Tensor, T: int, alpha: float) -> torch.Tensor:
    """(T, T, 2) percentile intervals from (B, pairs) medians (NaN resamples left out), NaN off a < b."""
    probs = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=F64, device=med.device)
    ta, tb = torch.triu_indices(T, T, 1, device=med.device)
    out = torch.full((T, T, 2), float("nan"), dtype=F64, device=med.device)
    out[ta, tb] = torch.nanquantile(med, probs, dim=0).T
    return out


def _wild_median_abs_cos_tasks(x: torch.Tensor, lab, *, resamples: int = 200, alpha: float = 0.05,
                               seed: int = 0) -> torch.Tensor:
    """The ``wild`` scheme: one wild bootstrap serves every pair.

    Samples are fitted by an additive model of all tasks' class effects; resample r shifts each class mean
    by its samples' residuals times shared Rademacher signs (scaled by sqrt(N / (N - rank))). Cost is
    linear in T. Seeded by ``seed``. ``x`` (N, d) float64, ``lab`` validated. NaN off the upper triangle.
    """
    x = x - x.mean(dim=0, keepdim=True)
    T, N = lab.idx.shape
    onehot = lab.onehot()                                                 # (T, N, C)
    design = onehot.permute(1, 0, 2).reshape(N, T * lab.C)
    coef = torch.linalg.pinv(design.T @ design, hermitian=True) @ (design.T @ x)
    rank = int(torch.linalg.matrix_rank(design.T @ design, hermitian=True))
    resid = (x - design @ coef) * math.sqrt(N / max(1, N - rank))
    counts = lab.counts.to(F64)
    means = (onehot.transpose(1, 2) @ x) / counts.clamp_min(1)[..., None]  # (T, C, d)
    gen = torch.Generator().manual_seed(int(seed))
    signs = (torch.randint(0, 2, (resamples, N), generator=gen) * 2 - 1).to(device=x.device, dtype=F64)
    med = _resampled_medians(lab, signs, resid, nan_aware=False,
                             to_means=lambda dev, _: means[:, :, None] + dev / counts.clamp_min(1)[..., None, None])
    return _pair_intervals(med, T, alpha)


#: added to ``seed`` for the ``iid`` scheme's generator, so that its draws are not the ``wild`` signs'
_IID_SEED_OFFSET = 0x9E3779B9


def _iid_median_abs_cos_tasks(x: torch.Tensor, lab, *, resamples: int = 200, alpha: float = 0.05,
                              seed: int = 0) -> torch.Tensor:
    """The ``iid`` scheme: one bootstrap of the samples (multinomial weights shared by all tasks) serves every pair.

    Class means are reweighted means, so joint cell sizes vary as between random draws. A class left empty
    drops out of that resample. Cost linear in T. Seeded by ``seed + _IID_SEED_OFFSET``. NaN off the upper
    triangle.
    """
    x = x - x.mean(dim=0, keepdim=True)
    T, N = lab.idx.shape
    gen = torch.Generator().manual_seed(int(seed) + _IID_SEED_OFFSET)
    draws = torch.randint(N, (resamples, N), generator=gen)
    weights = torch.zeros(resamples, N, dtype=F64).scatter_add_(1, draws, torch.ones(resamples, N, dtype=F64))
    weights = weights.to(x.device)
    med = _resampled_medians(lab, weights, x, nan_aware=True,             # an empty class's mean: NaN
                             to_means=lambda sums, total: sums / total[..., None])
    return _pair_intervals(med, T, alpha)
