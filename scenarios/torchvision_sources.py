"""MNIST, Fashion-MNIST, KMNIST, CIFAR-10 and CIFAR-100 read from a local folder by torchvision's own classes.

Nothing is downloaded unless a config says ``download: true``. Before torchvision is called, the
files it needs are checked under ``data_root`` so that a missing file is reported in one line
naming it. The per-dataset facts (torchvision class, folder, file names, labelings) live in one
table, ``_FACTS``; the loading code is the same for all five.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torchvision import datasets

from dncsim.common import DncsimError
from dncsim.scenarios.preprocessing import resize_images, stratified_pick
from dncsim.scenarios.source_config import (Cifar10Config, Cifar100Config, FashionMNISTConfig, KMNISTConfig,
                                            MNISTConfig, TorchvisionConfig)
from dncsim.scenarios.sources import SourceData, Split

# The config classes live in scenarios/source_config.py (torch-free, so that validating a config stays
# fast) and are re-exported here.
__all__ = ["TorchvisionConfig", "MNISTConfig", "FashionMNISTConfig", "KMNISTConfig", "Cifar10Config",
           "Cifar100Config", "load_torchvision_source"]


def _unpickled(path: Path, key: str):
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict) or key not in entry:
        raise DncsimError(f"{path}: no '{key}' entry (expected a CIFAR-100 file)")
    return entry[key]


def _cifar100_coarse(folder: Path, train: bool) -> Tuple[str, np.ndarray, List[str]]:
    """CIFAR-100's ``coarse`` labeling of one split, read from the files torchvision reads the fine one from."""
    ids = _unpickled(folder / ("train" if train else "test"), "coarse_labels")
    return "coarse", np.asarray(ids, dtype=np.int64), list(_unpickled(folder / "meta", "coarse_label_names"))


Layout = Tuple[str, Tuple[str, ...]]          # (sub-folder of the dataset folder, file names)
ExtraLabeling = Callable[[Path, bool], Tuple[str, np.ndarray, List[str]]]


@dataclass(frozen=True)
class _Facts:
    """What differs between the datasets.

    ``layouts``: the file sets torchvision accepts, any one complete set suffices; the first is the
    one named in errors. ``labeling``: the name given to torchvision's ``targets`` / ``classes``.
    ``extra``: reads one more labeling of a split from the dataset folder.
    """

    dataset: type
    folder: str
    layouts: Tuple[Layout, ...]
    labeling: str = "class"
    extra: Optional[ExtraLabeling] = None


def _idx_facts(dataset: type) -> _Facts:
    """The MNIST family: four uncompressed IDX files in ``raw/``, or the older ``processed/*.pt`` pair."""
    idx = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return _Facts(dataset, dataset.__name__, (("raw", idx), ("processed", ("training.pt", "test.pt"))))


