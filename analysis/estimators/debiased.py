"""The debiased estimator of dir-CDNV and CDNV (the default; docs, Methods, Estimators).

One kernel, batched over T tasks labelling the same samples and B 0/1 sample masks (the interval
replicates), float64, no loop over pairs, tasks or masks (chunks only). Per class: Omega, an unbiased
estimate of the covariance of the class mean (iid: from the residuals; strata: from the within-cell
residuals of the joint cells of the other labelings), Sigma = residual scatter / n + Omega; the
numerator delta' Sigma_i delta less the trace terms tr(Sigma Omega) (iid: a pair-leave-out form with
an unbiased tr(Sigma^2)); the squared gap less tr Omega_i + tr Omega_j; second-order ratio terms.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from dncsim.analysis.estimators.core import _TASK_CHUNK_ELEMENTS, F64, _cell_layout
from dncsim.analysis.estimators.result import GeometryEstimate
from dncsim.analysis.geometry import UndefinedGeometry
from dncsim.common import DncsimError

DESIGNS = ("auto", "iid", "strata")
#: a pair is flagged "barely resolved" when the second-order terms move it by more than this share
SECOND_ORDER_SHARE = 0.25


def _class_layout(idx, C):
    """(T, C, n) sample indices of every task's classes, padded, and their validity mask."""
    T, N = idx.shape
    sample, valid = _cell_layout(idx, torch.zeros(T, 1, N, dtype=torch.bool, device=idx.device), C)
    return sample[:, 0, 0::2].contiguous(), valid[:, 0, 0::2].contiguous()


def _chunk_kernel(Xc, valid, cellc, K, w, strata):
    """The estimate for a chunk: ``Xc`` (t, C, n, d) gathered samples (zero padding), ``valid`` (t, C, n),
    ``cellc`` (t, C, n) cell index in [0, K) (strata tasks), ``w`` (t, b, C, n) 0/1 masks, ``strata`` (t,)
    bool. Returns dir, cdnv, D (t, b, C, C), first-order dir N / D^2, numerator N, var v (t, b, C)."""
    t, b, C, n = w.shape
    cnt = w.sum(-1)                                                       # (t, b, C)
    S = (w.unsqueeze(-2) @ Xc.unsqueeze(1)).squeeze(-2)                   # (t, b, C, d)
    m = S / cnt.clamp_min(1)[..., None]
    r = (Xc.unsqueeze(1) - m.unsqueeze(-2)) * w[..., None]                # (t, b, C, n, d), zero off the mask
    A = r.transpose(-1, -2) @ r                                           # residual scatter (t, b, C, d, d)
    r2 = r.square().sum(-1)                                               # |r_a|^2
    h, h2 = r2.sum(-1), r2.square().sum(-1)
    g = (r2.unsqueeze(-2) @ r).squeeze(-2)                                # sum |r|^2 r (t, b, C, d)
    nn = cnt
    Om = A / (nn * (nn - 1)).clamp_min(1)[..., None, None]
    if bool(strata.any()):
        oh = torch.nn.functional.one_hot(cellc, K).to(F64) * valid[..., None]          # (t, C, n, K)
        ohw = oh.unsqueeze(1) * w[..., None]                                           # (t, b, C, n, K)
        mk = ohw.sum(-2)                                                               # (t, b, C, K)
        cm = (ohw.transpose(-1, -2) @ Xc.unsqueeze(1)) / mk.clamp_min(1)[..., None]    # cell means (t, b, C, K, d)
        wr = (Xc.unsqueeze(1) - oh.unsqueeze(1) @ cm) * w[..., None]                   # within-cell residuals
        kap = torch.where(mk >= 2, mk / ((mk - 1).clamp_min(1) * nn.square().clamp_min(1)[..., None]),
                          torch.zeros_like(mk))
        ka = (oh.unsqueeze(1) @ kap[..., None]).squeeze(-1)                            # (t, b, C, n)
        Om_s = (wr * ka[..., None]).transpose(-1, -2) @ wr
        Om = torch.where(strata[:, None, None, None, None], Om_s, Om)
    Sig = A / nn.clamp_min(1)[..., None, None] + Om
    v = Sig.diagonal(dim1=-2, dim2=-1).sum(-1)
    trO = Om.diagonal(dim1=-2, dim2=-1).sum(-1)
    Sf, Of = Sig.flatten(-2), Om.flatten(-2)
    tau = Sf @ Of.transpose(-1, -2)                                       # tr(Sigma_a Omega_b)
    oo = Of @ Of.transpose(-1, -2)                                        # tr(Omega_a Omega_b)
    # iid: tr(Sigma_a^2) unbiased (Himeno & Yamada 2014) for the diagonal
    n1 = nn - 1
    hy = n1 / (nn * (nn - 2) * (nn - 3)) * (n1 * (nn - 2) * A.square().sum((-1, -2)) / n1.square()
                                              + (h / n1).square() - nn * h2 / n1)
    tii = torch.where(strata[:, None, None], tau.diagonal(dim1=-2, dim2=-1), hy / nn)
    delta = m.unsqueeze(-3) - m.unsqueeze(-2)                             # (t, b, i, j, d): m_j - m_i
    Nq = ((delta @ Sig) * delta).sum(-1)                                  # delta' Sigma_i delta
    Wq = ((delta @ Om) * delta).sum(-1)                                   # delta' Omega_i delta
    g2 = delta.square().sum(-1)
    D = g2 - trO[..., :, None] - trO[..., None, :]
    ni = nn[..., :, None]
    cross = (delta * g.unsqueeze(-2)).sum(-1)
    hv = (h2 / (nn - 2).square() - h.square() / (nn * (nn - 2).square()))[..., :, None]
    N_iid = Nq + (2 * cross / (ni - 2) + hv) / (ni - 1) - tau - (tii * nn / (nn - 2))[..., :, None]
    N_str = Nq - tii[..., :, None] - tau
    Nn = torch.where(strata[:, None, None, None], N_str, N_iid)
    need = torch.where(strata, 2, 4)[:, None, None]
    ok_c = cnt >= need
    eye = torch.eye(C, dtype=torch.bool, device=w.device)
    ok = ok_c[..., :, None] & ok_c[..., None, :] & ~eye & (D > 0)
    nan = torch.full_like(D, float("nan"))
    Dn = torch.where(ok, D, nan)
    OmT = trO[..., :, None] + trO[..., None, :]
    ood = oo.diagonal(dim1=-2, dim2=-1)
    O2 = ood[..., :, None] + 2 * oo + ood[..., None, :]                   # tr((Omega_i + Omega_j)^2)
    dOd = (Wq + Wq.transpose(-1, -2) - O2).clamp_min(0)                   # delta' (Omega_i + Omega_j) delta, debiased
    VD = 4 * dOd + 2 * O2                                                 # variance of the squared-gap estimate
    SO = tii[..., :, None] + tau
    Q = Dn.square() + 3 * VD
    CND = 4 * Nn * dOd / Dn + 2 * SO * O2 / OmT
    dir_ = Nn / Q + 2 * Dn * CND / Q.square()
    cd = (v[..., :, None] + v[..., None, :]) * Dn / (Dn.square() + VD)
    return dir_, cd, Dn, Nn / Dn.square(), torch.where(ok, Nn, nan), v


