"""Within-class bootstrap intervals of the summaries of the plug-in and crossfit estimates: resamples
batched as weightings (B, N), float64; percentile intervals (crossfit: centred on the estimate)."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from dncsim.analysis.estimators.core import (pair_masks, _TASK_CHUNK_ELEMENTS, _centred_tasks, _prepare, _task_chunks,
                                             _within_class_resamples)
from dncsim.analysis.estimators.crossfit import (_cell_rows, _crossfit_batch, _crossfit_tasks, _halves, _task_draws,
                                                 crossfit_geometry, crossfit_geometry_tasks)
from dncsim.analysis.estimators.plugin import _plugin_batch
from dncsim.analysis.estimators.validate import check_alpha, check_count
from dncsim.analysis.geometry import UndefinedGeometry
from dncsim.analysis.medians import true_median
from dncsim.common import DncsimError

BOOTSTRAP_ESTIMATORS = ("plugin", "crossfit")


def _check(estimator, resamples, alpha):
    if estimator not in BOOTSTRAP_ESTIMATORS:
        raise DncsimError(f"bootstrap intervals are for the estimators {', '.join(BOOTSTRAP_ESTIMATORS)} (the "
                          f"debiased one has jackknife intervals); got {estimator!r}")
    return check_count(resamples, "resamples", 1), check_alpha(alpha)


def _interval(values: torch.Tensor, alpha: float, centre: Optional[float] = None) -> Tuple[float, float]:
    """The (1 - alpha) percentile interval of the finite bootstrap ``values``; with ``centre`` (a positive
    estimate), the spread of log(values) around their median, applied to log(centre): the interval of a
    debiased estimator whose bootstrap world is centred elsewhere (module docstring)."""
    v = values[torch.isfinite(values)]
    if centre is not None:
        v = v[v > 0]
    if v.numel() == 0 or (centre is not None and not centre > 0):
        return float("nan"), float("nan")
    probs = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=v.dtype)
    if centre is None:
        q = torch.quantile(v, probs)
        return float(q[0]), float(q[1])
    logs = v.log()
    q = torch.quantile(logs - true_median(logs), probs)
    return float(centre * q[0].exp()), float(centre * q[1].exp())


def bootstrap_summaries(features, labels, *, estimator: str = "crossfit", resamples: int = 200, alpha: float = 0.05,
                        ddof: int = 0, splits: int = 2, seed: int = 0, chunk: int = 50) -> Dict[str, Tuple]:
    """(1 - alpha) intervals of ``dir_cdnv``, ``cdnv`` and ``ratio`` (the summary means) over ``resamples``
    within-class bootstrap resamples of the estimator: name -> (low, high). Plug-in: the percentile
    interval. Crossfit: the bootstrap world's truth is the plug-in geometry of the sample, so its
    resamples sit below the debiased estimate; the interval takes their spread on the log scale around
    their median and centres it on the estimate. Resamples are batched ``chunk`` at a time (memory),
    seeded by ``seed``."""
    resamples, alpha = _check(estimator, resamples, alpha)
    x, idx, classes = _prepare(features, labels)
    C = classes.numel()
    gen = torch.Generator().manual_seed(int(seed))
    W = _within_class_resamples(idx, C, resamples, gen, x.device)
    halves = _halves(idx, C, splits, gen, x.device) if estimator == "crossfit" else None
    values = {"dir_cdnv": [], "cdnv": [], "ratio": []}
    for s in range(0, resamples, chunk):
        Wc = W[s:s + chunk]
        if estimator == "crossfit":
            dc, cd, d2, _ = _crossfit_batch(x, idx, classes, Wc, halves)
        else:
            dc, cd, d2, _ = _plugin_batch(x, idx, classes, Wc, ddof)
        iu = torch.triu_indices(C, C, 1)
        off = ~torch.eye(C, dtype=torch.bool)
        pair_c = cd[:, iu[0], iu[1]]
        mean_c = torch.nanmean(pair_c, dim=1)
        mean_d = torch.nanmean(dc[:, off], dim=1)
        values["dir_cdnv"].append(mean_d)
        values["cdnv"].append(mean_c)
        values["ratio"].append(mean_d / mean_c)
    centres = {k: None for k in values}
    if estimator == "crossfit":
        s = crossfit_geometry(features, labels, splits=splits, seed=seed).summary()
        centres = {k: s[k] for k in values}
    return {k: _interval(torch.cat(v), alpha, centres[k]) for k, v in values.items()}


def _pair_means(dc, cd, mask):
    """Per (task, resample): mean dir-CDNV over defined ordered pairs and mean CDNV over defined unordered
    pairs of the task's real classes (NaN when none)."""
    off, upper = pair_masks(mask)
    mean_d = torch.nanmean(dc.masked_fill(~off[:, None], float("nan")).flatten(2), dim=2)
    mean_c = torch.nanmean(cd.masked_fill(~upper[:, None], float("nan")).flatten(2), dim=2)
    return mean_d, mean_c


