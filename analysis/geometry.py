"""Pairwise class geometry of labelled features: CDNV, directional CDNV, decision axes (docs, Methods).

* ``var[i]`` v_i = sum_{x in i} |x - mu_i|^2 / (n_i - ddof); ``m4[i]`` population mean of |r|^4
* ``d2[i, j]`` |mu_i - mu_j|^2; ``cdnv[i, j]`` (v_i + v_j) / d2_ij (symmetric, no 1/2)
* ``dir_cdnv[i, j]`` Var_{x in i}(u_ij . x) / d2_ij, u_ij = (mu_j - mu_i)/|.| (ORDERED)
* ``theta[i, j]`` (M4_i + M4_j) / d2_ij^2; ``mean_axis_var`` Prop. 4.2's class-average variance

Diagonals NaN; classes sorted by label. No loop over pairs
(:func:`class_geometry`, :func:`streaming_class_geometry`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Iterable, Optional, Tuple, Union

import torch

from dncsim.analysis.inputs import as_features, as_labels
from dncsim.common import DncsimError

__all__ = [
    "UndefinedGeometry",
    "ClassGeometry",
    "ClassMeans",
    "GeometryAccumulator",
    "class_geometry",
    "streaming_class_geometry",
    "class_geometry_tasks",
    "MEAN_AXIS_VAR_AUTO_MAX_CLASSES",
]

#: ``mean_axis_var=None`` computes the Prop. 4.2 class-average axis variance only up to this many
#: classes: it costs an extra N x C x C product, small next to the main N x d x C one when C << d.
MEAN_AXIS_VAR_AUTO_MAX_CLASSES = 64

# Rows per chunk: bounds the N x C and N x d temporaries (about 2M elements) so memory
# stays flat for any N and the working set stays cache friendly.
_CHUNK_ELEMENTS = 1 << 21

Batches = Union[Iterable[Tuple[object, object]], Callable[[], Iterable[Tuple[object, object]]]]


def _offdiag_nan(m: torch.Tensor) -> torch.Tensor:
    m = m.clone()
    m.fill_diagonal_(float("nan"))
    return m


class UndefinedGeometry(DncsimError):
    """The geometry asked for does not exist for these data: a class with fewer than 2 samples, two
    classes with the same mean, or no within-class variance at all."""


@dataclass(frozen=True)
class ClassGeometry:
    """Pairwise geometry of C classes in d dimensions (see the module docstring for definitions).

    Tensors (all in the accumulation dtype, on one device):
    ``classes`` (C,) int64 label values, sorted; ``counts`` (C,) int64; ``means`` (C, d);
    ``var`` (C,) trace of each class covariance with ``ddof``; ``m4`` (C,) population fourth moment;
    ``d2``, ``cdnv``, ``dir_cdnv``, ``theta`` (C, C) with NaN diagonals; ``dir_cdnv`` is ordered
    (row i = the class whose variance is measured); ``mean_axis_var`` (C, C) or None.
    """

    classes: torch.Tensor
    counts: torch.Tensor
    means: torch.Tensor
    var: torch.Tensor
    m4: torch.Tensor
    d2: torch.Tensor
    cdnv: torch.Tensor
    dir_cdnv: torch.Tensor
    theta: torch.Tensor
    mean_axis_var: Optional[torch.Tensor]
    ddof: int

    @property
    def C(self) -> int:
        """Number of classes."""
        return int(self.classes.numel())

    @property
    def d(self) -> int:
        """Feature dimension."""
        return int(self.means.shape[1])

    @property
    def N(self) -> int:
        """Number of samples."""
        return int(self.counts.sum())

    @property
    def axis_var(self) -> torch.Tensor:
        """(C, C) ordered: variance (with ``ddof``) of class i's features along the unit axis u_ij."""
        return self.dir_cdnv * self.d2

    def pairs(self) -> torch.Tensor:
        """(P, 2) int64 row indices (i, j), i < j, of the C(C-1)/2 unordered class pairs, row-major.

        This is the order of :meth:`axes` and of every per-pair vector in ``analysis``.
        """
        return torch.triu_indices(self.C, self.C, 1, device=self.means.device).T

    def axes(self) -> torch.Tensor:
        """(P, d) unit decision axes u_ij = (mu_j - mu_i)/|mu_j - mu_i| for the pairs of :meth:`pairs`.

        Memory is P x d (C(C-1)/2 rows): fine for task-sized C, large for C in the thousands.
        """
        i, j = self.pairs().unbind(1)
        delta = self.means.to(torch.float64)[j] - self.means.to(torch.float64)[i]
        u = delta / delta.norm(dim=1, keepdim=True)
        return u.to(self.means.dtype)

    def pair_values(self, matrix: torch.Tensor) -> torch.Tensor:
        """Entries of a (C, C) matrix at the unordered pairs of :meth:`pairs`, as a (P,) vector."""
        i, j = self.pairs().unbind(1)
        return matrix[i, j]

    def summary(self) -> dict:
        """Scalar summary (plain Python numbers).

        ``cdnv``: mean of ``cdnv`` over the C(C-1)/2 unordered pairs (paper convention, no 1/2);
        ``dir_cdnv``: mean of ``dir_cdnv`` over the C(C-1) ordered pairs; ``ratio`` = dir_cdnv / cdnv;
        ``mean_gap``: mean distance |mu_i - mu_j| over unordered pairs; ``C``, ``d``, ``N``, ``ddof``.
        With ddof=0, ``dir_cdnv`` equals the authors' ``compute_directional_cdnv`` and ``cdnv / 2``
        equals their ``compute_cdnv`` (docs, Methods, Conventions).
        """
        off = ~torch.eye(self.C, dtype=torch.bool, device=self.d2.device)
        cdnv = float(self.pair_values(self.cdnv).to(torch.float64).mean())
        dcdnv = float(self.dir_cdnv[off].to(torch.float64).mean())
        gap = float(self.pair_values(self.d2).to(torch.float64).sqrt().mean())
        if cdnv == 0:
            raise UndefinedGeometry("every class has zero within-class variance (one sample per class, or identical "
                                    "samples): CDNV is 0 and "
                                    "the ratio of directional CDNV to CDNV is undefined")
        return {"C": self.C, "d": self.d, "N": self.N, "ddof": self.ddof, "cdnv": cdnv,
                "dir_cdnv": dcdnv, "ratio": dcdnv / cdnv, "mean_gap": gap}

    def to(self, device) -> "ClassGeometry":
        """A copy with every tensor on ``device``."""
        kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return ClassGeometry(**kw)

    def to_arrays(self) -> dict:
        """Every field as a CPU tensor (``ddof`` a 0-d int64; ``mean_axis_var`` left out when None):
        the plain-data form that files and checkpoints store. :meth:`from_arrays` inverts it exactly."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "ddof"}
        out = {k: v.detach().cpu() for k, v in out.items() if v is not None}
        out["ddof"] = torch.tensor(self.ddof, dtype=torch.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "ClassGeometry":
        """Rebuild from :meth:`to_arrays` output (tensors or numpy arrays); DncsimError naming the
        missing fields otherwise. Extra keys (such as the derived ``pairs`` and ``axes``) are ignored."""
        required = [f.name for f in fields(cls) if f.name != "mean_axis_var"]
        missing = [k for k in required if k not in arrays]
        if missing:
            raise DncsimError(f"geometry arrays lack {', '.join(missing)}")
        kw = {k: torch.as_tensor(arrays[k]) for k in required if k != "ddof"}
        mav = arrays.get("mean_axis_var") if hasattr(arrays, "get") else None
        return cls(**kw, mean_axis_var=None if mav is None else torch.as_tensor(mav),
                   ddof=int(torch.as_tensor(arrays["ddof"])))


class ClassMeans:
    """First pass: per-class counts and feature sums, mergeable across batches and shards.

    ``update(features (n, d), labels (n,))`` may see classes in any order; ``merge`` adds another
    accumulator's sums (the union of classes). ``means()`` gives (C, d) in the accumulation dtype.
    """

    def __init__(self, *, dtype: torch.dtype = torch.float64, device=None):
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self.classes: Optional[torch.Tensor] = None
        self.counts: Optional[torch.Tensor] = None
        self.sums: Optional[torch.Tensor] = None

    def _grow(self, new_classes: torch.Tensor, d: int, device) -> None:
        if self.classes is None:
            self.device = torch.device(device) if self.device is None else self.device
            self.classes = torch.empty(0, dtype=torch.int64, device=self.device)
            self.counts = torch.zeros(0, dtype=torch.int64, device=self.device)
            self.sums = torch.zeros(0, d, dtype=self.dtype, device=self.device)
        if self.sums.shape[1] != d:
            raise DncsimError(f"features have {d} columns but earlier batches had {self.sums.shape[1]}")
        union = torch.unique(torch.cat([self.classes, new_classes.to(self.device)]))
        if union.numel() == self.classes.numel():
            return
        pos = torch.searchsorted(union, self.classes)
        counts = torch.zeros(union.numel(), dtype=torch.int64, device=self.device)
        sums = torch.zeros(union.numel(), d, dtype=self.dtype, device=self.device)
        counts[pos] = self.counts
        sums[pos] = self.sums
        self.classes, self.counts, self.sums = union, counts, sums

    def update(self, features, labels, *, _checked: bool = False) -> "ClassMeans":
        """Add a batch: ``features`` (n, d) float, ``labels`` (n,) int. Returns self."""
        if not _checked:
            features = as_features(features, device=self.device)
            labels = as_labels(labels, features.shape[0], device=features.device)
        self._grow(torch.unique(labels), features.shape[1], features.device)
        idx = torch.searchsorted(self.classes, labels)
        self.counts.index_add_(0, idx, torch.ones_like(idx))
        rows = max(256, _CHUNK_ELEMENTS // features.shape[1])
        for s in range(0, features.shape[0], rows):   # chunked: no full-size dtype copy
            self.sums.index_add_(0, idx[s:s + rows], features[s:s + rows].to(self.dtype))
        return self

    def merge(self, other: "ClassMeans") -> "ClassMeans":
        """Add another accumulator's counts and sums into this one (classes united). Returns self."""
        if other.classes is None:
            return self
        self._grow(other.classes, other.sums.shape[1], other.sums.device)
        idx = torch.searchsorted(self.classes, other.classes.to(self.device))
        self.counts.index_add_(0, idx, other.counts.to(self.device))
        self.sums.index_add_(0, idx, other.sums.to(device=self.device, dtype=self.dtype))
        return self

    def means(self) -> torch.Tensor:
        """(C, d) class means in the accumulation dtype, rows in sorted label order."""
        if self.classes is None:
            raise DncsimError("no samples were seen: the batches were empty")
        return self.sums / self.counts.unsqueeze(1).to(self.dtype)


