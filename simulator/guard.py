"""The divergence guard: training stops at the first non-finite loss, before the optimizer step."""
from __future__ import annotations

import warnings

import torch

from dncsim.common import RunFailed

with warnings.catch_warnings():          # qpsolvers / jaxopt import-time warnings
    warnings.simplefilter("ignore")
    from avalanche.core import SupervisedPlugin

__all__ = ["TrainingDiverged", "NonFiniteGuard"]


class TrainingDiverged(RunFailed):
    """Training produced a non-finite loss (or non-finite features): the run stops there; ``record`` has
    the experience, epoch, iteration and the loss value."""


class NonFiniteGuard(SupervisedPlugin):
    """Stops training at the first non-finite loss, before the optimizer applies its gradient (so the
    last good weights -- and the last checkpoint -- are never overwritten by NaN)."""

    def before_update(self, strategy, **kwargs):
        loss = strategy.loss.detach()
        if not bool(torch.isfinite(loss).all()):
            clock = strategy.clock
            record = {"stage": "training", "experience": int(strategy.experience.current_experience),
                      "epoch": int(clock.train_exp_epochs), "iteration": int(clock.train_exp_iterations),
                      "loss": str(float(loss))}          # 'nan', 'inf' or '-inf' (JSON has no such numbers)
            hint = "training.lr" + (", or training.precision: bf16" if getattr(strategy, "precision", "") == "fp16"
                                    else "")
            raise TrainingDiverged(f"training diverged: loss {record['loss']} at experience {record['experience']}, "
                                   f"epoch {record['epoch']}, iteration {record['iteration']} (try a lower "
                                   f"{hint}); the last checkpoint is kept", record)

