"""Precomputed embeddings from an .npz file: ``features`` (N, d) plus one or more label arrays.

The file format (what ``dncsim analyze`` reads and what the ``features`` scenario will read):

* ``features``: a 2-D float array (N, d), one row per sample;
* one 1-D integer array of length N per labeling, named after it (``color``, ``shape`` ...), or a
  single one named ``labels``. Other arrays (of another length or dimension, or non-integer) are
  metadata and are ignored unless asked for by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from dncsim.analysis.inputs import as_features
from dncsim.common import DncsimError
from dncsim.npzfile import NpzArchive
from dncsim.scenarios.preprocessing import stratified_pick
from dncsim.scenarios.source_config import FeaturesSourceConfig
from dncsim.scenarios.sources import SourceData, Split

# The config class lives in scenarios/source_config.py (torch-free, so that validating a config stays
# fast) and is re-exported here.
__all__ = ["FeatureFile", "load_feature_file", "FeaturesSourceConfig", "load_features_source"]


@dataclass(frozen=True)
class FeatureFile:
    """A loaded feature file: ``features`` (N, d) float ndarray; ``labelings`` name -> (N,) int64."""

    path: Path
    features: np.ndarray
    labelings: Dict[str, np.ndarray]


def _is_label_header(shape: tuple, dtype: np.dtype, n: int) -> bool:
    return len(shape) == 1 and shape[0] == n and dtype.kind in "iub"


def load_feature_file(path, labels: Optional[Sequence[str]] = None) -> FeatureFile:
    """Read ``path`` (.npz): its ``features`` (N, d) and the chosen labelings.

    ``labels``: label arrays to use, in order (default: every 1-D integer array of length N, file order).
    Only those members are read (``dncsim.npzfile``). DncsimError naming the file when it is missing or
    unreadable, lacks a 2-D numeric ``features``, a requested key is absent (listing those present) or not
    an integer array of length N, or no label array is found.
    """
    p = Path(path)
    with NpzArchive(p) as z:
        names = z.names
        if "features" not in z:
            raise DncsimError(f"{p}: no array named 'features' (found: {', '.join(sorted(names)) or 'none'})")
        shape, dtype = z.header("features")
        if len(shape) != 2:
            raise DncsimError(f"{p}: 'features' must be 2-D (N, d); got shape {shape}")
        if dtype.kind not in "fiu":
            raise DncsimError(f"{p}: 'features' must be real numbers (float or integer); got dtype {dtype}")
        n = shape[0]
        others = [k for k in names if k != "features"]

        def candidates():
            return [k for k in others if _is_label_header(*z.header(k), n)]

        def available():       # for a message: what could have been asked for (unreadable members left out)
            found = []
            for k in others:
                try:
                    found += [k] if _is_label_header(*z.header(k), n) else []
                except DncsimError:
                    pass
            return ", ".join(found) or "none"
        if labels is None:
            chosen = candidates()
            if not chosen:
                raise DncsimError(f"{p}: no label array found: expected 1-D integer arrays of length {n} "
                                  f"(e.g. 'labels'); found: {', '.join(sorted(others)) or 'none'}")
        else:
            chosen = list(dict.fromkeys(labels))
            for key in chosen:
                if key not in z or key == "features":
                    raise DncsimError(f"{p}: label key '{key}' not in the file; available label arrays: "
                                      f"{available()}")
                s, dt = z.header(key)
                if not _is_label_header(s, dt, n):
                    raise DncsimError(f"{p}: '{key}' is not a label array: expected 1-D integers of length {n}, "
                                      f"got shape {s} dtype {dt}")
        x = z.read("features")
        labelings = {k: z.read(k).astype(np.int64) for k in chosen}
    return FeatureFile(path=p, features=x, labelings=labelings)


def _ids_and_names(train: np.ndarray, test: np.ndarray):
    """Map raw label values to ids 0..K-1 (sorted by value); names are the values as text."""
    values = np.unique(np.concatenate([train, test]))
    return (torch.from_numpy(np.searchsorted(values, train)), torch.from_numpy(np.searchsorted(values, test)),
            [str(v) for v in values.tolist()])


def _float32_features(a: np.ndarray, name: str) -> torch.Tensor:
    """``a`` as the float32 tensor training uses; DncsimError when a value is beyond float32's range."""
    x = as_features(a, name=name)
    top = float(x.abs().max())
    if top > float(np.finfo(np.float32).max):
        raise DncsimError(f"{name}: values up to {top:.3g} are beyond float32's range (3.4e+38) that training "
                          "computes in; rescale the features")
    return x.to(torch.float32)


def load_features_source(cfg: FeaturesSourceConfig, seed: int) -> SourceData:
    """A SourceData of (N, d) float32 feature vectors; labelings keep their file names, ids 0..K-1 by value."""
    ff = load_feature_file(cfg.path, cfg.labelings)
    if cfg.test_path is not None:
        tf = load_feature_file(cfg.test_path, list(ff.labelings))
        if tf.features.shape[1] != ff.features.shape[1]:
            raise DncsimError(f"{cfg.test_path}: features have {tf.features.shape[1]} columns but "
                              f"{cfg.path} has {ff.features.shape[1]}")
        xtr, xte, ltr, lte = ff.features, tf.features, ff.labelings, tf.labelings
    else:
        first = next(iter(ff.labelings.values()))
        te, tr = stratified_pick(first, cfg.test_fraction, np.random.default_rng(seed))
        xtr, xte = ff.features[tr], ff.features[te]
        ltr = {k: v[tr] for k, v in ff.labelings.items()}
        lte = {k: v[te] for k, v in ff.labelings.items()}
    train_labels, test_labels, names = {}, {}, {}
    for k in ff.labelings:
        train_labels[k], test_labels[k], names[k] = _ids_and_names(ltr[k], lte[k])
    x = {s: _float32_features(a, f"{cfg.path if s == 'train' or cfg.test_path is None else cfg.test_path} features")
         for s, a in (("train", xtr), ("test", xte))}
    return SourceData(name="features", train=Split(x["train"], train_labels), test=Split(x["test"], test_labels),
                      label_names=names, default_labeling=next(iter(ff.labelings)),
                      info={"path": str(cfg.path), "test_path": str(cfg.test_path) if cfg.test_path else None})
