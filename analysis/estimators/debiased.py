"""The debiased estimator of dir-CDNV and CDNV (the default; docs, Methods, Estimators).

One kernel, batched over T tasks labelling the same samples and B 0/1 sample masks (the interval
replicates), float64, no loop over pairs, tasks or masks (chunks only). Per class, Omega estimates the
covariance of the class mean without bias (iid: from the residuals; strata: from the within-cell
residuals of the other labelings' joint cells); Sigma = residual scatter / n + Omega. Numerator:
delta' Sigma_i delta less tr(Sigma Omega) terms; squared gap less tr Omega_i + tr Omega_j; then
second-order ratio terms.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch

from dncsim.analysis.estimators.core import _TASK_CHUNK_ELEMENTS, F64, _cell_layout, pair_masks
from dncsim.analysis.estimators.result import GeometryEstimate
from dncsim.analysis.geometry import UndefinedGeometry
from dncsim.common import DncsimError

DESIGNS = ("auto", "iid", "strata")
#: above this many elements of a task's (C, d, d) class matrices the trace terms come from SKETCH_PROBES
#: seeded Rademacher probes: tr(M_a M_b) ~ mean over probes z of (M_a z) . (M_b z), unbiased
SKETCH_ELEMENTS = 1 << 27
SKETCH_PROBES = 64
#: a pair is flagged "barely resolved" when the second-order terms move it by more than this share
SECOND_ORDER_SHARE = 0.25


def _class_layout(idx, C):
    """(T, C, n) sample indices of every task's classes, padded, and their validity mask."""
    T, N = idx.shape
    sample, valid = _cell_layout(idx, torch.zeros(T, 1, N, dtype=torch.bool, device=idx.device), C)
    return sample[:, 0, 0::2].contiguous(), valid[:, 0, 0::2].contiguous()


def _cell_sum(vals, cellc, K):
    """Sums of ``vals`` (t, b, C, n, ...) over each (task, mask, class, cell) (cells ``cellc`` (t, C, n) in
    [0, K)): (t, b, C, K, ...), and the flat keys (t, b, C, n) that gather them back to the samples."""
    t, b, C, n = vals.shape[:4]
    rest = vals.shape[4:]
    base = torch.arange(t * b * C, device=vals.device).view(t, b, C, 1) * K
    key = base + cellc[:, None]
    out = torch.zeros((t * b * C * K,) + rest, dtype=vals.dtype, device=vals.device)
    out.index_add_(0, key.flatten(), vals.reshape((-1,) + rest))
    return out.view((t, b, C, K) + rest), key


def _kappa(mk, nn):
    """Per cell: m_k / ((m_k - 1) n_c^2), 0 for cells of fewer than 2 samples."""
    return torch.where(mk >= 2, mk / ((mk - 1).clamp_min(1) * nn.square().clamp_min(1)[..., None]),
                       torch.zeros_like(mk))


