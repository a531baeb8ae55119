"""CelebA attributes in torchvision's layout, read directly: the attribute and partition lists, then the
chosen JPEGs (see ``scenarios/disk_sources.py`` for what is shared)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import List

import numpy as np
import torch

from dncsim.common import DncsimError, did_you_mean
from dncsim.scenarios.disk_sources import AttributeTable, assemble_images, decode_images, table_source
from dncsim.scenarios.source_config import CelebAAttributesConfig
from dncsim.scenarios.sources import SourceData

__all__ = ["CelebAAttributesConfig", "load_celeba_attributes", "CELEBA_FILES"]

CELEBA_FILES = ("list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba")


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
    return AttributeTable(str(attr_file), list(cfg.attributes), codes, names, split), files


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
        return assemble_images(len(paths), decode_images(paths, False, table.where, rows + 3), cfg.image_size,
                               1.0 / 255.0, str(images))

    return table_source(cfg, table, seed, None, read, {"path": str(folder), "validation": cfg.validation})
