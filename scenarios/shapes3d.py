"""3dshapes from its official ``.h5``: the ``labels`` table whole, the chosen rows of ``images`` read a
bounded span at a time (see ``scenarios/disk_sources.py`` for what is shared)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dncsim.common import DncsimError
from dncsim.scenarios.disk_sources import (AttributeTable, array_chunks, assemble_images, class_ids, data_file,
                                           format_value, row_blocks, table_source)
from dncsim.scenarios.source_config import Shapes3DConfig
from dncsim.scenarios.sources import SourceData

__all__ = ["Shapes3DConfig", "load_shapes3d", "SHAPES3D_FILE", "SHAPES3D_COLUMNS"]

SHAPES3D_FILE = "3dshapes.h5"
SHAPES3D_COLUMNS = {"floor_hue": 0, "wall_hue": 1, "object_hue": 2, "scale": 3, "shape": 4, "orientation": 5}
"""Attribute -> column of 3dshapes' ``labels``."""


def _h5_rows(dset, rows: np.ndarray, chunk_bytes: int) -> np.ndarray:
    """Rows ``rows`` (sorted, unique) of an h5py dataset, a bounded span at a time: a contiguous slice
    where the chosen rows are dense, a point selection where they are sparse."""
    row_shape = tuple(dset.shape[1:])
    out = np.empty((len(rows), *row_shape), dtype=dset.dtype)
    for i, j, start, stop in row_blocks(rows, int(np.prod(row_shape)) * dset.dtype.itemsize, chunk_bytes):
        picked = rows[i:j]
        if 4 * (j - i) >= stop - start:
            out[i:j] = dset[start:stop][picked - start]
        else:
            out[i:j] = dset[picked]
    return out


def _open_h5(path: Path):
    import h5py
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DncsimError(f"{path}: not a readable HDF5 file ({exc})") from None


def _shapes3d_table(cfg: Shapes3DConfig, path: Path):
    import h5py
    with _open_h5(path) as f:
        missing = [k for k in ("images", "labels") if not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise DncsimError(f"{path}: no dataset '{missing[0]}': expected the 3dshapes datasets images "
                              f"(N, 64, 64, 3) uint8 and labels (N, 6) float; found "
                              f"{', '.join(sorted(f.keys())) or 'none'}")
        images, labels_ds = f["images"], f["labels"]
        if labels_ds.ndim != 2 or labels_ds.shape[1] != 6 or labels_ds.dtype.kind not in "fiu":
            raise DncsimError(f"{path}: labels must be (N, 6) numbers (floor_hue, wall_hue, object_hue, scale, "
                              f"shape, orientation); got shape {labels_ds.shape} dtype {labels_ds.dtype}")
        n = labels_ds.shape[0]
        shape = tuple(images.shape)
        if (len(shape) != 4 or shape[0] != n or shape[1] != shape[2] or shape[3] not in (1, 3)
                or images.dtype != np.uint8):
            raise DncsimError(f"{path}: images must be ({n}, 64, 64, 3) uint8 (one square RGB image per row of "
                              f"labels); got shape {shape} dtype {images.dtype}")
        labels = labels_ds[()].astype(np.float64)
    if not np.isfinite(labels).all():
        raise DncsimError(f"{path}: labels hold NaN or infinite values")
    codes, names = [], []
    for attr in cfg.attributes:
        ids, value = class_ids(labels[:, SHAPES3D_COLUMNS[attr]], lambda u: [format_value(v) for v in u],
                               cfg.bins.get(attr), str(path), attr)
        codes.append(ids)
        names.append(value)
    return AttributeTable(str(path), list(cfg.attributes), np.stack(codes, 1), names)


def load_shapes3d(cfg: Shapes3DConfig, seed: int) -> SourceData:
    """3dshapes from its official ``.h5``: (N, 3, 64, 64) RGB images (or ``image_size``).

    Reads ``labels`` (N, 6: floor_hue, wall_hue, object_hue, scale, shape, orientation) whole; each
    attribute's sorted unique values are its class ids and names. ``images`` rows are read only where
    chosen, sorted, ``chunk_mb`` at a time. ``bins`` as for dsprites. Split: seeded, ``test_fraction``.
    """
    path = data_file(cfg.data_root, SHAPES3D_FILE, "the 3dshapes .h5 (images, labels)")
    table = _shapes3d_table(cfg, path)

    def read(rows: np.ndarray) -> torch.Tensor:
        with _open_h5(path) as f:
            try:
                u8 = _h5_rows(f["images"], rows, cfg.chunk_mb << 20)
            except (OSError, ValueError) as exc:
                raise DncsimError(f"{path}: images could not be read ({type(exc).__name__}: {exc})") from None
        return assemble_images(len(u8), array_chunks(u8), cfg.image_size, 1.0 / 255.0, str(path))

    return table_source(cfg, table, seed, cfg.test_fraction, read, {"path": str(path), "bins": dict(cfg.bins)})