class GeometryAccumulator:
    """Second pass: residual moments against fixed class means, mergeable across batches and shards.

    Build it from a finished :class:`ClassMeans`; feed every sample once more with ``update``; merge
    shards that were built from the same means with ``merge``; ``compute(ddof)`` returns the
    :class:`ClassGeometry`. Accumulated per class i: sum |r|^2, sum |r|^4, and
    ``Q[i, j] = sum_{x in i} (r . (mu_j - mu_i))^2``; optionally ``W = P^T P`` for ``mean_axis_var``.
    """

    def __init__(self, means: ClassMeans, *, mean_axis_var: Optional[bool] = None):
        m = means.means()
        self.classes = means.classes.clone()
        self.counts = means.counts.clone()
        self.dtype = means.dtype
        self.device = means.device
        self._means = m
        # Centring the means removes a common offset that would otherwise cancel in P's differences.
        self._centred = m - m.mean(dim=0, keepdim=True)
        C = self.classes.numel()
        want_w = C <= MEAN_AXIS_VAR_AUTO_MAX_CLASSES if mean_axis_var is None else bool(mean_axis_var)
        z = dict(dtype=self.dtype, device=self.device)
        self.sq = torch.zeros(C, **z)
        self.quart = torch.zeros(C, **z)
        self.q = torch.zeros(C, C, **z)
        self.w = torch.zeros(C, C, **z) if want_w else None
        self.seen = torch.zeros(C, dtype=torch.int64, device=self.device)

    def update(self, features, labels, *, _checked: bool = False) -> "GeometryAccumulator":
        """Add a batch: ``features`` (n, d) float, ``labels`` (n,) int (labels seen in pass 1 only)."""
        if not _checked:
            features = as_features(features, device=self.device)
            labels = as_labels(labels, features.shape[0], device=features.device)
        if features.shape[1] != self._means.shape[1]:
            raise DncsimError(
                f"features have {features.shape[1]} columns but the class means have {self._means.shape[1]}")
        idx = torch.searchsorted(self.classes, labels).clamp_(max=self.classes.numel() - 1)
        unknown = self.classes[idx] != labels
        if unknown.any():
            raise DncsimError(f"label {int(labels[unknown][0])} was not seen in the first pass "
                              "(the batches must yield the same samples in both passes)")
        C = self.classes.numel()
        rows = max(256, _CHUNK_ELEMENTS // max(C, features.shape[1]))
        for s in range(0, features.shape[0], rows):
            self._update_chunk(features[s:s + rows], idx[s:s + rows])
        self.seen.index_add_(0, idx, torch.ones_like(idx))
        return self

    def _update_chunk(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        r = x.to(self.dtype) - self._means[idx]                       # (n, d) residuals
        s = r.square().sum(dim=1)                                     # |r|^2
        self.sq.index_add_(0, idx, s)
        self.quart.index_add_(0, idx, s.square())
        p = r @ self._centred.T                                       # (n, C): r . mc_j
        if self.w is not None:
            self.w.addmm_(p.T, p)
        p.sub_(p.gather(1, idx.unsqueeze(1)))                         # r . (mu_j - mu_{y})
        self.q.index_add_(0, idx, p.square_())

    def merge(self, other: "GeometryAccumulator") -> "GeometryAccumulator":
        """Add the sums of a shard accumulated against the same class means. Returns self."""
        if not (torch.equal(self.classes, other.classes.to(self.device))
                and torch.equal(self._means, other._means.to(self.device))):
            raise DncsimError("cannot merge accumulators built from different class means; "
                              "merge the ClassMeans of all shards first and build every shard from it")
        if (self.w is None) != (other.w is None):
            raise DncsimError("cannot merge accumulators with and without mean_axis_var")
        for name in ("sq", "quart", "q", "w", "seen"):
            mine = getattr(self, name)
            if mine is not None:
                mine.add_(getattr(other, name).to(self.device))
        return self

    def compute(self, ddof: int = 0) -> ClassGeometry:
        """Finish: the :class:`ClassGeometry` with variances divided by (n_i - ddof).

        Raises DncsimError when fewer than 2 classes were seen or the second pass saw other counts than
        the first; :class:`UndefinedGeometry` (a DncsimError) when a class has no more than ``ddof``
        samples or two class means coincide (squared distance 0 within float64 rounding).
        """
        if ddof not in (0, 1):
            raise DncsimError(f"ddof must be 0 (population) or 1 (unbiased); got {ddof!r}")
        if not torch.equal(self.seen, self.counts):
            raise DncsimError(
                f"the second pass saw {int(self.seen.sum())} samples but the first saw {int(self.counts.sum())}; "
                "pass a re-iterable (list, DataLoader) or a function returning a fresh iterator")
        C = self.classes.numel()
        labels = self.classes.tolist()
        if C < 2:
            raise DncsimError(f"need at least 2 classes; got {C} (label {labels[0]})")
        small = (self.counts <= ddof).nonzero().flatten().tolist()
        if small:
            k = small[0]
            raise UndefinedGeometry(f"class {labels[k]} has {int(self.counts[k])} sample(s); "
                                    f"ddof={ddof} needs at least {ddof + 1} per class")
        f64 = torch.float64
        n = self.counts.to(f64)
        dof = n - ddof
        d2 = _squared_mean_gaps(self._means.to(f64), labels)
        var = self.sq.to(f64) / dof
        m4 = self.quart.to(f64) / n
        q = self.q.to(f64)
        with torch.no_grad():
            eye = torch.eye(C, dtype=torch.bool, device=d2.device)
            d2 = d2.masked_fill(eye, float("nan"))
            cdnv = (var[:, None] + var[None, :]) / d2
            dir_cdnv = q / (dof[:, None] * d2.square())
            theta = (m4[:, None] + m4[None, :]) / d2.square()
            mav = None
            if self.w is not None:
                w = self.w.to(f64)
                quad = w.diagonal()[:, None] + w.diagonal()[None, :] - 2 * w
                mav = quad.clamp_min(0) / (n.sum() * d2)
        out = dict(dtype=self.dtype)
        return ClassGeometry(
            classes=self.classes.clone(), counts=self.counts.clone(), means=self._means.clone(),
            var=var.to(**out), m4=m4.to(**out), d2=d2.to(**out), cdnv=cdnv.to(**out),
            dir_cdnv=dir_cdnv.to(**out), theta=theta.to(**out),
            mean_axis_var=None if mav is None else mav.to(**out), ddof=int(ddof))


def _squared_mean_gaps(means: torch.Tensor, labels: list) -> torch.Tensor:
    """(C, C) |mu_i - mu_j|^2 in float64 from the Gram matrix of centred means.

    Pairs whose Gram-based value lost more than ~4 digits to cancellation are recomputed directly;
    exactly coincident means raise DncsimError naming the two classes.
    """
    mc = means - means.mean(dim=0, keepdim=True)
    g = mc @ mc.T
    sq = g.diagonal()
    d2 = (sq[:, None] + sq[None, :] - 2 * g).clamp_min_(0)
    scale = sq[:, None] + sq[None, :]
    iu = torch.triu_indices(len(labels), len(labels), 1, device=means.device)
    loose = (d2[iu[0], iu[1]] <= 1e-4 * scale[iu[0], iu[1]]).nonzero().flatten()
    if loose.numel():
        i, j = iu[0, loose], iu[1, loose]
        exact = (means[i] - means[j]).square().sum(dim=1)
        d2[i, j] = exact
        d2[j, i] = exact
        zero = (exact == 0).nonzero().flatten()
        if zero.numel():
            a, b = labels[int(i[zero[0]])], labels[int(j[zero[0]])]
            raise UndefinedGeometry(f"classes {a} and {b} have coincident means (squared distance 0): "
                              "CDNV and directional CDNV are undefined for that pair")
    return d2


def class_geometry(features, labels, *, ddof: int = 0, dtype: torch.dtype = torch.float64,
                   device=None, mean_axis_var: Optional[bool] = None) -> ClassGeometry:
    """Pairwise class geometry of ``features`` (N, d) float with ``labels`` (N,) int.

    ``ddof`` 0: population (the authors' CDNV and directional CDNV); 1: unbiased (their Theorem 4.1
    bound); the fourth moment is always a population mean. ``dtype``: accumulation precision (float64).
    ``device``: default the features'. ``mean_axis_var``: compute Prop. 4.2's variance (None: when
    C <= 64). Raises DncsimError on bad input.
    """
    x = as_features(features, device=device)
    y = as_labels(labels, x.shape[0], device=x.device)
    means = ClassMeans(dtype=dtype, device=x.device).update(x, y, _checked=True)
    return (GeometryAccumulator(means, mean_axis_var=mean_axis_var)
            .update(x, y, _checked=True).compute(ddof))


def streaming_class_geometry(batches: Batches, *, ddof: int = 0, dtype: torch.dtype = torch.float64,
                             device=None, mean_axis_var: Optional[bool] = None) -> ClassGeometry:
    """:func:`class_geometry` over data that arrives in (features (n, d), labels (n,)) batches.

    Two passes: class means first, then residual moments. ``batches`` must be re-iterable (a list,
    a DataLoader) or a zero-argument function returning a fresh iterator; a one-shot generator is
    detected and rejected. For shards on several workers use :class:`ClassMeans` and
    :class:`GeometryAccumulator` directly: merge the means, then merge the second-pass sums.
    Agrees with the one-shot call to about 1e-13 relative in float64.
    """
    def fresh():
        return batches() if callable(batches) else iter(batches)

    means = ClassMeans(dtype=dtype, device=device)
    for x, y in fresh():
        means.update(x, y)
    acc = GeometryAccumulator(means, mean_axis_var=mean_axis_var)
    for x, y in fresh():
        acc.update(x, y)
    return acc.compute(ddof)


def class_geometry_tasks(features, labels, *, ddof: int = 0, mean_axis_var: Optional[bool] = None) -> list:
    """:func:`class_geometry` for T tasks labelling the same ``features`` (N, d), computed together.

    ``labels`` (T, N) int (negative: not in the task; ``analysis.task_batch``). All sums come from two
    float64 products shared by the tasks. Returns T results, each equal to the per-task
    ``class_geometry`` to float64 rounding, or the error that call would raise
    (:class:`UndefinedGeometry` or DncsimError), returned rather than raised.
    """
    from dncsim.analysis.task_batch import task_labels

    x = as_features(features).to(torch.float64)
    lab = task_labels(labels, x.shape[0], min_classes=1)
    T, C = lab.T, lab.C
    shift = x.mean(dim=0, keepdim=True)
    xc = x - shift
    onehot = lab.onehot()                                                 # (T, N, C)
    counts = lab.counts.to(torch.float64)
    sums = onehot.transpose(1, 2) @ xc                                    # (T, C, d)
    means = sums / counts.clamp_min(1).unsqueeze(-1)
    sqx = xc.square().sum(1)                                              # (N,)
    proj = (xc @ means.reshape(T * C, -1).T).view(-1, T, C)               # (N, T, C): x . mu_c
    gram = means @ means.transpose(1, 2)                                  # (T, C, C): mu_i . mu_j
    iy = lab.idx.clamp_min(0).T                                           # (N, T)
    tt = torch.arange(T)[None, :]
    inside = (lab.idx >= 0).T.to(torch.float64)                           # (N, T)
    own = proj.gather(2, iy[..., None])[..., 0]                           # x . mu_y
    r2 = (sqx[:, None] - 2 * own + gram.diagonal(dim1=1, dim2=2)[tt, iy]).clamp_min(0) * inside
    p = proj - gram[tt, iy]                                               # (N, T, C): r . mu_j
    oh_t = onehot.transpose(0, 1)                                         # (N, T, C)
    sq = (oh_t * r2[..., None]).sum(0)                                    # (T, C)
    quart = (oh_t * r2.square()[..., None]).sum(0)
    pc = (p - p.mean(dim=2, keepdim=True)) * inside[..., None]            # r . (mu_j - mean of means)
    w = torch.einsum("ntc,nte->tce", pc, pc) if (C <= MEAN_AXIS_VAR_AUTO_MAX_CLASSES
                                                  if mean_axis_var is None else mean_axis_var) else None
    dq = (p - p.gather(2, iy[..., None])).square() * inside[..., None]   # (r . (mu_j - mu_y))^2
    q = torch.einsum("ntc,ntj->tcj", oh_t, dq)                            # (T, C, C)
    out = []
    sizes = lab.mask.sum(1).tolist()                                      # classes are a prefix of each row
    means_abs = means + shift
    for t, c in enumerate(sizes):       # finishing only: O(C^2) per task, with class_geometry's checks
        acc = GeometryAccumulator.__new__(GeometryAccumulator)
        acc.classes, acc.counts = lab.classes[t, :c], lab.counts[t, :c]
        acc.dtype, acc.device = torch.float64, x.device
        acc._means = means_abs[t, :c]
        acc.sq, acc.quart, acc.q = sq[t, :c], quart[t, :c], q[t, :c, :c]
        acc.w = None if w is None else w[t, :c, :c]
        acc.seen = acc.counts
        try:
            out.append(acc.compute(ddof))
        except DncsimError as err:          # UndefinedGeometry, or fewer than 2 classes: this task alone
            out.append(err)
    return out
