"""Probes on frozen features: nearest class centre (NCC) and a linear (multinomial logistic) classifier.

A probe is fitted once on (features, labels) and can then score any later features -- which is
what the ``frozen`` evaluation protocol does with features of a backbone that kept training.
Accuracy is the plain fraction of correctly classified samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dncsim.analysis.inputs import as_features, as_labels
from dncsim.common import DncsimError

__all__ = ["NCCProbe", "LinearProbe", "fit_ncc", "fit_linear", "probe_from_arrays"]


def _classes(labels: torch.Tensor):
    classes, idx = torch.unique(labels, return_inverse=True)
    if classes.numel() < 2:
        raise DncsimError(f"a probe needs at least 2 classes; got {classes.tolist()}")
    return classes, idx


@dataclass(frozen=True)
class NCCProbe:
    """Class means ``means`` (C, d) float64 of label values ``classes`` (C,)."""

    classes: torch.Tensor
    means: torch.Tensor

    def predict(self, features) -> torch.Tensor:
        """(N,) predicted label values: the class whose mean is nearest (squared Euclidean; ties -> lower label)."""
        f = as_features(features).to(device=self.means.device, dtype=torch.float64)
        d = (f.square().sum(1, keepdim=True) - 2 * f @ self.means.T + self.means.square().sum(1))
        return self.classes[d.argmin(dim=1)]

    def score(self, features, labels) -> float:
        """Accuracy of :meth:`predict` against ``labels`` (N,)."""
        pred = self.predict(features)
        return float((pred == as_labels(labels, len(pred), device=pred.device)).double().mean())

    def to_arrays(self) -> dict:
        """The probe as plain tensors (``kind`` names the class): what checkpoints store."""
        return {"kind": "ncc", "classes": self.classes.cpu(), "means": self.means.cpu()}


def fit_ncc(features, labels) -> NCCProbe:
    """Fit the nearest-class-centre probe: the float64 mean of each class's ``features`` (N, d)."""
    f = as_features(features).to(torch.float64)
    y = as_labels(labels, f.shape[0], device=f.device)
    classes, idx = _classes(y)
    sums = torch.zeros(classes.numel(), f.shape[1], dtype=torch.float64, device=f.device).index_add_(0, idx, f)
    return NCCProbe(classes=classes, means=sums / torch.bincount(idx).unsqueeze(1))


@dataclass(frozen=True)
class LinearProbe:
    """Softmax classifier on standardised features: logits = ((f - mean) / std) @ weight.T + bias."""

    classes: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def logits(self, features) -> torch.Tensor:
        f = as_features(features).to(device=self.weight.device, dtype=self.weight.dtype)
        return ((f - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, features) -> torch.Tensor:
        return self.classes[self.logits(features).argmax(dim=1)]

    def score(self, features, labels) -> float:
        pred = self.predict(features)
        return float((pred == as_labels(labels, len(pred), device=pred.device)).double().mean())

    def to_arrays(self) -> dict:
        """The probe as plain tensors (``kind`` names the class): what checkpoints store."""
        return {"kind": "linear", **{k: getattr(self, k).cpu() for k in ("classes", "weight", "bias", "mean", "std")}}


def probe_from_arrays(arrays: dict):
    """The NCCProbe or LinearProbe that ``to_arrays()`` produced."""
    fields = {k: v for k, v in arrays.items() if k != "kind"}
    return NCCProbe(**fields) if arrays["kind"] == "ncc" else LinearProbe(**fields)


def fit_linear(features, labels, *, steps: int = 100, weight_decay: float = 1e-4) -> LinearProbe:
    """Fit multinomial logistic regression by full-batch L-BFGS (float64, zero initialisation, so the
    result is deterministic). Features are standardised with the training mean and std (std floored at
    1e-8); the loss is mean cross-entropy + ``weight_decay``/2 * |W|^2; at most ``steps`` iterations."""
    f = as_features(features).to(torch.float64)
    y = as_labels(labels, f.shape[0], device=f.device)
    classes, idx = _classes(y)
    mean, std = f.mean(0), f.std(0, unbiased=False).clamp_min(1e-8)
    z = (f - mean) / std
    w = torch.zeros(classes.numel(), f.shape[1], dtype=torch.float64, device=f.device, requires_grad=True)
    b = torch.zeros(classes.numel(), dtype=torch.float64, device=f.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, idx) + 0.5 * weight_decay * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(classes=classes, weight=w.detach(), bias=b.detach(), mean=mean, std=std)
