"""Probes on frozen features: nearest class centre (NCC) and a linear (multinomial logistic) classifier.

A probe is fitted once on (features, labels) and can then score any later features -- which is
what the ``frozen`` evaluation protocol does with features of a backbone that kept training.
Accuracy is the plain fraction of correctly classified samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dncsim.analysis.inputs import as_features, as_labels
from dncsim.analysis.task_batch import task_labels
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
    1e-8); the loss is mean cross-entropy + ``weight_decay``/2 * |W|^2; at most ``steps`` iterations.
    The solver is :func:`fit_linear_tasks` with one task, so fitting a task alone and fitting it in a
    batch of tasks give the same probe (to float rounding)."""
    f = as_features(features)
    y = as_labels(labels, f.shape[0], device=f.device)
    _classes(y)
    probes, _ = fit_linear_tasks(f, y[None], steps=steps, weight_decay=weight_decay)
    return probes[0]


# --- many tasks on the same samples at once ---------------------------------------------------------------

def fit_ncc_tasks(features, labels) -> list:
    """:func:`fit_ncc` for T tasks labelling the same ``features`` (N, d): ``labels`` (T, N) int, -1 where a
    sample is not in a task. One product for all tasks' class sums; returns T NCCProbes, equal to fitting
    each task alone up to float64 rounding."""
    f = as_features(features).to(torch.float64)
    lab = task_labels(labels, f.shape[0])
    sums = (lab.onehot().transpose(1, 2) @ f)                         # (T, C, d)
    means = sums / lab.counts.clamp_min(1).unsqueeze(-1).to(torch.float64)
    return [NCCProbe(classes=lab.task_classes(t), means=means[t][lab.mask[t]]) for t in range(lab.T)]