def bootstrap_summaries_tasks(features, labels, *, estimator: str = "crossfit", resamples: int = 200,
                              alpha: float = 0.05, ddof: int = 0, splits: int = 2, seeds=None,
                              centres=None) -> list:
    """:func:`bootstrap_summaries` for T tasks labelling the same ``features`` (N, d), computed together.

    ``labels`` (T, N) int (negative: not in the task); ``seeds`` (T,), each task drawing the resamples of
    the per-task call with that seed; ``centres`` (crossfit): precomputed point summaries. Returns T dicts
    name -> (low, high), equal to the per-task calls; undefined estimates give NaN intervals.
    """
    resamples, alpha = _check(estimator, resamples, alpha)
    x, lab = _centred_tasks(features, labels)
    seeds = [0] * lab.T if seeds is None else list(seeds)
    nan = {k: (float("nan"), float("nan")) for k in ("dir_cdnv", "cdnv", "ratio")}
    if estimator == "plugin":
        out = []
        for t in range(lab.T):
            members = lab.idx[t] >= 0
            try:
                out.append(bootstrap_summaries(x[members], lab.idx[t][members], estimator="plugin",
                                               resamples=resamples, alpha=alpha, ddof=ddof, seed=seeds[t]))
            except UndefinedGeometry:
                out.append(dict(nan))
        return out
    if centres is None:
        centres = []
        for est in crossfit_geometry_tasks(features, labels, splits=splits, seeds=seeds):
            try:
                centres.append(None if isinstance(est, Exception) else est.summary())
            except UndefinedGeometry:
                centres.append(None)
    halves, W = _task_draws(lab, seeds, splits=splits, resamples=resamples, device=x.device)
    n_max = int(lab.counts.max())
    values = {"dir_cdnv": [], "cdnv": []}
    chunk = max(1, min(resamples, _TASK_CHUNK_ELEMENTS // (2 * splits * lab.C * lab.C * 2 * n_max)))
    per_task = 2 * splits * lab.C * lab.C * 2 * n_max * chunk + 4 * splits * (n_max * lab.C + 1) * (x.shape[1] + 2)
    for sl in _task_chunks(lab.T, per_task):
        parts = {"dir_cdnv": [], "cdnv": []}
        cells = _cell_rows(x, lab.idx[sl], halves[sl], lab.C)
        for b in range(0, resamples, chunk):
            dc, cd, _, _ = _crossfit_tasks(cells, lab.C, W[sl, b:b + chunk])
            mean_d, mean_c = _pair_means(dc, cd, lab.mask[sl])
            parts["dir_cdnv"].append(mean_d)
            parts["cdnv"].append(mean_c)
        for k in parts:
            values[k].append(torch.cat(parts[k], 1))
    mean_d, mean_c = torch.cat(values["dir_cdnv"]), torch.cat(values["cdnv"])
    series = {"dir_cdnv": mean_d, "cdnv": mean_c, "ratio": mean_d / mean_c}
    out = []
    for t in range(lab.T):
        c = centres[t]
        out.append(dict(nan) if c is None else {k: _interval(v[t], alpha, c[k]) for k, v in series.items()})
    return out
