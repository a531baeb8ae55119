"""Multi-attribute image sources read from disk: ``dsprites``, ``shapes3d``, ``celeba_attributes``, ``image_table``.

Each loader reads the attribute table, maps each chosen attribute to ids 0..K-1 with names, picks each
split's samples (``_select``), then reads only those images, in chunks. Images: (N, C, S, S) float32 in
[0, 1]. Labelings follow ``attributes``. Splits: the dataset's own, else seeded by ``test_fraction``.
``max_samples`` and ``balance``: see ``scenarios/subsample.py``. Bad files: one DncsimError line.
"""
from __future__ import annotations

import csv
import math
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dncsim.common import DncsimError, did_you_mean
from dncsim.scenarios.preprocessing import resize_images
from dncsim.scenarios.source_config import (CelebAAttributesConfig, DiskSourceConfig, DSpritesConfig,
                                            ImageTableConfig, Shapes3DConfig)
from dncsim.scenarios.sources import SourceData, Split, derived_seed
from dncsim.scenarios.subsample import (balanced_classes, balanced_combinations, cells_of, split_shares,
                                        stratified_take, take_per_cell)

# The config classes live in scenarios/source_config.py (torch-free, so that validating a config stays
# fast) and are re-exported here.
__all__ = ["DiskSourceConfig", "DSpritesConfig", "Shapes3DConfig", "CelebAAttributesConfig", "ImageTableConfig",
           "load_disk_source", "load_dsprites", "load_shapes3d", "load_celeba_attributes", "load_image_table",
           "DSPRITES_FILE", "DSPRITES_COLUMNS", "DSPRITES_SHAPES", "SHAPES3D_FILE", "SHAPES3D_COLUMNS"]

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_COLUMNS = {"shape": 1, "scale": 2, "orientation": 3, "pos_x": 4, "pos_y": 5}
"""Attribute -> column of ``latents_classes`` (column 0 is the colour, constant white)."""
DSPRITES_SHAPES = ("square", "ellipse", "heart")
"""Names of dSprites' shape classes 0, 1, 2."""
SHAPES3D_FILE = "3dshapes.h5"
SHAPES3D_COLUMNS = {"floor_hue": 0, "wall_hue": 1, "object_hue": 2, "scale": 3, "shape": 4, "orientation": 5}
"""Attribute -> column of 3dshapes' ``labels``."""
CELEBA_FILES = ("list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba")
IMAGE_CHUNK = 512            # images decoded (JPEG/PNG) and resized per batch


# --- what every loader produces before reading an image -----------------------------------------------

@dataclass
class _Attributes:
    """The chosen attributes of N samples: ``codes`` (N, A) int64 class ids, ``names`` per attribute the
    value names in id order, ``split`` (N,) int8 (0 train, 1 test, -1 left out) or None (seeded split)."""

    where: str
    attributes: List[str]
    codes: np.ndarray
    names: List[List[str]]
    split: Optional[np.ndarray] = None

    def check(self) -> None:
        for a, attr in enumerate(self.attributes):
            counts = np.bincount(self.codes[:, a], minlength=len(self.names[a]))
            if (counts > 0).sum() < 2:
                only = self.names[a][int(np.argmax(counts))] if len(counts) else "none"
                raise DncsimError(f"{self.where}: attribute '{attr}' takes a single value ({only}); a labeling "
                                  f"needs at least 2")
            if (counts == 0).any():
                raise DncsimError(f"{self.where}: attribute '{attr}' has no sample of "
                                  f"{self.names[a][int(np.argmin(counts))]}")