def fit_linear_tasks(features, labels, *, steps: int = 100, weight_decay: float = 1e-4, history: int = 20,
                     tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9):
    """:func:`fit_linear` for T tasks labelling the same ``features`` (N, d), solved together.

    ``labels`` (T, N) int, -1 where a sample is not in a task. Each task keeps its own standardisation
    (mean and std of its samples), loss (mean cross-entropy + ``weight_decay``/2 |W|^2) and its own
    L-BFGS state (``history`` curvature pairs, its own step lengths by Armijo backtracking): the T
    problems are independent and only their arithmetic is shared (one (N, d) x (d, T C) product per
    evaluation). A task stops when its largest gradient entry is at most ``tolerance_grad``, its loss or
    step changes by less than ``tolerance_change``, or after ``steps`` iterations. Deterministic (zero
    initialisation). Returns (probes, info): T LinearProbes and per task ``iterations`` (T,) and
    ``converged`` (T,) bool (False: stopped by the iteration limit or a failed line search) and
    ``loss`` (T,) the final objective.
    """
    f = as_features(features).to(torch.float64)
    N, d = f.shape
    lab = task_labels(labels, N)
    idx, classes, cmask = lab.idx, lab.classes, lab.mask
    T, C = classes.shape
    dev = f.device
    inside = (idx >= 0).to(torch.float64)                              # (T, N)
    n_t = inside.sum(1)                                               # (T,)
    mean = (inside @ f) / n_t[:, None]                                # (T, d)
    var = (inside @ f.square()) / n_t[:, None] - mean.square()
    std = var.clamp_min(0).sqrt().clamp_min(1e-8)
    target = idx.clamp_min(0)                                         # (T, N)
    sample_w = inside / n_t[:, None]                                  # (T, N) loss weights
    neg = torch.where(cmask, 0.0, float("-inf")).to(torch.float64)    # padded classes never win
    P = C * d + C
    ones = torch.ones(T, 1, N, dtype=torch.float64, device=dev)
    ft = f.T.contiguous()

    def objective(theta, sel=None):
        """Losses (k,) and gradients (k, P) at theta (k, P) of the tasks ``sel`` (index tensor; None: all
        T); classes-before-samples layout (k, C, N), so every reduction over classes runs along contiguous
        rows of samples. Tasks are independent, so evaluating a subset changes nothing for the others."""
        sd, mu, tg, sw, ng, cm = ((std, mean, target, sample_w, neg, cmask) if sel is None else
                                  (std[sel], mean[sel], target[sel], sample_w[sel], neg[sel], cmask[sel]))
        k = theta.shape[0]
        w = theta[:, :C * d].view(k, C, d)
        b = theta[:, C * d:]
        ws = w / sd[:, None, :]
        logits = (ws.reshape(k * C, d) @ ft).view(k, C, N)
        logits += (b - torch.einsum("tcd,td->tc", ws, mu) + ng)[..., None]
        logp = torch.log_softmax(logits, dim=1)
        nll = logp.gather(1, tg[:, None, :])[:, 0].neg_()                          # (k, N)
        loss = (sw * nll).sum(1) + 0.5 * weight_decay * w.square().sum((1, 2))
        g = logp.exp_()
        g.scatter_add_(1, tg[:, None, :], -ones[:k])
        g *= sw[:, None, :]                                                        # dL/dlogits (k, C, N)
        gb = g.sum(2)                                                              # (k, C)
        gws = (g.reshape(k * C, N) @ f).view(k, C, d) - gb[..., None] * mu[:, None, :]
        gw = gws / sd[:, None, :] + weight_decay * w
        gb = gb * cm
        return loss, torch.cat([gw.reshape(k, C * d), gb], 1)

    theta = torch.zeros(T, P, dtype=torch.float64, device=dev)
    loss, grad = objective(theta)
    S = torch.zeros(T, history, P, dtype=torch.float64, device=dev)
    Y = torch.zeros_like(S)
    rho = torch.zeros(T, history, dtype=torch.float64, device=dev)    # 0 marks an empty slot
    active = grad.abs().amax(1) > tolerance_grad
    converged = ~active.clone()
    iterations = torch.zeros(T, dtype=torch.int64, device=dev)
    gamma = torch.ones(T, dtype=torch.float64, device=dev)
    first, filled = True, 0
    for _ in range(steps):
        if not bool(active.any()):
            break
        # two-loop recursion, every task with its own history (newest pair last)
        q = -grad.clone()
        alphas = []
        for k in range(history - 1, history - 1 - filled, -1):      # slots never filled hold zeros: skipped
            a = rho[:, k] * (S[:, k] * q).sum(1)
            q -= a[:, None] * Y[:, k]
            alphas.append(a)
        q *= gamma[:, None]
        for i, k in enumerate(range(history - filled, history)):
            bcoef = rho[:, k] * (Y[:, k] * q).sum(1)
            q += (alphas[filled - 1 - i] - bcoef)[:, None] * S[:, k]
        direction = q
        slope = (grad * direction).sum(1)
        step = torch.ones(T, dtype=torch.float64, device=dev)
        if first:
            step = torch.clamp(1.0 / grad.abs().sum(1).clamp_min(1e-300), max=1.0)
            first = False
        # Armijo backtracking, all active tasks together
        pending = active & (slope < 0)
        new_theta, new_loss, new_grad = theta.clone(), loss.clone(), grad.clone()
        for _ in range(40):
            if not bool(pending.any()):
                break
            sel = pending.nonzero().flatten()                        # only the tasks still searching
            trial = theta[sel] + step[sel, None] * direction[sel]
            tl, tg = objective(trial, sel)
            ok = tl <= loss[sel] + 1e-4 * step[sel] * slope[sel]
            acc = sel[ok]
            new_theta[acc], new_loss[acc], new_grad[acc] = trial[ok], tl[ok], tg[ok]
            pending[acc] = False
            step = torch.where(pending, step * 0.5, step)
        moved = active & ~pending & (slope < 0)
        stalled = active & ~moved                                     # no descent step found
        s = new_theta - theta
        yv = new_grad - grad
        sy = (s * yv).sum(1)
        keep = moved & (sy > 1e-10)
        S = torch.where(keep[:, None, None], torch.cat([S[:, 1:], s[:, None]], 1), S)
        Y = torch.where(keep[:, None, None], torch.cat([Y[:, 1:], yv[:, None]], 1), Y)
        rho = torch.where(keep[:, None], torch.cat([rho[:, 1:], (1.0 / sy.clamp_min(1e-300))[:, None]], 1), rho)
        gamma = torch.where(keep, sy / (yv * yv).sum(1).clamp_min(1e-300), gamma)
        filled = min(history, filled + int(bool(keep.any())))
        iterations += moved.to(torch.int64)
        done_now = moved & ((new_grad.abs().amax(1) <= tolerance_grad)
                            | ((new_loss - loss).abs() < tolerance_change)
                            | ((s.abs().amax(1)) <= tolerance_change))
        theta, loss, grad = new_theta, new_loss, new_grad
        converged |= done_now
        active &= ~(done_now | stalled)
    w = theta[:, :C * d].view(T, C, d)
    b = theta[:, C * d:]
    probes = [LinearProbe(classes=classes[t][cmask[t]], weight=w[t][cmask[t]].clone(), bias=b[t][cmask[t]].clone(),
                          mean=mean[t].clone(), std=std[t].clone()) for t in range(T)]
    return probes, {"iterations": iterations, "converged": converged, "loss": loss}