def _traces(Xc, cellc, K, w, strata, Z=None):
    """tau (t, b, C, C) = tr(Sigma_a Omega_b) (diagonal of iid tasks: the unbiased tr(Sigma^2) / n),
    oo = tr(Omega_a Omega_b), from the (d, d) matrices of every class under masks ``w`` (t, b, C, n);
    with probes ``Z`` (d, s), from their products with the s probes instead (unbiased sketch)."""
    cnt = w.sum(-1)
    m = torch.einsum("tbcn,tcnd->tbcd", w, Xc) / cnt.clamp_min(1)[..., None]
    r = (Xc.unsqueeze(1) - m.unsqueeze(-2)) * w[..., None]                # residuals, zero off the mask
    rt = r.transpose(-1, -2)
    root = 1.0 if Z is None else math.sqrt(Z.shape[1])
    Af = (rt @ r if Z is None else rt @ (r @ Z)).flatten(-2) / root       # residual scatter A (or A Z / sqrt s)
    nO = (cnt * (cnt - 1)).clamp_min(1)                                   # iid: Omega = A / (n (n - 1))
    F = Af @ Af.transpose(-1, -2)                                         # tr(A_a A_b)
    tau = F / ((cnt - 1)[..., :, None] * nO[..., None, :])                # iid: Sigma = A / (n - 1)
    oo = F / (nO[..., :, None] * nO[..., None, :])
    if bool(strata.any()):
        sums, key = _cell_sum(w[..., None] * Xc.unsqueeze(1), cellc, K)
        mk, _ = _cell_sum(w, cellc, K)
        cm = (sums / mk.clamp_min(1)[..., None]).flatten(0, 3)[key]       # each sample's cell mean
        wr = (Xc.unsqueeze(1) - cm) * w[..., None]
        ka = _kappa(mk, cnt).flatten()[key]
        wk = (wr * ka[..., None]).transpose(-1, -2)
        Of = (wk @ wr if Z is None else wk @ (wr @ Z)).flatten(-2) / root  # Omega of the strata
        Sf = Af / cnt.clamp_min(1)[..., None] + Of
        st = strata[:, None, None, None]
        tau = torch.where(st, Sf @ Of.transpose(-1, -2), tau)
        oo = torch.where(st, Of @ Of.transpose(-1, -2), oo)
    n1 = cnt - 1
    r2 = r.square().sum(-1)
    h, h2 = r2.sum(-1), r2.square().sum(-1)
    hy = n1 / (cnt * (cnt - 2) * (cnt - 3)) * (n1 * (cnt - 2) * F.diagonal(dim1=-2, dim2=-1) / n1.square()
                                                + (h / n1).square() - cnt * h2 / n1)
    diag = torch.where(strata[:, None, None], tau.diagonal(dim1=-2, dim2=-1), hy / cnt)
    return tau.diagonal_scatter(diag, dim1=-2, dim2=-1), oo


def _chunk_kernel(Xc, cellc, K, w, strata, tau, oo):
    """The estimate for a chunk: ``Xc`` (t, C, n, d) gathered samples (zero padding), ``cellc`` (t, C, n)
    cell index in [0, K) (strata tasks), ``w`` (t, b, C, n) 0/1 masks, ``strata`` (t,) bool, the trace
    terms ``tau``, ``oo`` (t, b or 1, C, C) (:func:`_traces`). Every other term from the projections of
    the samples on the class means. Returns dir, cdnv, D, first-order dir N / D^2, numerator N (t, b, C, C)
    and var v (t, b, C)."""
    t, b, C, n = w.shape
    cnt = w.sum(-1)                                                       # (t, b, C)
    m = torch.einsum("tbcn,tcnd->tbcd", w, Xc) / cnt.clamp_min(1)[..., None]
    P = torch.einsum("tcnd,tbjd->tbcnj", Xc, m)                           # x_a . m_j (t, b, i, n, j)
    mm = m @ m.transpose(-1, -2)
    mmi = mm.diagonal(dim1=-2, dim2=-1)
    own = P.diagonal(dim1=2, dim2=4).transpose(-1, -2)                    # x_a . m_i (t, b, i, n)
    p = (P - own[..., None] - mm[..., :, None, :] + mmi[..., :, None, None]) * w[..., None]   # r_a . delta_ij
    r2 = ((Xc.square().sum(-1)).unsqueeze(1) - 2 * own + mmi[..., None]) * w                # |r_a|^2
    h, h2 = r2.sum(-1), r2.square().sum(-1)
    pA = p.square().sum(-2)                                               # delta' (scatter of class i) delta
    cross = (r2.unsqueeze(-2) @ p).squeeze(-2)                            # g_i . delta_ij
    nn = cnt
    Nq = pA / (nn - 1)[..., None]
    Wq = pA / (nn * (nn - 1))[..., None]
    trO = h / (nn * (nn - 1))
    v = h / (nn - 1)
    if bool(strata.any()):
        mk, key = _cell_sum(w, cellc, K)
        kap = _kappa(mk, nn)
        ka = kap.flatten()[key] * w
        psum, _ = _cell_sum(p, cellc, K)
        q = p - (psum / mk.clamp_min(1)[..., None]).flatten(0, 3)[key] * w[..., None]   # w_a . delta_ij
        Wq_s = (ka[..., None] * q.square()).sum(-2)
        xx = Xc.square().sum(-1).unsqueeze(1) * w
        sxx, _ = _cell_sum(xx, cellc, K)
        sums, _ = _cell_sum(w[..., None] * Xc.unsqueeze(1), cellc, K)
        trO_s = (kap * (sxx - sums.square().sum(-1) / mk.clamp_min(1))).sum(-1)
        st = strata[:, None, None]
        Wq = torch.where(st[..., None], Wq_s, Wq)
        Nq = torch.where(st[..., None], pA / nn.clamp_min(1)[..., None] + Wq_s, Nq)
        trO = torch.where(st, trO_s, trO)
        v = torch.where(st, h / nn.clamp_min(1) + trO_s, v)
    tii = tau.diagonal(dim1=-2, dim2=-1)
    g2 = mmi[..., :, None] + mmi[..., None, :] - 2 * mm
    D = g2 - trO[..., :, None] - trO[..., None, :]
    ni = nn[..., :, None]
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


