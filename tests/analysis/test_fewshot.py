"""ncc_fewshot_error: the estimand, determinism, nesting over shots, and its input checks."""
import itertools

import pytest
import torch

from dncsim.analysis import DncsimError, ncc_fewshot_error


def exact_expected_error(x, y, m):
    """E over all m-subsets of each class of the class-balanced error on the remaining samples."""
    classes = sorted(set(y.tolist()))
    idx = {c: (y == c).nonzero().flatten().tolist() for c in classes}
    total, count = 0.0, 0
    for supports in itertools.product(*[itertools.combinations(idx[c], m) for c in classes]):
        centres = torch.stack([x[list(s)].mean(0) for s in supports])
        errs = []
        for k, c in enumerate(classes):
            q = [i for i in idx[c] if i not in supports[k]]
            pred = torch.cdist(x[q], centres).argmin(1)
            errs.append(float((pred != k).double().mean()))
        total += sum(errs) / len(errs)
        count += 1
    return total / count


def test_matches_exact_expectation_over_all_supports():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 5 + [1] * 4)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64) + y[:, None] * 0.9
    exact = {m: exact_expected_error(x, y, m) for m in (1, 2)}
    res = ncc_fewshot_error(x, y, shots=[1, 2], ways=2, episodes=20_000, seed=3)
    for k, m in enumerate((1, 2)):
        se = float(res.error_std[k]) / 20_000 ** 0.5
        assert abs(float(res.error[k]) - exact[m]) < 4 * se + 1e-12, (m, float(res.error[k]), exact[m])
    assert 0.05 < exact[1] < 0.5


def test_deterministic_and_seed_dependent():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(6).repeat_interleave(30)
    x = torch.randn(180, 5, generator=g) + y[:, None].float() * 0.3
    a = ncc_fewshot_error(x, y, shots=[1, 5], ways=3, episodes=50, seed=7)
    b = ncc_fewshot_error(x, y, shots=[1, 5], ways=3, episodes=50, seed=7)
    c = ncc_fewshot_error(x, y, shots=[1, 5], ways=3, episodes=50, seed=8)
    assert torch.equal(a.episode_errors, b.episode_errors) and torch.equal(a.classes, b.classes)
    assert not torch.equal(a.episode_errors, c.episode_errors)
    assert a.classes.shape == (50, 3) and a.episode_errors.shape == (2, 50)
    assert bool(((a.episode_errors >= 0) & (a.episode_errors <= 1)).all())
    # chunking over episodes does not change the numbers
    import dncsim.analysis.fewshot as fs
    old = fs._CHUNK_ELEMENTS
    try:
        fs._CHUNK_ELEMENTS = 1
        d = ncc_fewshot_error(x, y, shots=[1, 5], ways=3, episodes=50, seed=7)
    finally:
        fs._CHUNK_ELEMENTS = old
    torch.testing.assert_close(a.episode_errors, d.episode_errors)
    # more shots help on average; all-class episodes use every class
    assert a.error[1] < a.error[0]
    full = ncc_fewshot_error(x, y, shots=5, ways=None, episodes=5, seed=0)
    assert full.classes.tolist() == [list(range(6))] * 5


def test_separated_classes_have_zero_error_and_identical_classes_half():
    y = torch.arange(2).repeat_interleave(50)
    g = torch.Generator().manual_seed(2)
    far = torch.randn(100, 4, generator=g) + y[:, None] * 100.0
    assert float(ncc_fewshot_error(far, y, shots=1, episodes=30).error[0]) == 0.0
    same = torch.randn(100, 4, generator=g)
    err = float(ncc_fewshot_error(same, y, shots=5, episodes=2000, seed=1).error[0])
    assert err == pytest.approx(0.5, abs=0.02)


def test_input_errors():
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    x = torch.randn(8, 2)
    with pytest.raises(DncsimError, match="class 1 has 2 samples; 2-shot"):
        ncc_fewshot_error(x, y, shots=2)
    with pytest.raises(DncsimError, match="ways must be between 2"):
        ncc_fewshot_error(x, y, shots=1, ways=4)
    with pytest.raises(DncsimError, match="shots must be positive"):
        ncc_fewshot_error(x, y, shots=[0])
    with pytest.raises(DncsimError, match="episodes"):
        ncc_fewshot_error(x, y, shots=1, episodes=0)
