"""Precomputed embeddings from an .npz file: ``features`` (N, d) plus one or more label arrays.

The file format (what ``dncsim analyze`` reads and what the ``features`` scenario will read):

* ``features``: a 2-D float array (N, d), one row per sample;
* one 1-D integer array of length N per labeling, named after it (``color``, ``shape`` ...), or a
  single one named ``labels``. Other arrays (of another length or dimension, or non-integer) are
  metadata and are ignored unless asked for by name.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from analysis.errors import DncsimError

__all__ = ["FeatureFile", "load_feature_file"]


@dataclass(frozen=True)
class FeatureFile:
    """A loaded feature file: ``features`` (N, d) float ndarray; ``labelings`` name -> (N,) int64."""

    path: Path
    features: np.ndarray
    labelings: Dict[str, np.ndarray]


def _is_label_array(a: np.ndarray, n: int) -> bool:
    return a.ndim == 1 and a.shape[0] == n and (np.issubdtype(a.dtype, np.integer) or a.dtype == bool)


def load_feature_file(path, labels: Optional[Sequence[str]] = None) -> FeatureFile:
    """Read ``path`` (.npz) and return its features and labelings.

    ``labels``: the label arrays to use, in order (default: every 1-D integer array of length N, in
    file order). Raises DncsimError, naming the file, when it is missing or not a readable .npz,
    has no 2-D ``features`` array, when a requested label key is absent (listing the available
    ones) or is not an integer array of length N, or when no label array is found.
    """
    p = Path(path)
    if not p.is_file():
        raise DncsimError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DncsimError(f"{p}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if "features" not in arrays:
        raise DncsimError(f"{p}: no array named 'features' (found: {', '.join(sorted(arrays)) or 'none'})")
    x = arrays.pop("features")
    if x.ndim != 2:
        raise DncsimError(f"{p}: 'features' must be 2-D (N, d); got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DncsimError(f"{p}: 'features' must be numeric; got dtype {x.dtype}")
    n = x.shape[0]
    candidates = [k for k, a in arrays.items() if _is_label_array(a, n)]
    if labels is None:
        chosen = candidates
        if not chosen:
            raise DncsimError(f"{p}: no label array found: expected 1-D integer arrays of length {n} "
                              f"(e.g. 'labels'); found: {', '.join(sorted(arrays)) or 'none'}")
    else:
        chosen = list(dict.fromkeys(labels))
        for key in chosen:
            if key not in arrays:
                raise DncsimError(f"{p}: label key '{key}' not in the file; available label arrays: "
                                  f"{', '.join(candidates) or 'none'}")
            if not _is_label_array(arrays[key], n):
                a = arrays[key]
                raise DncsimError(f"{p}: '{key}' is not a label array: expected 1-D integers of length {n}, "
                                  f"got shape {a.shape} dtype {a.dtype}")
    return FeatureFile(path=p, features=x, labelings={k: arrays[k].astype(np.int64) for k in chosen})
