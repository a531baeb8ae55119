"""Few-shot nearest-class-centre (NCC) error: random episodes, and the authors' protocol.

``ncc_fewshot_error`` estimates err^NCC_{m,C'}: each episode draws ``ways`` classes and ``shots`` support
samples per class (their mean is the centre); every other sample of those classes is a query; the error
is class-balanced, (1/C') sum_i P(h(x) != i). Supports for several shot counts are nested (the m-shot
support is a prefix of the 2m-shot one). ``ncc_reference_protocol``: the authors' ``NCCCEvaluator``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch

from dncsim.analysis.inputs import as_features, as_labels
from dncsim.common import DncsimError

__all__ = ["FewShotResult", "ncc_fewshot_error", "ncc_reference_protocol", "reference_class_pairs"]

# Elements per episode chunk of the gathered (episodes, ways, n, d) query block.
_CHUNK_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class FewShotResult:
    """Few-shot NCC errors for S shot counts over E episodes.

    ``shots`` (S,) int64; ``error`` (S,) mean episode error; ``error_std`` (S,) its standard
    deviation over episodes (ddof=1; 0 for one episode); ``episode_errors`` (S, E);
    ``classes`` (E, ways) the label values drawn in each episode (pass it to
    ``ncc_error_bound(geom, m, classes=...)`` to bound the same subsets).
    """

    shots: torch.Tensor
    error: torch.Tensor
    error_std: torch.Tensor
    episode_errors: torch.Tensor
    classes: torch.Tensor


def _int_list(values, name: str) -> List[int]:
    vals = [values] if isinstance(values, int) else list(values)
    if not vals or any(int(v) != v or int(v) < 1 for v in vals):
        raise DncsimError(f"{name} must be positive integers; got {vals}")
    return [int(v) for v in vals]


def ncc_fewshot_error(features, labels, *, shots: Union[int, Sequence[int]], ways: Optional[int] = 2,
                      episodes: int = 200, seed: int = 0, dtype: torch.dtype = torch.float64,
                      device=None) -> FewShotResult:
    """m-shot, ``ways``-way NCC error of ``features`` (N, d) with ``labels`` (N,), over random episodes.

    ``shots``: one or several support sizes m (nested supports). ``ways``: classes per episode
    (None: all classes, one C-way problem per episode). Queries are every non-support sample of the
    episode's classes, so each class needs more than max(shots) samples (DncsimError otherwise).
    Distances are squared Euclidean in ``dtype``; ties go to the lower label. Deterministic for a
    given ``seed`` (a private torch.Generator; the global RNG is untouched).
    """
    x = as_features(features, device=device)
    y = as_labels(labels, x.shape[0], device=x.device)
    if torch.unique(y).numel() < 2:
        raise DncsimError(f"ways must be between 2 and the number of classes (1); got {ways}")
    result = ncc_fewshot_error_tasks(x, y[None], shots=shots, ways=ways, episodes=episodes, seeds=[seed],
                                     dtype=dtype)[0]
    if isinstance(result, Exception):
        raise result
    return result


def reference_class_pairs(n_classes: int, seeds: Sequence[int], ways: int = 2) -> List[List[int]]:
    """Class subsets as the authors draw them: ``random.seed(s); random.sample(range(C), ways)``.

    Returned unsorted, in the order ``random.sample`` gives (their bound is order-free; their NCC
    evaluation sorts the subset).
    """
    out = []
    for s in seeds:
        random.seed(s)
        out.append(random.sample(range(n_classes), ways))
    return out


def ncc_reference_protocol(train_features, train_labels, eval_features, eval_labels, *,
                           shots: int, repeat: int = 1, classes: Optional[Sequence[int]] = None) -> List[float]:
    """The authors' few-shot NCC protocol (``NCCCEvaluator``), reproduced exactly; one accuracy per repeat.

    Per repeat r and class c of ``classes`` (sorted; default all): support = ``randperm(n_c)[:shots]`` of
    c's train indices with a private generator seeded ``r`` (all when n_c < shots); every eval sample of
    those classes is a query; nearest centre by ``torch.cdist``; accuracy is the plain sample mean (not
    class-balanced). Returns accuracies (1 - error).
    """
    xt = as_features(train_features, name="train features")
    yt = as_labels(train_labels, xt.shape[0], name="train labels")
    xe = as_features(eval_features, name="eval features")
    ye = as_labels(eval_labels, xe.shape[0], name="eval labels")
    sel = sorted(set(yt.tolist())) if classes is None else sorted(int(c) for c in classes)
    sel_t = torch.tensor(sel)
    mask_e = torch.isin(ye, sel_t)
    target = torch.searchsorted(sel_t, ye[mask_e])
    queries = xe[mask_e]
    accs = []
    for r in range(repeat):
        centres = []
        for c in sel:   # one small step per selected class (C' is 2 or 3 in the protocol)
            idx = (yt == c).nonzero().flatten()
            if len(idx) == 0:
                centres.append(torch.zeros(xt.shape[1], dtype=xt.dtype))
                continue
            if len(idx) >= shots:
                g = torch.Generator().manual_seed(r)
                idx = idx[torch.randperm(len(idx), generator=g)[:shots]]
            centres.append(xt[idx].mean(dim=0))
        cen = torch.stack(centres)
        pred = torch.cdist(queries.unsqueeze(0), cen.to(queries.dtype).unsqueeze(0)).squeeze(0).argmin(dim=1)
        accs.append(float((pred == target).float().mean()))
    return accs


def _episode_draws(yi: torch.Tensor, C: int, W: int, all_ways: bool, m_max: int, episodes: int, seed: int):
    """The classes (E, W) and ordered supports (E, W, m_max) -- positions into the task's samples -- that
    :func:`ncc_fewshot_error` draws with ``seed``: the same generator calls, and the first ``m_max``
    samples of each class in the same random order (a top-k of the same keys instead of a full sort)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    chosen = torch.rand(episodes, C, generator=gen).argsort(dim=1)[:, :W]
    if all_ways:
        chosen = chosen.sort(dim=1).values
    key = yi.cpu().to(torch.float64) + torch.rand(episodes, len(yi), generator=gen, dtype=torch.float64)
    counts = torch.bincount(yi.cpu(), minlength=C)
    order = torch.argsort(yi.cpu(), stable=True)                          # members of each class in turn
    starts = torch.cumsum(counts, 0) - counts
    n_max = int(counts.max())
    slot = torch.arange(n_max)
    pos = (starts[:, None] + slot).clamp_max(len(yi) - 1)                 # (C, n_max)
    members = order[pos]
    k = key[:, members].masked_fill(~(slot < counts[:, None])[None], float("inf"))   # (E, C, n_max)
    first = k.topk(m_max, dim=2, largest=False, sorted=True).indices      # (E, C, m_max)
    support = members[torch.arange(C)[None, :, None], first]              # (E, C, m_max) sample positions
    return chosen, support.gather(1, chosen[:, :, None].expand(-1, -1, m_max))


