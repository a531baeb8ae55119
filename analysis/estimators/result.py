"""The result type of an estimated geometry and its scalar summary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import torch

from dncsim.analysis.geometry import UndefinedGeometry

#: regime flags of an estimate (counts of pairs), see :class:`GeometryEstimate`
FLAGS = ("undefined_pairs", "negative_numerator_pairs", "barely_resolved_pairs")


@dataclass(frozen=True)
class GeometryEstimate:
    """An estimated geometry: ``dir_cdnv`` (C, C) ordered, ``cdnv`` and ``d2`` (C, C) symmetric (NaN
    diagonal and where undefined), ``var`` (C,), ``classes``, ``counts``; ``estimator`` names it,
    ``design`` ('iid' or 'strata') says how the samples were taken to be drawn, ``flags`` counts the
    pairs in each regime of ``FLAGS`` (the debiased estimator's; empty for the others).
    :meth:`summary` gives the scalar means, as ``ClassGeometry.summary`` does."""

    classes: torch.Tensor
    counts: torch.Tensor
    var: torch.Tensor
    d2: torch.Tensor
    cdnv: torch.Tensor
    dir_cdnv: torch.Tensor
    estimator: str
    design: str = "iid"
    flags: Dict[str, int] = field(default_factory=dict)

    @property
    def C(self) -> int:
        return int(self.classes.numel())

    def summary(self) -> dict:
        """``dir_cdnv`` (mean over ordered pairs), ``cdnv`` (mean over unordered pairs, no 1/2), ``ratio``,
        ``mean_gap`` (mean sqrt(d2) over unordered pairs), ``undefined_pairs`` (unordered pairs left out),
        ``estimator``, ``design`` and the flags. UndefinedGeometry when no pair is defined."""
        out = _summary(self.dir_cdnv.unsqueeze(0), self.cdnv.unsqueeze(0), self.d2.unsqueeze(0), self.estimator)[0]
        out["design"] = self.design
        out.update({k: v for k, v in self.flags.items() if k != "undefined_pairs"})
        return out


def _summary(dir_cdnv, cdnv, d2, estimator):
    """Per batch row: the scalar summary (plain numbers) of (B, C, C) matrices."""
    C = dir_cdnv.shape[-1]
    iu = torch.triu_indices(C, C, 1)
    off = ~torch.eye(C, dtype=torch.bool)
    out = []
    for b in range(dir_cdnv.shape[0]):
        pair_ok = torch.isfinite(cdnv[b][iu[0], iu[1]])
        if not bool(pair_ok.any()):
            raise UndefinedGeometry("no pair of classes is resolved: every squared mean gap, corrected for the "
                                    "sampling noise of the means, is not positive (too few samples or classes "
                                    "too close for this estimator)")
        c = float(cdnv[b][iu[0], iu[1]][pair_ok].mean())
        dd = dir_cdnv[b][off]
        dd = float(dd[torch.isfinite(dd)].mean())
        gap = float(d2[b][iu[0], iu[1]][pair_ok].sqrt().mean())
        out.append({"dir_cdnv": dd, "cdnv": c, "ratio": dd / c if c > 0 else float("nan"), "mean_gap": gap,
                    "undefined_pairs": int((~pair_ok).sum()), "estimator": estimator})
    return out