def debiased_kernel(x, idx, cell, strata, W, C: int, K: int, traces: str = "full"):
    """The debiased estimate for T tasks and B masks: ``x`` (N, d) centred float64, ``idx`` (T, N) class
    index (negative: not in the task), ``cell`` (T, N) cell index in [0, K) (0 for iid tasks), ``strata``
    (T,) bool, ``W`` (T, B, N) 0/1 masks. ``traces``: 'full' takes the trace terms tr(Sigma Omega),
    tr(Omega Omega) of every mask from mask 0 (the jackknife's replicates), 'each' computes them per mask.
    Returns dir, cdnv, d2, first-order dir, numerator (T, B, C, C) and var (T, B, C); NaN where
    undefined (padding classes included)."""
    T, B, N = W.shape
    d = x.shape[1]
    sample, valid = _class_layout(idx, C)                                 # (T, C, n)
    n = sample.shape[-1]
    cellc = cell.gather(1, sample.view(T, -1)).view(T, C, n).clamp(0, K - 1)
    strat = bool(strata.any())
    Z = None
    if C * d * d > SKETCH_ELEMENTS:        # traces from random probes rather than (C, d, d) matrices
        gen = torch.Generator().manual_seed(0)
        Z = (torch.randint(0, 2, (d, SKETCH_PROBES), generator=gen) * 2 - 1).to(device=x.device, dtype=F64)
    width = d if Z is None else SKETCH_PROBES
    per_trace = 4 * C * d * width + 3 * C * n * d + 2 * C * K * d * strat
    per_mask = 6 * C * n * C + 2 * C * n * d + (2 * C * K * (d + C) + 4 * C * n * C) * strat
    out = [torch.full((T, B, C, C), float("nan"), dtype=F64, device=x.device) for _ in range(5)]
    var = torch.full((T, B, C), float("nan"), dtype=F64, device=x.device)
    tb = max(1, min(T, _TASK_CHUNK_ELEMENTS // max(1, per_trace + B * per_mask)))      # tasks per chunk
    bstep = max(1, min(B, _TASK_CHUNK_ELEMENTS // max(1, tb * per_mask)))              # masks per chunk
    for t0 in range(0, T, tb):
        ts = slice(t0, min(T, t0 + tb))
        k = ts.stop - ts.start
        Xc = x[sample[ts]] * valid[ts][..., None]
        wall = W[ts].gather(2, sample[ts].view(k, 1, -1).expand(k, B, -1)).view(k, B, C, n) * valid[ts][:, None]
        held = _traces(Xc, cellc[ts], K, wall[:, :1], strata[ts], Z) if traces == "full" else None
        for s in range(0, B, bstep):
            bs = slice(s, min(B, s + bstep))
            w = wall[:, bs]
            tau, oo = held if held is not None else _traces(Xc, cellc[ts], K, w, strata[ts], Z)
            res = _chunk_kernel(Xc, cellc[ts], K, w, strata[ts], tau, oo)
            for o, r in zip(out, res[:5]):
                o[ts, bs] = r
            var[ts, bs] = res[5]
    return (*out, var)


def _pair_summaries(dc, cd, d2, mask):
    """Per (task, mask): mean dir-CDNV over defined ordered pairs, mean CDNV and mean gap over defined
    unordered pairs of the task's real classes (``mask`` (T, C)), and the count of undefined pairs."""
    off, upper = pair_masks(mask)
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