def ncc_fewshot_error_tasks(features, labels, *, shots, ways: Optional[int] = 2, episodes: int = 200, seeds=None,
                            dtype: torch.dtype = torch.float64) -> list:
    """:func:`ncc_fewshot_error` for T tasks labelling the same ``features`` (N, d), computed together.

    ``labels`` (T, N) int (negative: not in the task); ``seeds`` (T,) (default 0): task t draws exactly the
    episodes of the per-task call with ``seed=seeds[t]`` and gets the same errors (up to float rounding).
    Returns T FewShotResults, or for a task the DncsimError the per-task call would raise (returned, not raised).
    """
    from dncsim.analysis.task_batch import task_labels

    x = as_features(features)
    lab = task_labels(labels, x.shape[0])
    shot_list = sorted(set(_int_list(shots, "shots")))
    if episodes < 1:
        raise DncsimError(f"episodes must be >= 1; got {episodes}")
    seeds = [0] * lab.T if seeds is None else list(seeds)
    m_max = shot_list[-1]
    m = torch.tensor(shot_list, device=x.device)
    xs = x.to(dtype)
    out = []
    for t in range(lab.T):             # per task: its own draws, then one product for all its episodes
        C = int(lab.mask[t].sum())
        Wn = C if ways is None else int(ways)
        cnt = lab.counts[t, :C]
        if not 2 <= Wn <= C:
            out.append(DncsimError(f"ways must be between 2 and the number of classes ({C}); got {ways}"))
            continue
        if int(cnt.min()) <= m_max:
            k = int(cnt.argmin())
            out.append(DncsimError(f"class {int(lab.classes[t, k])} has {int(cnt[k])} samples; {m_max}-shot "
                                   f"episodes need at least {m_max + 1} per class (support plus one query)"))
            continue
        members = (lab.idx[t] >= 0).nonzero().flatten()
        yi = lab.idx[t, members]
        chosen, support = _episode_draws(yi, C, Wn, ways is None, m_max, episodes, seeds[t])
        chosen = chosen.to(x.device)
        xm = xs[members]                                                  # (n, d) the task's samples
        order = torch.argsort(yi, stable=True)
        starts = torch.cumsum(cnt, 0) - cnt
        n_c = int(cnt.max())
        slot_n = torch.arange(n_c, device=x.device)
        first_m = torch.arange(m_max, device=x.device)[:, None] < m[None, :]                 # (m_max, S)
        per_ep = max(1, _CHUNK_ELEMENTS // (len(members) * len(shot_list) * Wn))
        totals = []
        for e0 in range(0, episodes, per_ep):
            ch, sup = chosen[e0:e0 + per_ep], support[e0:e0 + per_ep].to(x.device)
            E = len(ch)
            csum = xm[sup].cumsum(dim=2)                                  # (E, W, m_max, d)
            centres = (csum[:, :, m - 1] / m[None, None, :, None].to(dtype)).transpose(1, 2)   # (E, S, W, d)
            cn = centres.square().sum(-1)                                 # |c|^2, (E, S, W)
            if Wn == 2:     # the sign of |x - c_1|^2 - |x - c_0|^2 = -2 x.(c_1 - c_0) + |c_1|^2 - |c_0|^2
                diff = torch.addmm((cn[..., 1] - cn[..., 0]).reshape(1, -1), xm,
                                   (centres[:, :, 1] - centres[:, :, 0]).reshape(-1, x.shape[1]).T, alpha=-2)
                pred = (diff < 0).view(len(members), E, len(shot_list))     # (n, E, S): class 1 wins
            else:           # squared distances minus the sample's own |x|^2 (the same for every centre)
                dist = torch.addmm(cn.reshape(1, -1), xm, centres.reshape(-1, x.shape[1]).T, alpha=-2)
                pred = dist.view(len(members), E, len(shot_list), Wn).argmin(dim=3)         # (n, E, S)
            # the samples of each episode's classes, class by class: (E, W, n_c) positions among the members
            valid = slot_n < cnt[ch][..., None]
            pos = order[(starts[ch][..., None] + slot_n).clamp_max(len(yi) - 1)]
            ep = torch.arange(E, device=x.device)[:, None, None]
            target = torch.arange(Wn, device=x.device)[None, :, None, None]
            target = target.to(torch.bool) if Wn == 2 else target
            total = ((pred[pos, ep] != target) & valid[..., None]).sum(2).to(torch.float64)     # (E, W, S)
            sup_wrong = pred[sup, ep] != target                           # (E, W, m_max, S)
            totals.append(total - (sup_wrong & first_m).sum(2).to(torch.float64))
        total = torch.cat(totals)
        n_class = cnt[chosen].to(torch.float64)[..., None] - m.to(torch.float64)             # queries per class
        errs = (total / n_class).mean(dim=1).T.cpu()                     # (S, E)
        std = errs.std(dim=1) if episodes > 1 else torch.zeros(len(shot_list), dtype=torch.float64)
        out.append(FewShotResult(shots=torch.tensor(shot_list), error=errs.mean(dim=1), error_std=std,
                                 episode_errors=errs, classes=lab.classes[t, :C][chosen]))
    return out