_FACTS: Dict[str, _Facts] = {
    "mnist": _idx_facts(datasets.MNIST),
    "fashion_mnist": _idx_facts(datasets.FashionMNIST),
    "kmnist": _idx_facts(datasets.KMNIST),
    "cifar10": _Facts(datasets.CIFAR10, "cifar-10-batches-py",
                      ((".", tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")),)),
    "cifar100": _Facts(datasets.CIFAR100, "cifar-100-python", ((".", ("train", "test", "meta")),),
                       labeling="fine", extra=_cifar100_coarse),
}


def _check_files(name: str, facts: _Facts, root: Path) -> None:
    """DncsimError in one line unless ``root`` holds one complete layout of the dataset's files."""
    title = facts.dataset.__name__
    folders = [(root / facts.folder / sub, files) for sub, files in facts.layouts]
    if any(all((d / f).is_file() for f in files) for d, files in folders):
        return
    expected = " or ".join(f"{d}/{{{', '.join(files)}}}" for d, files in folders)
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DncsimError(f"{name}: data_root {root} {problem}: expected {expected}; "
                          f"put the {title} files there or set download: true")
    first, files = folders[0]
    missing = [f for f in files if not (first / f).is_file()]
    gz_hint = "; .gz files found there: decompress them" if any((first / f"{f}.gz").is_file() for f in missing) else ""
    raise DncsimError(f"{name}: data_root {root} lacks {title} files: expected {expected} "
                      f"(missing: {', '.join(missing)}){gz_hint}; put them there or set download: true")


def _failure(name: str, facts: _Facts, root: Path, download: bool, exc: Exception) -> DncsimError:
    """A torchvision failure as a one-line DncsimError naming the dataset folder."""
    folder, title = root / facts.folder, facts.dataset.__name__
    text = str(exc).strip()
    reason = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    if download:
        return DncsimError(f"{name}: torchvision could not download or read the {title} files into {folder} ({reason})")
    if isinstance(exc, RuntimeError):
        return DncsimError(f"{name}: the files under {folder} failed torchvision's integrity check ({reason}); "
                           f"replace them with the original {title} files or set download: true")
    return DncsimError(f"{name}: torchvision could not read the files under {folder} ({reason})")


def _open(name: str, facts: _Facts, root: Path, train: bool, download: bool):
    """The torchvision dataset of one split; its failures become one-line DncsimErrors."""
    try:
        return facts.dataset(root=str(root), train=train, download=download)
    except (RuntimeError, OSError, EOFError, AssertionError, KeyError, TypeError, ValueError,
            pickle.UnpicklingError) as exc:
        raise _failure(name, facts, root, download, exc) from None


def _check_ids(name: str, folder: Path, labeling: str, ids: torch.Tensor, names: List[str], n: int) -> None:
    if len(ids) != n:
        raise DncsimError(f"{name}: {folder} has {len(ids)} '{labeling}' labels for {n} images")
    if n and (int(ids.min()) < 0 or int(ids.max()) >= len(names)):
        raise DncsimError(f"{name}: '{labeling}' labels under {folder} must lie in 0..{len(names) - 1}; "
                          f"found {int(ids.min())}..{int(ids.max())}")


def _read_split(name: str, facts: _Facts, root: Path, train: bool, download: bool):
    """One split as torchvision reads it: uint8 images (N, C, H, W), labelings name -> (N,) int64, names."""
    ds = _open(name, facts, root, train, download)
    x = torch.as_tensor(ds.data)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    labels = {facts.labeling: torch.as_tensor(ds.targets, dtype=torch.int64)}
    names = {facts.labeling: [str(c) for c in ds.classes]}
    if facts.extra is not None:
        labeling, ids, value_names = facts.extra(root / facts.folder, train)
        labels[labeling], names[labeling] = torch.from_numpy(ids), value_names
    for labeling, ids in labels.items():
        _check_ids(name, root / facts.folder, labeling, ids, names[labeling], len(x))
    return x, labels, names


def _subset(labels: torch.Tensor, limit: Optional[int], rng: np.random.Generator) -> torch.Tensor:
    """Indices of a stratified subset of ``limit`` samples (all samples when ``limit`` is None or >= N)."""
    n = len(labels)
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.from_numpy(stratified_pick(labels.numpy(), limit / n, rng)[0])


def load_torchvision_source(cfg: TorchvisionConfig, seed: int) -> SourceData:
    """Load the dataset ``cfg.name`` from ``cfg.data_root`` through its torchvision class.

    Images: (N, 1, 28, 28) MNIST family, (N, 3, 32, 32) CIFAR (or S = ``image_size``), float32 in [0, 1].
    Labelings: ``"class"``; CIFAR-100 ``"fine"`` (default) and ``"coarse"``; ids in the dataset's order.
    ``max_train`` / ``max_test``: stratified subsets, seeded by ``(seed, 0)`` / ``(seed, 1)``. DncsimError
    when data_root or a file is missing (without ``download``) or torchvision cannot read the files.
    """
    facts = _FACTS[cfg.name]
    root = cfg.data_root.expanduser()
    if not cfg.download:
        _check_files(cfg.name, facts, root)
    splits = {}
    for stream, (split, limit) in enumerate((("train", cfg.max_train), ("test", cfg.max_test))):
        x, labels, label_names = _read_split(cfg.name, facts, root, split == "train", cfg.download)
        idx = _subset(labels[facts.labeling], limit, np.random.default_rng((seed, stream)))
        splits[split] = Split(x=resize_images(x[idx].float().div_(255.0), cfg.image_size),
                              labels={k: v[idx] for k, v in labels.items()})
    return SourceData(name=cfg.name, train=splits["train"], test=splits["test"], label_names=label_names,
                      default_labeling=facts.labeling,
                      info={"data_root": str(root), "n_train": len(splits["train"]), "n_test": len(splits["test"])})