def debiased_kernel(x, idx, cell, strata, W, C: int, K: int):
    """The debiased estimate for T tasks and B masks: ``x`` (N, d) centred float64, ``idx`` (T, N) class
    index (negative: not in the task), ``cell`` (T, N) cell index in [0, K) (0 for iid tasks), ``strata``
    (T,) bool, ``W`` (T, B, N) 0/1 masks. Returns dir, cdnv, d2, first-order dir, numerator (T, B, C, C)
    and var (T, B, C); NaN where undefined (padding classes included)."""
    T, B, N = W.shape
    d = x.shape[1]
    sample, valid = _class_layout(idx, C)                                 # (T, C, n)
    n = sample.shape[-1]
    cellc = cell.gather(1, sample.view(T, -1)).view(T, C, n).clamp(0, K - 1)
    per = 3 * C * n * d + 5 * C * d * d + 3 * C * C * d + (C * n * K + 2 * C * K * d) * bool(strata.any())
    step = max(1, _TASK_CHUNK_ELEMENTS // max(1, per))
    out = [torch.full((T, B, C, C), float("nan"), dtype=F64, device=x.device) for _ in range(5)]
    var = torch.full((T, B, C), float("nan"), dtype=F64, device=x.device)
    tb = min(T, max(1, step // B))                                        # tasks per chunk
    bstep = B if tb > 1 else min(B, step)                                 # masks per chunk
    for t0 in range(0, T, tb):
        ts = slice(t0, min(T, t0 + tb))
        k = ts.stop - ts.start
        Xc = x[sample[ts]] * valid[ts][..., None]
        for s in range(0, B, bstep):
            bs = slice(s, min(B, s + bstep))
            w = W[ts, bs].gather(2, sample[ts].view(k, 1, -1).expand(k, bs.stop - bs.start, -1))
            w = w.view(k, -1, C, n) * valid[ts][:, None]
            res = _chunk_kernel(Xc, valid[ts], cellc[ts], K, w, strata[ts])
            for o, r in zip(out, res[:5]):
                o[ts, bs] = r
            var[ts, bs] = res[5]
    return (*out, var)


def _pair_summaries(dc, cd, d2, mask):
    """Per (task, mask): mean dir-CDNV over defined ordered pairs, mean CDNV and mean gap over defined
    unordered pairs of the task's real classes (``mask`` (T, C)), and the count of undefined pairs."""
    C = mask.shape[1]
    real = mask[:, :, None] & mask[:, None, :]
    off = real & ~torch.eye(C, dtype=torch.bool, device=mask.device)
    upper = off & torch.ones(C, C, dtype=torch.bool, device=mask.device).triu(1)
    mean_d = torch.nanmean(dc.masked_fill(~off[:, None], float("nan")).flatten(2), dim=2)
    mean_c = torch.nanmean(cd.masked_fill(~upper[:, None], float("nan")).flatten(2), dim=2)
    gaps = d2.sqrt().masked_fill(~upper[:, None], float("nan")).flatten(2)
    defined = torch.isfinite(gaps).sum(2)
    return mean_d, mean_c, torch.nanmean(gaps, dim=2), upper.sum((1, 2))[:, None] - defined


def _flags(first, dc, num, mask):
    """(T,) counts of ordered pairs with a negative numerator and of barely resolved ones (the second-order
    terms move the estimate by more than SECOND_ORDER_SHARE of the first-order one), mask 0."""
    C = mask.shape[1]
    off = mask[:, :, None] & mask[:, None, :] & ~torch.eye(C, dtype=torch.bool, device=mask.device)
    defined = off & torch.isfinite(dc[:, 0])
    neg = (defined & (num[:, 0] < 0)).sum((1, 2))
    barely = (defined & ((dc[:, 0] / first[:, 0] - 1).abs() > SECOND_ORDER_SHARE)).sum((1, 2))
    return neg, barely


# --- designs ----------------------------------------------------------------------------------------------

def _cells_of(keys: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Cell index (N,) of each sample from its stratum ``keys`` (N,) or (L, N) (rows: other labelings),
    numbered over the ``members``; 0 elsewhere."""
    k = keys if keys.dim() == 2 else keys[None]
    cell = torch.zeros(k.shape[1], dtype=torch.long, device=k.device)
    if bool(members.any()):
        cell[members] = torch.unique(k[:, members].T, dim=0, return_inverse=True)[1]
    return cell


def _cell_table(y: torch.Tensor, cell: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """(classes, cells) sample counts of the members."""
    yc, cc = y[members], cell[members]
    K = int(cc.max()) + 1 if cc.numel() else 1
    Cy = int(yc.max()) + 1 if yc.numel() else 1
    return torch.bincount(yc * K + cc, minlength=Cy * K).view(Cy, K)


def resolve_design(y: torch.Tensor, keys: Optional[torch.Tensor], design: str, members=None):
    """(cell (N,), uses strata) for one task: class index ``y`` (N,), stratum ``keys`` ((N,) or (L, N), or
    None), ``design`` 'iid', 'strata' (keys required, every (class, cell) with samples holds >= 2) or
    'auto' (strata when the (class, cell) table is exactly balanced with >= 2 per cell, else iid)."""
    if design not in DESIGNS:
        raise DncsimError(f"design must be one of {', '.join(DESIGNS)}; got {design!r}")
    members = (y >= 0) if members is None else members
    zero = torch.zeros_like(y, dtype=torch.long)
    if design == "iid" or keys is None:
        if design == "strata":
            raise DncsimError("design 'strata' needs strata (the other labelings of the samples)")
        return zero, False
    cell = _cells_of(keys, members)
    table = _cell_table(y.clamp_min(0), cell, members)
    if design == "strata":
        small = table[(table > 0) & (table < 2)]
        if small.numel():
            raise DncsimError("design 'strata' needs at least 2 samples in every (class, stratum) cell; "
                              f"{small.numel()} cell(s) hold 1")
        return cell, True
    if table.numel() > table.shape[0] and int(table.min()) >= 2 and int(table.min()) == int(table.max()):
        return cell, True
    return zero, False


def task_designs(idx: torch.Tensor, design: str):
    """For T tasks labelling the same samples (``idx`` (T, N), negative: not in the task): each task's cells
    (T, N), uses-strata (T,) bool and cell count K. A task's strata are the joint cells of the other tasks'
    labels (with 'not in the task' as a level) on its samples."""
    T, N = idx.shape
    cells = torch.zeros(T, N, dtype=torch.long, device=idx.device)
    use = torch.zeros(T, dtype=torch.bool, device=idx.device)
    for t in range(T):                        # one unique per task: setting up the design, not the arithmetic
        others = torch.cat([idx[:t], idx[t + 1:]])
        c, u = resolve_design(idx[t], others if T > 1 else None, design)
        cells[t], use[t] = c, u
    return cells, use, int(cells.max()) + 1


# --- public API -------------------------------------------------------------------------------------------

def _estimates(lab, out, use, ok_counts) -> List:
    dc, cd, d2, first, num, var = out
    neg, barely = _flags(first, dc, num, lab.mask)
    _, _, _, undefined = _pair_summaries(dc[:, :1], cd[:, :1], d2[:, :1], lab.mask)
    res = []
    for t, c in enumerate(lab.mask.sum(1).tolist()):
        counts = lab.counts[t, :c]
        if not ok_counts[t]:
            need = 2 if bool(use[t]) else 4
            k = int(counts.argmin())
            res.append(UndefinedGeometry(f"class {int(lab.classes[t, k])} has {int(counts[k])} sample(s); the "
                                         f"debiased estimator needs at least {need} per class"))
            continue
        flags = {"undefined_pairs": int(undefined[t, 0]), "negative_numerator_pairs": int(neg[t]),
                 "barely_resolved_pairs": int(barely[t])}
        res.append(GeometryEstimate(classes=lab.classes[t, :c], counts=counts, var=var[t, 0, :c],
                                    d2=d2[t, 0, :c, :c], cdnv=cd[t, 0, :c, :c], dir_cdnv=dc[t, 0, :c, :c],
                                    estimator="debiased", design="strata" if bool(use[t]) else "iid", flags=flags))
    return res


def debiased_tasks(x, lab, designs, W=None):
    """Kernel outputs for validated tasks ``lab`` on centred ``x`` with ``designs`` (cells (T, N), uses
    strata (T,), K) and masks ``W`` (default: each task's samples): (out, ok_counts)."""
    cells, use, K = designs
    if W is None:
        W = (lab.idx >= 0).to(F64)[:, None]
    out = debiased_kernel(x, lab.idx, cells, use, W, lab.C, K)
    need = torch.where(use, 2, 4)
    counts = lab.counts.masked_fill(~lab.mask, 1 << 30)
    return out, (counts.min(1).values >= need).tolist()


def single_design(lab, strata, design: str):
    """The designs triple of one task (``lab`` with T = 1) from its ``strata`` (raw, or None)."""
    from dncsim.analysis.estimators.validate import strata_keys

    keys = strata_keys(strata, lab.idx.shape[1])
    cell, use = resolve_design(lab.idx[0], None if keys is None else keys.to(lab.idx.device), design)
    return cell[None], torch.tensor([use], device=lab.idx.device), int(cell.max()) + 1


def debiased_geometry_tasks(features, labels, *, design: str = "auto") -> list:
    """The debiased estimate of T tasks labelling the same ``features`` (N, d) (``labels`` (T, N), negative:
    not in the task); a task's strata are the other tasks' joint cells (``design`` as :func:`resolve_design`).
    Per task a GeometryEstimate, or the UndefinedGeometry a task with too few samples per class gives."""
    from dncsim.analysis.estimators.validate import centred_tasks

    x, lab = centred_tasks(features, labels)
    designs = task_designs(lab.idx, design)
    out, ok = debiased_tasks(x, lab, designs)
    return _estimates(lab, out, designs[1], ok)


def debiased_geometry(features, labels, *, strata=None, design: str = "auto") -> GeometryEstimate:
    """The debiased estimate (module docstring) of ``features`` (N, d) with ``labels`` (N,). ``strata``:
    (N,) stratum keys or (L, N) other labelings of the same samples; ``design`` 'auto' uses them when they
    form an exactly balanced design with >= 2 samples per (class, stratum), 'strata' always, 'iid' never.
    Needs at least 4 samples per class (iid) or 2 (strata)."""
    from dncsim.analysis.estimators.validate import centred_task

    x, lab = centred_task(features, labels)
    designs = single_design(lab, strata, design)
    out, ok = debiased_tasks(x, lab, designs)
    est = _estimates(lab, out, designs[1], ok)[0]
    if isinstance(est, Exception):
        raise est
    return est
