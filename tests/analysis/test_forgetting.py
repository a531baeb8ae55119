"""Accuracy-matrix arithmetic on a hand-made matrix (README, Metrics)."""
import math

import torch

from dncsim.analysis.forgetting import backward_transfer, forgetting_last, forgetting_max, forward_transfer

nan = float("nan")
# rows: before training, after exp 0, 1, 2; columns: tasks 0, 1, 2
R = torch.tensor([[0.30, 0.20, 0.10],
                  [0.90, 0.40, 0.20],
                  [0.70, 0.80, 0.30],
                  [0.80, 0.50, 0.95]], dtype=torch.float64)


def same(a, b):
    return all((math.isnan(x) and math.isnan(y)) or abs(x - y) < 1e-12 for x, y in zip(a, b))


def test_forgetting_after_the_last_experience():
    assert same(forgetting_max(R, 2).tolist(), [0.90 - 0.80, 0.80 - 0.50, nan])
    assert same(forgetting_last(R, 2).tolist(), [0.90 - 0.80, 0.80 - 0.50, nan])
    assert backward_transfer(R, 2) == -((0.10 + 0.30) / 2)


def test_forgetting_so_far_and_max_over_earlier_rows():
    assert same(forgetting_max(R, 1).tolist(), [0.20, nan, nan])
    assert math.isnan(backward_transfer(R, 0))
    R2 = R.clone()
    R2[2, 0] = 0.95                      # task 0 improved after experience 1, then fell
    assert same(forgetting_max(R2, 2).tolist(), [0.95 - 0.80, 0.30, nan])
    assert same(forgetting_last(R2, 2).tolist(), [0.90 - 0.80, 0.30, nan])


def test_forward_transfer_against_the_untrained_backbone():
    assert same(forward_transfer(R, 2).tolist(), [nan, 0.40 - 0.20, 0.30 - 0.10])
    assert same(forward_transfer(R, 1).tolist(), [nan, 0.40 - 0.20, nan])
