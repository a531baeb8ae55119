"""Any folder of images labelled by a CSV ``path,attr1,attr2,...`` (see ``scenarios/disk_sources.py`` for
what is shared)."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import torch

from dncsim.common import DncsimError, did_you_mean
from dncsim.scenarios.disk_sources import AttributeTable, assemble_images, decode_images, table_source
from dncsim.scenarios.source_config import ImageTableConfig
from dncsim.scenarios.sources import SourceData

__all__ = ["ImageTableConfig", "load_image_table"]

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
    table = AttributeTable(str(table_path), attributes, np.stack(codes, 1), names,
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
        return assemble_images(len(chosen), decode_images(chosen, cfg.grayscale, table.where, rows + 2),
                               cfg.image_size, 1.0 / 255.0, table.where)

    return table_source(cfg, table, seed, cfg.test_fraction, read, {"path": table.where, "root": str(cfg.root)})
