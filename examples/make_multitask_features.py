"""Make examples/multitask_features.npz, the example file of ``dncsim analyze`` and of the documentation.

A factor model of what a self-supervised encoder does to the paper's synthetic multitask images:
four independent, exactly balanced attributes (color 4, shape 4, size 3, style 2; a full factorial
design with REPS samples per cell) each move the feature vector along a few directions of their
own; within-class noise is small along those directions and large in the "nuisance" directions
(position, rotation, background), so directional CDNV is much smaller than CDNV. The attribute
subspaces overlap slightly, so the decision axes of different attributes are nearly, not exactly,
orthogonal. Deterministic: the same seed gives the same arrays on one machine, and on any other to
within floating-point rounding -- every basis is a QR factorisation of a full-rank matrix with the
signs fixed (R's diagonal positive), which is unique, so no LAPACK choice (null-space bases, signs)
enters the result.

    python examples/make_multitask_features.py [--out PATH] [--seed 0]
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

ATTRIBUTES = {"color": 4, "shape": 4, "size": 3, "style": 2}
REPS = 20          # samples per attribute combination: N = 4*4*3*2*20 = 1920
DIM = 64           # feature dimension
SIGNAL_DIMS = 6    # directions per attribute
OVERLAP = 0.15     # share of each attribute's directions drawn from a common subspace
SIGNAL_STD = 0.3   # within-class noise along attribute directions
NUISANCE_STD = 0.5 # within-class noise elsewhere


def orthonormal(a: np.ndarray) -> np.ndarray:
    """The Q of a full-column-rank ``a`` = QR with R's diagonal positive: unique, so every LAPACK gives it."""
    q, r = np.linalg.qr(a)
    return q * np.sign(np.diag(r))


def make(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    names = list(ATTRIBUTES)
    grids = np.meshgrid(*[np.arange(k) for k in ATTRIBUTES.values()], indexing="ij")
    labels = {n: np.repeat(g.reshape(-1), REPS) for n, g in zip(names, grids)}
    n = len(labels[names[0]])
    basis = orthonormal(rng.normal(size=(DIM, DIM)))
    shared = basis[:, -SIGNAL_DIMS:]
    x = np.zeros((n, DIM))
    spans = []
    for a, name in enumerate(names):
        own = basis[:, a * SIGNAL_DIMS:(a + 1) * SIGNAL_DIMS]
        mix = rng.normal(size=(SIGNAL_DIMS, SIGNAL_DIMS))
        dirs = (1 - OVERLAP) * own + OVERLAP * shared @ mix / np.sqrt(SIGNAL_DIMS)
        codes = rng.normal(size=(ATTRIBUTES[name], SIGNAL_DIMS)) * 1.5
        x += codes[labels[name]] @ dirs.T
        spans.append(dirs)
    # noise: small inside the attribute subspace, large in its orthogonal complement. q's first k
    # columns span the attributes' directions, the rest the complement (QR of [directions | random]).
    k = len(names) * SIGNAL_DIMS
    q = orthonormal(np.concatenate(spans + [rng.normal(size=(DIM, DIM - k))], axis=1))
    scales = np.r_[np.full(k, SIGNAL_STD), np.full(DIM - k, NUISANCE_STD)]
    x += (rng.normal(size=(n, DIM)) * scales) @ q.T
    perm = rng.permutation(n)
    return {"features": x[perm].astype(np.float32), **{k: v[perm].astype(np.int64) for k, v in labels.items()}}


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("multitask_features.npz")))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    Path(args.out).write_bytes(npz_bytes(make(args.seed)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
