"""The machinery shared by the multi-attribute image sources read from disk (``dsprites.py``,
``shapes3d.py``, ``celeba.py``, ``image_table.py``).

Each loader reads its attribute table into an :class:`AttributeTable` (attributes mapped to ids
0..K-1 with names), then :func:`table_source` picks each split's samples (``_select``) and reads only
those images through the loader's ``read(rows)``, which decodes them in chunks (``assemble_images``).
Images: (N, C, S, S) float32 in [0, 1]. Labelings follow ``attributes``. Splits: the dataset's own,
else seeded by ``test_fraction``. ``max_samples`` and ``balance``: see ``scenarios/subsample.py``.
Bad files: one DncsimError line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dncsim.common import DncsimError
from dncsim.scenarios.preprocessing import resize_images
from dncsim.scenarios.source_config import DiskSourceConfig
from dncsim.scenarios.sources import SourceData, Split, derived_seed
from dncsim.scenarios.subsample import (balanced_classes, balanced_combinations, cells_of, split_shares,
                                        stratified_take, take_per_cell)

__all__ = ["AttributeTable", "table_source", "assemble_images", "array_chunks", "row_blocks", "data_file",
           "format_value", "class_ids", "decode_images", "IMAGE_CHUNK"]

IMAGE_CHUNK = 512            # images decoded (JPEG/PNG) and resized per batch


# --- what every loader produces before reading an image -----------------------------------------------

@dataclass
class AttributeTable:
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


def _reduce(cfg: DiskSourceConfig, table: AttributeTable, rows: np.ndarray, cap: Optional[int], seed: int,
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


def _select(cfg: DiskSourceConfig, table: AttributeTable, seed: int, test_fraction: Optional[float]):
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


def table_source(cfg: DiskSourceConfig, table: AttributeTable, seed: int, test_fraction: Optional[float],
                 read: Callable[[np.ndarray], torch.Tensor], info: Dict[str, object]) -> SourceData:
    """The SourceData of ``table``: each split's rows chosen (``_select``: split, cap, balance), their
    images read at once by ``read(sorted rows)``; ``info`` joins the selection's facts."""
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


def assemble_images(n: int, chunks: Iterator[Tuple[int, List[np.ndarray]]], size: Optional[int], scale: float,
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


def array_chunks(u8: np.ndarray, batch: int = 4096) -> Iterator[Tuple[int, List[np.ndarray]]]:
    for i in range(0, len(u8), batch):
        yield i, list(u8[i:i + batch])


def row_blocks(rows: np.ndarray, row_bytes: int, chunk_bytes: int) -> Iterator[Tuple[int, int, int, int]]:
    """(i, j, start, stop): rows[i:j] lie in [start, stop), stop - start at most chunk_bytes / row_bytes."""
    block = max(1, chunk_bytes // max(1, row_bytes))
    i = 0
    while i < len(rows):
        start = int(rows[i])
        j = int(np.searchsorted(rows, start + block))
        yield i, j, start, int(rows[j - 1]) + 1
        i = j


# --- data files, and attribute values to class ids ----------------------------------------------

def data_file(root: Path, official: str, what: str) -> Path:
    p = Path(root).expanduser()
    if p.is_dir():
        p = p / official
    if not p.is_file():
        raise DncsimError(f"{p}: no such file (expected {what}; set data_root to the file or the folder holding "
                          f"{official})")
    return p


def format_value(v: float) -> str:
    return f"{float(v):.3g}"


def class_ids(raw: np.ndarray, value_names: Callable[[np.ndarray], List[str]], bins: Optional[int], where: str,
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


# --- images named in a table (CelebA and image_table) ----------------------------------------------------

def decode_images(paths: Sequence[Path], grayscale: bool, where: str,
                  lines: np.ndarray) -> Iterator[Tuple[int, List]]:
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
