"""Every stream type is an Avalanche benchmark that trains with Naive, and describes its experiences."""
import warnings

import numpy as np
import pytest
import torch

from dncsim.analysis import DncsimError
from dncsim.scenarios import build_scenario
from dncsim.scenarios.preview import describe, save_example_grid

TINY_SHAPES = {"name": "shapes", "image_size": 16, "train_repeats": 1, "test_repeats": 1}


def tiny(stream, seed=0, source=None):
    return build_scenario({"seed": seed, "source": source or TINY_SHAPES, "stream": stream})


def naive_one_epoch(sc, n_out):
    """One tiny epoch of Avalanche's Naive over the whole stream; returns the eval accuracies."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive
    torch.manual_seed(0)
    d = int(np.prod(sc.source.input_shape))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                         criterion=torch.nn.CrossEntropyLoss(), train_mb_size=32, train_epochs=1, eval_mb_size=64,
                         evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]))
        for exp in sc.benchmark.train_stream:
            strategy.train(exp)
        res = strategy.eval(sc.benchmark.test_stream)
    accs = [v for k, v in res.items() if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    assert len(accs) == len(sc.experiences)
    return accs


def check_sample_idx(sc):
    for e, tr, te in zip(sc.experiences, sc.benchmark.train_stream, sc.benchmark.test_stream):
        assert torch.equal(torch.as_tensor(list(tr.dataset.sample_idx)), e.train_idx)
        assert torch.equal(torch.as_tensor(list(te.dataset.sample_idx)), e.test_idx)
        x, y = sc.experience_data(e.index, "train")
        assert torch.equal(torch.as_tensor(list(tr.dataset.targets)), y)
        first = tr.dataset[0]
        torch.testing.assert_close(first[0], x[0])
        assert int(first[1]) == int(y[0]) and int(first[-1]) == e.task_label


def test_multilabel_stream():
    sc = tiny({"type": "multilabel", "labelings": ["shape", "color", "size", "style"]})
    assert [e.name for e in sc.experiences] == ["shape", "color", "size", "style"]
    assert [len(e.classes) for e in sc.experiences] == [4, 4, 3, 2]
    assert [e.task_label for e in sc.experiences] == [0, 1, 2, 3]
    assert sc.experiences[1].class_names == ["red", "green", "blue", "yellow"]
    assert all(len(e.train_idx) == 96 for e in sc.experiences)
    for exp, e in zip(sc.benchmark.train_stream, sc.experiences):
        assert exp.task_label == e.task_label and set(exp.classes_in_this_experience) == set(e.classes)
    check_sample_idx(sc)
    assert len(naive_one_epoch(sc, 4)) == 4


def test_multilabel_with_derived_labelings_on_digits():
    sc = tiny({"type": "multilabel", "labelings": ["class", "class:parity", "class:high", "class:mod3"]},
              source={"name": "digits"})
    x, y = sc.experience_data(1)
    _, base = sc.experience_data(0)
    assert torch.equal(y, base % 2) and sc.experiences[1].class_names == ["even", "odd"]
    assert torch.equal(sc.experience_data(2)[1], (base >= 5).long())
    assert torch.equal(sc.experience_data(3)[1], base % 3)
    check_sample_idx(sc)


@pytest.mark.parametrize("kind", ["class_incremental", "task_incremental"])
def test_class_split_streams(kind):
    sc = tiny({"type": kind, "experiences": 2, "labeling": "shape"})
    classes = [e.classes for e in sc.experiences]
    assert sorted(classes[0] + classes[1]) == [0, 1, 2, 3] and all(len(c) == 2 for c in classes)
    for e in sc.experiences:
        _, y = sc.experience_data(e.index)
        assert set(y.tolist()) == set(e.classes) and len(y) == 48
    assert [e.task_label for e in sc.experiences] == ([0, 0] if kind == "class_incremental" else [0, 1])
    for exp, e in zip(sc.benchmark.train_stream, sc.experiences):
        assert set(exp.classes_in_this_experience) == set(e.classes)
    check_sample_idx(sc)
    assert len(naive_one_epoch(sc, 4)) == 2


def test_class_order_is_seeded_or_given():
    def order(seed, **kw):
        sc = tiny({"type": "class_incremental", "experiences": 4, "labeling": "color", **kw}, seed=seed)
        return [e.classes[0] for e in sc.experiences]
    assert order(0) == order(0)
    assert len({tuple(order(s)) for s in range(5)}) >= 2            # the seed shuffles the classes
    assert order(0, class_order=[3, 1, 0, 2]) == [3, 1, 0, 2]
    assert order(0, shuffle_classes=False) == [0, 1, 2, 3]


@pytest.mark.parametrize("shift", ["permute", "rotate", "color"])
def test_domain_incremental_stream(shift):
    sc = tiny({"type": "domain_incremental", "experiences": 3, "shift": shift, "labeling": "shape"})
    assert len(sc.experiences) == 3 and all(e.classes == [0, 1, 2, 3] for e in sc.experiences)
    x0, y0 = sc.experience_data(0)
    assert torch.equal(x0, sc.source.train.x)                       # include_identity
    x1, y1 = sc.experience_data(1)
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)
    if shift == "permute":                                          # a pixel permutation keeps the pixel values
        assert torch.equal(x1.flatten(2).sort(dim=2).values, x0.flatten(2).sort(dim=2).values)
    check_sample_idx(sc)
    assert len(naive_one_epoch(sc, 4)) == 3


def test_domain_shift_on_vectors_and_wrong_inputs(tmp_path):
    path = tmp_path / "f.npz"
    rng = np.random.default_rng(0)
    np.savez(path, features=rng.normal(size=(40, 6)).astype(np.float32), labels=np.repeat([3, 7], 20))
    src = {"name": "features", "path": str(path)}
    sc = tiny({"type": "domain_incremental", "experiences": 2, "shift": "permute"}, source=src)
    assert sc.experiences[0].class_names == ["3", "7"]
    x0, _ = sc.experience_data(0)
    x1, _ = sc.experience_data(1)
    assert torch.equal(x0.sort(dim=1).values, x1.sort(dim=1).values) and not torch.equal(x0, x1)
    assert len(naive_one_epoch(sc, 2)) == 2
    with pytest.raises(DncsimError, match="'rotate' needs image inputs"):
        tiny({"type": "domain_incremental", "experiences": 2, "shift": "rotate"}, source=src)
    with pytest.raises(DncsimError, match="'color' needs RGB images; source 'digits' has 1 channel"):
        tiny({"type": "domain_incremental", "experiences": 2, "shift": "color"}, source={"name": "digits"})


@pytest.mark.parametrize("stream,message", [
    ({"type": "class_incremental", "experiences": 3, "labeling": "shape"},
     "scenario.stream.experiences: 4 classes of labeling 'shape' cannot be split evenly into 3 experiences (choose one "
     "of 1, 2, 4)"),
    ({"type": "class_incremental", "experiences": 2, "labeling": "colour"},
     "scenario.stream.labeling: 'colour' is not a labeling of source 'shapes' (available: shape, color, size, style) "
     "(did you mean 'color'?)"),
    ({"type": "multilabel", "labelings": ["shape", "syze"]}, "scenario.stream.labelings[1]: 'syze' is not a labeling"),
    ({"type": "multilabel", "labelings": ["shape:parit"]}, "labeling 'shape:parit': unknown function 'parit'"),
    ({"type": "task_incremental", "experiences": 2, "labeling": "shape", "class_order": [0, 1, 1, 2]},
     "scenario.stream.class_order: must be a permutation of the class ids 0..3"),
])
def test_stream_errors_name_the_key(stream, message):
    with pytest.raises(DncsimError) as err:
        tiny(stream)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_describe_and_example_grid(tmp_path):
    sc = tiny({"type": "multilabel", "labelings": ["shape", "color"]})
    text = describe(sc)
    assert "stream multilabel: 2 experiences (seed 0)" in text
    assert "circle, square, triangle, cross" in text and "red, green, blue, yellow" in text
    png = tmp_path / "grid.png"
    assert save_example_grid(sc, png, per_experience=4)
    import matplotlib.image as mpimg
    img = mpimg.imread(png)
    assert img.shape[0] > 100 and img.std() > 0.05
    assert not list(tmp_path.glob(".*tmp*"))
