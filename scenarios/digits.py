"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes): real images, no download."""
from __future__ import annotations

import numpy as np
import torch

from dncsim.scenarios.preprocessing import resize_images, stratified_pick
from dncsim.scenarios.source_config import DigitsConfig
from dncsim.scenarios.sources import SourceData, Split

# The config class lives in scenarios/source_config.py (torch-free, so that validating a config stays
# fast) and is re-exported here.
__all__ = ["DigitsConfig", "load_digits_source"]


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
