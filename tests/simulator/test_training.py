"""Issue-level checks of training: every objective with every strategy family learns, regularisers
constrain, and trained features carry the attributes they should."""
import pytest
import torch
from avalanche.core import SupervisedPlugin

from dncsim.analysis.probes import fit_ncc
from dncsim.scenarios import build_scenario
from dncsim.simulator.build import build_strategy, resolve_device
from dncsim.simulator.config import run_from_mapping

SSL = ["simclr", "vicreg", "barlow_twins", "byol", "simsiam"]
TINY_SOURCE = {"name": "shapes", "image_size": 16, "train_repeats": 1, "test_repeats": 1,
               "shapes": ["circle", "square"], "colors": ["red", "blue"], "sizes": ["small", "large"]}


class Recorder(SupervisedPlugin):
    """Losses per iteration and a finiteness check of every gradient."""

    def __init__(self):
        super().__init__()
        self.losses, self.finite = [], True

    def after_backward(self, strategy, **kw):
        for p in strategy.model.parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                self.finite = False

    def after_training_iteration(self, strategy, **kw):
        self.losses.append(float(strategy.loss.detach()))


def config(objective, strategy, epochs=1, batch_size=16, lr=3e-3, source=TINY_SOURCE, **extra):
    return run_from_mapping({"seed": 0, "scenario": {"source": source,
                                                     "stream": {"type": "multilabel", "labelings": ["color", "shape"],
                                                                "allow_same_inputs": True}},      # mechanics only
                             "backbone": {"name": "convnet", "width": 8, "feature_dim": 16},
                             "objective": {"name": objective}, "strategy": strategy,
                             "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr}, **extra})


def backbone_vector(strategy):
    return torch.cat([p.detach().flatten().clone() for p in strategy.backbone.parameters()])


@pytest.mark.parametrize("objective", SSL + ["supervised"])
@pytest.mark.parametrize("strategy", [{"name": "naive"}, {"name": "replay", "mem_size": 16},
                                      {"name": "ewc", "strength": 10.0}, {"name": "distill"}])
def test_objective_and_strategy_learn(objective, strategy):
    """Second experience, one fixed batch of 16 (+ replay samples): the loss falls, weights move, grads finite."""
    cfg = config(objective, strategy, epochs=30)
    sc = build_scenario(cfg.scenario)
    rec = Recorder()
    s = build_strategy(cfg, sc, resolve_device("cpu"), extra_plugins=[rec])
    first, second = list(sc.benchmark.train_stream)
    full = s.experience_tensors(1)
    fixed = tuple(t[:16] for t in full)
    s.experience_tensors._cache[1] = fixed                # experience 1 = one fixed batch
    s.train_epochs = 1
    s.train(first)
    s.train_epochs = 30
    before = backbone_vector(s)
    rec.losses.clear()
    s.train(second)
    assert len(rec.losses) == 30 and rec.finite
    start, end = sum(rec.losses[:5]) / 5, sum(rec.losses[-5:]) / 5
    assert end < start, (objective, strategy["name"], rec.losses)
    assert not torch.equal(before, backbone_vector(s))


def weight_change(mode, strength, objective="simclr"):
    """Per-parameter change of the backbone over the second experience, and the importances used."""
    cfg = config(objective, {"name": mode, "strength": strength}, epochs=5, lr=3e-3)
    sc = build_scenario(cfg.scenario)
    s = build_strategy(cfg, sc, resolve_device("cpu"))
    first, second = list(sc.benchmark.train_stream)
    s.train(first)
    anchor = {n: p.detach().clone() for n, p in s.backbone.named_parameters()}
    s.train(second)
    return {n: p.detach() - anchor[n] for n, p in s.backbone.named_parameters()}, s.plugins[0].importance


@pytest.mark.parametrize("mode,plain_ratio", [("ewc", 0.85), ("mas", 0.85), ("si", 0.4)])
def test_regularisers_really_constrain(mode, plain_ratio):
    """Same seed, same data: only the penalty differs. A no-op (Avalanche's SI on CPU) would give ratio 1."""
    free, importance = weight_change(mode, 0.0)
    held, _ = weight_change(mode, 1e4)
    def l2(d):
        return float(sum(v.square().sum() for v in d.values())) ** 0.5

    def weighted(d):
        return float(sum((importance[n] * v.square()).sum() for n, v in d.items()))
    assert l2(held) < plain_ratio * l2(free), (mode, l2(held), l2(free))
    assert weighted(held) < 0.2 * weighted(free), (mode, weighted(held), weighted(free))
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in importance.values())
    mean = float(torch.cat([v.flatten() for v in importance.values()]).mean())
    assert mean == pytest.approx(2.0)            # two experiences, each normalised to mean 1


def test_none_objective_keeps_the_random_backbone():
    cfg = config("none", {"name": "naive"})
    sc = build_scenario(cfg.scenario)
    s = build_strategy(cfg, sc, resolve_device("cpu"))
    before = backbone_vector(s)
    for exp in sc.benchmark.train_stream:
        s.train(exp)
    assert torch.equal(before, backbone_vector(s))


def features(strategy, x):
    strategy.model.eval()
    with torch.no_grad():
        return torch.cat([strategy.backbone(x[k:k + 256]) for k in range(0, len(x), 256)])


def train_and_probe(objective, epochs, after_each=False):
    """NCC test accuracy per attribute of the backbone's features, after each experience or at the end."""
    source = {"name": "shapes", "train_repeats": 20, "test_repeats": 4}
    stream = {"type": "multilabel", "labelings": ["shape", "color", "size", "style"],
              "allow_same_inputs": True}     # probed on every attribute, one data set: what the features keep
    cfg = run_from_mapping({"seed": 0, "scenario": {"source": source, "stream": stream},
                            "objective": {"name": objective}, "training": {"epochs": epochs, "batch_size": 64}})
    sc = build_scenario(cfg.scenario)
    s = build_strategy(cfg, sc, resolve_device("cpu"))
    rows = []
    for exp in sc.benchmark.train_stream:
        s.train(exp)
        if after_each or len(rows) == len(sc.experiences) - 1:
            ftr, fte = features(s, sc.source.train.x), features(s, sc.source.test.x)
            rows.append({lab: fit_ncc(ftr, sc.source.train.labels[lab]).score(fte, sc.source.test.labels[lab])
                         for lab in sc.source.labelings})
        else:
            rows.append(None)
    return rows


@pytest.mark.slow
def test_trained_features_capture_the_attributes():
    """A short run on the shapes multilabel stream: NCC test accuracy above chance where it should be."""
    chance = {"shape": 0.25, "color": 0.25, "size": 1 / 3, "style": 0.5}
    floor = train_and_probe("none", 1)[-1]                       # a frozen random backbone
    supervised = train_and_probe("supervised", 3, after_each=True)
    for k, lab in enumerate(chance):                             # the attribute just learned
        assert supervised[k][lab] > chance[lab] + 0.3, (lab, supervised[k])
        assert supervised[k][lab] > floor[lab], (lab, supervised[k], floor)
    simclr = train_and_probe("simclr", 1)[-1]
    for lab in ("color", "style"):                               # what SimCLR's default views keep
        assert simclr[lab] > chance[lab] + 0.3, simclr
