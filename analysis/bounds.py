"""Few-shot NCC error bounds (Theorem 4.1 and the earlier bound) and the Prop. 4.2 orthogonality bound.

All functions are vectorised: many shot counts m and many class subsets in one call, no Python
loop over class pairs. Results are float64 tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from dncsim.common import DncsimError
from dncsim.analysis.geometry import ClassGeometry

__all__ = [
    "THEOREM_MIN_SHOTS",
    "BoundResult",
    "ncc_error_bound",
    "ncc_error_bound_prior",
    "ncc_error_bound_prior_legacy",
    "orthogonality_bound",
    "class_subsets",
]

#: Theorem 4.1 is stated for m >= 10 shots per class.
THEOREM_MIN_SHOTS = 10

ShotCounts = Union[int, float, Sequence[Union[int, float]], torch.Tensor]


@dataclass(frozen=True)
class BoundResult:
    """Theorem 4.1 evaluated for S shot counts and E class subsets.

    ``m`` (S,) float64; ``value`` (S, E), NaN where the bound does not apply; ``limit`` (E,) the m -> inf
    value; ``below_range`` (S,) bool, m < 10 (NaN unless ``extrapolate``); ``nonpositive_margin`` (S, E)
    bool, some ordered pair has 1 + (v_j - v_i)/(m d2_ij) <= 0 (always NaN); ``subsets`` (E, k) class rows.
    """

    m: torch.Tensor
    value: torch.Tensor
    limit: torch.Tensor
    below_range: torch.Tensor
    nonpositive_margin: torch.Tensor
    subsets: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """(S, E) bool: the value is a number the theorem vouches for."""
        return ~self.nonpositive_margin & ~self.below_range[:, None]


def _shots(m: ShotCounts) -> torch.Tensor:
    t = torch.as_tensor(m, dtype=torch.float64).reshape(-1)
    if t.numel() == 0 or not bool((t >= 1).all()):
        raise DncsimError(f"shot counts m must be >= 1; got {t.tolist()}")
    finite = t[torch.isfinite(t)]
    if not torch.equal(finite, finite.round()):
        raise DncsimError(f"shot counts m must be whole numbers (or inf); got {t.tolist()}")
    return t


def class_subsets(geom: ClassGeometry, classes=None) -> torch.Tensor:
    """(E, k) int64 row indices of class subsets, from label values.

    ``classes``: None (one subset: all classes), a sequence of k labels (one subset), or an (E, k)
    array of labels (E subsets of k classes each). Every subset needs k >= 2 distinct classes
    present in the geometry; DncsimError otherwise.
    """
    if classes is None:
        return torch.arange(geom.C, device=geom.classes.device).unsqueeze(0)
    lab = torch.as_tensor(classes, dtype=torch.int64, device=geom.classes.device)
    if lab.ndim == 1:
        lab = lab.unsqueeze(0)
    if lab.ndim != 2 or lab.shape[1] < 2:
        raise DncsimError(f"class subsets need at least 2 classes each; got shape {tuple(lab.shape)}")
    idx = torch.searchsorted(geom.classes, lab).clamp_(max=geom.C - 1)
    missing = geom.classes[idx] != lab
    if missing.any():
        raise DncsimError(f"class {int(lab[missing][0])} is not among the geometry's classes "
                          f"{geom.classes.tolist()[:20]}")
    srt = idx.sort(dim=1).values
    if (srt[:, 1:] == srt[:, :-1]).any():
        raise DncsimError("a class subset lists the same class twice")
    return idx


def ncc_error_bound(geom: ClassGeometry, m: ShotCounts, classes=None, *,
                    extrapolate: bool = False) -> BoundResult:
    """Theorem 4.1: upper bound on the m-shot NCC error over class subsets, for many m (docs, Methods, The bound).

    Per subset of C' classes: (1/C') sum over ordered pairs of [4 Vt_ij + (sqrt E1 + sqrt E2 + sqrt E3)^2]
    / (1 + (v_j - v_i)/(m d2_ij))^2, from ``geom`` (``dir_cdnv``, ``cdnv``, ``var``, ``theta``); ddof=1
    matches the authors' code. ``m``: a count or sequence (``inf``: the limit). ``classes``: see
    :func:`class_subsets`. m < 10 gives NaN unless ``extrapolate``; a non-positive margin gives NaN.
    """
    ms = _shots(m).to(geom.d2.device)
    idx = class_subsets(geom, classes)
    E, k = idx.shape
    f64 = torch.float64

    def zero_diag(t):
        return t.to(f64).clone().fill_diagonal_(0.0)

    # m-free parts, diagonals zeroed so that plain sums run over the off-diagonal (ordered) pairs.
    V = zero_diag(geom.cdnv)
    d2 = geom.d2.to(f64).clone().fill_diagonal_(1.0)
    base = {
        "vt4": 4 * zero_diag(geom.dir_cdnv),
        "root12": 2 * (V.square() + V / 4).sqrt() + V.sqrt(),     # sqrt(E1) + sqrt(E2) = root12 * m^-1/2
        "theta": zero_diag(geom.theta),
        "v2": V.square(),
        "dv": (geom.var.to(f64)[None, :] - geom.var.to(f64)[:, None]) / d2,   # (v_j - v_i)/d2 at [i, j]
    }
    if E == 1 and k == geom.C:                     # all classes in row order: no gather needed
        parts = {n: t.unsqueeze(0) for n, t in base.items()}
    else:
        parts = {n: t[idx[:, :, None], idx[:, None, :]] for n, t in base.items()}   # (E, k, k)
    value = torch.empty(len(ms), E, dtype=f64, device=V.device)
    bad = torch.zeros(len(ms), E, dtype=torch.bool, device=V.device)
    for s, mv in enumerate(ms.tolist()):           # a handful of shot counts; each step is vectorised
        inv = 1.0 / mv
        total = parts["root12"] * math.sqrt(inv)
        e3 = torch.add(parts["theta"] * inv ** 3, parts["v2"], alpha=2 * inv ** 2 * (1 - inv))
        total.add_(e3.sqrt_()).square_().add_(parts["vt4"])
        if inv:                                    # m = inf: the margin factor is exactly 1
            margin = parts["dv"].mul(inv).add_(1.0)   # 1 + (v_j - v_i)/(m d2)
            bad[s] = (margin <= 0).flatten(1).any(dim=1)
            total.div_(margin.square_())
        value[s] = total.sum(dim=(1, 2)) / k
    below = torch.isfinite(ms) & (ms < THEOREM_MIN_SHOTS)
    value = value.masked_fill(bad, float("nan"))
    if not extrapolate:
        value = value.masked_fill(below[:, None], float("nan"))
    limit = parts["vt4"].sum(dim=(1, 2)) / k
    return BoundResult(m=ms, value=value, limit=limit, below_range=below,
                       nonpositive_margin=bad, subsets=idx)


def _broadcast64(*xs):
    return torch.broadcast_tensors(*[torch.as_tensor(x, dtype=torch.float64) for x in xs])


def _largest_cubic_root(F: torch.Tensor, A: torch.Tensor, *, legacy: bool) -> torch.Tensor:
    """Largest real root y* of y^3 - 8F y - 16FA = 0 (Cardano or trigonometric form).

    ``legacy=True`` reproduces the older ``bound_core`` variant's Cardano terms
    cbrt(4F(2A +/- sqrt(A^2 - 8F/27))), which is not a root of that cubic (docs, Methods, Conventions).
    """
    thr = 8 * F / 27
    disc = A.square() - thr
    root = disc.clamp_min(0).sqrt()
    if legacy:
        a, b = 4 * F * (2 * A + root), 4 * F * (2 * A - root)
    else:
        a, b = 8 * F * (A + root), 8 * F * (A - root)
    cardano = a.sign() * a.abs().pow(1 / 3) + b.sign() * b.abs().pow(1 / 3)
    arg = (3 * A * (3 / (8 * F)).sqrt()).clamp(-1, 1)
    trig = 4 * (2 * F / 3).sqrt() * torch.cos(torch.arccos(arg) / 3)
    return torch.where(disc >= 0, cardano, trig)


def ncc_error_bound_prior(dir_cdnv, cdnv, m: ShotCounts) -> torch.Tensor:
    """The bound of Luthra et al. (2025) with the optimised a*, as the authors compute it.

    E(a) = alpha (1/2 - 2/a - 2^{3/2}/(a m))^{-2} + B a, minimised exactly (a* = max(5, 2A + y*), y* the
    largest cubic root). ``dir_cdnv`` = alpha (ordered pairs, ddof=0); ``cdnv`` = beta in the authors'
    halved convention (``summary()['cdnv'] / 2``). No (C'-1) prefactor. Inputs broadcast; float64 tensor.
    """
    alpha, beta, mm = _broadcast64(dir_cdnv, cdnv, m)
    if bool((mm < 1).any()) or bool((alpha < 0).any()) or bool((beta <= 0).any()):
        raise DncsimError("the prior bound needs m >= 1, dir_cdnv >= 0 and cdnv > 0")
    A = 2 + 2 ** 1.5 / mm
    B = 0.25 * (2 * (beta / mm).sqrt() + 2 * beta / mm.sqrt() + beta / mm)
    F = 2 * alpha * A / B
    a_star = (2 * A + _largest_cubic_root(F, A, legacy=False)).clamp_min(5)
    return alpha * (0.5 - 2 / a_star - 2 ** 1.5 / (a_star * mm)).pow(-2) + B * a_star


def ncc_error_bound_prior_legacy(dir_cdnv, cdnv, m: ShotCounts) -> torch.Tensor:
    """The authors' older, unused ``bound_core.compute_error_bound_for_m`` variant, for reproduction.

    F = alpha A m / (sqrt(2) beta), value = sqrt(2) beta/(2 A m) (y* + 2A)(y* + 4A) with the
    variant's own Cardano terms. Same argument conventions as :func:`ncc_error_bound_prior`.
    Kept only so the golden values can be reproduced; prefer :func:`ncc_error_bound_prior`.
    """
    alpha, beta, mm = _broadcast64(dir_cdnv, cdnv, m)
    A = 2 + 2 ** 1.5 / mm
    F = alpha * A * mm / (math.sqrt(2) * beta)
    y = _largest_cubic_root(F, A, legacy=True)
    return math.sqrt(2) * beta / (2 * A * mm) * (y + 2 * A) * (y + 4 * A)


def _axis_variance(geom: ClassGeometry, variance: str, pairs: torch.Tensor) -> torch.Tensor:
    """(P,) normalised variance along each pair axis of ``pairs`` (see :func:`orthogonality_bound`)."""
    i, j = pairs.unbind(1)
    f64 = torch.float64
    if variance == "class_average":
        if geom.mean_axis_var is None:
            raise DncsimError("this geometry has no mean_axis_var; build it with "
                              "class_geometry(..., mean_axis_var=True) or use variance='pooled'")
        return geom.mean_axis_var.to(f64)[i, j] / geom.d2.to(f64)[i, j]
    if variance == "pooled":
        n = geom.counts.to(f64)
        av = geom.axis_var.to(f64) * (n - geom.ddof)[:, None] / n[:, None]   # population variances
        pooled = (n[i] * av[i, j] + n[j] * av[j, i]) / (n[i] + n[j])
        return pooled / geom.d2.to(f64)[i, j]
    if variance == "worst":
        dc = geom.dir_cdnv.to(f64)
        return torch.maximum(dc[i, j], dc[j, i])
    raise DncsimError(f"variance must be one of 'class_average', 'pooled', 'worst'; got {variance!r}")


def orthogonality_bound(geom_a: ClassGeometry, geom_b: ClassGeometry, *, form: str = "k_class",
                        variance: str = "class_average", pairs_a: Optional[torch.Tensor] = None,
                        pairs_b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Prop. 4.2's right-hand side for every axis pair of labeling a against b: (P_a, P_b).

    ``form``: ``k_class`` min((d_a/d_b) sqrt(2 K_b V_a), (d_b/d_a) sqrt(2 K_a V_b)) or ``binary`` (K = 2).
    ``variance`` picks V: ``class_average`` (default, what the proof bounds), ``pooled`` (the authors'
    notebook) or ``worst``. Exact for balanced, independent labelings. Rows ``geom_a.pairs()`` (or
    ``pairs_a``), columns ``geom_b.pairs()`` (or ``pairs_b``).
    """
    if geom_a.d != geom_b.d:
        raise DncsimError(f"the two labelings have feature dimensions {geom_a.d} and {geom_b.d}")
    if form not in ("k_class", "binary"):
        raise DncsimError(f"form must be 'k_class' or 'binary'; got {form!r}")
    if form == "binary" and (geom_a.C != 2 or geom_b.C != 2):
        raise DncsimError(f"the binary form needs two 2-class labelings; got K = {geom_a.C} and {geom_b.C}")
    pa = geom_a.pairs() if pairs_a is None else pairs_a
    pb = geom_b.pairs() if pairs_b is None else pairs_b
    va, vb = _axis_variance(geom_a, variance, pa), _axis_variance(geom_b, variance, pb)
    da = geom_a.d2.to(torch.float64)[pa[:, 0], pa[:, 1]].sqrt()
    db = geom_b.d2.to(torch.float64)[pb[:, 0], pb[:, 1]].sqrt()
    ka, kb = (2.0, 2.0) if form == "binary" else (float(geom_a.C), float(geom_b.C))
    left = (da[:, None] / db[None, :]) * (2 * kb * va[:, None]).sqrt()
    right = (db[None, :] / da[:, None]) * (2 * ka * vb[None, :]).sqrt()
    return torch.minimum(left, right)
