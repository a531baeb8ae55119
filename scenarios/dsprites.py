"""dSprites from its official ``.npz``: the attribute table from ``latents_classes``, the chosen rows of
``imgs`` streamed from the zip member (see ``scenarios/disk_sources.py`` for what is shared)."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from dncsim.common import DncsimError
from dncsim.scenarios.disk_sources import (AttributeTable, array_chunks, assemble_images, class_ids, data_file,
                                           format_value, row_blocks, table_source)
from dncsim.scenarios.source_config import DSpritesConfig
from dncsim.scenarios.sources import SourceData

__all__ = ["DSpritesConfig", "load_dsprites", "DSPRITES_FILE", "DSPRITES_COLUMNS", "DSPRITES_SHAPES"]

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_COLUMNS = {"shape": 1, "scale": 2, "orientation": 3, "pos_x": 4, "pos_y": 5}
"""Attribute -> column of ``latents_classes`` (column 0 is the colour, constant white)."""
DSPRITES_SHAPES = ("square", "ellipse", "heart")
"""Names of dSprites' shape classes 0, 1, 2."""


def _npy_header(fp, where: str):
    try:
        version = np.lib.format.read_magic(fp)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(fp)
    except ValueError as exc:
        raise DncsimError(f"{where}: not a .npy array ({exc})") from None


def _dsprites_table(cfg: DSpritesConfig, path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in ("imgs", "latents_classes") if k not in keys]
            if missing:
                raise DncsimError(f"{path}: no array '{missing[0]}': expected the dSprites keys imgs (N, 64, 64) "
                                  f"uint8, latents_classes (N, 6) int, latents_values (N, 6) float; found "
                                  f"{', '.join(sorted(keys)) or 'none'}")
            classes = z["latents_classes"]
            values = z["latents_values"] if "latents_values" in keys else None
        with zipfile.ZipFile(path) as zf, zf.open("imgs.npy") as fp:
            shape, fortran, dtype = _npy_header(fp, f"{path} imgs")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, DncsimError):
            raise
        raise DncsimError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if classes.ndim != 2 or classes.shape[1] != 6 or not np.issubdtype(classes.dtype, np.integer):
        raise DncsimError(f"{path}: latents_classes must be (N, 6) integers (color, shape, scale, orientation, "
                          f"pos_x, pos_y); got shape {classes.shape} dtype {classes.dtype}")
    n = len(classes)
    if len(shape) != 3 or shape[1] != shape[2] or shape[0] != n or dtype != np.uint8 or fortran:
        raise DncsimError(f"{path}: imgs must be ({n}, 64, 64) uint8 in C order (one square image per row of "
                          f"latents_classes); got shape {tuple(shape)} dtype {dtype}"
                          + (" in Fortran order" if fortran else ""))
    if values is not None and (values.shape != classes.shape or not np.issubdtype(values.dtype, np.number)):
        raise DncsimError(f"{path}: latents_values must be numbers shaped like latents_classes {classes.shape}; "
                          f"got shape {values.shape} dtype {values.dtype}")
    codes, names = [], []
    for attr in cfg.attributes:
        col = DSPRITES_COLUMNS[attr]
        raw = classes[:, col].astype(np.int64)

        def value_names(uniq, col=col, raw=raw, attr=attr):
            if attr == "shape" and uniq.min() >= 0 and uniq.max() < len(DSPRITES_SHAPES):
                return [DSPRITES_SHAPES[int(c)] for c in uniq]
            if values is None:
                return [str(int(c)) for c in uniq]
            _, first = np.unique(raw, return_index=True)              # any row of a class gives its value
            return [format_value(values[i, col]) for i in first]
        ids, value = class_ids(raw, value_names, cfg.bins.get(attr), str(path), attr)
        codes.append(ids)
        names.append(value)
    return AttributeTable(str(path), list(cfg.attributes), np.stack(codes, 1), names), tuple(shape[1:])


def _stream_npy_rows(path: Path, key: str, rows: np.ndarray, row_shape: tuple, chunk_bytes: int) -> np.ndarray:
    """Rows ``rows`` (sorted) of the uint8 array ``key`` of an .npz, read front to back from the zip member
    (one pass of decompression, at most ``chunk_bytes`` held at once besides the result)."""
    row_bytes = int(np.prod(row_shape))
    out = np.empty((len(rows), *row_shape), dtype=np.uint8)
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fp:
            _npy_header(fp, f"{path} {key}")
            offset = fp.tell()
            for i, j, start, stop in row_blocks(rows, row_bytes, chunk_bytes):
                fp.seek(offset + start * row_bytes)
                buf = fp.read((stop - start) * row_bytes)
                if len(buf) != (stop - start) * row_bytes:
                    raise DncsimError(f"{path}: {key} ends early (row {start + len(buf) // row_bytes} of "
                                      f"{stop} cannot be read): the file is truncated")
                block = np.frombuffer(buf, dtype=np.uint8).reshape(-1, *row_shape)
                out[i:j] = block[rows[i:j] - start]
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise DncsimError(f"{path}: {key} could not be read ({type(exc).__name__}: {exc})") from None
    return out


def load_dsprites(cfg: DSpritesConfig, seed: int) -> SourceData:
    """dSprites from its official ``.npz``: (N, 1, 64, 64) images (or ``image_size``), pixels 0.0/1.0.

    Reads ``imgs`` (streamed, ``chunk_mb`` at a time, chosen rows only), ``latents_classes`` (shape, scale,
    orientation, pos_x, pos_y; color ignored) and ``latents_values`` for names. ``bins`` groups ids into
    equal-width bins (id * bins // K). Split: seeded, ``test_fraction``. Layout: docs, How-to.
    """
    path = data_file(cfg.data_root, DSPRITES_FILE, "the dSprites .npz (imgs, latents_classes, latents_values)")
    table, row_shape = _dsprites_table(cfg, path)

    def read(rows: np.ndarray) -> torch.Tensor:
        u8 = _stream_npy_rows(path, "imgs", rows, row_shape, cfg.chunk_mb << 20)
        scale = 1.0 if not len(u8) or int(u8.max()) <= 1 else 1.0 / 255.0
        return assemble_images(len(u8), array_chunks(u8), cfg.image_size, scale, str(path))

    return table_source(cfg, table, seed, cfg.test_fraction, read, {"path": str(path), "bins": dict(cfg.bins)})
