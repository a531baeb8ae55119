"""What every data source produces: labelled train and test tensors with readable label names.

A source knows nothing of streams. ``SourceData`` holds the tensors that every experience indexes into
(``sample_idx``). Evaluation data are a probe-train and a probe-test split on which every labeling is
defined: for disk sources the train and test splits; a generated source renders an independent
``probe`` split and can ``render`` new inputs for any labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from dncsim.common import DncsimError

__all__ = ["Split", "SourceData", "derived_seed"]


def derived_seed(seed: int, *keys) -> int:
    """A 31-bit seed derived from ``seed`` and ``keys`` (strings or ints) by hashing, so that streams of
    random numbers used for different purposes never coincide for any two seeds."""
    import hashlib
    text = "/".join(str(k) for k in (int(seed), *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class Split:
    """One split of a source.

    ``x``: (N, C, H, W) float32 images in [0, 1], or (N, D) float32 vectors;
    ``labels``: labeling name -> (N,) int64 class ids 0..K-1 (the same keys in train and test).
    """

    x: torch.Tensor
    labels: Dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class SourceData:
    """A labelled data source: ``train`` and ``test`` splits and, per labeling, its value names.

    ``label_names[labeling][k]``: the name of class id k. ``default_labeling``: for class- and
    domain-incremental streams. ``info``: source facts for summaries. ``probe``: an independent
    probe-train split, or None (train serves). ``render(labels, seed) -> x``: new inputs for label
    arrays, deterministic in ``seed`` (generated sources only).
    """

    name: str
    train: Split
    test: Split
    label_names: Dict[str, List[str]]
    default_labeling: str
    info: Dict[str, object] = field(default_factory=dict)
    probe: Optional[Split] = None
    render: Optional[Callable[[Dict[str, torch.Tensor], int], torch.Tensor]] = None

    def __post_init__(self):
        if set(self.train.labels) != set(self.test.labels) or set(self.train.labels) != set(self.label_names):
            raise ValueError(f"source {self.name}: train, test and label_names disagree on labelings")
        if self.default_labeling not in self.label_names:
            raise ValueError(f"source {self.name}: default labeling {self.default_labeling!r} unknown")
        if self.train.x.shape[1:] != self.test.x.shape[1:]:
            raise ValueError(f"source {self.name}: train and test inputs differ in shape")
        if self.probe is not None and (set(self.probe.labels) != set(self.label_names)
                                       or self.probe.x.shape[1:] != self.train.x.shape[1:]):
            raise ValueError(f"source {self.name}: the probe split disagrees with train on labelings or shape")

    @property
    def input_shape(self) -> tuple:
        """Shape of one input: (C, H, W) for images, (D,) for vectors."""
        return tuple(self.train.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train.x.ndim == 4

    @property
    def labelings(self) -> List[str]:
        return list(self.label_names)

    def num_classes(self, labeling: str) -> int:
        return len(self.label_names[labeling])

    def split(self, name: str) -> Split:
        """The ``train`` (training data) or ``test`` split."""
        if name not in ("train", "test"):
            raise DncsimError(f"split must be 'train' or 'test'; got {name!r}")
        return self.train if name == "train" else self.test

    def evaluation_split(self, name: str) -> Split:
        """The evaluation data: ``train`` -> the probe-train split (``probe``, else ``train``),
        ``test`` -> the probe-test split (``test``)."""
        if name not in ("train", "test"):
            raise DncsimError(f"split must be 'train' or 'test'; got {name!r}")
        if name == "test":
            return self.test
        return self.probe if self.probe is not None else self.train
