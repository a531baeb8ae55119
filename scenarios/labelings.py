"""Labelings of a source by name, including derived ones: ``"color"``, ``"class:parity"``, ``"class:mod3"``.

A labeling spec is ``BASE`` (a labeling the source has) or ``BASE:FUNCTION`` where FUNCTION maps
the base class ids 0..K-1 to new ids:

* ``parity``: id mod 2 (names ``even``, ``odd``) -- e.g. odd vs even digits;
* ``high``: id >= K/2 (names ``low``, ``high``) -- the upper half of the classes;
* ``mod<k>``: id mod k, k >= 2 (names ``r0`` ... ``r<k-1>``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List

import torch

from dncsim.common import DncsimError, did_you_mean
from dncsim.scenarios.sources import SourceData

__all__ = ["Labeling", "resolve_labeling", "LABEL_FUNCTIONS"]

LABEL_FUNCTIONS = ("parity", "high", "mod<k>")


@dataclass(frozen=True)
class Labeling:
    """A resolved labeling: ``train`` (N_train,), ``test`` (N_test,) and ``probe`` (ids on the source's
    probe-train split, the evaluation data) int64 ids 0..K-1, and their ``names``."""

    spec: str
    train: torch.Tensor
    test: torch.Tensor
    names: List[str]
    probe: torch.Tensor = None
    base: str = ""

    def on(self, split: str) -> torch.Tensor:
        """The ids on the training data (``train``), the probe-train split (``probe``) or ``test``."""
        return {"train": self.train, "test": self.test, "probe": self.probe}[split]

    def evaluation(self, split: str) -> torch.Tensor:
        """The ids on the evaluation data: ``train`` -> probe-train, ``test`` -> probe-test."""
        return self.probe if split == "train" else self.test

    def apply(self, base_ids: torch.Tensor) -> torch.Tensor:
        """Map ids of the base labeling to this labeling's ids (identity for a plain labeling)."""
        return self._fn(base_ids) if self._fn is not None else base_ids

    _fn: object = None

    @property
    def num_classes(self) -> int:
        return len(self.names)


def _derive(fn: str, base_names: List[str], spec: str):
    k = len(base_names)
    if fn == "parity":
        return (lambda y: y % 2), ["even", "odd"]
    if fn == "high":
        if k < 2:
            raise DncsimError(f"labeling '{spec}': 'high' needs at least 2 base classes")
        return (lambda y: (y >= (k + 1) // 2).long()), ["low", "high"]
    m = re.fullmatch(r"mod(\d+)", fn)
    if m and int(m.group(1)) >= 2:
        mod = int(m.group(1))
        if mod >= k:
            raise DncsimError(f"labeling '{spec}': mod{mod} needs more than {mod} base classes (has {k})")
        return (lambda y: y % mod), [f"r{r}" for r in range(mod)]
    raise DncsimError(f"labeling '{spec}': unknown function '{fn}'; accepted: "
                      f"{', '.join(LABEL_FUNCTIONS)}{did_you_mean(fn, ['parity', 'high', 'mod2', 'mod3'])}")


def resolve_labeling(source: SourceData, spec: str, *, key: str = "labeling") -> Labeling:
    """Resolve ``spec`` against ``source``; DncsimError (naming ``key``) when the base or function is unknown."""
    base, _, fn = spec.partition(":")
    if base not in source.label_names:
        raise DncsimError(f"{key}: '{base}' is not a labeling of source '{source.name}' "
                          f"(available: {', '.join(source.labelings)}){did_you_mean(base, source.labelings)}")
    probe_split = source.evaluation_split("train")
    ytr, yte, ypr = source.train.labels[base], source.test.labels[base], probe_split.labels[base]
    names = list(source.label_names[base])
    f = None
    if fn:
        f, names = _derive(fn, names, spec)
        ytr, yte, ypr = f(ytr), f(yte), f(ypr)
    return Labeling(spec=spec, train=ytr, test=yte, names=names, probe=ypr, base=base, _fn=f)