def _rng(cfg: DiskSourceConfig, seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng(derived_seed(seed, cfg.name, *keys))


def _reduce(cfg: DiskSourceConfig, table: _Attributes, rows: np.ndarray, cap: Optional[int], seed: int,
            split: str) -> Tuple[np.ndarray, Optional[int]]:
    """The rows of one split kept under ``cfg.balance`` and the cap: (sorted rows, samples per combination)."""
    codes = table.codes[rows]
    where = f"{table.where} ({split} split)"
    sizes = [len(n) for n in table.names]
    kw = dict(attributes=table.attributes, names=table.names, where=where)
    rng = _rng(cfg, seed, "balance", split)
    mode = cfg.balance_mode
    if mode == "combinations":
        pos, m = balanced_combinations(codes, sizes, cap, rng, **kw)
        return rows[pos], m
    if mode == "classes":
        return rows[balanced_classes(codes, sizes, cap, rng, **kw)], None
    return rows[stratified_take(codes, cap if cap is not None else len(rows), rng)], None


def _select(cfg: DiskSourceConfig, table: _Attributes, seed: int, test_fraction: Optional[float]):
    """(train rows, test rows, facts): the samples of each split, sorted (file order)."""
    mode, cap = cfg.balance_mode, cfg.max_samples
    per = {}
    if table.split is None and mode == "combinations":
        sizes = [len(n) for n in table.names]
        pos, m = balanced_combinations(table.codes, sizes, cap, _rng(cfg, seed, "balance"),
                                       attributes=table.attributes, names=table.names, where=table.where)
        t = int(math.floor(test_fraction * m + 0.5))
        if t < 1 or t >= m:
            raise DncsimError(f"{table.where}: balance: combinations keeps {m} sample(s) per combination of "
                              f"{', '.join(table.attributes)}; test_fraction {test_fraction:g} leaves {t} of them for "
                              f"testing: raise max_samples, or choose or bin fewer attributes")
        _, inv, counts = cells_of(table.codes[pos])
        test = pos[take_per_cell(inv, np.full(len(counts), t), _rng(cfg, seed, "split"))]
        train = np.setdiff1d(pos, test)
        per = {"train": m - t, "test": t}
    else:
        if table.split is None:
            n = len(table.codes)
            test0 = stratified_take(table.codes, int(math.floor(test_fraction * n + 0.5)), _rng(cfg, seed, "split"))
            groups = {"train": np.setdiff1d(np.arange(n), test0), "test": test0}
        else:
            groups = {"train": np.flatnonzero(table.split == 0), "test": np.flatnonzero(table.split == 1)}
        for split, rows in groups.items():
            if not len(rows):
                raise DncsimError(f"{table.where}: the {split} split has no sample")
        caps = (split_shares(cap, [len(g) for g in groups.values()]) if cap is not None else [None, None])
        picked = {}
        for (split, rows), c in zip(groups.items(), caps):
            picked[split], per[split] = _reduce(cfg, table, rows, c, seed, split)
        train, test = picked["train"], picked["test"]
    for split, rows in (("train", train), ("test", test)):
        if not len(rows):
            raise DncsimError(f"{table.where}: nothing is left in the {split} split (max_samples too small?)")
    combos = int(np.prod([len(n) for n in table.names]))
    if mode == "combinations":
        selection = (f"balance combinations: {per['train']} train / {per['test']} test samples per combination of "
                     f"{' x '.join(table.attributes)} ({combos} combinations): every attribute exactly balanced, "
                     f"the attributes exactly independent")
    elif mode == "classes":
        selection = ("balance classes: every class of every attribute equally frequent in each split; the "
                     "attributes not made independent (see Cramér's V below)")
    else:
        selection = (f"no balancing: {'a stratified subsample of ' + str(cap) if cap else 'all'} samples, the "
                     f"attributes' frequencies as in the data")
    facts = {"balance": mode, "selection": selection, "per_combination": per if mode == "combinations" else None,
             "n_train": int(len(train)), "n_test": int(len(test))}
    return train, test, facts


def _source(cfg: DiskSourceConfig, table: _Attributes, seed: int, test_fraction: Optional[float],
            read: Callable[[np.ndarray], torch.Tensor], info: Dict[str, object]) -> SourceData:
    table.check()
    train, test, facts = _select(cfg, table, seed, test_fraction)
    rows = np.union1d(train, test)
    x = read(rows)
    splits = {}
    for name, part in (("train", train), ("test", test)):
        pos = torch.from_numpy(np.searchsorted(rows, part))
        labels = {a: torch.from_numpy(table.codes[part, i].copy()) for i, a in enumerate(table.attributes)}
        splits[name] = Split(x=x[pos].contiguous(), labels=labels)
    del x
    return SourceData(name=cfg.name, train=splits["train"], test=splits["test"],
                      label_names={a: list(n) for a, n in zip(table.attributes, table.names)},
                      default_labeling=table.attributes[0],
                      info={**info, **facts, "attributes": list(table.attributes),
                            "image_size": splits["train"].x.shape[-1]})


# --- images: uint8 arrays to float tensors, batch by batch ---------------------------------------------

def _center_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top:top + s, left:left + s]


