"""Least squares (OLS or 2SLS) with cluster-robust errors that stay right when fixed effects are nested
in the clusters: CR2 and a t reference on Bell-McCaffrey degrees of freedom.

CR2 scales each cluster's residuals by ``(I - H_gg)^(-1/2)`` (H: hat matrix of the design, projected
for 2SLS): unbiased under independent homoskedastic errors. Run fixed effects make ``I - H_gg``
singular along the cluster's constant vector, which residuals never touch: the Moore-Penrose root.
No parameter count enters. Batched over a leading axis of ``X`` and ``y``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats as sps

from dncsim.common import DncsimError

__all__ = ["ClusterFit", "cluster_fit"]

#: eigenvalues of I - H_gg below this are treated as zero (the Moore-Penrose root)
EIGEN_FLOOR = 1e-10


@dataclass(frozen=True)
class ClusterFit:
    """``params``, ``se`` (CR2) and ``df`` (Bell-McCaffrey; NaN for coefficients not asked for) with shape
    ``(..., p)``; ``n_clusters`` G; ``cov`` the CR2 covariance ``(..., p, p)``. ``t``, ``p_values()``
    (two-sided) and ``interval(alpha)`` read on t(df)."""

    params: np.ndarray
    se: np.ndarray
    df: np.ndarray
    n_clusters: int
    cov: Optional[np.ndarray] = None

    @property
    def t(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.params / self.se

    def p_values(self) -> np.ndarray:
        return 2 * sps.t.sf(np.abs(self.t), self.df)

    def interval(self, alpha: float = 0.05):
        half = sps.t.ppf(1 - alpha / 2, self.df) * self.se
        return self.params - half, self.params + half


def _clusters_by_size(clusters: np.ndarray):
    """Row indices of the clusters, grouped by size: ``[(size, (G_s, size) rows)]`` and the cluster count."""
    order = np.argsort(clusters, kind="stable")
    labels, starts, sizes = np.unique(clusters[order], return_index=True, return_counts=True)
    groups = []
    for s in np.unique(sizes):
        first = starts[sizes == s]
        groups.append((int(s), order[first[:, None] + np.arange(s)[None, :]]))
    return groups, len(labels)


def cluster_fit(X, y, clusters, *, instruments=None, terms: Optional[Sequence[int]] = None) -> ClusterFit:
    """Fit ``y`` on ``X`` ((n, p) or (B, n, p); y (n,) or (B, n)) with CR2 errors clustered by the integer
    codes ``clusters`` (n,). ``instruments`` (n, q) or (B, n, q), q >= p, holding the exogenous columns
    of X and the excluded instruments: 2SLS, the CR2 adjustment and the degrees of freedom read from the
    projected design. ``terms``: the coefficients that get degrees of freedom (default all). DncsimError
    for a rank-deficient design or fewer than 2 clusters."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    single = X.ndim == 2
    if single:
        X, y = X[None], y[None]
        instruments = None if instruments is None else np.asarray(instruments, dtype=float)[None]
    clusters = np.asarray(clusters)
    B, n, p = X.shape
    groups, G = _clusters_by_size(clusters)
    if G < 2:
        raise DncsimError(f"{G} cluster: at least 2 are needed for cluster-robust errors")
    if instruments is None:
        Xh = X
    else:
        Z = np.broadcast_to(np.asarray(instruments, dtype=float), (B, n, np.shape(instruments)[-1]))
        if np.any(np.linalg.matrix_rank(Z) < Z.shape[-1]):
            raise DncsimError("the instruments and exogenous columns are collinear: 2SLS cannot be fitted")
        Zt = Z.transpose(0, 2, 1)
        Xh = Z @ np.linalg.solve(Zt @ Z, Zt @ X)                       # the projected design P_Z X
    if np.any(np.linalg.matrix_rank(Xh) < p):
        raise DncsimError("the design is rank-deficient (collinear columns, or an instrument that does not "
                          "reach the endogenous column): the coefficients cannot be told apart")
    bread = np.linalg.inv(Xh.transpose(0, 2, 1) @ Xh)                 # (B, p, p)
    params = (bread @ (Xh.transpose(0, 2, 1) @ y[..., None]))[..., 0]
    e = y - (X @ params[..., None])[..., 0]
    terms = list(range(p)) if terms is None else [int(j) for j in terms]
    scores, cross, qnorm = [], [], []
    for size, rows in groups:
        Xg = Xh[:, rows, :]                                            # (B, G_s, s, p)
        Xg_t = Xg.transpose(0, 1, 3, 2)
        H = Xg @ bread[:, None] @ Xg_t
        w, V = np.linalg.eigh(np.eye(size) - H)
        root = np.where(w > EIGEN_FLOOR, 1.0 / np.sqrt(np.clip(w, EIGEN_FLOOR, None)), 0.0)
        A = V @ (root[..., None] * V.transpose(0, 1, 3, 2))           # (I - H_gg)^(+1/2)
        scores.append((Xg_t @ (A @ e[:, rows][..., None]))[..., 0])   # (B, G_s, p)
        Q = A @ Xg @ bread[:, None][..., terms]                        # (B, G_s, s, m): A_g X_g bread e_j
        cross.append(Xg_t @ Q)                                         # (B, G_s, p, m)
        qnorm.append((Q * Q).sum(-2))                                  # (B, G_s, m)
    S = np.concatenate(scores, 1)
    cov = bread @ (S.transpose(0, 2, 1) @ S) @ bread
    se = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
    # Bell-McCaffrey: the CR2 variance of coefficient j is e'GG'e with G's column g (I - H)_{.g} q_gj;
    # under independent homoskedastic errors its df is tr(G'G)^2 / ||G'G||^2, G'G = diag|q_gj|^2 - C'bread C
    C = np.concatenate(cross, 1).transpose(0, 3, 1, 2)                 # (B, m, G, p)
    GtG = -(C @ bread[:, None] @ C.transpose(0, 1, 3, 2))
    idx = np.arange(G)
    GtG[..., idx, idx] += np.concatenate(qnorm, 1).transpose(0, 2, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        bm = np.trace(GtG, axis1=-2, axis2=-1) ** 2 / (GtG ** 2).sum((-2, -1))
    df = np.full((B, p), np.nan)
    df[:, terms] = np.where(np.isfinite(bm) & (bm > 0), bm, G - 1)
    if single:
        params, se, df, cov = params[0], se[0], df[0], cov[0]
    return ClusterFit(params=params, se=se, df=df, n_clusters=G, cov=cov)
