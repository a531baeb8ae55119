"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes): real images, no download."""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field

from dncsim.scenarios.preprocessing import resize_images, stratified_pick
from dncsim.common import StrictModel
from dncsim.scenarios.sources import SourceData, Split

__all__ = ["DigitsConfig", "load_digits_source"]


class DigitsConfig(StrictModel):
    """``sklearn.datasets.load_digits``, split into train and test with the scenario seed."""

    name: Literal["digits"] = "digits"
    image_size: Optional[int] = Field(None, ge=8, le=128,
                                      description="upscale bilinearly to image_size x image_size (default: 8x8)")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="fraction of every class held out for testing")


def load_digits_source(cfg: DigitsConfig, seed: int) -> SourceData:
    """The digits as a source with one labeling, ``"class"`` (ids 0..9, names ``"0"`` ... ``"9"``).

    Images: (N, 1, H, W) float32 in [0, 1] (the pixel values 0..16 divided by 16), H = W = 8 or
    ``cfg.image_size``. Test split: ``cfg.test_fraction`` of every class (rounded per class, see
    :func:`stratified_pick`), chosen by a private generator seeded with ``seed``; the rest is the
    train split. Both keep the dataset's order. The same seed gives the same split.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    images = resize_images(torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None], cfg.image_size)
    test_idx, train_idx = stratified_pick(labels, cfg.test_fraction, np.random.default_rng(seed))

    def split(idx: np.ndarray) -> Split:
        return Split(x=images[idx].contiguous(), labels={"class": torch.from_numpy(labels[idx])})

    return SourceData(name="digits", train=split(train_idx), test=split(test_idx),
                      label_names={"class": [str(k) for k in range(10)]}, default_labeling="class",
                      info={"n_train": len(train_idx), "n_test": len(test_idx),
                            "image_size": images.shape[-1], "test_fraction": cfg.test_fraction})