def _assemble(n: int, chunks: Iterator[Tuple[int, List[np.ndarray]]], size: Optional[int], scale: float,
              where: str) -> torch.Tensor:
    """(n, C, S, S) float32 from chunks (start, list of uint8 images (H, W) or (H, W, C)): every run of
    images of one size is stacked and resized in one batch."""
    out = None
    for start, images in chunks:
        k = 0
        while k < len(images):
            shape = images[k].shape
            end = k
            while end < len(images) and images[end].shape == shape:
                end += 1
            t = torch.from_numpy(np.ascontiguousarray(np.stack(images[k:end])))
            t = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
            x = resize_images(t.to(torch.float32).mul_(scale), size)
            if out is None:
                out = torch.empty((n, *x.shape[1:]), dtype=torch.float32)
            elif x.shape[1:] != out.shape[1:]:
                raise DncsimError(f"{where}: images of {tuple(shape[:2])} pixels among images of "
                                  f"{tuple(out.shape[-2:])}: set image_size to resize them all to one size")
            out[start + k:start + end] = x
            k = end
    if out is None:
        raise DncsimError(f"{where}: no image to read")
    return out


def _array_chunks(u8: np.ndarray, batch: int = 4096) -> Iterator[Tuple[int, List[np.ndarray]]]:
    for i in range(0, len(u8), batch):
        yield i, list(u8[i:i + batch])


