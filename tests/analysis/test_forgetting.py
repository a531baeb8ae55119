"""Accuracy-matrix arithmetic on a hand-made matrix (docs, Methods, Metrics)."""
import math

import pytest
import torch

from dncsim.analysis.forgetting import (backward_transfer, forgetting_last, forgetting_max, forward_transfer,
                                        normalised_forgetting)

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


def test_learned_at_moves_every_quantity_to_the_experience_of_learning():
    """Two tasks learned in experiences 1 and 0, a watched one never: columns follow learned_at."""
    R3 = torch.tensor([[0.25, 0.25, 0.30],
                       [0.30, 0.90, 0.40],      # after exp 0: task 1 learned
                       [0.80, 0.70, 0.50],      # after exp 1: task 0 learned
                       [0.60, 0.40, 0.45]], dtype=torch.float64)
    learned_at = [1, 0, None]
    assert same(forgetting_last(R3, 2, learned_at).tolist(), [0.80 - 0.60, 0.90 - 0.40, nan])
    assert same(forgetting_max(R3, 2, learned_at).tolist(), [0.80 - 0.60, 0.90 - 0.40, nan])
    assert same(forgetting_last(R3, 1, learned_at).tolist(), [nan, 0.90 - 0.70, nan])
    assert same(forward_transfer(R3, 2, learned_at).tolist(), [0.30 - 0.25, nan, nan])
    assert backward_transfer(R3, 2, learned_at) == pytest.approx(-(0.20 + 0.50) / 2)
    # normalised: over what was learned above chance (task 0: 4 classes, task 1: 2 classes)
    norm = normalised_forgetting(R3, 2, [0.25, 0.5, 0.25], learned_at).tolist()
    assert same(norm, [(0.80 - 0.60) / (0.80 - 0.25), (0.90 - 0.40) / (0.90 - 0.5), nan])
    R4 = R3.clone()
    R4[2, 0] = 0.2                                   # learned below chance: normalised forgetting undefined
    assert math.isnan(normalised_forgetting(R4, 2, [0.25, 0.5, 0.25], learned_at)[0])
