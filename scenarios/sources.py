"""What every data source produces: labelled train and test tensors with readable label names.

A source knows nothing of streams or training. ``SourceData`` holds the master tensors that every
experience of a stream indexes into (``sample_idx``), so analysis can fetch an experience's data
by indexing instead of iterating a DataLoader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch

from dncsim.common import DncsimError

__all__ = ["Split", "SourceData"]


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
    """A labelled data source: ``train`` and ``test`` splits, and for every labeling its value names.

    ``label_names[labeling][k]`` is the readable name of class id k (e.g. ``"red"`` for color 0).
    ``default_labeling`` is used by class- and domain-incremental streams when none is configured.
    ``info`` holds source-specific facts for summaries (generator settings, file paths).
    """

    name: str
    train: Split
    test: Split
    label_names: Dict[str, List[str]]
    default_labeling: str
    info: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if set(self.train.labels) != set(self.test.labels) or set(self.train.labels) != set(self.label_names):
            raise ValueError(f"source {self.name}: train, test and label_names disagree on labelings")
        if self.default_labeling not in self.label_names:
            raise ValueError(f"source {self.name}: default labeling {self.default_labeling!r} unknown")
        if self.train.x.shape[1:] != self.test.x.shape[1:]:
            raise ValueError(f"source {self.name}: train and test inputs differ in shape")

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
        if name not in ("train", "test"):
            raise DncsimError(f"split must be 'train' or 'test'; got {name!r}")
        return self.train if name == "train" else self.test