def _blocks(rows: np.ndarray, row_bytes: int, chunk_bytes: int) -> Iterator[Tuple[int, int, int, int]]:
    """(i, j, start, stop): rows[i:j] lie in [start, stop), stop - start at most chunk_bytes / row_bytes."""
    block = max(1, chunk_bytes // max(1, row_bytes))
    i = 0
    while i < len(rows):
        start = int(rows[i])
        j = int(np.searchsorted(rows, start + block))
        yield i, j, start, int(rows[j - 1]) + 1
        i = j


# --- dsprites -------------------------------------------------------------------------------------------

def _data_file(root: Path, official: str, what: str) -> Path:
    p = Path(root).expanduser()
    if p.is_dir():
        p = p / official
    if not p.is_file():
        raise DncsimError(f"{p}: no such file (expected {what}; set data_root to the file or the folder holding "
                          f"{official})")
    return p


def _fmt(v: float) -> str:
    return f"{float(v):.3g}"


def _ids(raw: np.ndarray, value_names: Callable[[np.ndarray], List[str]], bins: Optional[int], where: str,
         attr: str) -> Tuple[np.ndarray, List[str]]:
    """Class ids 0..K-1 of the raw values (sorted order) and their names; with ``bins``, equal-width bins
    over those ids (bin = id * bins // K, so every bin holds floor(K / bins) or one more ids), named
    ``first..last``."""
    uniq, inv = np.unique(raw, return_inverse=True)
    names = value_names(uniq)
    inv = inv.reshape(-1).astype(np.int64)
    if bins is None:
        return inv, names
    k = len(uniq)
    if bins > k:
        raise DncsimError(f"{where}: bins.{attr}: {bins} bins for the {k} values of '{attr}' in the file "
                          f"(at most {k})")
    edges = [(b * k + bins - 1) // bins for b in range(bins + 1)]       # first id of every bin
    return inv * bins // k, [f"{names[lo]}..{names[hi - 1]}" for lo, hi in zip(edges[:-1], edges[1:])]


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
            return [_fmt(values[i, col]) for i in first]
        ids, value = _ids(raw, value_names, cfg.bins.get(attr), str(path), attr)
        codes.append(ids)
        names.append(value)
    return _Attributes(str(path), list(cfg.attributes), np.stack(codes, 1), names), tuple(shape[1:])


def _stream_npy_rows(path: Path, key: str, rows: np.ndarray, row_shape: tuple, chunk_bytes: int) -> np.ndarray:
    """Rows ``rows`` (sorted) of the uint8 array ``key`` of an .npz, read front to back from the zip member
    (one pass of decompression, at most ``chunk_bytes`` held at once besides the result)."""
    row_bytes = int(np.prod(row_shape))
    out = np.empty((len(rows), *row_shape), dtype=np.uint8)
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fp:
            _npy_header(fp, f"{path} {key}")
            offset = fp.tell()
            for i, j, start, stop in _blocks(rows, row_bytes, chunk_bytes):
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
    path = _data_file(cfg.data_root, DSPRITES_FILE, "the dSprites .npz (imgs, latents_classes, latents_values)")
    table, row_shape = _dsprites_table(cfg, path)

    def read(rows: np.ndarray) -> torch.Tensor:
        u8 = _stream_npy_rows(path, "imgs", rows, row_shape, cfg.chunk_mb << 20)
        scale = 1.0 if not len(u8) or int(u8.max()) <= 1 else 1.0 / 255.0
        return _assemble(len(u8), _array_chunks(u8), cfg.image_size, scale, str(path))

    return _source(cfg, table, seed, cfg.test_fraction, read, {"path": str(path), "bins": dict(cfg.bins)})


# --- shapes3d -------------------------------------------------------------------------------------------

def _h5_rows(dset, rows: np.ndarray, chunk_bytes: int) -> np.ndarray:
    """Rows ``rows`` (sorted, unique) of an h5py dataset, a bounded span at a time: a contiguous slice
    where the chosen rows are dense, a point selection where they are sparse."""
    row_shape = tuple(dset.shape[1:])
    out = np.empty((len(rows), *row_shape), dtype=dset.dtype)
    for i, j, start, stop in _blocks(rows, int(np.prod(row_shape)) * dset.dtype.itemsize, chunk_bytes):
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
        ids, value = _ids(labels[:, SHAPES3D_COLUMNS[attr]], lambda u: [_fmt(v) for v in u], cfg.bins.get(attr),
                          str(path), attr)
        codes.append(ids)
        names.append(value)
    return _Attributes(str(path), list(cfg.attributes), np.stack(codes, 1), names)


def load_shapes3d(cfg: Shapes3DConfig, seed: int) -> SourceData:
    """3dshapes from its official ``.h5``: (N, 3, 64, 64) RGB images (or ``image_size``).

    Reads ``labels`` (N, 6: floor_hue, wall_hue, object_hue, scale, shape, orientation) whole; each
    attribute's sorted unique values are its class ids and names. ``images`` rows are read only where
    chosen, sorted, ``chunk_mb`` at a time. ``bins`` as for dsprites. Split: seeded, ``test_fraction``.
    """
    path = _data_file(cfg.data_root, SHAPES3D_FILE, "the 3dshapes .h5 (images, labels)")
    table = _shapes3d_table(cfg, path)

    def read(rows: np.ndarray) -> torch.Tensor:
        with _open_h5(path) as f:
            try:
                u8 = _h5_rows(f["images"], rows, cfg.chunk_mb << 20)
            except (OSError, ValueError) as exc:
                raise DncsimError(f"{path}: images could not be read ({type(exc).__name__}: {exc})") from None
        return _assemble(len(u8), _array_chunks(u8), cfg.image_size, 1.0 / 255.0, str(path))

    return _source(cfg, table, seed, cfg.test_fraction, read, {"path": str(path), "bins": dict(cfg.bins)})


# --- images named in a table (CelebA and image_table) ----------------------------------------------------

def _decode(paths: Sequence[Path], grayscale: bool, where: str, lines: np.ndarray) -> Iterator[Tuple[int, List]]:
    """Chunks of decoded images (uint8 (H, W) or (H, W, 3)), center-cropped to a square; errors name
    ``where`` and the image's line there (``lines``)."""
    from PIL import Image, UnidentifiedImageError

    for start in range(0, len(paths), IMAGE_CHUNK):
        batch = []
        for k, p in enumerate(paths[start:start + IMAGE_CHUNK]):
            try:
                with Image.open(p) as img:
                    batch.append(_center_square(np.asarray(img.convert("L" if grayscale else "RGB"))))
            except FileNotFoundError:
                raise DncsimError(f"{where}: line {int(lines[start + k])} names {p}, which does not exist") from None
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DncsimError(f"{where}: line {int(lines[start + k])} names {p}, which cannot be read as an "
                                  f"image ({type(exc).__name__}: {exc})") from None
        yield start, batch


def _celeba_folder(root: Path) -> Path:
    root = Path(root).expanduser()
    folder = root / "celeba" if (root / "celeba").is_dir() or not (root / CELEBA_FILES[0]).exists() else root
    expected = f"{folder}/{{{', '.join(CELEBA_FILES)}/}}"
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DncsimError(f"celeba_attributes: data_root {root} {problem}: expected {expected} (torchvision's "
                          f"CelebA layout)")
    for name in CELEBA_FILES:
        p = folder / name
        if not (p.is_dir() if name == "img_align_celeba" else p.is_file()):
            raise DncsimError(f"{p}: no such {'folder' if name == 'img_align_celeba' else 'file'} (expected "
                              f"{expected}, torchvision's CelebA layout)")
    return folder


def _read_lines(path: Path) -> List[str]:
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DncsimError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None


def _celeba_table(cfg: CelebAAttributesConfig, folder: Path):
    attr_file, part_file = folder / CELEBA_FILES[0], folder / CELEBA_FILES[1]
    lines = [line for line in _read_lines(attr_file) if line.strip()]
    if len(lines) < 3 or not lines[0].strip().isdigit():
        raise DncsimError(f"{attr_file}: expected a count line, a header of attribute names and one line per "
                          f"image (<file>.jpg followed by -1/1 per attribute)")
    header = lines[1].split()
    for attr in cfg.attributes:
        if attr not in header:
            raise DncsimError(f"{attr_file}: no attribute '{attr}' in its header (has {len(header)}: "
                              f"{', '.join(header[:6])}{', ...' if len(header) > 6 else ''})"
                              f"{did_you_mean(attr, header)}")
    cols = [header.index(a) + 1 for a in cfg.attributes]
    rows = lines[2:]
    if int(lines[0]) != len(rows):
        raise DncsimError(f"{attr_file}: the first line says {int(lines[0])} images, {len(rows)} lines follow")
    heads = [line.split(None, 1) for line in rows]
    files = [h[0] for h in heads]
    with warnings.catch_warnings():       # numpy warns (and stops) at the first token that is not a number
        warnings.simplefilter("ignore", DeprecationWarning)
        flat = np.fromstring(" ".join(h[1] if len(h) > 1 else "" for h in heads), dtype=np.int64, sep=" ")
    if flat.size != len(rows) * len(header):                    # find the line at fault
        for i, line in enumerate(rows):
            parts = line.split()
            if len(parts) != len(header) + 1:
                raise DncsimError(f"{attr_file}: line {i + 3} has {len(parts)} fields; expected a file name and "
                                  f"{len(header)} values of -1/1")
            if not all(re.fullmatch(r"-?1", v) for v in parts[1:]):
                raise DncsimError(f"{attr_file}: line {i + 3}: attribute values must be -1 or 1; got "
                                  f"{' '.join(v for v in parts[1:] if not re.fullmatch(r'-?1', v))}")
    table = flat.reshape(len(rows), len(header))
    valid = (table == 1) | (table == -1)
    if not valid.all():
        bad = int(np.flatnonzero(~valid.all(1))[0])
        raise DncsimError(f"{attr_file}: line {bad + 3}: attribute values must be -1 or 1; got "
                          f"{' '.join(str(v) for v in table[bad][~valid[bad]])}")
    values = table[:, [c - 1 for c in cols]]
    partition = {}
    for i, line in enumerate(_read_lines(part_file)):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DncsimError(f"{part_file}: line {i + 1}: expected '<file>.jpg 0|1|2' (train, valid, test); "
                              f"got {line.strip()!r}")
        partition[parts[0]] = int(parts[1])
    lost = [f for f in files if f not in partition]
    if lost:
        raise DncsimError(f"{part_file}: no partition for {lost[0]} (and {len(lost) - 1} more images listed in "
                          f"{attr_file.name})" if len(lost) > 1 else f"{part_file}: no partition for {lost[0]}")
    official = np.array([partition[f] for f in files], dtype=np.int8)
    valid_to = {"drop": -1, "train": 0, "test": 1}[cfg.validation]
    split = np.select([official == 0, official == 2], [0, 1], valid_to).astype(np.int8)
    codes = (values + 1) // 2                  # -1 -> 0 (no), 1 -> 1 (yes)
    names = [["no", "yes"] for _ in cfg.attributes]
    return _Attributes(str(attr_file), list(cfg.attributes), codes, names, split), files


def load_celeba_attributes(cfg: CelebAAttributesConfig, seed: int) -> SourceData:
    """CelebA aligned faces with chosen binary attributes as labelings (0 = ``no`` (-1 in the file), 1 = ``yes``).

    Reads torchvision's layout under ``<data_root>/celeba/`` (or ``data_root``): ``list_attr_celeba.txt``,
    ``list_eval_partition.txt``, ``img_align_celeba/`` directly (no MD5 check). Splits: official, train = 0,
    test = 2; valid = 1 only with ``validation``. Images are center-cropped to 178x178 and resized to
    ``image_size`` (64; none keeps 178); only chosen JPEGs are decoded.
    """
    folder = _celeba_folder(cfg.data_root)
    table, files = _celeba_table(cfg, folder)
    images = folder / CELEBA_FILES[2]

    def read(rows: np.ndarray) -> torch.Tensor:
        paths = [images / files[r] for r in rows]
        return _assemble(len(paths), _decode(paths, False, table.where, rows + 3), cfg.image_size, 1.0 / 255.0,
                         str(images))

    return _source(cfg, table, seed, None, read, {"path": str(folder), "validation": cfg.validation})


_INTEGER = re.compile(r"[+-]?\d+")


def _image_table(cfg: ImageTableConfig):
    table_path, root = Path(cfg.table).expanduser(), Path(cfg.root).expanduser()
    if not table_path.is_file():
        raise DncsimError(f"{table_path}: no such file (expected a CSV with a header path,attr1,attr2,...)")
    if not root.is_dir():
        raise DncsimError(f"{root}: {'not a folder' if root.exists() else 'no such folder'} (image_table.root: the "
                          f"folder the paths in {table_path.name} are relative to)")
    try:
        with open(table_path, newline="", encoding="utf-8-sig") as f:
            records = [r for r in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DncsimError(f"{table_path}: cannot be read as CSV ({type(exc).__name__}: {exc})") from None
    while records and not any(c.strip() for c in records[-1]):
        records.pop()
    header = [c.strip() for c in records[0]] if records else []
    if not header or header[0] != "path" or len(header) < 2:
        raise DncsimError(f"{table_path}: expected a header 'path,attr1,attr2,...' (first column 'path'); got "
                          f"{','.join(header) or 'an empty file'}")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DncsimError(f"{table_path}: the header repeats column {dup[0]!r}")
    available = [h for h in header[1:] if h != "split"]
    attributes = list(cfg.attributes) if cfg.attributes else available
    for attr in attributes:
        if attr not in available:
            raise DncsimError(f"{table_path}: no column '{attr}' (attribute columns: {', '.join(available) or 'none'})"
                              f"{did_you_mean(attr, available)}")
    if not attributes:
        raise DncsimError(f"{table_path}: no attribute column besides path and split")
    body = records[1:]
    if not body:
        raise DncsimError(f"{table_path}: no rows below the header")
    cols = [header.index(a) for a in attributes]
    split_col = header.index("split") if "split" in header else None
    paths, raw, split = [], [[] for _ in attributes], []
    for i, rec in enumerate(body):
        line = i + 2
        if len(rec) != len(header):
            raise DncsimError(f"{table_path}: line {line} has {len(rec)} fields; the header has {len(header)}")
        rec = [c.strip() for c in rec]
        empty = [header[c] for c in [0, *cols] + ([split_col] if split_col is not None else []) if not rec[c]]
        if empty:
            raise DncsimError(f"{table_path}: line {line}: empty {empty[0]}")
        p = Path(rec[0])
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise DncsimError(f"{table_path}: line {line} names {rec[0]}, but {p} does not exist")
        paths.append(p)
        for a, c in enumerate(cols):
            raw[a].append(rec[c])
        if split_col is not None:
            if rec[split_col] not in ("train", "test"):
                raise DncsimError(f"{table_path}: line {line}: split must be 'train' or 'test'; got "
                                  f"{rec[split_col]!r}")
            split.append(0 if rec[split_col] == "train" else 1)
    codes, names = [], []
    for values in raw:
        if all(_INTEGER.fullmatch(v) for v in values):
            uniq, inv = np.unique(np.array([int(v) for v in values], dtype=np.int64), return_inverse=True)
            names.append([str(int(v)) for v in uniq])
        else:
            uniq, inv = np.unique(np.array(values, dtype=object).astype(str), return_inverse=True)
            names.append([str(v) for v in uniq])
        codes.append(inv.reshape(-1).astype(np.int64))
    table = _Attributes(str(table_path), attributes, np.stack(codes, 1), names,
                        np.array(split, dtype=np.int8) if split_col is not None else None)
    return table, paths


def load_image_table(cfg: ImageTableConfig, seed: int) -> SourceData:
    """Any folder of images labelled by a CSV ``path,attr1,attr2,...`` (``path`` relative to ``root``).

    Every other column is an attribute (``attributes`` picks some), except an optional ``split`` column
    (``train``/``test``; else seeded by ``test_fraction``). Integer columns sort numerically, others as
    strings; class ids follow that order. Images are converted to RGB (or grey with ``grayscale``),
    center-cropped and resized to ``image_size`` (without it, all must share one size). Every image must
    exist (checked before decoding).
    """
    table, paths = _image_table(cfg)

    def read(rows: np.ndarray) -> torch.Tensor:
        chosen = [paths[r] for r in rows]
        return _assemble(len(chosen), _decode(chosen, cfg.grayscale, table.where, rows + 2), cfg.image_size,
                         1.0 / 255.0, table.where)

    return _source(cfg, table, seed, cfg.test_fraction, read, {"path": table.where, "root": str(cfg.root)})


_LOADERS = {"dsprites": load_dsprites, "shapes3d": load_shapes3d, "celeba_attributes": load_celeba_attributes,
            "image_table": load_image_table}


def load_disk_source(cfg: DiskSourceConfig, seed: int) -> SourceData:
    """The SourceData of any of the four disk sources (by ``cfg.name``)."""
    return _LOADERS[cfg.name](cfg, seed)
