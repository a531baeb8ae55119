"""Probes on frozen features: nearest class centre (NCC) and a linear (multinomial logistic) classifier.

A probe is fitted once on (features, labels) and can then score any later features -- which is
what the ``frozen`` evaluation protocol does with features of a backbone that kept training.
Accuracy is the plain fraction of correctly classified samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dncsim.analysis.inputs import as_features, as_labels
from dncsim.analysis.names import LINEAR_STEPS
from dncsim.analysis.task_batch import task_labels
from dncsim.common import DncsimError

__all__ = ["NCCProbe", "LinearProbe", "fit_ncc", "fit_linear", "probe_from_arrays"]


#: c in the preconditioner c R + lam I of the linear probe (``linear_preconditioners``).
PRECONDITION_CURVATURE = 0.01


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


def fit_linear(features, labels, *, steps: int = LINEAR_STEPS, weight_decay: float = 1e-4) -> LinearProbe:
    """Fit multinomial logistic regression by full-batch L-BFGS (float64, zero init, deterministic).

    Features standardised by the training mean and std (floored at 1e-8); loss = mean cross-entropy +
    ``weight_decay``/2 |W|^2; at most ``steps`` iterations in preconditioned variables
    (:func:`linear_preconditioners`). Same solver as :func:`fit_linear_tasks` with one task.
    """
    f = as_features(features)
    y = as_labels(labels, f.shape[0], device=f.device)
    _classes(y)
    probes, _ = fit_linear_tasks(f, y[None], steps=steps, weight_decay=weight_decay)
    return probes[0]


# --- many tasks on the same samples at once ---------------------------------------------------------------

def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """torch.optim.lbfgs._cubic_interpolate on Python floats (the same IEEE double arithmetic)."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(t, f, g, gtd, d_norm, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """torch.optim.lbfgs._strong_wolfe as a coroutine: it yields a step length t to evaluate and is sent
    back (f(x + t d), grad(x + t d), grad . d); it returns (f, grad, t, evaluations) of the accepted
    point. The control flow is torch's line by line, so a batch of these coroutines driven in lockstep
    takes exactly the steps torch takes for each task alone (up to the rounding of the dot products)."""
    f_new, g_new, gtd_new = yield t
    ls_func_evals = 1
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new, gtd_new = yield t
        ls_func_evals += 1
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new, gtd_new = yield t
        ls_func_evals += 1
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos], bracket_g[low_pos], bracket_gtd[low_pos] = t, f_new, g_new, gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def fit_ncc_tasks(features, labels) -> list:
    """:func:`fit_ncc` for T tasks labelling the same ``features`` (N, d): ``labels`` (T, N) int, -1 where a
    sample is not in a task. One product for all tasks' class sums; returns T NCCProbes, equal to fitting
    each task alone up to float64 rounding."""
    f = as_features(features).to(torch.float64)
    lab = task_labels(labels, f.shape[0])
    sums = (lab.onehot().transpose(1, 2) @ f)                         # (T, C, d)
    means = sums / lab.counts.clamp_min(1).unsqueeze(-1).to(torch.float64)
    return [NCCProbe(classes=lab.task_classes(t), means=means[t][lab.mask[t]]) for t in range(lab.T)]


def linear_preconditioners(features, inside, mean, std, weight_decay: float) -> tuple:
    """The variables each task's linear probe is solved in: W = V @ A_t, A_t = (c R_t + lam I)^(-1/2).

    R_t: (d, d) correlation of the task's standardised features (ddof 0); c = ``PRECONDITION_CURVATURE``;
    lam = max(``weight_decay``, 1e-6). The optimum in W is unchanged. Tasks on the same samples
    (``inside`` (T, N) rows) share one A. Returns (A (U, d, d) float64, which (T,)): task t uses A[which[t]].
    """
    members, which = torch.unique(inside > 0, dim=0, return_inverse=True)
    d = features.shape[1]
    eye = torch.eye(d, dtype=torch.float64, device=features.device)
    hess = []
    for u in range(len(members)):          # one (d, n_u) x (n_u, d) product per distinct sample set
        t = int((which == u).nonzero()[0])                          # the first task on these samples
        z = (features[members[u]] - mean[t]) / std[t]
        hess.append(PRECONDITION_CURVATURE * (z.T @ z) / z.shape[0] + max(weight_decay, 1e-6) * eye)
    e, Q = torch.linalg.eigh(torch.stack(hess))
    return (Q * e.clamp_min(1e-6).rsqrt()[:, None, :]) @ Q.transpose(1, 2), which




def fit_linear_tasks(features, labels, *, steps: int = LINEAR_STEPS, weight_decay: float = 1e-4, history: int = 20,
                     tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, precondition: bool = True):
    """:func:`fit_linear` for T tasks labelling the same ``features`` (N, d), solved together.

    ``labels`` (T, N) int, -1 outside a task. Each task has its own standardisation, loss and L-BFGS state
    (torch's ``LBFGS(lr=1, max_iter=steps, history_size=history, line_search_fn="strong_wolfe")``,
    transcribed per task); ``precondition``: see :func:`linear_preconditioners`. Returns (T LinearProbes,
    info: ``iterations``, ``evaluations``, ``converged``, ``loss``).
    """
    f = as_features(features).to(torch.float64)
    N, d = f.shape
    lab = task_labels(labels, N)
    idx, classes, cmask = lab.idx, lab.classes, lab.mask
    T, C = classes.shape
    dev = f.device
    inside = (idx >= 0).to(torch.float64)                              # (T, N)
    n_t = inside.sum(1)                                               # (T,)
    center = f.mean(0)                  # the products below run on features centred by their pooled mean:
    f = f - center                      # no cancellation of large means (ReLU features, constant columns)
    mean = (inside @ f) / n_t[:, None]                                # (T, d), relative to ``center``
    var = (inside @ f.square()) / n_t[:, None] - mean.square()
    std = var.clamp_min(0).sqrt().clamp_min(1e-8)
    target = idx.clamp_min(0)                                         # (T, N)
    sample_w = inside / n_t[:, None]                                  # (T, N) loss weights
    neg = torch.where(cmask, 0.0, float("-inf")).to(torch.float64)    # padded classes never win
    P = C * d + C
    ones = torch.ones(T, 1, N, dtype=torch.float64, device=dev)
    ft = f.T.contiguous()
    if precondition:
        A, which = linear_preconditioners(f, inside, mean, std, weight_decay)

    def to_w(v, sel):
        """Weights W (k, C, d) in standardised coordinates of the solver's variables v (k, C, d); also maps
        a gradient in W to the gradient in v (A is symmetric)."""
        if not precondition:
            return v
        if len(A) == 1:
            return (v.reshape(-1, d) @ A[0]).view(v.shape)
        return torch.bmm(v, A[which if sel is None else which[sel]])

    def objective(theta, sel=None):
        """Losses (k,) and gradients (k, P) at theta (k, P) of the tasks ``sel`` (index tensor; None: all
        T); classes-before-samples layout (k, C, N), so every reduction over classes runs along contiguous
        rows of samples. Tasks are independent, so evaluating a subset changes nothing for the others."""
        sd, mu, tg, sw, ng, cm = ((std, mean, target, sample_w, neg, cmask) if sel is None else
                                  (std[sel], mean[sel], target[sel], sample_w[sel], neg[sel], cmask[sel]))
        k = theta.shape[0]
        w = to_w(theta[:, :C * d].view(k, C, d), sel)
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
        gw = to_w(gws / sd[:, None, :] + weight_decay * w, sel)
        gb = gb * cm
        return loss, torch.cat([gw.reshape(k, C * d), gb], 1)

    theta = torch.zeros(T, P, dtype=torch.float64, device=dev)
    loss_t, grad = objective(theta)
    loss = loss_t.tolist()
    max_eval = steps * 5 // 4                                          # torch.optim.LBFGS's default
    S = torch.zeros(T, history, P, dtype=torch.float64, device=dev)   # steps s, a ring per task
    Y = torch.zeros_like(S)                                           # gradient changes y
    rho = torch.zeros(T, history, dtype=torch.float64, device=dev)    # 1 / (y . s); 0 marks an empty slot
    head = torch.zeros(T, dtype=torch.int64, device=dev)              # the slot the next pair goes to
    h_diag = torch.ones(T, dtype=torch.float64, device=dev)
    direction = torch.zeros(T, P, dtype=torch.float64, device=dev)
    prev_grad = torch.zeros(T, P, dtype=torch.float64, device=dev)
    step = [0.0] * T
    prev_loss = [0.0] * T
    evals = [1] * T
    iterations = [0] * T
    converged = (grad.abs().amax(1) <= tolerance_grad).tolist()
    starting = [t for t in range(T) if not converged[t]]              # tasks about to start an iteration
    searches: dict = {}                                               # task -> its line-search coroutine
    requested: dict = {}                                              # task -> step length to evaluate
    while starting or searches:
        if starting:
            starting.sort()                                           # task order: rows of the batched tensors
            new = torch.tensor(starting, device=dev)
            later = torch.tensor([t for t in starting if iterations[t] > 0], device=dev, dtype=torch.int64)
            if len(later):                                            # update the memory with (s, y)
                yv = grad[later] - prev_grad[later]
                sv = direction[later] * torch.tensor([step[t] for t in later.tolist()], dtype=torch.float64,
                                                     device=dev)[:, None]
                ys = (yv * sv).sum(1)
                keep = ys > 1e-10
                upd, slot = later[keep], head[later[keep]]
                S[upd, slot], Y[upd, slot] = sv[keep], yv[keep]
                rho[upd, slot] = 1.0 / ys[keep]
                h_diag[upd] = ys[keep] / (yv[keep] * yv[keep]).sum(1)
                head[upd] = (slot + 1) % history
            # two-loop recursion over each task's ring of pairs, newest first (empty slots, rho = 0, change
            # nothing); the first iteration has an empty memory and h_diag 1, so its direction is -grad
            q = grad[new].neg()
            order = (head[new, None] - 1 - torch.arange(history, device=dev)) % history        # (k, H)
            rho_o = rho[new[:, None], order]
            filled = int((rho_o != 0).sum(1).max())
            S_o, Y_o = S[new[:, None], order[:, :filled]], Y[new[:, None], order[:, :filled]]
            pairs = []
            for j in range(filled):
                s_j, y_j, r_j = S_o[:, j], Y_o[:, j], rho_o[:, j]
                a_j = (s_j * q).sum(1) * r_j
                q -= a_j[:, None] * y_j
                pairs.append((s_j, y_j, r_j, a_j))
            q *= h_diag[new][:, None]
            for s_j, y_j, r_j, a_j in reversed(pairs):
                beta = (y_j * q).sum(1) * r_j
                q += (a_j - beta)[:, None] * s_j
            direction[new] = q
            g_new = grad[new]
            prev_grad[new] = g_new
            gtd = (g_new * q).sum(1).tolist()
            first = (1.0 / g_new.abs().sum(1)).tolist()
            d_norm = q.abs().amax(1).tolist()
            for i, t in enumerate(starting):
                iterations[t] += 1
                prev_loss[t] = loss[t]
                t0 = min(1.0, first[i]) if iterations[t] == 1 else 1.0
                if gtd[i] > -tolerance_change:                        # not a descent direction: stop
                    converged[t] = True
                    continue
                search = _strong_wolfe(t0, loss[t], g_new[i], gtd[i], d_norm[i],
                                       tolerance_change=tolerance_change, max_ls=max_eval - evals[t])
                searches[t] = search
                requested[t] = next(search)
            starting = []
        if not searches:
            break
        sel = list(requested)
        lengths = torch.tensor([requested[t] for t in sel], dtype=torch.float64, device=dev)
        if len(sel) == T and sel == sorted(sel):                      # every task, in order: no gathers
            d_sel = direction
            f_tr, g_tr = objective(theta + lengths[:, None] * d_sel)
        else:
            idx_sel = torch.tensor(sel, device=dev)
            d_sel = direction[idx_sel]
            f_tr, g_tr = objective(theta[idx_sel] + lengths[:, None] * d_sel, idx_sel)
        gtd_tr = (g_tr * d_sel).sum(1).tolist()
        f_tr = f_tr.tolist()
        requested = {}
        finished = []
        for i, t in enumerate(sel):
            try:
                requested[t] = searches[t].send((f_tr[i], g_tr[i], gtd_tr[i]))
            except StopIteration as stop:
                del searches[t]
                f_acc, g_acc, t_acc, n_ls = stop.value
                finished.append((t, f_acc, g_acc, t_acc, n_ls))
        if finished:
            fin = torch.tensor([r[0] for r in finished], device=dev)
            lengths = torch.tensor([r[3] for r in finished], dtype=torch.float64, device=dev)
            theta[fin] = theta[fin] + lengths[:, None] * direction[fin]
            grad[fin] = torch.stack([r[2] for r in finished])
            moved = (lengths[:, None] * direction[fin]).abs().amax(1).tolist()
            optimal = (grad[fin].abs().amax(1) <= tolerance_grad).tolist()
            for i, (t, f_acc, _, t_acc, n_ls) in enumerate(finished):
                loss[t], step[t] = f_acc, t_acc
                evals[t] += n_ls
                if optimal[i] or moved[i] <= tolerance_change or abs(loss[t] - prev_loss[t]) < tolerance_change:
                    converged[t] = True                               # torch's other stopping rules
                elif iterations[t] < steps and evals[t] < max_eval:
                    starting.append(t)                                # else stopped by a limit
    w = to_w(theta[:, :C * d].view(T, C, d), None)
    b = theta[:, C * d:]
    probes = [LinearProbe(classes=classes[t][cmask[t]], weight=w[t][cmask[t]].clone(), bias=b[t][cmask[t]].clone(),
                          mean=mean[t] + center, std=std[t].clone()) for t in range(T)]
    return probes, {"iterations": torch.tensor(iterations), "evaluations": torch.tensor(evals),
                    "converged": torch.tensor(converged), "loss": torch.tensor(loss, dtype=torch.float64)}
