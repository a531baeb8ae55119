"""Helpers shared by the data sources: stratified sampling and image resizing."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["stratified_pick", "resize_images"]


def stratified_pick(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Pick ``round(fraction * N)`` of the N samples, every class in proportion: (picked, rest) indices.

    ``labels``: (N,) integer class ids. A class of n samples contributes ``floor(fraction * n)`` or
    ``ceil(fraction * n)`` samples (the classes with the largest remainders round up, ties in class
    order), chosen uniformly with ``rng``. Both index arrays are int64 and sorted ascending, so the
    result depends only on the labels, the fraction and the state of ``rng``.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * fraction
    take = np.floor(quota).astype(np.int64)
    extra = int(round(quota.sum())) - int(take.sum())
    take[np.argsort(take - quota, kind="stable")[:extra]] += 1
    picked = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)])
    mask = np.zeros(len(labels), dtype=bool)
    mask[picked] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def resize_images(x: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """(N, C, H, W) float images in [0, 1] resized bilinearly to (N, C, size, size), still in [0, 1].

    ``None`` or the current square size returns ``x`` unchanged. Downscaling is antialiased.
    """
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    out = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)
