"""The factor stream: attribute k varies in experience k and nothing else does, exactly balanced,
deterministic by seed; evaluation data apart from the training data; disk sources select and say when
too few samples are left; watched labelings; the summary shows what is held."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dncsim.common import DncsimError
from dncsim.scenarios import build_scenario
from dncsim.scenarios.preview import describe

SMALL = {"name": "shapes", "image_size": 16, "train_repeats": 1, "probe_repeats": 1, "test_repeats": 1,
         "sizes": ["small", "large"]}          # 4 x 4 x 2 x 2 = 64 cells


def factor(seed=0, source=SMALL, **stream):
    return build_scenario({"seed": seed, "source": source, "stream": {"type": "factor", **stream}})


def values_present(sc, k):
    """Attribute -> sorted class ids present in experience k's training data."""
    pool = sc.experiences[k].pool
    return {a: sorted(pool.labels[a][sc.experiences[k].train_idx].unique().tolist()) for a in sc.source.labelings}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), hold=st.sampled_from(["one", "subset", "none"]),
       attributes=st.permutations(["shape", "color", "size", "style"]).map(lambda p: p[:3]),
       fraction=st.sampled_from([0.3, 0.5, 0.7]), n=st.sampled_from([48, 96]))
def test_each_experience_varies_its_attribute_and_holds_the_others(seed, hold, attributes, fraction, n):
    if hold == "none":
        n = 64                                # the training split itself: 64 cells x 1 repeat
    sc = factor(seed, attributes=attributes, hold=hold, hold_fraction=fraction,
                samples_per_experience=None if hold == "none" else n)
    K = {a: sc.source.num_classes(a) for a in sc.source.labelings}
    assert [e.varying for e in sc.experiences] == attributes == [t.labeling for t in sc.eval_tasks]
    for k, e in enumerate(sc.experiences):
        x, y = sc.experience_data(k, "train")
        assert x.shape == (n, 3, 16, 16) and len(e.train_idx) == n
        assert torch.bincount(y, minlength=K[e.varying]).tolist() == [n // K[e.varying]] * K[e.varying]
        if hold == "none":
            assert torch.equal(x, sc.source.train.x) and e.held == {}
            continue
        present = values_present(sc, k)
        assert present[e.varying] == list(range(K[e.varying]))
        for a in attributes:
            if a == e.varying:
                continue
            names = sc.source.label_names[a]
            allowed = sorted(names.index(v) for v in e.held[a])
            assert present[a] == allowed                      # restricted to the held values, all of them shown
            want = 1 if hold == "one" else min(K[a] - 1, max(1, int(np.floor(fraction * K[a] + 0.5))))
            assert len(allowed) == want
        for a in set(sc.source.labelings) - set(attributes):    # not in the stream: free, like a nuisance
            assert present[a] == list(range(K[a]))
    digests = sc.input_digests()
    assert len(set(digests)) == (1 if hold == "none" else len(digests))
    assert sc.same_inputs == (hold == "none")


def test_the_same_seed_gives_the_same_stream_and_another_seed_another():
    a, b, c = factor(3), factor(3), factor(4)
    for k in range(4):
        assert torch.equal(a.experience_data(k)[0], b.experience_data(k)[0])
        assert a.experiences[k].held == b.experiences[k].held
        assert not torch.equal(a.experience_data(k)[0], c.experience_data(k)[0])
    assert [e.held for e in a.experiences] != [e.held for e in c.experiences] or \
        not torch.equal(a.source.probe.x, c.source.probe.x)


def test_evaluation_data_are_balanced_independent_and_apart_from_the_training_data():
    sc = factor(0, hold="subset")
    src = sc.source
    seeds = src.info["seeds"]
    assert len({seeds["train"], seeds["test"], seeds["probe"]}) == 3
    for split in (src.probe, src.test):
        labels = [split.labels[a] for a in src.labelings]
        cells = torch.stack(labels, 1).unique(dim=0, return_counts=True)[1]
        assert len(cells) == 64 and cells.unique().tolist() == [1]         # the full factorial, once each
        for la, lb in itertools.combinations(labels, 2):                   # hence pairwise independent
            table = torch.zeros(int(la.max()) + 1, int(lb.max()) + 1)
            table.index_put_((la, lb), torch.ones(len(la)), accumulate=True)
            assert torch.equal(table, table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / len(la))
    evaluation = torch.cat([src.probe.x, src.test.x]).flatten(1)
    for k in range(4):
        train = sc.experience_data(k, "train")[0].flatten(1)
        assert torch.cdist(train, evaluation).min() > 0                    # no training image is evaluated
    for k, task in enumerate(sc.eval_tasks):
        x, y = sc.evaluation_data(k, "train")
        assert torch.equal(x, src.probe.x) and torch.equal(y, src.probe.labels[task.labeling])
        assert task.learned_at == k and task.classes == list(range(src.num_classes(task.labeling)))


def test_samples_per_experience_must_divide_evenly():
    with pytest.raises(DncsimError, match=r"samples_per_experience: 50 images cannot be split evenly over the 4 "
                                          r"values of 'shape' \(use a multiple of 4\)"):
        factor(attributes=["shape", "color"], samples_per_experience=50)
    with pytest.raises(DncsimError, match=r"attributes\[1\]: a factor stream varies plain labelings"):
        factor(attributes=["shape", "color:parity"])


@pytest.fixture
def feature_file(tmp_path):
    """A features file with three independent balanced labelings (4 x 3 x 2 cells, 20 samples each)."""
    rng = np.random.default_rng(0)
    cells = np.array(list(itertools.product(range(4), range(3), range(2))))
    design = np.repeat(cells, 20, axis=0)
    path = tmp_path / "f.npz"
    np.savez(path, features=rng.normal(size=(len(design), 8)), a=design[:, 0], b=design[:, 1], c=design[:, 2])
    return path


def test_a_disk_source_selects_the_held_samples_and_balances_the_varying_one(feature_file):
    source = {"name": "features", "path": str(feature_file), "test_fraction": 0.25}
    sc = factor(0, source=source, hold="one", min_samples_per_class=5)
    train = sc.source.train
    for k, e in enumerate(sc.experiences):
        assert e.pool is None
        idx = e.train_idx
        y = train.labels[e.varying][idx]
        assert len(torch.bincount(y).unique()) == 1 and len(y.unique()) == sc.source.num_classes(e.varying)
        for a, held in e.held.items():
            assert sorted(train.labels[a][idx].unique().tolist()) == sorted(int(v) for v in held)
    with pytest.raises(DncsimError) as err:
        factor(0, source=source, hold="one", min_samples_per_class=50)
    msg = str(err.value)
    assert msg.startswith("scenario.stream: experience 0 (varying 'a', holding b=") and "leaves" in msg
    assert "training samples of a=" in msg and "(at least 50 needed" in msg and "\n" not in msg


def test_watched_labelings_are_evaluation_tasks_that_are_never_learned():
    sc = build_scenario({"source": SMALL, "stream": {"type": "class_incremental", "labeling": "shape",
                                                     "experiences": 2}}, watch=["color", "size"])
    names = ["classes " + ", ".join(t.class_names) for t in sc.eval_tasks[:2]]
    assert [(t.name, t.learned_at) for t in sc.eval_tasks] == [
        (names[0], 0), (names[1], 1), ("color (watched)", None), ("size (watched)", None)]
    assert len(sc.eval_tasks[2].train_idx) == len(sc.source.probe)           # the full evaluation data
    with pytest.raises(DncsimError, match=r"evaluation.watch\[0\]: 'colour' is not a labeling"):
        build_scenario({"source": SMALL, "stream": {"type": "factor"}}, watch=["colour"])
    with pytest.raises(DncsimError, match=r"evaluation.watch\[0\]: 'color' is already an evaluation task"):
        build_scenario({"source": SMALL, "stream": {"type": "factor"}}, watch=["color"])


def test_the_summary_says_what_varies_and_what_is_held():
    sc = factor(0, attributes=["color", "shape"], hold="one")
    text = describe(sc)
    assert "training inputs differ between experiences" in text
    assert "rendered independently of the training data" in text
    held = sc.experiences[0].held["shape"][0]
    assert f"shape={held}" in text and "held (others vary)" in text and "learned in exp" in text
