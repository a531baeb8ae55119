"""Objectives: configs, training on a fixed batch, BYOL's EMA target, per-task supervised heads, the frozen floor."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import BarlowTwinsLoss, VICRegLoss
from pydantic import TypeAdapter, ValidationError
from torch import nn

from dncsim.common import DncsimError
from dncsim.simulator.objectives import (OBJECTIVES, BarlowTwinsConfig, BYOLConfig, BYOLObjective, FrozenObjective,
                                  NoneConfig, ObjectiveConfig, ProjectionObjective, SimCLRConfig, SimSiamConfig,
                                  SimSiamObjective, SupervisedConfig, SupervisedObjective, VICRegConfig,
                                  build_objective)

SSL = ("simclr", "vicreg", "barlow_twins", "byol", "simsiam")
ADAPTER = TypeAdapter(ObjectiveConfig)
# Smallest fall of the mean of the last 3 losses below the mean of the first 3 over 30 Adam steps; the
# observed falls (seeds 0-9) are at least twice these: simclr 1.6, vicreg 10.3, barlow_twins 1.35, byol 0.40,
# simsiam 0.53, supervised 0.6.
MIN_DROP = {"simclr": 0.8, "vicreg": 5.0, "barlow_twins": 0.6, "byol": 0.2, "simsiam": 0.25, "supervised": 0.3}


def make_backbone():
    net = nn.Sequential(nn.Flatten(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16))
    net.feature_dim = 16
    return net


def make_config(name, **extra):
    dims = {"projection_dim": 8, "hidden_dim": 32} if name in SSL else {}
    return ADAPTER.validate_python({"name": name, **dims, **extra})


def make_batch(seed=0, n=64):
    """Three Gaussian blobs of 2x4x4 inputs, labels 0..2, task 0, and two noisy, randomly flipped views."""
    g = torch.Generator().manual_seed(seed)
    centers = 2 * torch.randn(3, 2, 4, 4, generator=g)
    y = torch.arange(n) % 3
    x = centers[y] + 0.5 * torch.randn(n, 2, 4, 4, generator=g)

    def view():
        v = x + 0.3 * torch.randn(x.shape, generator=g)
        flip = torch.rand(n, generator=g) < 0.5
        return torch.where(flip[:, None, None, None], v.flip(-1), v)

    return x, y, torch.zeros(n, dtype=torch.long), (view(), view())


def build(name, seed=0, **extra):
    torch.manual_seed(seed)
    backbone = make_backbone()
    objective = build_objective(make_config(name, **extra), backbone)
    objective.prepare_tasks({0: 3})
    return backbone, objective


def trainable(module):
    return [p for p in module.parameters() if p.requires_grad]


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def step(backbone, objective, optimizer, batch):
    x, y, t, views = batch
    loss = objective.loss(backbone, x, y, t, views if objective.uses_views else None)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    objective.after_update(backbone)
    return loss


# ------------------------------------------------------------------------------------------- configs

def test_names_defaults_and_dispatch():
    assert OBJECTIVES == ("simclr", "vicreg", "barlow_twins", "byol", "simsiam", "supervised", "none")
    expected = {"simclr": SimCLRConfig, "vicreg": VICRegConfig, "barlow_twins": BarlowTwinsConfig,
                "byol": BYOLConfig, "simsiam": SimSiamConfig, "supervised": SupervisedConfig, "none": NoneConfig}
    for name in OBJECTIVES:
        assert type(ADAPTER.validate_python({"name": name})) is expected[name]
    simclr = SimCLRConfig()
    assert (simclr.projection_dim, simclr.hidden_dim, simclr.temperature) == (64, 256, 0.2)
    assert BYOLConfig().momentum == 0.99


def test_loss_weights_default_to_lightlys():
    vicreg, barlow = inspect.signature(VICRegLoss).parameters, inspect.signature(BarlowTwinsLoss).parameters
    cfg = VICRegConfig()
    assert (cfg.lambda_param, cfg.mu_param, cfg.nu_param) == tuple(
        vicreg[k].default for k in ("lambda_param", "mu_param", "nu_param"))
    assert BarlowTwinsConfig().lambda_param == barlow["lambda_param"].default


@pytest.mark.parametrize("mapping", [
    {"name": "simclr", "projection_dims": 8},
    {"name": "supervised", "hidden_dim": 8},
    {"name": "simclr", "projection_dim": 0},
    {"name": "simsiam", "hidden_dim": 0},
    {"name": "simclr", "temperature": 0.0},
    {"name": "byol", "momentum": 1.0},
    {"name": "byol", "momentum": -0.1},
    {"name": "vicreg", "mu_param": -1.0},
    {"name": "barlow_twins", "lambda_param": -1e-3},
    {"name": "moco"},
    {"projection_dim": 8},
])
def test_bad_config_raises(mapping):
    with pytest.raises(ValidationError):
        ADAPTER.validate_python(mapping)


def test_assignment_is_validated():
    cfg = SimCLRConfig()
    with pytest.raises(ValidationError):
        cfg.temperature = -1.0


# ---------------------------------------------------------------------------------------- all objectives

@pytest.mark.parametrize("name, cls, uses_views, trains_backbone", [
    ("simclr", ProjectionObjective, True, True), ("vicreg", ProjectionObjective, True, True),
    ("barlow_twins", ProjectionObjective, True, True), ("byol", BYOLObjective, True, True),
    ("simsiam", SimSiamObjective, True, True), ("supervised", SupervisedObjective, False, True),
    ("none", FrozenObjective, False, False)])
def test_flags(name, cls, uses_views, trains_backbone):
    _, objective = build(name)
    assert type(objective) is cls
    assert (objective.uses_views, objective.trains_backbone) == (uses_views, trains_backbone)


@pytest.mark.parametrize("name", SSL + ("supervised",))
def test_training_lowers_loss_and_moves_backbone(name):
    backbone, objective = build(name)
    head_params = trainable(objective)
    assert head_params, "every objective that trains has trainable heads"
    optimizer = torch.optim.Adam(trainable(backbone) + head_params, lr=1e-2)
    batch = make_batch()
    before = snapshot(backbone)
    losses = []
    for _ in range(30):
        losses.append(step(backbone, objective, optimizer, batch).item())
        for p in trainable(backbone) + head_params:
            assert p.grad is not None and torch.isfinite(p.grad).all()
    early, late = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert late < early - MIN_DROP[name], (name, early, late)
    assert not any(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


@pytest.mark.parametrize("name", SSL)
def test_ssl_objectives_need_views(name):
    backbone, objective = build(name)
    x, y, t, _ = make_batch()
    with pytest.raises(ValueError, match="two augmented views"):
        objective.loss(backbone, x, y, t, None)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_same_seed_same_initial_parameters(name):
    (b1, o1), (b2, o2) = build(name, seed=3), build(name, seed=3)
    assert same(b1.state_dict(), b2.state_dict()) and same(o1.state_dict(), o2.state_dict())
    if name != "none":
        assert not same(o1.state_dict(), build(name, seed=4)[1].state_dict())


def test_none_is_a_frozen_floor():
    backbone, objective = build("none")
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    before = snapshot(backbone)
    x, y, t, views = make_batch()
    for _ in range(3):
        loss = objective.loss(backbone, x, y, t, views)
        objective.after_update(backbone)
        assert loss.shape == () and loss.item() == 0.0 and not loss.requires_grad
    assert same(before, backbone.state_dict())


# ------------------------------------------------------------------------------------------------ BYOL

def test_byol_target_is_a_frozen_deep_copy():
    backbone, objective = build("byol")
    target = list(objective.target_backbone.parameters()) + list(objective.target_projector.parameters())
    assert target and not any(p.requires_grad for p in target)
    assert {id(p) for p in target}.isdisjoint(id(p) for p in trainable(objective))
    assert same(objective.target_backbone.state_dict(), backbone.state_dict())
    assert same(objective.target_projector.state_dict(), objective.projector.state_dict())
    assert {id(p) for p in target}.isdisjoint(id(p) for p in backbone.parameters())
    assert any(k.startswith("target_backbone.") for k in objective.state_dict())
    assert any(k.startswith("target_projector.") for k in objective.state_dict())


def test_byol_target_moves_by_ema():
    backbone, objective = build("byol", momentum=0.9)
    optimizer = torch.optim.Adam(trainable(backbone) + trainable(objective), lr=1e-2)
    x, y, t, views = make_batch()
    old_target = [p.clone() for p in objective.target_backbone.parameters()]
    optimizer.zero_grad()
    objective.loss(backbone, x, y, t, views).backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(old_target, objective.target_backbone.parameters()))
    objective.after_update(backbone)
    for old, new, online in zip(old_target, objective.target_backbone.parameters(), backbone.parameters()):
        assert not torch.equal(old, new)
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
        assert not new.requires_grad


def test_byol_state_dict_round_trip_restores_target():
    backbone, objective = build("byol")
    optimizer = torch.optim.Adam(trainable(backbone) + trainable(objective), lr=1e-2)
    for _ in range(3):
        step(backbone, objective, optimizer, make_batch())
    saved = snapshot(objective)
    _, fresh = build("byol", seed=1)
    assert not same(saved, fresh.state_dict())
    fresh.load_state_dict(saved)
    assert same(saved, fresh.state_dict())
    assert not any(p.requires_grad for p in fresh.target_backbone.parameters())


# ------------------------------------------------------------------------------------------ supervised

def supervised_with_tasks(tasks):
    torch.manual_seed(0)
    backbone = make_backbone()
    objective = build_objective(SupervisedConfig(), backbone)
    objective.prepare_tasks(tasks)
    return backbone, objective


def test_prepare_tasks_creates_per_task_heads():
    _, objective = supervised_with_tasks({0: 3, 1: 2, 4: 5})
    sizes = {k: (h.in_features, h.out_features) for k, h in objective.heads.items()}
    assert sizes == {"0": (16, 3), "1": (16, 2), "4": (16, 5)}
    assert len(trainable(objective)) == 6
    assert {"heads.4.weight", "heads.4.bias"} <= objective.state_dict().keys()
    head = objective.heads["1"]
    objective.prepare_tasks({1: 2, 2: 7})
    assert objective.heads["1"] is head and objective.heads["2"].out_features == 7
    with pytest.raises(DncsimError, match="task 1"):
        objective.prepare_tasks({1: 3})
    with pytest.raises(DncsimError, match="at least 1 class"):
        objective.prepare_tasks({5: 0})


def test_mixed_task_batch_routes_each_sample_through_its_head():
    backbone, objective = supervised_with_tasks({0: 3, 1: 2, 2: 4})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 2, 4, 4, generator=g)
    t = torch.tensor([0, 1, 2, 1, 0, 0, 2, 1, 1, 0])
    y = torch.tensor([2, 1, 3, 0, 0, 1, 2, 1, 0, 2])
    features = backbone(x)
    group_means, sizes = [], []
    for task in (0, 1, 2):
        m = t == task
        group_means.append(F.cross_entropy(objective.heads[str(task)](features[m]), y[m]))
        sizes.append(m.sum())
    expected = sum(s * m for s, m in zip(sizes, group_means)) / len(x)
    per_sample = torch.stack([F.cross_entropy(objective.heads[str(int(ti))](f[None]), yi[None])
                              for f, ti, yi in zip(features, t, y)])
    loss = objective.loss(backbone, x, y, t, None)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, per_sample.mean())

    logits = objective.logits(features, t)
    assert logits.shape == (10, 4)
    for row, f, ti in zip(logits, features, t):
        k = objective.heads[str(int(ti))].out_features
        torch.testing.assert_close(row[:k], objective.heads[str(int(ti))](f))
        assert torch.isneginf(row[k:]).all()
    torch.testing.assert_close(objective.logits(features[:3], 0), objective.heads["0"](features[:3]))


def test_unknown_task_or_label_is_an_error():
    backbone, objective = supervised_with_tasks({0: 3, 1: 2})
    x = torch.randn(4, 2, 4, 4)
    with pytest.raises(DncsimError, match=r"task label 7 .*prepared tasks: 0, 1"):
        objective.loss(backbone, x, torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 7, 0]), None)
    with pytest.raises(DncsimError, match="task label 7"):
        objective.logits(backbone(x), 7)
    with pytest.raises(DncsimError, match=r"task 1: class labels must be in 0\.\.1"):
        objective.loss(backbone, x, torch.tensor([0, 2, 1, 0]), torch.tensor([0, 1, 1, 0]), None)
